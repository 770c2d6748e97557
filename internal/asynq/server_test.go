package asynq

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// TestLogFailure: an attempt that asynq cut short because its worker lost
// the lease (the worker was frozen or cut off from Redis) says so, not
// that the task will be retried: another worker may have finished it.
func TestLogFailure(t *testing.T) {
	for _, tc := range []struct {
		err       error
		want, not string
	}{
		{asynq.ErrLeaseExpired, "lost the task's lease", "will be retried"},
		{errors.New("Redis refused the result"), "will be retried", "lease"},
	} {
		var b bytes.Buffer
		logFailure(context.Background(), slog.New(slog.NewTextHandler(&b, nil)), tc.err)
		if got := b.String(); !strings.Contains(got, tc.want) || strings.Contains(got, tc.not) || strings.Count(got, "\n") != 1 {
			t.Errorf("%v: logged %q, want one line with %q", tc.err, got, tc.want)
		}
	}
}

// TestRedisUpFollowsTheWorkersReach: yoloserve_worker_redis_up reads 1
// while the worker reaches Redis, 0 while it is cut off (a network
// partition that holds its bytes, as the alert on it is for), and 1
// again once the partition heals.
func TestRedisUpFollowsTheWorkersReach(t *testing.T) {
	rs := testenv.StartRedis(t)
	proxy := testenv.StartProxy(t, rs.Addr)
	store, err := upload.NewDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(proxy.Client(t, 100*time.Millisecond), ServerConfig{Registerer: prometheus.NewPedanticRegistry(), Logger: slog.New(slog.DiscardHandler)}, nil, store)
	up := func() float64 { return testutil.ToFloat64(srv.metrics.redisUp) }
	if got := up(); got != 1 {
		t.Errorf("reaching Redis: %v, want 1", got)
	}
	proxy.Cut()
	if got := up(); got != 0 {
		t.Errorf("cut off from Redis: %v, want 0", got)
	}
	proxy.Heal()
	testenv.Eventually(t, 5*time.Second, "still 0 once the partition healed", func() bool { return up() == 1 })
}
