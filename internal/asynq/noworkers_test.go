package asynq

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestWarnIfNoWorkers: tasks that wait with no worker serving their queue
// get a warning, once, after the time allowed; a worker that comes says
// so. An empty queue with no worker, a worker's start, is not warned of.
func TestWarnIfNoWorkers(t *testing.T) {
	rdb := testenv.StartRedis(t).Client()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	watch := func(queue string) *testenv.SyncBuffer {
		var logs testenv.SyncBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		go WarnIfNoWorkers(ctx, rdb, queue, 10*time.Millisecond, 100*time.Millisecond, log)
		return &logs
	}
	q := NewQueue(rdb, QueueConfig{Queue: "waiting"})
	t.Cleanup(func() { q.Close() })
	if _, err := q.Enqueue(ctx, detect.Job{Upload: "x"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waiting, empty := watch("waiting"), watch("empty")
	const warning = "tasks wait in the queue and no worker serves it"
	testenv.Eventually(t, 5*time.Second, "no warning of the task waiting with no worker", func() bool {
		return strings.Contains(waiting.String(), warning)
	})
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("warned %v after the watch began, before the 100 ms allowed", d)
	}
	if out := waiting.String(); !strings.Contains(out, `queue=waiting pending=1`) {
		t.Errorf("warning, want the queue and the pending count:\n%s", out)
	}
	if out := empty.String(); out != "" {
		t.Errorf("an empty queue with no worker was warned of:\n%s", out)
	}

	a := startAnnouncer(rdb, "waiting", detect.Model{Name: "yolov8n"}, time.Hour, slog.New(slog.DiscardHandler))
	t.Cleanup(a.stop)
	testenv.Eventually(t, 5*time.Second, "no word that a worker came", func() bool {
		return strings.Contains(waiting.String(), "a worker serves the queue again")
	})
	if n := strings.Count(waiting.String(), warning); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, waiting.String())
	}
}
