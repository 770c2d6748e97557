package asynq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestTaskReadsEveryState puts real tasks in each state asynq gives them,
// through an asynq server on a real Redis, and checks that Task, which
// reads most states from the task's hash, answers what asynq's inspector
// makes of the same task.
func TestTaskReadsEveryState(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	// The queues get a client of their own, whose commands are counted.
	qrdb, counter := countedClient(rs)
	ctx := context.Background()
	const queue = "states"
	q := NewQueue(qrdb, QueueConfig{Queue: queue, Retries: 1})
	t.Cleanup(func() { q.Close() })

	// The handler's behaviour is the job's upload reference.
	release := make(chan struct{})
	startPlainServer(t, rdb, queue, 4, func(ctx context.Context, job detect.Job, task *asynq.Task) error {
		switch job.Upload {
		case "fail":
			return errors.New("The image is bad.")
		case "fail for good":
			return fmt.Errorf("The image is worse: %w", asynq.SkipRetry)
		case "hold", "hold with result":
			if job.Upload == "hold with result" {
				task.ResultWriter().Write([]byte(`{"held":true}`))
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
		task.ResultWriter().Write([]byte(`{"done":true}`))
		return nil
	})
	t.Cleanup(func() { close(release) })

	ids := map[string]string{}
	for _, name := range []string{"done", "fail", "fail for good", "hold", "hold with result"} {
		id, err := q.Enqueue(ctx, detect.Job{Upload: name})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	// A pending task: enqueued where no server listens; a scheduled one:
	// due in an hour.
	idle := NewQueue(qrdb, QueueConfig{Queue: queue + "-idle"})
	t.Cleanup(func() { idle.Close() })
	pending, err := idle.Enqueue(ctx, detect.Job{Upload: "done"})
	if err != nil {
		t.Fatal(err)
	}
	later, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask(TaskType, []byte(`{}`)),
		asynq.Queue(queue+"-idle"), asynq.ProcessIn(time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	inspector := asynq.NewInspectorFromRedisClient(rdb)
	for _, tc := range []struct {
		queue, id string
		state     asynq.TaskState
		want      detect.Status
	}{
		{queue + "-idle", pending, asynq.TaskStatePending, detect.StatusPending},
		{queue + "-idle", later.ID, asynq.TaskStateScheduled, detect.StatusPending},
		{queue, ids["hold"], asynq.TaskStateActive, detect.StatusStarted},
		{queue, ids["hold with result"], asynq.TaskStateActive, detect.StatusSuccess},
		{queue, ids["done"], asynq.TaskStateCompleted, detect.StatusSuccess},
		{queue, ids["fail"], asynq.TaskStateRetry, detect.StatusRetry},
		{queue, ids["fail for good"], asynq.TaskStateArchived, detect.StatusFailure},
	} {
		var info *asynq.TaskInfo
		testenv.Eventually(t, 10*time.Second, tc.state.String()+" state", func() bool {
			info, err = inspector.GetTaskInfo(tc.queue, tc.id)
			if tc.state == asynq.TaskStateActive && tc.want == detect.StatusSuccess {
				return err == nil && info.State == tc.state && len(info.Result) > 0
			}
			return err == nil && info.State == tc.state
		})
		reader := q
		if tc.queue != queue {
			reader = idle
		}
		before := counter.n.Load()
		got, err := reader.Task(ctx, tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.state, err)
		}
		// A failure needs the inspector (two round trips); the others one.
		if n, want := counter.n.Load()-before, int64(1); tc.want != detect.StatusFailure && n != want {
			t.Errorf("%s: %d Redis commands, want %d", tc.state, n, want)
		}
		if got.Status != tc.want {
			t.Errorf("%s: status %s, want %s", tc.state, got.Status, tc.want)
		}
		if diff := cmp.Diff(taskInfo(info), got); diff != "" {
			t.Errorf("%s: Task against the inspector (-want +got):\n%s", tc.state, diff)
		}
	}

	if _, err := q.Task(ctx, "no-such-task"); detect.ErrorCode(err) != detect.ENOTFOUND {
		t.Errorf("unknown id: %v, want ENOTFOUND", err)
	}
}

// countedClient returns a new client of rs and the count of the commands
// it sends.
func countedClient(rs *testenv.RedisServer) (*redis.Client, *commandCounter) {
	counter := &commandCounter{}
	rdb := rs.Client()
	rdb.AddHook(counter)
	return rdb, counter
}

// commandCounter counts the commands a go-redis client sends.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestWaitAnswersStateAtDeadline checks that a wait whose time is up
// answers the task's state, not an error: the state is read after the
// wait's deadline when the once-a-second look races it, or when the
// deadline has passed before the wait begins.
func TestWaitAnswersStateAtDeadline(t *testing.T) {
	rs := testenv.StartRedis(t)
	q := NewQueue(rs.Client(), QueueConfig{Queue: "waits"})
	t.Cleanup(func() { q.Close() })
	id, err := q.Enqueue(context.Background(), detect.Job{Upload: "nobody takes it"})
	if err != nil {
		t.Fatal(err)
	}
	want := detect.TaskInfo{ID: id, Status: detect.StatusPending}
	for _, d := range []time.Duration{-time.Second, 0, time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		got, err := q.Wait(ctx, id)
		cancel()
		if err != nil {
			t.Errorf("wait of %v: %v", d, err)
		} else if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("wait of %v (-want +got):\n%s", d, diff)
		}
	}
}

// TestWaitRidesOutOutage: a wait that begins while Redis is down answers
// the task's end once Redis is back and a worker has run it, though the
// service's go-redis client, after a burst of failed dials, refuses to
// dial for up to a second more; a wait whose time runs out first answers
// that the queue is unavailable, when its time is up.
func TestWaitRidesOutOutage(t *testing.T) {
	rs := testenv.StartRedis(t)
	rs.RestartDurable() // the task outlives the restart
	rdb, err := NewClient(rs.URL, TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	var sent commandCounter
	rdb.AddHook(&sent)
	q := NewQueue(rdb, QueueConfig{Queue: "outage"})
	t.Cleanup(func() { q.Close() })
	ctx := context.Background()
	id, err := q.Enqueue(ctx, detect.Job{Upload: "nobody takes it"})
	if err != nil {
		t.Fatal(err)
	}

	rs.Stop()
	// A burst of requests fails to dial, more than the pool's size.
	var burst sync.WaitGroup
	for range 64 {
		burst.Go(func() { rdb.Ping(ctx) })
	}
	burst.Wait()

	const short = 500 * time.Millisecond
	wctx, cancel := context.WithTimeout(ctx, short)
	start := time.Now()
	_, err = q.Wait(wctx, id)
	cancel()
	if took := time.Since(start); detect.ErrorCode(err) != detect.EUNAVAILABLE || took < short {
		t.Errorf("wait of %v with Redis down: %v after %v, want EUNAVAILABLE when its time is up", short, err, took)
	}

	type answer struct {
		ti  detect.TaskInfo
		err error
	}
	answered := make(chan answer, 1)
	before := sent.n.Load()
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		ti, err := q.Wait(wctx, id)
		answered <- answer{ti, err}
	}()
	testenv.Eventually(t, 10*time.Second, "the wait sent no read", func() bool { return sent.n.Load() > before })
	rs.StartDurable()
	back := time.Now()
	startPlainServer(t, rs.Client(), "outage", 1, func(_ context.Context, _ detect.Job, task *asynq.Task) error {
		_, err := task.ResultWriter().Write([]byte(`{"detections":[]}`))
		return err
	})
	got := <-answered
	if got.err != nil || got.ti.Status != detect.StatusSuccess {
		t.Fatalf("wait across the outage: %+v, %v; want SUCCESS", got.ti, got.err)
	}
	t.Logf("answered SUCCESS %v after Redis came back", time.Since(back).Round(time.Millisecond))
}

// TestDepthCollector: the queue's depth by state, as asynq holds it in
// Redis, with a task running, one waiting for its retry and two pending,
// and the workers that announce themselves on it, stale ones left out;
// with Redis down, no sample and the scrape goes on.
func TestDepthCollector(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	ctx := context.Background()
	const queue = "depth"
	q := NewQueue(rdb, QueueConfig{Queue: queue, Retries: 1})
	t.Cleanup(func() { q.Close() })
	release := make(chan struct{})
	var held atomic.Bool
	startPlainServer(t, rdb, queue, 1, func(ctx context.Context, job detect.Job, _ *asynq.Task) error {
		if job.Upload == "fail" {
			return errors.New("a transient fault")
		}
		held.Store(true)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	t.Cleanup(func() { close(release) })
	for _, name := range []string{"fail", "hold", "wait", "wait"} {
		if _, err := q.Enqueue(ctx, detect.Job{Upload: name}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "the second task never ran", held.Load)
	for range 2 {
		a := startAnnouncer(rdb, queue, detect.Model{Name: "yolov8n"}, time.Hour, slog.New(slog.DiscardHandler))
		t.Cleanup(a.stop)
	}
	if err := rdb.ZAdd(ctx, modelsKey(queue), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "stale"}).Err(); err != nil {
		t.Fatal(err)
	}

	c := NewDepthCollector(rdb, queue)
	want := `
# HELP yoloserve_queue_tasks Tasks in the queue by state, read from Redis at each scrape: pending (waiting for a worker), active (held by a worker: running, or taken ahead), retry (waiting to run again after a transient fault). Every API replica reports the same queue.
# TYPE yoloserve_queue_tasks gauge
yoloserve_queue_tasks{queue="depth",state="active"} 1
yoloserve_queue_tasks{queue="depth",state="pending"} 2
yoloserve_queue_tasks{queue="depth",state="retry"} 1
# HELP yoloserve_queue_workers Workers serving the queue: those that said what model they serve in the last 30 s (GET /models), read from Redis at each scrape. Tasks pending while it reads 0 wait for a worker to start.
# TYPE yoloserve_queue_workers gauge
yoloserve_queue_workers{queue="depth"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	down := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), MaxRetries: -1})
	t.Cleanup(func() { down.Close() })
	start := time.Now()
	if n := testutil.CollectAndCount(NewDepthCollector(down, queue)); n != 0 {
		t.Errorf("with Redis down: %d samples, want none", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("with Redis down the scrape took %v", d)
	}
}

// startPlainServer runs a bare asynq server (none of this package's
// handling) on rdb with concurrency slots on queue, whose handler calls
// handle with the task's job and whose retries wait an hour, and shuts it
// down when the test ends.
func startPlainServer(t *testing.T, rdb redis.UniversalClient, queue string, concurrency int, handle func(context.Context, detect.Job, *asynq.Task) error) {
	t.Helper()
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: concurrency, Queues: map[string]int{queue: 1}, Logger: asynqLogger{l: slog.New(slog.DiscardHandler)},
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
	})
	err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		var job detect.Job
		json.Unmarshal(task.Payload(), &job)
		return handle(ctx, job, task)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
}
