package asynq

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"yoloserve/internal/testenv"
)

// TestMemoryCountsUploadsBetweenReadings: with uploads stored in Redis,
// the uploads admitted since the last reading count at twice their size
// against 90% of the limit, so a burst stops there before Redis shows it;
// an upload dropped unstored gives its room back at once, and one stored
// counts until a reading shows it. With uploads stored elsewhere, only
// the reading counts.
func TestMemoryCountsUploadsBetweenReadings(t *testing.T) {
	rs := testenv.StartRedis(t)
	rdb := rs.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	used, _ := testenv.InfoField(t, rdb, "memory", "used_memory")
	base, _ := strconv.ParseInt(used, 10, 64)
	const mb = 1 << 20
	if err := rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(base+20*mb, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.ConfigSet(context.Background(), "maxmemory", "0") })
	watch := func(uploads bool, interval time.Duration) *RedisMemory {
		m := WatchMemory(ctx, rdb, interval, uploads, slog.New(slog.DiscardHandler))
		testenv.Eventually(t, 5*time.Second, "no first reading", func() bool { return m.readAt.Load() > 0 })
		return m
	}
	admitted := func(m *RedisMemory, n int, size int64) int {
		for i := range n {
			if m.Admit(size) != nil {
				return i
			}
		}
		return n
	}

	// 90% of 20 MB is room for 18 MB, each 2 MB upload counting 4 MB.
	m := watch(true, time.Hour)
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

	// A reading after the uploads were stored (here, they were not: Redis
	// holds nothing more) lets them count as what Redis holds.
	m = watch(true, 10*time.Millisecond)
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

	// Uploads stored elsewhere do not count.
	m = watch(false, time.Hour)
	if n := admitted(m, 10, 2*mb); n != 10 {
		t.Errorf("admitted %d of 10 uploads stored outside Redis, want all", n)
	}
}
