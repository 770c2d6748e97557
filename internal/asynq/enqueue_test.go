package asynq

import (
	"bytes"
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestEnqueueIsOneStep: on a real Redis, an upload's enqueue is one Redis
// command that writes what asynq's own client writes for the same task,
// with a wake-up token beside it; past MaxQueue it refuses, writing
// nothing, and says how many tasks wait.
func TestEnqueueIsOneStep(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	qrdb, counter := countedClient(rs)
	ctx := context.Background()
	const queue, max = "one-step", 3
	q := NewQueue(qrdb, QueueConfig{Queue: queue, MaxQueue: max, Retries: 2, Timeout: 7 * time.Second, ResultTTL: time.Minute})
	t.Cleanup(func() { q.Close() })

	// The first enqueue of a process also registers the queue and loads
	// the script; the next ones are one command each.
	var ids []string
	for i := range max {
		before := counter.n.Load()
		id, err := q.Enqueue(ctx, detect.Job{Upload: "u" + string(rune('0'+i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if n := counter.n.Load() - before; i > 0 && n != 1 {
			t.Errorf("enqueue %d: %d Redis commands, want 1", i, n)
		}
	}
	if n, err := rdb.LLen(ctx, tokensKey(queue)).Result(); err != nil || n != max {
		t.Errorf("wake-up tokens: %d (%v), want %d", n, err, max)
	}

	// asynq's own client, with the same options, on a queue of its own.
	plain, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask(TaskType, []byte(`{"upload":"u0"}`)),
		asynq.Queue(queue+"-plain"), asynq.MaxRetry(2), asynq.Timeout(7*time.Second), asynq.Retention(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	fields := func(queue, id string) []string {
		t.Helper()
		h, err := rdb.HGetAll(ctx, taskKey(queue, id)).Result()
		if err != nil {
			t.Fatal(err)
		}
		var f []string
		for k, v := range h {
			if k == "state" {
				k += "=" + v
			}
			f = append(f, k)
		}
		sort.Strings(f)
		return f
	}
	if diff := cmp.Diff(fields(queue+"-plain", plain.ID), fields(queue, ids[0])); diff != "" {
		t.Errorf("the task's hash against asynq's own enqueue (-want +got):\n%s", diff)
	}
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	got, err := inspector.GetTaskInfo(queue, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.State != asynq.TaskStatePending || got.Type != TaskType || got.MaxRetry != 2 || got.Timeout != 7*time.Second || got.Retention != time.Minute {
		t.Errorf("asynq reads the task as %s %s, %d retries, timeout %v, retention %v; want pending %s, 2, 7s, 1m",
			got.State, got.Type, got.MaxRetry, got.Timeout, got.Retention, TaskType)
	}
	pending, err := rdb.LRange(ctx, pendingKey(queue), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{ids[2], ids[1], ids[0]}, pending); diff != "" {
		t.Errorf("pending list (-want +got):\n%s", diff)
	}

	before := counter.n.Load()
	_, err = q.Enqueue(ctx, detect.Job{Upload: "one too many"})
	if detect.ErrorCode(err) != detect.EUNAVAILABLE || detect.ErrorReason(err) != detect.ReasonQueueFull ||
		!strings.Contains(detect.ErrorMessage(err), "(3 images waiting)") {
		t.Errorf("enqueue past MaxQueue: %v, want EUNAVAILABLE queue_full with 3 images waiting", err)
	}
	if n := counter.n.Load() - before; n != 1 {
		t.Errorf("refused enqueue: %d Redis commands, want 1", n)
	}
	keys, err := rdb.Keys(ctx, "asynq:{"+queue+"}:t:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != max {
		t.Errorf("%d task hashes after the refusal, want %d", len(keys), max)
	}
	if n, err := rdb.LLen(ctx, tokensKey(queue)).Result(); err != nil || n != max {
		t.Errorf("wake-up tokens after the refusal: %d (%v), want %d", n, err, max)
	}
}

// TestEnqueueLimitHolds: uploads enqueued at once never take the queue
// past MaxQueue, since the check and the enqueue are one step.
func TestEnqueueLimitHolds(t *testing.T) {
	rs := testenv.StartRedis(t)
	const queue, max, uploads = "limit", 5, 40
	q := NewQueue(rs.Client(), QueueConfig{Queue: queue, MaxQueue: max})
	t.Cleanup(func() { q.Close() })
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		accepted, refused int
		others            []error
		start             = make(chan struct{})
		ctx               = context.Background()
	)
	for range uploads {
		wg.Go(func() {
			<-start
			_, err := q.Enqueue(ctx, detect.Job{Upload: "u"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case detect.ErrorReason(err) == detect.ReasonQueueFull:
				refused++
			default:
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if accepted != max || refused != uploads-max || len(others) > 0 {
		t.Errorf("%d accepted, %d refused as full, other errors %v; want %d and %d", accepted, refused, others, max, uploads-max)
	}
	if n, err := q.Pending(ctx); err != nil || n != max {
		t.Errorf("pending: %d (%v), want %d", n, err, max)
	}
}

// TestEnqueueWithoutTheScript: should asynq enqueue without the script
// this package knows, the task is still enqueued and an idle worker
// still woken, and the log says once what is missing.
func TestEnqueueWithoutTheScript(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	var logs bytes.Buffer
	const queue = "unfolded"
	q := NewQueue(rdb, QueueConfig{Queue: queue, MaxQueue: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() { q.Close() })
	q.client = asynq.NewClientFromRedisClient(rdb) // asynq's enqueue as it comes
	ctx := context.Background()
	for range 2 {
		if _, err := q.Enqueue(ctx, detect.Job{Upload: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	// The queue is at MaxQueue: the check of its own refuses the third.
	_, err := q.Enqueue(ctx, detect.Job{Upload: "u"})
	if detect.ErrorCode(err) != detect.EUNAVAILABLE || detect.ErrorReason(err) != detect.ReasonQueueFull ||
		!strings.Contains(detect.ErrorMessage(err), "(2 images waiting)") {
		t.Errorf("third enqueue: %v, want EUNAVAILABLE queue_full with (2 images waiting)", err)
	}
	if n, err := q.Pending(ctx); err != nil || n != 2 {
		t.Errorf("pending: %d (%v), want 2", n, err)
	}
	if n, err := rdb.LLen(ctx, tokensKey(queue)).Result(); err != nil || n != 2 {
		t.Errorf("wake-up tokens: %d (%v), want 2", n, err)
	}
	if n := strings.Count(logs.String(), "without the script this service knows"); n != 1 {
		t.Errorf("%d log lines about the missing script, want 1:\n%s", n, logs.String())
	}
}
