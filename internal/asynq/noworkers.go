package asynq

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// WarnIfNoWorkers looks every interval, until ctx ends, at the tasks
// pending in queue and the workers serving it (those that announce their
// model, models.go). Once tasks have waited with no worker for after, it
// logs a warning that names what to check: no worker runs, or the workers
// have another QUEUE or REDIS_URL than the API. When a worker serves the
// queue again, it says so. Tasks wait then, and are not lost; where
// workers are scaled to zero (KEDA), their start is what after allows
// for. A look Redis does not answer changes nothing: Redis down is logged
// elsewhere.
func WarnIfNoWorkers(ctx context.Context, rdb redis.UniversalClient, queue string, interval, after time.Duration, log *slog.Logger) {
	if queue == "" {
		queue = defaultQueue
	}
	var since time.Time // when tasks were first seen waiting with no worker; zero: they are not
	warned := false
	every(ctx, interval, func() {
		now := time.Now()
		d, err := readDepth(ctx, rdb, queue)
		switch {
		case err != nil:
			return
		case d.workers > 0:
			if warned {
				log.Info("a worker serves the queue again: the waiting tasks run", "queue", queue, "workers", d.workers)
			}
			since, warned = time.Time{}, false
			return
		case d.pending == 0:
			since = time.Time{}
			return
		case since.IsZero():
			since = now
		}
		// A look due after the allowed time, a tick late or early, warns.
		if !warned && now.Sub(since) >= after-interval/2 {
			log.Warn("tasks wait in the queue and no worker serves it: start a worker, or give the workers the API's QUEUE and REDIS_URL",
				"queue", queue, "pending", d.pending, "waited", now.Sub(since).Round(time.Second))
			warned = true
		}
	})
}
