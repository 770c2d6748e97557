package asynq

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
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

// reapLostCmd takes the tasks Redis lost out of a queue's active list
// (KEYS[1]) and lease set (KEYS[2]): those whose hash (ARGV[1] .. id) has
// no message and whose lease has ended by ARGV[3] (Unix seconds). A task
// whose lease a worker still renews is running: its worker writes its
// result, and counts it then. A hash left without a message is given
// ARGV[2] seconds to live, so that its FAILURE expires like other
// failures. It returns their ids.
var reapLostCmd = redis.NewScript(`
local lost = {}
for _, id in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do
	local key = ARGV[1] .. id
	local lease = tonumber(redis.call("ZSCORE", KEYS[2], id))
	if redis.call("HEXISTS", key, "msg") == 0 and (lease == nil or lease < tonumber(ARGV[3])) then
		redis.call("LREM", KEYS[1], 0, id)
		redis.call("ZREM", KEYS[2], id)
		if redis.call("TTL", key) == -1 then
			redis.call("EXPIRE", key, ARGV[2])
		end
		table.insert(lost, id)
	end
end
return lost`)

// ReapLostTasks takes out of queue the tasks whose data an evicting Redis
// dropped: asynq's dequeue leaves each as an "active" hash without a
// message, which no worker can run and asynq's recoverer never retries,
// held in the active list and lease set for good. It takes one once its
// lease has ended (30s after the dequeue): a task lost while a worker
// runs it is left to that worker, which writes its result. Their state
// (FAILURE, see lostInfo) expires after ttl; their uploads are left to
// the sweeper. It returns the ids it took out, or the Redis error.
func ReapLostTasks(ctx context.Context, rdb redis.UniversalClient, queue string, ttl time.Duration) ([]string, error) {
	return reapLostCmd.Run(ctx, rdb, []string{activeKey(queue), leaseKey(queue)},
		taskKey(queue, ""), max(int64(ttl/time.Second), 1), time.Now().Unix()).StringSlice()
}

// JanitorConfig configures RunJanitor. Zero values mean defaults.
type JanitorConfig struct {
	Queue    string        // asynq queue name (default "detect")
	TTL      time.Duration // how long failures and lost tasks stay readable (default 1h)
	Interval time.Duration // how often it looks (default 1m)
	Logger   *slog.Logger  // default slog.Default()
	// Lost counts the lost tasks it takes out of the queue (nil: none);
	// a worker passes its Server's LostTasks.
	Lost prometheus.Counter
}

// RunJanitor expires failures and reaps lost tasks at once, then every
// interval until ctx ends.
func RunJanitor(ctx context.Context, rdb redis.UniversalClient, cfg JanitorConfig) {
	if cfg.Queue == "" {
		cfg.Queue = defaultQueue
	}
	if cfg.TTL <= 0 {
		cfg.TTL = defaultResultTTL
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	every(ctx, cfg.Interval, func() {
		if n, err := ExpireFailures(rdb, cfg.Queue, cfg.TTL); err != nil {
			log.Debug("expiring failed tasks", "error", err)
		} else if n > 0 {
			log.Info("expired failed tasks", "count", n, "older_than", cfg.TTL)
		}
		if lost, err := ReapLostTasks(ctx, rdb, cfg.Queue, cfg.TTL); err != nil {
			log.Debug("reaping lost tasks", "error", err)
		} else if len(lost) > 0 {
			if cfg.Lost != nil {
				cfg.Lost.Add(float64(len(lost)))
			}
			log.Warn("Redis lost the data of tasks that no worker could run (evicted); they read FAILURE. Set maxmemory-policy noeviction.",
				"count", len(lost), "ids", lost[:min(len(lost), 10)])
		}
	})
}
