package asynq

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// queueTasks describes the queue's depth by state.
var queueTasks = prometheus.NewDesc("yoloserve_queue_tasks",
	"Tasks in the queue by state, read from Redis at each scrape: pending (waiting for a worker), "+
		"active (held by a worker: running, or taken ahead), retry (waiting to run again after a transient fault). "+
		"Every API replica reports the same queue.",
	[]string{"queue", "state"}, nil)

// queueWorkers describes the workers serving the queue.
var queueWorkers = prometheus.NewDesc("yoloserve_queue_workers",
	"Workers serving the queue: those that said what model they serve in the last 30 s (GET /models), read from Redis at each scrape. "+
		"Tasks pending while it reads 0 wait for a worker to start.",
	[]string{"queue"}, nil)

// DepthCollector is a Prometheus collector of the queue's depth by state
// (yoloserve_queue_tasks) and of the workers serving it
// (yoloserve_queue_workers), read from Redis with one round trip at each
// scrape. When Redis does not answer within a second it reports nothing,
// so that the scrape's other metrics still come through.
type DepthCollector struct {
	rdb   redis.UniversalClient
	queue string
}

// NewDepthCollector returns a DepthCollector of queue (default "detect") on rdb.
func NewDepthCollector(rdb redis.UniversalClient, queue string) *DepthCollector {
	if queue == "" {
		queue = defaultQueue
	}
	return &DepthCollector{rdb: rdb, queue: queue}
}

// Describe sends the collector's metric descriptions.
func (c *DepthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueTasks
	ch <- queueWorkers
}

// Collect reads the queue's depth and sends a gauge for each of its
// counts.
func (c *DepthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d, err := readDepth(ctx, c.rdb, c.queue)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(queueWorkers, prometheus.GaugeValue, float64(d.workers), c.queue)
	for _, s := range []struct {
		state string
		n     int64
	}{{"pending", d.pending}, {"active", d.active}, {"retry", d.retry}} {
		ch <- prometheus.MustNewConstMetric(queueTasks, prometheus.GaugeValue, float64(s.n), c.queue, s.state)
	}
}

// depth is a queue's tasks by state, and the workers serving it.
type depth struct {
	pending, active, retry, workers int64
}

// readDepth reads queue's lists and retry set, and its workers' live
// announcements (models.go), in one round trip. It returns Redis's error.
func readDepth(ctx context.Context, rdb redis.UniversalClient, queue string) (depth, error) {
	var pending, active, retry, workers *redis.IntCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, pendingKey(queue))
		active = p.LLen(ctx, activeKey(queue))
		retry = p.ZCard(ctx, retryKey(queue))
		workers = countLive(ctx, p, modelsKey(queue), time.Now())
		return nil
	})
	if err != nil {
		return depth{}, err
	}
	return depth{pending.Val(), active.Val(), retry.Val(), workers.Val()}, nil
}
