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
// It reads INFO memory, as the memory watch does, and not CONFIG GET,
// which some managed Redis services refuse. It returns a sentence for the
// log when Redis would evict, "" when it would not (noeviction, or no
// limit), and Redis' error when it cannot tell: Redis does not answer, or
// refuses INFO.
func EvictionRisk(ctx context.Context, rdb redis.UniversalClient) (string, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return "", err
	}
	policy, limit := infoField(info, "maxmemory_policy"), infoInt(info, "maxmemory")
	if policy == "" || policy == "noeviction" || limit == 0 {
		return "", nil
	}
	return fmt.Sprintf("Redis evicts keys when full (maxmemory %d bytes, maxmemory-policy %s): it would drop queued tasks, uploads and results under load; set maxmemory-policy noeviction, so that a full Redis refuses new uploads (503) instead", limit, policy), nil
}

// PersistenceRisk says whether Redis would lose the queue when it
// crashes or restarts: without an append-only file (appendonly no), the
// tasks accepted since its last snapshot, if it takes any, are gone, and
// their clients read 404. It reads INFO persistence. It returns a
// sentence for the log when Redis keeps no append-only file, "" when it
// does, and Redis' error when it cannot tell.
func PersistenceRisk(ctx context.Context, rdb redis.UniversalClient) (string, error) {
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return "", err
	}
	if aof := infoField(info, "aof_enabled"); aof != "0" {
		return "", nil
	}
	return "Redis keeps no append-only file (appendonly no): should it crash or restart, the tasks accepted since its last snapshot, if it takes any, are lost and their clients read 404; set appendonly yes (the Compose file and deploy/k8s/redis do)", nil
}

// WarnOfDataLoss logs the sentences of EvictionRisk and PersistenceRisk
// as warnings once Redis first answers, trying every interval until then
// or until ctx ends. A Redis that refuses INFO is noted at debug level.
func WarnOfDataLoss(ctx context.Context, rdb redis.UniversalClient, interval time.Duration, log *slog.Logger) {
	for {
		risk, err := EvictionRisk(ctx, rdb)
		var refused redis.Error
		switch {
		case err == nil:
			if risk != "" {
				log.Warn(risk)
			}
			if risk, err := PersistenceRisk(ctx, rdb); err != nil {
				log.Debug("cannot read whether Redis persists", "error", err)
			} else if risk != "" {
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
