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

// DepthCollector is a Prometheus collector of the queue's depth by state
// (yoloserve_queue_tasks), read from Redis with one round trip at each
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

// Describe sends the collector's one metric description.
func (c *DepthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueTasks }

// Collect reads the queue's lists and retry set and sends a gauge for each.
func (c *DepthCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var pending, active, retry *redis.IntCmd
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, pendingKey(c.queue))
		active = p.LLen(ctx, activeKey(c.queue))
		retry = p.ZCard(ctx, retryKey(c.queue))
		return nil
	})
	if err != nil {
		return
	}
	for _, s := range []struct {
		state string
		n     *redis.IntCmd
	}{{"pending", pending}, {"active", active}, {"retry", retry}} {
		ch <- prometheus.MustNewConstMetric(queueTasks, prometheus.GaugeValue, float64(s.n.Val()), c.queue, s.state)
	}
}
