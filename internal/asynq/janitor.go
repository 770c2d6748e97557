package asynq

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ExpireFailures deletes the archived (FAILURE) tasks of queue that failed
// more than ttl ago, so that failures expire like results do (asynq itself
// keeps them up to 90 days). It returns how many it deleted.
func ExpireFailures(rdb redis.UniversalClient, queue string, ttl time.Duration) (int, error) {
	insp := asynq.NewInspectorFromRedisClient(rdb)
	cutoff := time.Now().Add(-ttl)
	n := 0
	for page := 1; ; page++ {
		tasks, err := insp.ListArchivedTasks(queue, asynq.PageSize(500), asynq.Page(page))
		if err != nil {
			if err == asynq.ErrQueueNotFound {
				return n, nil
			}
			return n, err
		}
		if len(tasks) == 0 {
			return n, nil
		}
		deleted := 0
		for _, t := range tasks {
			if t.LastFailedAt.Before(cutoff) {
				if insp.DeleteTask(queue, t.ID) == nil {
					deleted++
				}
			}
		}
		n += deleted
		page -= min(deleted, 1) // deleting shifts later tasks onto this page
	}
}

// RunJanitor expires failures every interval until ctx ends.
func RunJanitor(ctx context.Context, rdb redis.UniversalClient, queue string, ttl, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := ExpireFailures(rdb, queue, ttl); err != nil {
			log.Debug("expiring failed tasks", "error", err)
		} else if n > 0 {
			log.Info("expired failed tasks", "count", n, "older_than", ttl)
		}
	}
}
