package e2e

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestIdleWorkerTakesTasksAtOnce: a task posted to an idle worker is taken
// when the API announces it, not at the worker's next poll: with a 10s
// poll, each of three tasks in a row ends within 5 s.
func TestIdleWorkerTakesTasksAtOnce(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 2, PollInterval: 10 * time.Second})
	img := testenv.ReadImage(t, "bus.jpg")
	for i := range 3 {
		start := time.Now()
		ti := h.result(h.submit(img, nil))
		took := time.Since(start)
		if ti.Status != detect.StatusSuccess || took > 5*time.Second {
			t.Errorf("task %d: %s after %v, want SUCCESS well before the 10s poll", i, ti.Status, took)
		}
		t.Logf("task %d: POST to result in %v", i, took.Round(time.Millisecond))
	}
}

// failOnce fails every image's first attempt with a fault of the runtime,
// which the worker retries.
type failOnce struct {
	d     asynq.Detector
	calls atomic.Int64
}

func (f *failOnce) Detect(ctx context.Context, data []byte, p detect.Params) (*detect.Result, error) {
	if f.calls.Add(1) == 1 {
		return nil, errors.New("injected transient fault")
	}
	return f.d.Detect(ctx, data, p)
}

// TestRetryTakenAtNextPoll: a retried task is not announced; an idle worker
// finds it at its next poll.
func TestRetryTakenAtNextPoll(t *testing.T) {
	h := newHarness(t, options{})
	f := &failOnce{d: detector(t)}
	h.startWorkerConfig(f, asynq.ServerConfig{Concurrency: 2, PollInterval: 200 * time.Millisecond})
	ti := h.result(h.submit(testenv.ReadImage(t, "bus.jpg"), nil))
	if ti.Status != detect.StatusSuccess || f.calls.Load() != 2 {
		t.Errorf("retried task: %s after %d attempts, want SUCCESS after 2", ti.Status, f.calls.Load())
	}
}

// TestIdleWorkerStopsAtOnce: a worker waiting for tasks stops without
// waiting out its poll.
func TestIdleWorkerStopsAtOnce(t *testing.T) {
	h := newHarness(t, options{})
	srv := h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 2, PollInterval: 10 * time.Second})
	if ti := h.result(h.submit(testenv.ReadImage(t, "zidane.jpg"), nil)); ti.Status != detect.StatusSuccess {
		t.Fatalf("task: %s %s", ti.Status, ti.Error)
	}
	start := time.Now()
	srv.Shutdown()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("an idle worker took %v to stop, want well under its 10s poll", took)
	}
}

// TestIdleWorkerQuiet: an idle worker does not poll Redis in a loop: over
// a second it runs few scripts (asynq's own upkeep runs some each second),
// where a dequeue that stopped waiting would run hundreds.
func TestIdleWorkerQuiet(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 2, PollInterval: 10 * time.Second})
	if ti := h.result(h.submit(testenv.ReadImage(t, "zidane.jpg"), nil)); ti.Status != detect.StatusSuccess {
		t.Fatalf("task: %s %s", ti.Status, ti.Error)
	}
	before := h.scriptCalls()
	time.Sleep(time.Second) // the window measured
	if n := h.scriptCalls() - before; n > 20 {
		t.Errorf("an idle worker ran %d scripts in a second, want a few", n)
	}
}

// TestTaskWakesOneIdleWorker: with four idle workers, a task wakes one of
// them, not all four: each task costs two dequeues (the one that takes it,
// and the one that finds the queue empty after it), where a wake-up for
// every idle worker would cost five.
func TestTaskWakesOneIdleWorker(t *testing.T) {
	h := newHarness(t, options{})
	d := detector(t)
	for range 4 {
		h.startWorkerConfig(d, asynq.ServerConfig{Concurrency: 1, PollInterval: 10 * time.Second})
	}
	img := testenv.ReadImage(t, "dog.jpg")
	if ti := h.result(h.submit(img, nil)); ti.Status != detect.StatusSuccess {
		t.Fatalf("task: %s %s", ti.Status, ti.Error)
	}
	const tasks = 10
	before := testenv.CommandCalls(h.t, h.rdb, "rpoplpush") // asynq's dequeue script moves a task with it
	for i := range tasks {
		if ti := h.result(h.submit(img, nil)); ti.Status != detect.StatusSuccess {
			t.Fatalf("task %d: %s %s", i, ti.Status, ti.Error)
		}
	}
	n := testenv.CommandCalls(h.t, h.rdb, "rpoplpush") - before
	if n > 3*tasks {
		t.Errorf("%d dequeues for %d tasks one at a time with four idle workers, want about 2 a task", n, tasks)
	}
	t.Logf("%d dequeues for %d tasks", n, tasks)
}

// scriptCalls returns how many scripts Redis has run.
func (h *harness) scriptCalls() int {
	h.t.Helper()
	return testenv.CommandCalls(h.t, h.rdb, "evalsha", "eval")
}
