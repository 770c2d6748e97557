package asynq

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// TestUploadMarks: while an API turns its mark (every 50 ms: a mark goes
// stale after three turns, which a loaded machine under the race detector
// missed at 5 ms), a worker on the API's upload folder finds it at every
// look, and one on another folder at none, and is held, saying so once;
// the held worker is let go once it finds a mark, and warns while it
// finds the marks of some APIs but not all; when the marks are withdrawn
// (the APIs stop, or their store takes no mark), every worker takes
// tasks, as where no API keeps marks.
func TestUploadMarks(t *testing.T) {
	rdb := testenv.StartRedis(t).Client()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	const queue = "marks"
	folder, elsewhere := t.TempDir(), t.TempDir()
	newDir := func(path string) *upload.Dir {
		d, err := upload.NewDir(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	apiStore := newDir(folder)
	same := newUploadWatch(rdb, queue, newDir(folder), log)
	var logs testenv.SyncBuffer
	other := newUploadWatch(rdb, queue, newDir(elsewhere), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	takesTasks := func(name string, u *uploadWatch) {
		t.Helper()
		u.look(ctx)
		if err := u.ready(); err != nil || u.held() != nil {
			t.Errorf("%s: ready %v, held %v; want it to take tasks", name, err, u.held() != nil)
		}
	}

	takesTasks("no API", other)

	marks := StartUploadMarks(rdb, UploadMarksConfig{Queue: queue, Interval: 50 * time.Millisecond, Logger: log}, apiStore)
	t.Cleanup(marks.Stop)
	seen := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the API turned its mark %d times in 20 s, want 20", len(seen))
		}
		ids, err := liveMembers(ctx, rdb, uploadMarksKey(queue), time.Now())
		if err != nil || len(ids) != 1 {
			t.Fatalf("live marks %v (%v), want the API's one", ids, err)
		}
		seen[ids[0]] = true
		same.look(ctx)
		other.look(ctx)
		if same.ready() != nil || same.held() != nil {
			t.Fatalf("a worker on the API's folder did not find its mark after %d turns", len(seen))
		}
		if err := other.ready(); err == nil || !strings.Contains(err.Error(), "does not see the API's uploads") || other.held() == nil {
			t.Fatalf("a worker on another folder: ready %v, held %v; want it held", err, other.held() != nil)
		}
		if n := marksIn(folder); n > 3 {
			t.Fatalf("%d marks in the folder, want 3 at most: the current one, the one before, and a new one in a turn", n)
		}
	}

	if n := strings.Count(logs.String(), "sees none of the uploads"); n != 1 {
		t.Errorf("the held worker said %d times that it sees none of the uploads, want once:\n%s", n, logs.String())
	}

	// A second API on the held worker's folder: it finds that one's mark.
	held := other.held()
	second := StartUploadMarks(rdb, UploadMarksConfig{Queue: queue, Interval: time.Hour, Logger: log}, newDir(elsewhere))
	takesTasks("a worker that finds one of two APIs' marks", other)
	select {
	case <-held:
	default:
		t.Error("the hold's channel was not closed when the worker found a mark")
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN msg=\"this worker sees the uploads of some of the APIs on its queue, not of all") ||
		!strings.Contains(out, "api_marks=2 found=1") {
		t.Errorf("worker log, want a warning that it sees the uploads of 1 of the 2 APIs:\n%s", out)
	}

	marks.Stop()
	second.Stop()
	if n, err := rdb.Exists(ctx, uploadMarksKey(queue)).Result(); n != 0 || err != nil {
		t.Errorf("marks left in Redis after the APIs stopped: %d %v", n, err)
	}
	if a, b := marksIn(folder), marksIn(elsewhere); a+b != 0 {
		t.Errorf("marks left in the folders after the APIs stopped: %d and %d", a, b)
	}
	takesTasks("after the APIs stopped", other)
	takesTasks("after the APIs stopped", same)

	// A store that stops taking marks (a full disk) has its mark withdrawn.
	failing := &refusingMarks{Dir: apiStore}
	third := StartUploadMarks(rdb, UploadMarksConfig{Queue: queue, Interval: 50 * time.Millisecond, Logger: log}, failing)
	t.Cleanup(third.Stop)
	other.look(ctx)
	if other.ready() == nil {
		t.Fatal("a worker on another folder was not held while the third API marked its store")
	}
	failing.refuse.Store(true)
	testenv.Eventually(t, 5*time.Second, "the mark of a store that takes no more was not withdrawn", func() bool {
		n, _ := rdb.ZCard(ctx, uploadMarksKey(queue)).Result()
		return n == 0 && marksIn(folder) == 0
	})
	takesTasks("once the API's store took no mark", other)
}

// TestUploadMarkWithdrawnDuringALook: an API that stops while a worker
// looks for its mark (read from Redis, then its object deleted before the
// worker looks in the store) does not make the worker blind.
func TestUploadMarkWithdrawnDuringALook(t *testing.T) {
	rdb := testenv.StartRedis(t).Client()
	log := slog.New(slog.DiscardHandler)
	const queue = "withdrawn"
	store, err := upload.NewDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	marks := StartUploadMarks(rdb, UploadMarksConfig{Queue: queue, Interval: time.Hour, Logger: log}, store)
	u := newUploadWatch(rdb, queue, stoppingReader{store, marks}, log)
	u.look(context.Background())
	if err := u.ready(); err != nil {
		t.Errorf("worker after the API it looked at stopped: %v, want it to take tasks", err)
	}
}

// TestUploadMarksThroughAPartition: while the API is cut off from Redis,
// its turns fail and the marks they put do not pile up in its folder, and
// a worker on that folder is never held; once the API reaches Redis again,
// the set holds its one current mark, found in the folder.
func TestUploadMarksThroughAPartition(t *testing.T) {
	rs := testenv.StartRedis(t)
	direct := rs.Client()
	proxy := testenv.StartProxy(t, rs.Addr)
	cutOff := proxy.Client(t, 50*time.Millisecond)
	log := slog.New(slog.DiscardHandler)
	const queue = "partition"
	ctx := context.Background()
	folder := t.TempDir()
	store, err := upload.NewDir(folder, 0)
	if err != nil {
		t.Fatal(err)
	}
	marks := StartUploadMarks(cutOff, UploadMarksConfig{Queue: queue, Interval: 10 * time.Millisecond, Logger: log}, store)
	t.Cleanup(marks.Stop)
	same := newUploadWatch(direct, queue, store, log)
	watch := func(d time.Duration, during string) {
		t.Helper()
		most := 0
		for until := time.Now().Add(d); time.Now().Before(until); time.Sleep(5 * time.Millisecond) {
			same.look(ctx)
			if err := same.ready(); err != nil {
				t.Fatalf("%s: a worker on the API's folder was held: %v", during, err)
			}
			most = max(most, marksIn(folder))
		}
		if most > 6 {
			t.Errorf("%s: up to %d marks in the folder, want a few", during, most)
		}
	}
	watch(200*time.Millisecond, "before the cut")
	proxy.Cut()
	watch(time.Second, "while the API was cut off")
	proxy.Heal()
	testenv.Eventually(t, 5*time.Second, "the API's marks did not settle once it reached Redis again", func() bool {
		ids, err := liveMembers(ctx, direct, uploadMarksKey(queue), time.Now())
		if err != nil || len(ids) != 1 || marksIn(folder) > 3 {
			return false
		}
		ok, _ := store.HasMark(ctx, ids[0])
		return ok
	})
	watch(200*time.Millisecond, "after the cut")
}

// stoppingReader stops an API's marks before each look in its store, as
// the API's stop would land between the worker's read of the live marks
// and its look.
type stoppingReader struct {
	*upload.Dir
	marks *UploadMarks
}

func (r stoppingReader) HasMark(ctx context.Context, id string) (bool, error) {
	r.marks.Stop()
	return r.Dir.HasMark(ctx, id)
}

// marksIn counts the marks in the folder path.
func marksIn(path string) int {
	es, _ := os.ReadDir(path)
	n := 0
	for _, e := range es {
		if upload.IsMarkFile(e.Name()) {
			n++
		}
	}
	return n
}

// refusingMarks is an upload folder that takes no new mark once refuse is
// set, as a full disk takes none.
type refusingMarks struct {
	*upload.Dir
	refuse atomic.Bool
}

func (r *refusingMarks) PutMark(ctx context.Context) (string, error) {
	if r.refuse.Load() {
		return "", errors.New("no space left on device")
	}
	return r.Dir.PutMark(ctx)
}
