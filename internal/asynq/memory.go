package asynq

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
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

// watchersKey is the live set (liveset.go) where the memory watches of
// the API replicas that store uploads in Redis each hold a member.
const watchersKey = "yoloserve:memory-watchers"

// RedisMemory watches how full Redis is: its used_memory against its
// maxmemory, read with INFO memory, and, where uploads are stored in
// Redis, the uploads taken since: a burst between two readings counts
// before Redis shows it. Several API replicas share the room: each takes
// its share between two readings (see over).
type RedisMemory struct {
	uploads     bool         // uploads are stored in Redis
	id          string       // this watch's member of watchersKey
	watchers    atomic.Int64 // watches sharing the room, this one included; 1 until read
	used, limit atomic.Int64
	readAt      atomic.Int64 // when the last reading's INFO was sent, Unix nanoseconds
	// Uploads' charges (twice their bytes, see charge): those admitted
	// and not yet stored or dropped; those stored, in all; and of those,
	// the ones stored before the last reading's INFO was sent, which
	// used_memory holds.
	reading, stored, storedSeen atomic.Int64
	// refusing: an upload was refused, with the charge refusedCharge,
	// and Redis has not shown room for it since.
	refusing      atomic.Bool
	refusedCharge atomic.Int64
}

// WatchMemory returns a watch that reads Redis's memory at once and then
// every interval, in a goroutine of its own, until ctx ends. uploads says
// whether the API stores uploads in Redis; if so, each reading also
// counts the watches of the other API replicas that do (watchersKey),
// and the watch leaves that count when ctx ends. A read that fails leaves
// the last figures. It logs when Redis passes the share of its limit
// where uploads are refused, and when it is back under.
func WatchMemory(ctx context.Context, rdb redis.UniversalClient, interval time.Duration, uploads bool, log *slog.Logger) *RedisMemory {
	m := &RedisMemory{uploads: uploads, id: uuid.NewString()}
	m.watchers.Store(1)
	// A replica that stops without leaving the count (killed) stays in it
	// this long after its last reading, its share held back meanwhile.
	stale := max(10*interval, 2*time.Second)
	full := false
	read := func() {
		seen := m.stored.Load()
		sent := time.Now()
		pipe := rdb.Pipeline()
		infoCmd := pipe.Info(ctx, "memory")
		var watchers *redis.IntCmd
		if uploads {
			keepLive(ctx, pipe, watchersKey, m.id, sent, stale)
			watchers = pipe.ZCard(ctx, watchersKey)
		}
		pipe.Exec(ctx) // each command's error is its own: a full Redis refuses ZADD, not INFO
		info, err := infoCmd.Result()
		if err != nil {
			return
		}
		if watchers != nil && watchers.Val() > 0 {
			m.watchers.Store(watchers.Val())
		}
		used, limit := infoInt(info, "used_memory"), infoInt(info, "maxmemory")
		// used first: between the two stores an upload counts twice,
		// never not at all.
		m.used.Store(used)
		m.limit.Store(limit)
		m.storedSeen.Store(seen)
		m.readAt.Store(sent.UnixNano())
		refusing := m.refusing.Swap(false)
		now := m.over(0) || refusing && m.over(m.refusedCharge.Load())
		switch {
		case now && !full:
			log.Warn("Redis is nearly full: new uploads are refused (503) until workers have emptied the queue", "used_memory", used, "maxmemory", limit)
		case !now && full:
			log.Info("Redis has room again: uploads are taken", "used_memory", used, "maxmemory", limit)
		}
		if now && refusing {
			m.refusing.Store(true) // until Redis shows room for it
		}
		full = now
	}
	go func() {
		every(ctx, interval, read)
		if uploads {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			rdb.ZRem(ctx, watchersKey, m.id)
		}
	}()
	return m
}

// errNearlyFull refuses an upload while Redis is nearly full.
var errNearlyFull = detect.Unavailable(detect.ReasonRedisMemory, "The queue is full (Redis is nearly out of memory); try again shortly.")

