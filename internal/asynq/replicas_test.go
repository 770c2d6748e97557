package asynq

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestEnqueueStopsWaitingForReplicasBehind: with ReplicaAcks, an upload
// waits for a replica to hold its task; with the replica down, the first
// upload's wait comes short and the ones after it do not wait at all
// (each would hold its upload slot for the wait), are still accepted and
// counted as unreplicated, and the log says so once. Once the replica is
// back, the probe sees it, the log says so once, and uploads wait for it
// again: the next task is on the replica when Enqueue returns. A Queue
// closed while the replica is behind stops its probe.
func TestEnqueueStopsWaitingForReplicasBehind(t *testing.T) {
	primary := testenv.StartRedis(t)
	if !primary.Restartable() {
		t.Skip("starts a replica of its own Redis, not of REDIS_URL's")
	}
	rdb := primary.Client()
	replica := testenv.StartRedis(t)
	replica.Stop() // until it is wanted, as a replica
	ctx := context.Background()

	var logs testenv.SyncBuffer
	const wait = 300 * time.Millisecond
	q := NewQueue(rdb, QueueConfig{Queue: "replicated", ReplicaAcks: 1, ReplicaWait: wait, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	closed := false
	t.Cleanup(func() {
		if !closed {
			q.Close()
		}
	})
	enqueue := func() string {
		t.Helper()
		id, err := q.Enqueue(ctx, detect.Job{Upload: "u"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if got, want := replicaMetrics(t, q), [2]float64{0, 0}; got != want {
		t.Errorf("before any upload: unreplicated tasks, replicas behind = %v, want %v", got, want)
	}

	// No replica: the first upload waits and comes short; the next nine
	// run no WAIT of their own (the probe runs at most one a second).
	enqueue()
	waits := testenv.CommandCalls(t, rdb, "wait")
	began := time.Now()
	for range 9 {
		enqueue()
	}
	probes := int(time.Since(began)/replicaProbeEvery) + 1
	if got := testenv.CommandCalls(t, rdb, "wait") - waits; got > probes {
		t.Errorf("9 uploads with the replica behind ran %d WAITs in %v, want at most the probe's %d: each upload still waits for the replica", got, time.Since(began), probes)
	}
	if n, err := rdb.LLen(ctx, pendingKey("replicated")).Result(); err != nil || n != 10 {
		t.Errorf("pending tasks %d (%v), want all 10 accepted", n, err)
	}
	if got, want := replicaMetrics(t, q), [2]float64{10, 1}; got != want {
		t.Errorf("with the replica down: unreplicated tasks, replicas behind = %v, want %v", got, want)
	}
	if n := strings.Count(logs.String(), "tasks do not reach REDIS_WAIT_REPLICAS replicas"); n != 1 {
		t.Errorf("the log says %d times that the replicas are behind, want once:\n%s", n, logs.String())
	}

	// The replica comes up: the probe sees it, and uploads wait again.
	_, port, _ := net.SplitHostPort(primary.Addr)
	replica.Start("--replicaof", "127.0.0.1", port)
	testenv.Eventually(t, 20*time.Second, "the probe never saw the replica catch up", func() bool {
		return strings.Contains(logs.String(), "tasks reach REDIS_WAIT_REPLICAS replicas again")
	})
	id := enqueue()
	if n, err := replica.Client().Exists(ctx, taskKey("replicated", id)).Result(); err != nil || n != 1 {
		t.Errorf("the task enqueued with the replica back is not on it when Enqueue returns: %d, %v", n, err)
	}
	if got, want := replicaMetrics(t, q), [2]float64{10, 0}; got != want {
		t.Errorf("with the replica back: unreplicated tasks, replicas behind = %v, want %v", got, want)
	}

	// Behind again, then closed: Close stops the probe and returns.
	replica.Stop()
	enqueue()
	if got, want := replicaMetrics(t, q), [2]float64{11, 1}; got != want {
		t.Errorf("with the replica down again: unreplicated tasks, replicas behind = %v, want %v", got, want)
	}
	done := make(chan struct{})
	go func() { q.Close(); close(done) }()
	closed = true
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10 s: the probe goes on")
	}
}

// replicaMetrics returns what q's /metrics say of its replicas:
// yoloserve_api_tasks_unreplicated_total and
// yoloserve_api_redis_replicas_behind.
func replicaMetrics(t *testing.T, q *Queue) [2]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(q)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got [2]float64
	for _, mf := range mfs {
		switch m := mf.GetMetric()[0]; mf.GetName() {
		case "yoloserve_api_tasks_unreplicated_total":
			got[0] = m.GetCounter().GetValue()
		case "yoloserve_api_redis_replicas_behind":
			got[1] = m.GetGauge().GetValue()
		}
	}
	return got
}
