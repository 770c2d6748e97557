package asynq

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestRecoverExpiredLeases: a real asynq server takes three tasks, and is
// then cut off from Redis, so that it renews their leases no more. Their
// leases are moved into the past, as 30 s would. A task whose lease
// ended leaseGrace ago or more is taken back as asynq's recoverer would
// (which asynq's inspector reads back from the rewritten message):
// retried with one more failed attempt, or failed on its last attempt,
// with the sentence its client reads. A lease that ended moments ago is
// left to its worker.
func TestRecoverExpiredLeases(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	proxy := testenv.StartProxy(t, rs.Addr)
	cutOff := proxy.Client(t, 50*time.Millisecond)
	ctx := context.Background()
	const queue = "leases"
	again := NewQueue(rdb, QueueConfig{Queue: queue, Retries: 2})
	t.Cleanup(func() { again.Close() })
	last := NewQueue(rdb, QueueConfig{Queue: queue}) // no retry
	t.Cleanup(func() { last.Close() })
	ids := map[string]string{}
	for upload, q := range map[string]*Queue{"again": again, "last": last, "recent": again} {
		id, err := q.Enqueue(ctx, detect.Job{Upload: upload})
		if err != nil {
			t.Fatal(err)
		}
		ids[upload] = id
	}
	end := make(chan struct{})
	startPlainServer(t, cutOff, queue, 3, func(context.Context, detect.Job, *asynq.Task) error {
		<-end
		return errors.New("ended")
	})
	t.Cleanup(func() { // before the server's shutdown
		proxy.Heal()
		close(end)
	})
	testenv.Eventually(t, 10*time.Second, "the three tasks were never taken", func() bool {
		n, _ := rdb.LLen(ctx, activeKey(queue)).Result()
		return n == 3
	})
	proxy.Cut()
	now := time.Now()
	for upload, ended := range map[string]time.Duration{"again": 6 * time.Second, "last": time.Minute, "recent": 2 * time.Second} {
		if err := rdb.ZAddXX(ctx, leaseKey(queue), redis.Z{Member: ids[upload], Score: float64(now.Add(-ended).Unix())}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	delay := func(n int) time.Duration { return time.Duration(n+1) * time.Minute }
	took, err := recoverExpiredLeases(ctx, rdb, queue, now, delay)
	if err != nil {
		t.Fatal(err)
	}
	byID := func(a, b recoveredTask) bool { return a.ID < b.ID }
	want := []recoveredTask{{ID: ids["again"], Upload: "again"}, {ID: ids["last"], Failed: true, Upload: "last"}}
	if diff := cmp.Diff(want, took, cmpopts.SortSlices(byID)); diff != "" {
		t.Errorf("tasks taken back (-want +got):\n%s", diff)
	}

	insp := asynq.NewInspectorFromRedisClient(rdb)
	info, err := insp.GetTaskInfo(queue, ids["again"])
	if err != nil {
		t.Fatal(err)
	}
	var job detect.Job
	if err := json.Unmarshal(info.Payload, &job); err != nil || job.Upload != "again" {
		t.Errorf("retried task's payload %q (%v), want its job kept", info.Payload, err)
	}
	if info.State != asynq.TaskStateRetry || info.Retried != 1 || info.MaxRetry != 2 || info.LastErr != asynq.ErrLeaseExpired.Error() ||
		info.LastFailedAt.Unix() != now.Unix() || info.NextProcessAt.Unix() != now.Add(time.Minute).Unix() {
		t.Errorf("retried task: state %v, retried %d of %d, last error %q at %v, next at %v; want retry, 1 of 2, %q at %v, next at %v",
			info.State, info.Retried, info.MaxRetry, info.LastErr, info.LastFailedAt, info.NextProcessAt,
			asynq.ErrLeaseExpired, now.Truncate(time.Second), now.Add(time.Minute).Truncate(time.Second))
	}
	for upload, want := range map[string]detect.TaskInfo{
		"again":  {ID: ids["again"], Status: detect.StatusRetry},
		"last":   {ID: ids["last"], Status: detect.StatusFailure, Error: "The workers processing this image stopped before finishing, on every attempt; submit it again."},
		"recent": {ID: ids["recent"], Status: detect.StatusStarted},
	} {
		got, err := again.Task(ctx, ids[upload])
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: GET /result (-want +got):\n%s", upload, diff)
		}
	}
	if active, _ := rdb.LRange(ctx, activeKey(queue), 0, -1).Result(); !cmp.Equal(active, []string{ids["recent"]}) {
		t.Errorf("active tasks %v, want only the recent lease's %s", active, ids["recent"])
	}
	if leases, _ := rdb.ZRange(ctx, leaseKey(queue), 0, -1).Result(); !cmp.Equal(leases, []string{ids["recent"]}) {
		t.Errorf("leases %v, want only the recent one %s", leases, ids["recent"])
	}
	if qi, err := insp.GetQueueInfo(queue); err != nil || qi.Processed != 2 || qi.Failed != 2 {
		t.Errorf("asynq's statistics: %+v, %v; want 2 processed and 2 failed today, as its recoverer counts them", qi, err)
	}

	// The recent lease ends; a second look takes it, and nothing twice.
	took, err = recoverExpiredLeases(ctx, rdb, queue, now.Add(4*time.Second), delay)
	if err != nil || len(took) != 1 || took[0].ID != ids["recent"] || took[0].Failed {
		t.Errorf("second look took %+v, %v; want only the recent lease's task, retried", took, err)
	}
	if info, err := insp.GetTaskInfo(queue, ids["last"]); err != nil || info.State != asynq.TaskStateArchived || info.Retried != 0 {
		t.Errorf("failed task: %+v, %v; want archived with no retry counted", info, err)
	}
}

// TestLeaseExpiredMessageRefusesGarbage: a message the recovery cannot
// decode is an error, and its task is left to asynq's recoverer.
func TestLeaseExpiredMessageRefusesGarbage(t *testing.T) {
	for _, msg := range []string{"\xff", "\x0a\x05ab"} {
		if _, _, err := leaseExpiredMessage([]byte(msg), time.Now()); err == nil {
			t.Errorf("%q: no error", msg)
		}
	}
}