// Admit is asked before an upload of at most size bytes is read. It
// returns an EUNAVAILABLE *Error when Redis has a memory limit and would
// use more than 90% of it with the upload, counting the uploads taken
// since the last reading; otherwise the upload counts until Done, and nil
// is returned. Without a reading yet, it admits.
func (m *RedisMemory) Admit(size int64) error {
	c := m.charge(size)
	m.reading.Add(c)
	if m.over(0) {
		m.reading.Add(-c)
		m.refusedCharge.Store(c)
		m.refusing.Store(true)
		return errNearlyFull
	}
	return nil
}

// Done is told, for each upload Admit let in, the size it was admitted
// with and the bytes stored in Redis, 0 when it was not stored.
func (m *RedisMemory) Done(size, stored int64) {
	m.stored.Add(m.charge(stored)) // before it leaves reading: never uncounted
	m.reading.Add(-m.charge(size))
}

// charge is what an upload of size bytes counts for until a reading
// shows it: twice its size, since Redis holds it twice for a moment, as
// the stored value and as a copy in its connection's query buffer, which
// Redis trims 100–300 ms later. Nothing when uploads are not in Redis.
func (m *RedisMemory) charge(size int64) int64 {
	if !m.uploads {
		return 0
	}
	return 2 * size
}

// over says whether Redis has a limit and the last reading, with the
// uploads not in it and extra bytes, passes 90% of it. This replica
// cannot see the uploads the others took since their readings, so each
// of n replicas takes 1/n of the room left: its own uploads count n
// times.
func (m *RedisMemory) over(extra int64) bool {
	limit := m.limit.Load()
	// reading before stored: an upload that Done moves between them in
	// the meantime counts twice, never not at all.
	ahead := m.reading.Load() + m.stored.Load() - m.storedSeen.Load()
	return limit > 0 && float64(m.used.Load()+m.watchers.Load()*ahead+extra) > fullShare*float64(limit)
}

// Redis's memory as the watch last read it, for /metrics.
var (
	redisUsed = prometheus.NewDesc("yoloserve_redis_memory_used_bytes",
		"Redis's used_memory as the API last read it (four times a second).", nil, nil)
	redisLimit = prometheus.NewDesc("yoloserve_redis_memory_limit_bytes",
		"Redis's maxmemory as the API last read it; absent when Redis has no limit. Past 90% of it the API refuses uploads.", nil, nil)
	redisReadAt = prometheus.NewDesc("yoloserve_redis_memory_read_timestamp_seconds",
		"When the API sent the INFO memory of its last reading, in Unix time; it stands still while Redis does not answer, and is 0 until Redis first answers.", nil, nil)
	redisSharing = prometheus.NewDesc("yoloserve_redis_memory_sharing_replicas",
		"API replicas storing uploads in Redis, this one included, as the API last counted them: each takes its share of Redis's room between two readings. Absent when uploads are not stored in Redis.", nil, nil)
)

// Describe sends the descriptions of the watch's metrics.
func (m *RedisMemory) Describe(ch chan<- *prometheus.Desc) {
	ch <- redisUsed
	ch <- redisLimit
	ch <- redisReadAt
	ch <- redisSharing
}

// Collect sends Redis's memory as last read, and when: before the first
// read only its time, 0, so that an API that never reached Redis shows
// as one that has not for long; no limit when Redis has none, and no
// count of replicas when uploads are not stored in Redis.
func (m *RedisMemory) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(redisReadAt, prometheus.GaugeValue, float64(m.readAt.Load())/1e9)
	used, limit := m.used.Load(), m.limit.Load()
	if used == 0 {
		return
	}
	ch <- prometheus.MustNewConstMetric(redisUsed, prometheus.GaugeValue, float64(used))
	if limit > 0 {
		ch <- prometheus.MustNewConstMetric(redisLimit, prometheus.GaugeValue, float64(limit))
	}
	if m.uploads {
		ch <- prometheus.MustNewConstMetric(redisSharing, prometheus.GaugeValue, float64(m.watchers.Load()))
	}
}

// infoInt returns the integer field name of an INFO reply, 0 if absent.
func infoInt(info, name string) int64 {
	n, _ := strconv.ParseInt(infoField(info, name), 10, 64)
	return n
}

// infoField returns the field name of an INFO reply, "" if absent.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
