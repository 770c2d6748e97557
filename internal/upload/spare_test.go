package upload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newSpareDir returns a Dir on a new folder path, which keeps spares; it
// skips the test where the file system cannot.
func newSpareDir(tb testing.TB, path string, reserve int64) *Dir {
	tb.Helper()
	d, err := NewDir(path, reserve)
	if err != nil {
		tb.Fatal(err)
	}
	if d.spares == nil {
		tb.Skipf("%s keeps no spares (no rename without replacing)", path)
	}
	return d
}

// spareNames lists the spare files in the upload folder.
func spareNames(tb testing.TB, folder string) []string {
	tb.Helper()
	names, err := os.ReadDir(filepath.Join(folder, SpareFolder))
	if err != nil {
		tb.Fatal(err)
	}
	var s []string
	for _, e := range names {
		s = append(s, e.Name())
	}
	return s
}

func inode(tb testing.TB, path string) uint64 {
	tb.Helper()
	info, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

// TestSparesReused: a deleted upload's file becomes a spare, out of the
// uploads' sight, and the next upload is written over it, shorter or
// longer, reading back exactly its own bytes.
func TestSparesReused(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "uploads")
	d := newSpareDir(t, folder, 0)
	ctx := context.Background()
	ref, err := d.Save(ctx, bytes.Repeat([]byte("a"), 100_000))
	if err != nil {
		t.Fatal(err)
	}
	ino := inode(t, filepath.Join(folder, ref))
	for _, data := range [][]byte{[]byte("a shorter upload"), bytes.Repeat([]byte("b"), 300_000)} {
		if err := d.Delete(ctx, ref); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Load(ctx, ref, nil); err == nil {
			t.Errorf("Load found a deleted upload")
		}
		if spares := spareNames(t, folder); len(spares) != 1 {
			t.Fatalf("spares after Delete: %v, want one", spares)
		}
		if ref, err = d.Save(ctx, data); err != nil {
			t.Fatal(err)
		}
		if got := inode(t, filepath.Join(folder, ref)); got != ino {
			t.Errorf("%d-byte upload's inode %d, want the spare's %d", len(data), got, ino)
		}
		if got, err := d.Load(ctx, ref, nil); err != nil || !bytes.Equal(got, data) {
			t.Errorf("Load: %d bytes %v, want the %d saved", len(got), err, len(data))
		}
		if spares := spareNames(t, folder); len(spares) != 0 {
			t.Errorf("spares after Save: %v, want none", spares)
		}
	}
}

