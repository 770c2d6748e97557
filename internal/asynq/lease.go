package asynq

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"yoloserve/internal/detect"
)

// A worker holds each task it runs under a lease that it renews every 5 s
// to 30 s ahead (asynq's heartbeat). A worker that dies (killed, its node
// lost) or is cut off from Redis stops renewing, and its tasks must run
// elsewhere. asynq's own recoverer takes such a task back only once its
// lease ended 30 s before, and looks once a minute: a client whose task
// ran on a killed worker waited one to two minutes. Each worker now looks
// every few seconds, and takes a task back leaseGrace after its lease
// ended, as asynq's recoverer does it: retried (after the same back-off
// as a failed attempt) or, on its last attempt, failed.

// leaseGrace is how long past its end a lease must be before another
// worker takes its task back, so that the worker that held it, which
// gives up the task at the lease's end by its own clock, has done so. A
// live worker's lease always ends 25 s ahead or more, so that hosts whose
// clocks differ by up to 30 s take back no task that runs (each writes
// its leases' ends by its own clock).
const leaseGrace = 5 * time.Second

// defaultLeaseCheckInterval is how often a worker looks for leases that
// ended (ServerConfig.LeaseCheckInterval).
const defaultLeaseCheckInterval = 5 * time.Second

// leaseExpiredError is the error asynq records for a task whose lease
// ended, which state.go turns into the client's sentence.
var leaseExpiredError = asynq.ErrLeaseExpired.Error()

// recoveredTask is a task taken back from a worker whose lease ended.
type recoveredTask struct {
	ID     string
	Failed bool   // on its last attempt: archived, FAILURE
	Upload string // its upload's reference, "" when the payload has none
}

// recoverLeaseCmd takes task ARGV[1] (hash KEYS[1]) back from the worker
// whose lease on it ended: only while its lease (in KEYS[3]) ended by
// ARGV[6] and its message is still ARGV[2], it leaves the active list
// (KEYS[2]) for the sorted set KEYS[4] (retry or archived) at score
// ARGV[4], with message ARGV[3] and state ARGV[5], and counts as processed
// and failed in asynq's statistics (KEYS[5..8], the daily ones expiring
// at ARGV[7]) as asynq's recoverer counts it. A lease left without its
// active task is dropped. It returns 1 when it took the task.
var recoverLeaseCmd = redis.NewScript(`
local lease = tonumber(redis.call("ZSCORE", KEYS[3], ARGV[1]))
if lease == nil or lease > tonumber(ARGV[6]) then
	return 0
end
if redis.call("HGET", KEYS[1], "msg") ~= ARGV[2] then
	return 0
end
redis.call("ZREM", KEYS[3], ARGV[1])
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
	return 0
end
redis.call("ZADD", KEYS[4], ARGV[4], ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", ARGV[5])
for i = 5, 6 do
	if redis.call("INCR", KEYS[i]) == 1 then
		redis.call("EXPIREAT", KEYS[i], ARGV[7])
	end
end
for i = 7, 8 do
	if tonumber(redis.call("GET", KEYS[i])) == tonumber(ARGV[8]) then
		redis.call("SET", KEYS[i], 1)
	else
		redis.call("INCR", KEYS[i])
	end
end
return 1`)

// asynqStatsTTL is how long asynq keeps its daily statistics.
const asynqStatsTTL = 90 * 24 * time.Hour

// recoverExpiredLeases takes back the tasks of queue whose lease ended
// more than leaseGrace before now: retried after delay(attempts failed
// before), or failed on their last attempt. A task Redis lost (no
// message) is left to the janitor (ReapLostTasks). It returns the tasks
// it took, and the first Redis error or undecodable message it met; the
// tasks it could not take are looked at again next time.
func recoverExpiredLeases(ctx context.Context, rdb redis.UniversalClient, queue string, now time.Time, delay func(int) time.Duration) ([]recoveredTask, error) {
	cutoff := now.Add(-leaseGrace).Unix()
	ids, err := rdb.ZRangeByScore(ctx, leaseKey(queue), &redis.ZRangeBy{Min: "-inf", Max: fmt.Sprint(cutoff)}).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	msgs := make([]*redis.StringCmd, len(ids))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			msgs[i] = p.HGet(ctx, taskKey(queue, id), "msg")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var took []recoveredTask
	var first error
	for i, id := range ids {
		old, err := msgs[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue // lost by Redis: the janitor's
		case err != nil:
			first = cmp.Or(first, err)
			continue
		}
		t, err := takeBack(ctx, rdb, queue, id, old, now, cutoff, delay)
		switch {
		case err != nil:
			first = cmp.Or(first, err)
		case t != nil:
			took = append(took, *t)
		}
	}
	return took, first
}

