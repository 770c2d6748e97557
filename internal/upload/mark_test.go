package upload

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestMarks: a mark put in a store is seen by another handle on the same
// store (the same folder, the same Redis) and by no other store; it is
// not an upload; deleting it twice is no error.
func TestMarks(t *testing.T) {
	ctx := context.Background()
	folder := filepath.Join(t.TempDir(), "uploads")
	dirA, err := NewDir(folder, 0)
	if err != nil {
		t.Fatal(err)
	}
	dirB, _ := NewDir(folder, 1<<60) // another process on the folder; its reserve does not apply to marks
	elsewhere, _ := NewDir(t.TempDir(), 0)
	rdb := testenv.StartRedis(t).Client()
	redisA, redisB := NewRedis(rdb, time.Hour), NewRedis(rdb, time.Hour)

	for _, c := range []struct {
		name       string
		put, same  Store
		other      Store
		countItems func() int
	}{
		{"dir", dirA, dirB, elsewhere, func() int {
			es, _ := os.ReadDir(folder)
			n := 0
			for _, e := range es {
				if e.Name() != SpareFolder {
					n++
				}
			}
			return n
		}},
		{"redis", redisA, redisB, dirA, func() int { return len(rdb.Keys(ctx, "*").Val()) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := c.put.PutMark(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct {
				name  string
				store Store
				want  bool
			}{{"the same store", c.same, true}, {"another store", c.other, false}} {
				if ok, err := s.store.HasMark(ctx, id); ok != s.want || err != nil {
					t.Errorf("HasMark from %s: %v %v, want %v", s.name, ok, err, s.want)
				}
			}
			if _, err := c.same.Load(ctx, id, nil); detect.ErrorCode(err) != detect.ENOTFOUND {
				t.Errorf("Load(mark id): %v, want ENOTFOUND", err)
			}
			if n := c.countItems(); n != 1 {
				t.Errorf("store holds %d items, want the mark alone", n)
			}
			for range 2 {
				if err := c.same.DeleteMark(ctx, id); err != nil {
					t.Errorf("DeleteMark: %v", err)
				}
			}
			if ok, err := c.put.HasMark(ctx, id); ok || err != nil {
				t.Errorf("HasMark after DeleteMark: %v %v", ok, err)
			}
			if n := c.countItems(); n != 0 {
				t.Errorf("store holds %d items after DeleteMark, want none", n)
			}
			for _, bad := range []string{"../../etc/passwd", "", "x"} {
				if ok, err := c.same.HasMark(ctx, bad); ok || err != nil {
					t.Errorf("HasMark(%q): %v %v", bad, ok, err)
				}
			}
		})
	}
}

// TestSweepRemovesOldMarks: the sweeper removes the marks a killed API
// left, once past the maximum age, and keeps fresh ones.
func TestSweepRemovesOldMarks(t *testing.T) {
	dir := t.TempDir()
	d, err := NewDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, _ := d.PutMark(ctx)
	fresh, _ := d.PutMark(ctx)
	past := time.Now().Add(-3 * time.Hour)
	os.Chtimes(filepath.Join(dir, markFilePrefix+old), past, past)
	if uploads, n, err := d.Sweep(2 * time.Hour); err != nil || n != 1 || uploads != 0 {
		t.Fatalf("Sweep removed %d uploads and %d marks (%v), want the old mark", uploads, n, err)
	}
	for id, want := range map[string]bool{old: false, fresh: true} {
		if ok, _ := d.HasMark(ctx, id); ok != want {
			t.Errorf("mark %s kept: %v, want %v", id, ok, want)
		}
	}
}
