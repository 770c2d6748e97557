package asynq

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/testenv"
)

// TestMemoryCountsUploadsBetweenReadings: with uploads stored in Redis,
// the uploads admitted since the last reading count at twice their size
// against 90% of the limit, so a burst stops there before Redis shows it;
// an upload dropped unstored gives its room back at once, and one stored
// counts until a reading shows it. With uploads stored elsewhere, only
// the reading counts.
func TestMemoryCountsUploadsBetweenReadings(t *testing.T) {
	rdb := roomFor20MB(t)
	// 90% of 20 MB is room for 18 MB, each 2 MB upload counting 4 MB.
	m, stop := startWatch(t, rdb, true, time.Hour)
	if n := admitted(m, 10, 2*mb); n != 4 {
		t.Fatalf("admitted %d uploads of 2 MB into 18 MB of room, want 4", n)
	}
	m.Done(2*mb, 0) // dropped: its room is back
	if err := m.Admit(2 * mb); err != nil {
		t.Fatalf("no room after an upload was dropped: %v", err)
	}
	for range 4 {
		m.Done(2*mb, 2*mb) // stored, and no reading since
	}
	if err := m.Admit(2 * mb); err == nil {
		t.Errorf("admitted an upload while the uploads stored since the last reading fill the room")
	}

	stop()

	// A reading after the uploads were stored (here, they were not: Redis
	// holds nothing more) lets them count as what Redis holds.
	m, stop = startWatch(t, rdb, true, 10*time.Millisecond)
	for range 4 {
		if err := m.Admit(2 * mb); err != nil {
			t.Fatal(err)
		}
		m.Done(2*mb, 2*mb)
	}
	sent := time.Now().UnixNano()
	testenv.Eventually(t, 5*time.Second, "no reading after the uploads", func() bool { return m.readAt.Load() > sent })
	if err := m.Admit(2 * mb); err != nil {
		t.Errorf("the uploads stored before a reading still counted beside it: %v", err)
	}
	stop()

	// Uploads stored elsewhere do not count.
	m, _ = startWatch(t, rdb, false, time.Hour)
	if n := admitted(m, 10, 2*mb); n != 10 {
		t.Errorf("admitted %d of 10 uploads stored outside Redis, want all", n)
	}
}