// takeBack takes task id, whose message is old, back from the worker
// whose lease ended by cutoff. It returns nil and no error when the task
// changed meanwhile (its worker renewed the lease or ended it, or another
// worker took it back first).
func takeBack(ctx context.Context, rdb redis.UniversalClient, queue, id, old string, now time.Time, cutoff int64, delay func(int) time.Duration) (*recoveredTask, error) {
	msg, m, err := leaseExpiredMessage([]byte(old), now)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	set, state, score := retryKey(queue), "retry", now.Add(delay(int(m.retried))).Unix()
	if m.final {
		set, state, score = archivedKey(queue), "archived", now.Unix()
	}
	day := now.UTC().Format("2006-01-02")
	prefix := "asynq:{" + queue + "}:"
	n, err := recoverLeaseCmd.Run(ctx, rdb,
		[]string{taskKey(queue, id), activeKey(queue), leaseKey(queue), set,
			prefix + "processed:" + day, prefix + "failed:" + day, prefix + "processed", prefix + "failed"},
		id, old, msg, score, state, cutoff, now.Add(asynqStatsTTL).Unix(), int64(math.MaxInt64)).Int()
	if err != nil || n == 0 {
		return nil, err
	}
	var job detect.Job
	_ = json.Unmarshal(m.payload, &job) // a malformed payload has no upload to delete
	return &recoveredTask{ID: id, Failed: m.final, Upload: job.Upload}, nil
}

// recoverLeases takes back the tasks whose worker stopped renewing their
// lease, deletes the uploads of those that failed and tells their waiting
// clients, counts them and logs a warning. What it cannot do now (Redis
// down) it does at its next look, and asynq's recoverer does still later.
func (s *Server) recoverLeases(ctx context.Context) {
	took, err := recoverExpiredLeases(ctx, s.rdb, s.queue, time.Now(), func(n int) time.Duration { return retryDelay(n, nil, nil) })
	if err != nil && ctx.Err() == nil {
		s.log.Debug("taking back tasks whose lease ended", "error", err)
	}
	if len(took) == 0 {
		return
	}
	ids := make([]string, 0, min(len(took), 10))
	failed := 0
	for _, t := range took {
		if len(ids) < cap(ids) {
			ids = append(ids, t.ID)
		}
		if !t.Failed {
			s.metrics.recovered.WithLabelValues("retry").Inc()
			continue
		}
		failed++
		s.metrics.recovered.WithLabelValues("failure").Inc()
		s.ended(ctx, t.ID, t.Upload, true)
	}
	s.log.Warn("took back tasks from a worker that stopped renewing their lease (killed, frozen, or cut off from Redis): they run again, or fail on their last attempt",
		"retried", len(took)-failed, "failed", failed, "ids", ids)
}

// Field numbers of asynq's encoded task message (TaskMessage in its
// internal/proto/asynq.proto), which the recovery rewrites as asynq's own
// recoverer does.
const (
	fieldPayload      protowire.Number = 2
	fieldRetry        protowire.Number = 5
	fieldRetried      protowire.Number = 6
	fieldErrorMsg     protowire.Number = 7
	fieldLastFailedAt protowire.Number = 11
)

// leasedMessage is what the recovery reads of a task's message.
type leasedMessage struct {
	retry, retried uint64
	payload        []byte
	final          bool // no retry left: the task fails
}

// leaseExpiredMessage returns asynq's task message msg as asynq's
// recoverer rewrites it for a task whose lease ended at now: the error
// "task lease expired" and its time, and one more failed attempt unless
// it was the last, and what it read of it. It returns an error for a
// message it cannot decode; every other field is kept as it was.
func leaseExpiredMessage(msg []byte, now time.Time) ([]byte, leasedMessage, error) {
	var m leasedMessage
	out := make([]byte, 0, len(msg)+len(leaseExpiredError)+16)
	for b := msg; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, m, fmt.Errorf("decoding the task message: %w", protowire.ParseError(n))
		}
		l := protowire.ConsumeFieldValue(num, typ, b[n:])
		if l < 0 {
			return nil, m, fmt.Errorf("decoding the task message: %w", protowire.ParseError(l))
		}
		field, value := b[:n+l], b[n:n+l]
		b = b[n+l:]
		switch {
		case num == fieldRetry && typ == protowire.VarintType:
			m.retry, _ = protowire.ConsumeVarint(value)
		case num == fieldRetried && typ == protowire.VarintType:
			m.retried, _ = protowire.ConsumeVarint(value)
			continue // written below
		case num == fieldPayload && typ == protowire.BytesType:
			m.payload, _ = protowire.ConsumeBytes(value)
		case num == fieldErrorMsg, num == fieldLastFailedAt:
			continue // written below
		}
		out = append(out, field...)
	}
	m.final = m.retried >= m.retry
	retried := m.retried
	if !m.final {
		retried++
	}
	out = protowire.AppendTag(out, fieldRetried, protowire.VarintType)
	out = protowire.AppendVarint(out, retried)
	out = protowire.AppendTag(out, fieldErrorMsg, protowire.BytesType)
	out = protowire.AppendString(out, leaseExpiredError)
	out = protowire.AppendTag(out, fieldLastFailedAt, protowire.VarintType)
	out = protowire.AppendVarint(out, uint64(now.Unix()))
	return out, m, nil
}

// archivedKey is asynq's sorted set of failed tasks.
func archivedKey(queue string) string { return "asynq:{" + queue + "}:archived" }
