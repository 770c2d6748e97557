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

// Collect reads the queue's lists and retry set, and the workers' live
// announcements, and sends a gauge for each.
func (c *DepthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var pending, active, retry, workers *redis.IntCmd
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, pendingKey(c.queue))
		active = p.LLen(ctx, activeKey(c.queue))
		retry = p.ZCard(ctx, retryKey(c.queue))
		workers = countLive(ctx, p, modelsKey(c.queue), time.Now())
		return nil
	})
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(queueWorkers, prometheus.GaugeValue, float64(workers.Val()), c.queue)
	for _, s := range []struct {
		state string
		n     *redis.IntCmd
	}{{"pending", pending}, {"active", active}, {"retry", retry}} {
		ch <- prometheus.MustNewConstMetric(queueTasks, prometheus.GaugeValue, float64(s.n.Val()), c.queue, s.state)
	}
}
