package asynq

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
)

// fullShare is the share of Redis's memory limit past which the API takes
// no new uploads. The rest is kept for the writes that empty the queue: a
// Redis under noeviction refuses every write once it is over its limit,
// the results of queued tasks included, and a task whose result cannot be
// written keeps its upload, so a queue that filled Redis to the brim would
// stay full.
const fullShare = 0.9

// RedisMemory watches how full Redis is: its used_memory against its
// maxmemory, read with INFO memory.
type RedisMemory struct {
	used, limit atomic.Int64
	readAt      atomic.Int64 // when the last reading's INFO was sent, Unix nanoseconds
}

// WatchMemory returns a watch that reads Redis's memory at once and then
// every interval, in a goroutine of its own, until ctx ends. A read that
// fails leaves the last figures. It logs when Redis passes the share of
// its limit where uploads are refused, and when it is back under.
func WatchMemory(ctx context.Context, rdb redis.UniversalClient, interval time.Duration, log *slog.Logger) *RedisMemory {
	m := &RedisMemory{}
	full := false
	read := func() {
		sent := time.Now()
		info, err := rdb.Info(ctx, "memory").Result()
		if err != nil {
			return
		}
		used, limit := infoInt(info, "used_memory"), infoInt(info, "maxmemory")
		m.used.Store(used)
		m.limit.Store(limit)
		m.readAt.Store(sent.UnixNano())
		now := m.Admit() != nil
		switch {
		case now && !full:
			log.Warn("Redis is nearly full: new uploads are refused (503) until workers have emptied the queue", "used_memory", used, "maxmemory", limit)
		case !now && full:
			log.Info("Redis has room again: uploads are taken", "used_memory", used, "maxmemory", limit)
		}
		full = now
	}
	go every(ctx, interval, read)
	return m
}

// Admit returns an EUNAVAILABLE *Error when Redis has a memory limit and
// uses more than 90% of it, and nil otherwise, or while its memory is not
// known.
func (m *RedisMemory) Admit() error {
	limit := m.limit.Load()
	if limit > 0 && float64(m.used.Load()) > fullShare*float64(limit) {
		return detect.Errorf(detect.EUNAVAILABLE, "The queue is full (Redis is nearly out of memory); try again shortly.")
	}
	return nil
}

// Redis's memory as the watch last read it, for /metrics.
var (
	redisUsed = prometheus.NewDesc("yoloserve_redis_memory_used_bytes",
		"Redis's used_memory as the API last read it (four times a second).", nil, nil)
	redisLimit = prometheus.NewDesc("yoloserve_redis_memory_limit_bytes",
		"Redis's maxmemory as the API last read it; absent when Redis has no limit. Past 90% of it the API refuses uploads.", nil, nil)
	redisReadAt = prometheus.NewDesc("yoloserve_redis_memory_read_timestamp_seconds",
		"When the API sent the INFO memory of its last reading, in Unix time; it stands still while Redis does not answer.", nil, nil)
)

// Describe sends the descriptions of the watch's metrics.
func (m *RedisMemory) Describe(ch chan<- *prometheus.Desc) {
	ch <- redisUsed
	ch <- redisLimit
	ch <- redisReadAt
}

// Collect sends Redis's memory as last read: nothing before the first
// read, and no limit when Redis has none.
func (m *RedisMemory) Collect(ch chan<- prometheus.Metric) {
	used, limit := m.used.Load(), m.limit.Load()
	if used == 0 {
		return
	}
	ch <- prometheus.MustNewConstMetric(redisUsed, prometheus.GaugeValue, float64(used))
	ch <- prometheus.MustNewConstMetric(redisReadAt, prometheus.GaugeValue, float64(m.readAt.Load())/1e9)
	if limit > 0 {
		ch <- prometheus.MustNewConstMetric(redisLimit, prometheus.GaugeValue, float64(limit))
	}
}

// infoInt returns the integer field name of an INFO reply, 0 if absent.
func infoInt(info, name string) int64 {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
