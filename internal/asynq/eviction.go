package asynq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// EvictionRisk says whether a full Redis would drop the service's keys.
// Under a memory limit (maxmemory) with a policy other than noeviction, a
// full Redis evicts keys instead of refusing writes: queued tasks,
// uploads (UPLOAD_STORE=redis) and results vanish, and their clients read
// 404 or "The uploaded image is gone". Under noeviction it refuses writes,
// and the API answers 503 until there is room again.
//
// It returns a sentence for the log when Redis would evict, "" when it
// would not (noeviction, or no limit), and Redis' error when it cannot
// tell: Redis does not answer, or refuses CONFIG GET, as some managed
// Redis services do.
func EvictionRisk(ctx context.Context, rdb redis.UniversalClient) (string, error) {
	cfg, err := rdb.ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		return "", err
	}
	policy, limit := cfg["maxmemory-policy"], cfg["maxmemory"]
	if policy == "" || policy == "noeviction" || limit == "" || limit == "0" {
		return "", nil
	}
	return fmt.Sprintf("Redis evicts keys when full (maxmemory %s bytes, maxmemory-policy %s): it would drop queued tasks, uploads and results under load; set maxmemory-policy noeviction, so that a full Redis refuses new uploads (503) instead", limit, policy), nil
}

// WarnIfEvicting logs EvictionRisk's sentence as a warning once Redis
// first answers, trying every interval until then or until ctx ends. A
// Redis that refuses CONFIG GET is noted at debug level.
func WarnIfEvicting(ctx context.Context, rdb redis.UniversalClient, interval time.Duration, log *slog.Logger) {
	for {
		risk, err := EvictionRisk(ctx, rdb)
		var refused redis.Error
		switch {
		case err == nil:
			if risk != "" {
				log.Warn(risk)
			}
			return
		case errors.As(err, &refused):
			log.Debug("cannot read Redis' eviction policy", "error", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