// TestSparesAfterHeldUpRead: a Dir whose read of the empty spare folder
// was held up, as a busy machine holds a read up (here 50 ms asleep),
// takes the spare another Dir keeps just after: it reads the folder again
// after a hundred times the read's CPU time, not its 50 ms (5 s, for
// which it would create files beside the spare).
func TestSparesAfterHeldUpRead(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "uploads")
	api, worker := newSpareDir(t, folder, 0), newSpareDir(t, folder, 0)
	api.spares.readNames = func(folder string, n int) []string {
		time.Sleep(50 * time.Millisecond)
		return readNames(folder, n)
	}
	ctx := context.Background()
	ref, err := api.Save(ctx, []byte("an upload")) // finds the folder empty
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Delete(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if spares := spareNames(t, folder); len(spares) != 1 {
		t.Fatalf("spares after Delete: %v, want one", spares)
	}
	start := time.Now()
	for saves := 1; len(spareNames(t, folder)) > 0; saves++ {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("the spare was still unused after %d uploads in %v", saves, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := api.Save(ctx, []byte("another upload")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSparesReadHoldsNoUpload: uploads do not queue behind another's read
// of the spare folder: while one upload's read is held up, another is
// saved (in a file of its own).
func TestSparesReadHoldsNoUpload(t *testing.T) {
	d := newSpareDir(t, filepath.Join(t.TempDir(), "uploads"), 0)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	d.spares.readNames = func(folder string, n int) []string {
		once.Do(func() {
			close(entered)
			<-release
		})
		return readNames(folder, n)
	}
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := d.Save(ctx, []byte("the upload that reads the folder"))
		first <- err
	}()
	<-entered
	second := make(chan error, 1)
	go func() {
		_, err := d.Save(ctx, []byte("an upload beside it"))
		second <- err
	}()
	select {
	case err := <-second:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("an upload waited 10 s for another's read of the spare folder")
	}
	close(release)
	if err := <-first; err != nil {
		t.Error(err)
	}
}

// TestSparesShared: an API and two workers on one folder (three Dirs)
// saving, reading and deleting at once each read back exactly the upload
// they saved, every file ends up a spare, and most uploads are written
// over spares.
func TestSparesShared(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "uploads")
	api, workers := newSpareDir(t, folder, 0), []*Dir{newSpareDir(t, folder, 0), newSpareDir(t, folder, 0)}
	ctx := context.Background()
	const clients, rounds = 8, 150
	uploads := func(phase int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := range clients {
			wg.Go(func() {
				w := workers[c%len(workers)]
				for i := range rounds {
					data := bytes.Repeat(fmt.Appendf(nil, "phase %d client %d upload %d;", phase, c, i), 1+(i*37)%500)
					ref, err := api.Save(ctx, data)
					if err != nil {
						errs <- err
						return
					}
					got, err := w.Load(ctx, ref, nil)
					if err != nil || !bytes.Equal(got, data) {
						errs <- fmt.Errorf("phase %d client %d upload %d read back %d bytes (%v), want %d", phase, c, i, len(got), err, len(data))
						return
					}
					if err := w.Delete(ctx, ref); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		es, err := os.ReadDir(folder)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Name() != SpareFolder {
				t.Errorf("left in the folder: %s", e.Name())
			}
		}
	}
	// Each file was created by a Save that found no spare. The first
	// uploads find none; a Save that finds the folder empty, or being
	// read, creates its file, and the Dir reads an empty folder again only
	// after 10 ms, in which a busy machine's uploads all create theirs
	// (608 files for the first 1200 on one CI run). Once the folder holds
	// spares, most Saves should take one.
	uploads(1)
	first := len(spareNames(t, folder))
	if first == 0 {
		t.Fatal("no spare kept after the first uploads")
	}
	api.spares.mu.Lock()
	api.spares.nextCheck = time.Time{} // the first uploads' wait is over
	api.spares.mu.Unlock()
	uploads(2)
	created := len(spareNames(t, folder)) - first
	if created > clients*rounds/2 {
		t.Errorf("%d files created for %d uploads with %d spares to start with, want most uploads written over spares", created, clients*rounds, first)
	}
	t.Logf("%d files for the first %d uploads, %d more for the next %d", first, clients*rounds, created, clients*rounds)
}

// TestSparesSwept: the sweeper removes the spares unused for the uploads'
// maximum age and keeps the others; while the disk is short of room,
// Delete removes uploads instead of keeping them and the sweeper removes
// every spare; and it makes the spare folder again if someone removed it.
func TestSparesSwept(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "uploads")
	d := newSpareDir(t, folder, 0)
	ctx := context.Background()
	save := func() string {
		t.Helper()
		ref, err := d.Save(ctx, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	a, b := save(), save()
	d.Delete(ctx, a)
	d.Delete(ctx, b)
	old := filepath.Join(folder, SpareFolder, spareNames(t, folder)[0])
	past := time.Now().Add(-3 * time.Hour)
	os.Chtimes(old, past, past)
	if _, _, err := d.Sweep(2 * time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err == nil {
		t.Errorf("the spare unused for 3 hours is still there")
	}
	if n := len(spareNames(t, folder)); n != 1 {
		t.Errorf("%d spares after the sweep, want the fresh one", n)
	}

	// A reserve larger than the disk: always short of room.
	short := newSpareDir(t, folder, 1<<62)
	c := save()
	before := len(spareNames(t, folder))
	if err := short.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(folder, c)); err == nil {
		t.Errorf("Delete short of room left the upload")
	}
	if n := len(spareNames(t, folder)); n != before {
		t.Errorf("%d spares after a Delete short of room, want %d: it not kept", n, before)
	}
	d.Delete(ctx, save())
	d.Delete(ctx, save())
	short.Sweep(2 * time.Hour)
	if n := len(spareNames(t, folder)); n != 0 {
		t.Errorf("%d spares after a sweep short of room, want none", n)
	}

	if err := os.RemoveAll(filepath.Join(folder, SpareFolder)); err != nil {
		t.Fatal(err)
	}
	e := save()
	if err := d.Delete(ctx, e); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(folder, e)); err == nil {
		t.Errorf("Delete without the spare folder left the upload")
	}
	d.Sweep(2 * time.Hour)
	d.Delete(ctx, save())
	if n := len(spareNames(t, folder)); n != 1 {
		t.Errorf("%d spares after a sweep made the folder again, want 1", n)
	}
}

// TestSpareTakenIsNoOrphan: a spare unused for longer than the uploads'
// maximum age is new from the moment it takes an upload's name, before
// the upload is written, so that a sweep then leaves it.
func TestSpareTakenIsNoOrphan(t *testing.T) {
	folder := filepath.Join(t.TempDir(), "uploads")
	d := newSpareDir(t, folder, 0)
	ctx := context.Background()
	ref, err := d.Save(ctx, []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	d.Delete(ctx, ref)
	past := time.Now().Add(-3 * time.Hour)
	os.Chtimes(filepath.Join(folder, SpareFolder, spareNames(t, folder)[0]), past, past)
	ref, err = newRef()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := d.spares.take(filepath.Join(folder, ref))
	if f == nil {
		t.Fatal("no spare taken")
	}
	defer f.Close()
	if n, _, err := d.Sweep(2 * time.Hour); err != nil || n != 0 {
		t.Errorf("Sweep removed %d uploads (%v), want the one being written left", n, err)
	}
}

// BenchmarkDirUploads saves 110 KB uploads, syncs them every 100 as
// UPLOAD_FSYNC=everysec would at 100 a second, and deletes each 200
// uploads later, as a worker would once done: with spares (the default)
// and with a new file for each upload, deleted after.
func BenchmarkDirUploads(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789"), 11_176)
	for _, kind := range []string{"spares", "new files"} {
		b.Run(kind, func(b *testing.B) {
			d := newSpareDir(b, filepath.Join(b.TempDir(), "uploads"), 0)
			d.fsync = FsyncEverySec
			if kind == "new files" {
				d.spares = nil
			}
			ctx := context.Background()
			var waiting []string
			for i := 0; b.Loop(); i++ {
				ref, err := d.Save(ctx, data)
				if err != nil {
					b.Fatal(err)
				}
				waiting = append(waiting, ref)
				if len(waiting) > 200 {
					if err := d.Delete(ctx, waiting[0]); err != nil {
						b.Fatal(err)
					}
					waiting = waiting[1:]
				}
				if i%100 == 99 {
					d.Sync()
				}
			}
		})
	}
}
