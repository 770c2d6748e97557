package asynq

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestLostTaskReadsFailure drops a waiting task's hash, as an evicting
// Redis does, and lets a real asynq server dequeue it: asynq leaves an
// "active" hash without a message that no worker can run. Its state must
// read FAILURE at once (it read STARTED for good), and once its lease has
// ended the janitor must count it, take it out of the active list and
// lease set and let it expire. A task Redis lost while a worker runs it
// (its lease renewed) is left to that worker, and not counted.
func TestLostTaskReadsFailure(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	ctx := context.Background()
	const queue = "lost"
	q := NewQueue(rdb, QueueConfig{Queue: queue})
	t.Cleanup(func() { q.Close() })

	held, err := q.Enqueue(ctx, detect.Job{Upload: "held"})
	if err != nil {
		t.Fatal(err)
	}
	lost, err := q.Enqueue(ctx, detect.Job{Upload: "lost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, taskKey(queue, lost)).Err(); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	startPlainServer(t, rdb, queue, 2, func(_ context.Context, _ detect.Job, task *asynq.Task) error {
		<-release
		task.ResultWriter().Write([]byte(`{"done":true}`))
		return nil
	})
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})

	testenv.Eventually(t, 10*time.Second, "both tasks dequeued", func() bool {
		ids, _ := rdb.LRange(ctx, activeKey(queue), 0, -1).Result()
		return len(ids) == 2
	})
	want := detect.TaskInfo{ID: lost, Status: detect.StatusFailure,
		Error: "The task was lost: Redis dropped its data before a worker could run it; submit it again."}
	got, err := q.Task(ctx, lost)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lost task (-want +got):\n%s", diff)
	}
	if got, err := q.Task(ctx, held); err != nil || got.Status != detect.StatusStarted {
		t.Errorf("running task: %+v, %v; want STARTED", got, err)
	}
	// A wait ends at once: the failure is final.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if got, err := q.Wait(wctx, lost); err != nil || wctx.Err() != nil {
		t.Errorf("wait on the lost task: %+v, %v, context %v", got, err, wctx.Err())
	}

	// Redis loses the running task's hash too; its lease is still renewed.
	if err := rdb.Del(ctx, taskKey(queue, held)).Err(); err != nil {
		t.Fatal(err)
	}
	const ttl = time.Hour
	if early, err := ReapLostTasks(ctx, rdb, queue, ttl); err != nil || len(early) != 0 {
		t.Errorf("a reap while both leases run: %v, %v; want none", early, err)
	}
	// The lost task's lease ends 30s after its dequeue, as nothing renews
	// it; end it now.
	if err := rdb.ZAddXX(ctx, leaseKey(queue), redis.Z{Member: lost, Score: float64(time.Now().Add(-time.Second).Unix())}).Err(); err != nil {
		t.Fatal(err)
	}
	counted := prometheus.NewCounter(prometheus.CounterOpts{Name: "lost"})
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	go RunJanitor(jctx, rdb, JanitorConfig{Queue: queue, TTL: ttl, Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), Lost: counted})
	testenv.Eventually(t, 10*time.Second, "the janitor never counted the lost task", func() bool {
		return testutil.ToFloat64(counted) == 1
	})
	if ids, _ := rdb.LRange(ctx, activeKey(queue), 0, -1).Result(); !cmp.Equal(ids, []string{held}) {
		t.Errorf("active list after reaping: %v, want only the running task %s", ids, held)
	}
	if ids, _ := rdb.ZRange(ctx, leaseKey(queue), 0, -1).Result(); !cmp.Equal(ids, []string{held}) {
		t.Errorf("leases after reaping: %v, want only the running task's %s", ids, held)
	}
	if left, _ := rdb.TTL(ctx, taskKey(queue, lost)).Result(); left <= 0 || left > ttl {
		t.Errorf("lost task's hash lives %v, want up to %v", left, ttl)
	}
	if got, _ := q.Task(ctx, lost); got.Status != detect.StatusFailure {
		t.Errorf("lost task after reaping: %s, want FAILURE", got.Status)
	}
	if again, err := ReapLostTasks(ctx, rdb, queue, ttl); err != nil || len(again) != 0 {
		t.Errorf("a reap after the janitor's: %v, %v; want none", again, err)
	}
	if n := testutil.ToFloat64(counted); n != 1 {
		t.Errorf("the janitor counted %v lost tasks, want 1", n)
	}

	released = true
	close(release)
	testenv.Eventually(t, 10*time.Second, "the running task succeeds", func() bool {
		got, err := q.Task(ctx, held)
		return err == nil && got.Status == detect.StatusSuccess
	})
}