// TestMemoryRoomSharedByReplicas: API replicas storing uploads in one
// Redis each take their share of the room between readings, since none
// sees the others' uploads until its next reading; where each took all
// of it, two replicas in one burst let in twice what fits. A replica that
// stops gives its share back at the others' next reading, and one killed
// (that never left the count) once its entry is stale.
func TestMemoryRoomSharedByReplicas(t *testing.T) {
	rdb := roomFor20MB(t)
	a, _ := startWatch(t, rdb, true, 10*time.Millisecond)
	b, stopB := startWatch(t, rdb, true, 10*time.Millisecond)
	sharing := func(m *RedisMemory, n int64) func() bool {
		return func() bool { return m.watchers.Load() == n }
	}
	testenv.Eventually(t, 5*time.Second, "the replicas never counted each other", func() bool {
		return sharing(a, 2)() && sharing(b, 2)()
	})
	// 18 MB of room, each 2 MB upload counting 4 MB: 4 uploads in all.
	if got := [2]int{admitted(a, 10, 2*mb), admitted(b, 10, 2*mb)}; got != [2]int{2, 2} {
		t.Errorf("two replicas admitted %v uploads of 2 MB into 18 MB of room, want 2 each", got)
	}
	stopB()
	a.Done(2*mb, 0)
	a.Done(2*mb, 0)
	testenv.Eventually(t, 5*time.Second, "the stopped replica still holds its share", sharing(a, 1))
	if n := admitted(a, 10, 2*mb); n != 4 {
		t.Errorf("a replica alone admitted %d uploads of 2 MB into 18 MB of room, want 4", n)
	}

	// A killed replica's entry, counted until its time passes (here, moved
	// to the past rather than waited for).
	killed := func(at time.Time) {
		t.Helper()
		if err := rdb.ZAdd(context.Background(), watchersKey, redis.Z{Score: float64(at.UnixMilli()), Member: "killed"}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	killed(time.Now().Add(time.Hour))
	testenv.Eventually(t, 5*time.Second, "the killed replica was never counted", sharing(a, 2))
	killed(time.Now().Add(-time.Millisecond))
	testenv.Eventually(t, 5*time.Second, "the killed replica was counted past its entry's time", sharing(a, 1))
}

// TestMemoryReadTimeBeforeRedisAnswers: an API started while Redis is
// down serves the time of its last reading as 0, so that the alert on a
// reading older than a minute fires for an API that never reached Redis,
// and no memory figures; once Redis answers, the time and the figures.
func TestMemoryReadTimeBeforeRedisAnswers(t *testing.T) {
	srv := testenv.StartRedis(t)
	if !srv.Restartable() {
		t.Skip("needs a redis-server of its own, not REDIS_URL's")
	}
	rdb := srv.Client()
	srv.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := WatchMemory(ctx, rdb, 10*time.Millisecond, false, slog.New(slog.DiscardHandler))
	want := `
# HELP yoloserve_redis_memory_read_timestamp_seconds When the API sent the INFO memory of its last reading, in Unix time; it stands still while Redis does not answer, and is 0 until Redis first answers.
# TYPE yoloserve_redis_memory_read_timestamp_seconds gauge
yoloserve_redis_memory_read_timestamp_seconds 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Errorf("with Redis down from the start: %v", err)
	}
	srv.Start()
	started := time.Now()
	testenv.Eventually(t, 10*time.Second, "no reading once Redis answered", func() bool { return m.readAt.Load() > 0 })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if at := got["yoloserve_redis_memory_read_timestamp_seconds"]; at < float64(started.Add(-time.Second).Unix()) {
		t.Errorf("read at %v, before Redis answered at %v", at, started.Unix())
	}
	if got["yoloserve_redis_memory_used_bytes"] <= 0 {
		t.Errorf("no used_memory once Redis answered: %v", got)
	}
}

const mb = 1 << 20

// roomFor20MB returns a client of a fresh Redis whose maxmemory is 20 MB
// above what it uses.
func roomFor20MB(t *testing.T) redis.UniversalClient {
	t.Helper()
	rdb := testenv.StartRedis(t).Client()
	testenv.LimitRedisMemory(t, rdb, 20*mb)
	return rdb
}

// startWatch starts a memory watch that ends with the test, and returns
// it once it has read Redis, with a function that ends it and waits until
// it has left the count of watches.
func startWatch(t *testing.T, rdb redis.UniversalClient, uploads bool, interval time.Duration) (*RedisMemory, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := WatchMemory(ctx, rdb, interval, uploads, slog.New(slog.DiscardHandler))
	testenv.Eventually(t, 5*time.Second, "no first reading", func() bool { return m.readAt.Load() > 0 })
	return m, func() {
		t.Helper()
		cancel()
		testenv.Eventually(t, 5*time.Second, "the stopped watch is still counted", func() bool {
			return errors.Is(rdb.ZScore(context.Background(), watchersKey, m.id).Err(), redis.Nil)
		})
	}
}

// admitted returns how many of n uploads of size bytes m admits in a row.
func admitted(m *RedisMemory, n int, size int64) int {
	for i := range n {
		if m.Admit(size) != nil {
			return i
		}
	}
	return n
}

// TestMemoryReadTimeStandsStillWhileCutOff: an API cut off from Redis (a
// partition that holds its bytes) keeps the time of its last reading,
// which YoloserveAPICutOffFromRedis counts from, and takes readings again
// once the partition heals.
func TestMemoryReadTimeStandsStillWhileCutOff(t *testing.T) {
	rs := testenv.StartRedis(t)
	proxy := testenv.StartProxy(t, rs.Addr)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const every = 10 * time.Millisecond
	m := WatchMemory(ctx, proxy.Client(t, 50*time.Millisecond), every, false, slog.New(slog.DiscardHandler))
	testenv.Eventually(t, 5*time.Second, "no reading through the proxy", func() bool { return m.readAt.Load() > 0 })
	proxy.Cut()
	cut := time.Now()
	last := m.readAt.Load()
	// A reading sent just before the cut may still land; none sent after it.
	for time.Since(cut) < 50*every {
		if at := m.readAt.Load(); at > cut.UnixNano() {
			t.Fatalf("a reading sent %v after the cut", time.Duration(at-cut.UnixNano()))
		}
		time.Sleep(every)
	}
	if at := m.readAt.Load(); at < last {
		t.Fatalf("the reading's time went back from %d to %d", last, at)
	}
	proxy.Heal()
	healed := time.Now()
	testenv.Eventually(t, 5*time.Second, "no reading once the partition healed", func() bool { return m.readAt.Load() >= healed.UnixNano() })
}
