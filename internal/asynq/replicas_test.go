package asynq

import (
	"context"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// TestReplicasFallingBehindAgainMustKeepUpLonger: replicas that fall
// behind again soon after catching up (slow, not down) must keep up for
// twice as many probes as the last time before uploads wait for them
// again, at most a minute's worth, so that an API does not stall an
// upload and log twice at every probe; after they kept up for the
// relapse window, one probe is enough again.
func TestReplicasFallingBehindAgainMustKeepUpLonger(t *testing.T) {
	primary := testenv.StartRedis(t)
	if !primary.Restartable() {
		t.Skip("starts a replica of its own Redis, not of REDIS_URL's")
	}
	_, port, _ := net.SplitHostPort(primary.Addr)
	// A replica detached and attached again syncs in full; by default
	// the primary waits 5 s for more replicas before it sends the data.
	if err := primary.Client().ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	replica := testenv.StartRedis(t)
	replica.Stop()
	replica.Start("--replicaof", "127.0.0.1", port)
	rc := replica.Client()
	ctx := context.Background()

	var logs testenv.SyncBuffer
	q := NewQueue(primary.Client(), QueueConfig{Queue: "relapse", ReplicaAcks: 1, ReplicaWait: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() { q.Close() })
	const every = 25 * time.Millisecond // the relapse window and the longest hold are then 1.5 s
	q.replicas.every = every
	testenv.Eventually(t, 20*time.Second, "the replica never synced", func() bool {
		n, err := q.waitReplicas(ctx)
		return err == nil && n == 1
	})

	// fallBehind detaches the replica, lets an upload's wait come short,
	// attaches the replica again and returns how long uploads then took
	// to wait for it again.
	fallBehind := func() time.Duration {
		t.Helper()
		if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, detect.Job{Upload: "u"}); err != nil {
			t.Fatal(err)
		}
		if got := replicaMetrics(t, q)[1]; got != 1 {
			t.Fatalf("with the replica detached, yoloserve_api_redis_replicas_behind = %v, want 1", got)
		}
		if err := rc.Do(ctx, "REPLICAOF", "127.0.0.1", port).Err(); err != nil {
			t.Fatal(err)
		}
		attached := time.Now()
		testenv.Eventually(t, 20*time.Second, "uploads never waited for the replica again", func() bool {
			return !q.replicas.behind.Load()
		})
		return time.Since(attached)
	}
	holds := []int{1, 2, 4, 8, 16, 32, replicaHoldProbes}
	for _, hold := range holds {
		took, least := fallBehind(), time.Duration(hold-1)*every
		if took < least {
			t.Errorf("replicas behind for the %d. time in a row: uploads waited for them again %v after they were back, want at least %v (%d probes)", hold, took, least, hold)
		}
	}
	// Kept up for the relapse window: one probe is enough again.
	time.Sleep(replicaRelapseProbes * every)
	fallBehind()

	var want []string
	for _, hold := range append(holds, 1) {
		want = append(want, (time.Duration(hold) * every).String())
	}
	keepUp := regexp.MustCompile(`keep_up_for=(\S+)`).FindAllStringSubmatch(logs.String(), -1)
	keptUp := regexp.MustCompile(`kept_up_for=(\S+)`).FindAllStringSubmatch(logs.String(), -1)
	for _, got := range [][][]string{keepUp, keptUp} {
		var held []string
		for _, m := range got {
			held = append(held, m[1])
		}
		if diff := cmp.Diff(want, held); diff != "" {
			t.Errorf("how long the replicas had to keep up, as logged at each change (-want +got):\n%s\n%s", diff, logs.String())
		}
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
