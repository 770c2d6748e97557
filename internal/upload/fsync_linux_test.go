package upload

import (
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsyncUpload is the size of the uploads the fsync tests write: well below
// what makes the kernel write it out at once.
const fsyncUpload = 64 << 20

// Page flags of /proc/kpageflags (linux/kernel-page-flags.h).
const (
	kpfDirty     = 1 << 4
	kpfWriteback = 1 << 8
)

// unwrittenBytes returns how much of the file at path waits in memory to
// be written to the disk: its cached pages the kernel flags dirty or under
// writeback. It reads the file's own pages (mapped, their frames found in
// /proc/self/pagemap, their flags in /proc/kpageflags), so what other
// processes write meanwhile does not count. It skips the test where page
// flags cannot be read (they need root).
func unwrittenBytes(tb testing.TB, path string) int64 {
	tb.Helper()
	flags, err := os.Open("/proc/kpageflags")
	if err != nil {
		tb.Skipf("page flags cannot be read here (they need root): %v", err)
	}
	defer flags.Close()
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		tb.Skipf("no page map: %v", err)
	}
	defer pagemap.Close()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	if fi.Size() == 0 {
		tb.Fatalf("upload %s is empty", path)
	}
	// MAP_POPULATE maps every page now: those in the cache as they are,
	// any the kernel wrote and dropped read back clean.
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Munmap(data)
	page := int64(os.Getpagesize())
	pages := (fi.Size() + page - 1) / page
	entries := make([]byte, 8*pages)
	if _, err := pagemap.ReadAt(entries, int64(uintptr(unsafe.Pointer(&data[0])))/page*8); err != nil {
		tb.Fatal(err)
	}
	var unwritten int64
	var fl [8]byte
	for i := range pages {
		e := binary.LittleEndian.Uint64(entries[8*i:])
		pfn := e & (1<<55 - 1)
		if e&(1<<63) == 0 || pfn == 0 {
			tb.Skipf("page %d of %s: no frame number in the page map (entry %#x; they need root)", i, path, e)
		}
		if _, err := flags.ReadAt(fl[:], int64(pfn)*8); err != nil {
			tb.Fatal(err)
		}
		if binary.LittleEndian.Uint64(fl[:])&(kpfDirty|kpfWriteback) != 0 {
			unwritten += page
		}
	}
	return unwritten
}

// saveWaiting saves an upload of fsyncUpload bytes in d and returns its
// file, having checked that it waits in memory; it skips the test where
// the kernel wrote it at once.
func saveWaiting(tb testing.TB, d *Dir) string {
	tb.Helper()
	ref, err := d.Save(context.Background(), make([]byte, fsyncUpload))
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(d.path, ref)
	if n := unwrittenBytes(tb, path); n < fsyncUpload/2 {
		tb.Skipf("the kernel wrote the upload at once (%d of %d MiB wait in memory)", n>>20, fsyncUpload>>20)
	}
	return path
}

// diskDir returns a Dir on a disk the kernel writes back: in the test's
// temporary folder, or, where that is in memory (a tmpfs /tmp), in one
// made beside the test's sources and removed after it. It skips the test
// where both are in memory.
func diskDir(tb testing.TB, fsync string) *Dir {
	tb.Helper()
	dir := tb.TempDir()
	if inMemory(tb, dir) {
		d, err := os.MkdirTemp(".", ".fsynctest-")
		if err != nil {
			tb.Skipf("the test folder is in memory (tmpfs) and none can be made here: %v", err)
		}
		tb.Cleanup(func() { os.RemoveAll(d) })
		if dir = d; inMemory(tb, dir) {
			tb.Skip("the test folders are in memory (tmpfs); set TMPDIR to a folder on a disk")
		}
	}
	s, err := Open(Config{Dir: filepath.Join(dir, "uploads"), Fsync: fsync}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s.(*Dir)
}

// inMemory reports whether dir is on a file system the kernel never writes
// to a disk (tmpfs, ramfs).
func inMemory(tb testing.TB, dir string) bool {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC
}

// TestSyncWritesUploads: an upload Save wrote waits in memory until Sync,
// which writes it to the disk; with nothing written since, Sync has nothing
// to write.
func TestSyncWritesUploads(t *testing.T) {
	d := diskDir(t, FsyncEverySec)
	path := saveWaiting(t, d)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := unwrittenBytes(t, path); n != 0 {
		t.Errorf("%d KiB of the upload wait in memory after Sync: the upload was not written", n>>10)
	}
	if d.unsynced.Load() {
		t.Error("Sync left the upload to sync again")
	}
}

// TestAlwaysSavesToDisk: with UPLOAD_FSYNC=always, an upload is on the
// disk when Save returns.
func TestAlwaysSavesToDisk(t *testing.T) {
	d := diskDir(t, FsyncAlways)
	ref, err := d.Save(context.Background(), make([]byte, fsyncUpload))
	if err != nil {
		t.Fatal(err)
	}
	if n := unwrittenBytes(t, filepath.Join(d.path, ref)); n != 0 {
		t.Errorf("%d KiB of the upload wait in memory when Save returns: the upload was not written", n>>10)
	}
}

// TestSyncerWritesUploads: the API's syncer writes an upload within its
// interval of the upload's Save.
func TestSyncerWritesUploads(t *testing.T) {
	d := diskDir(t, FsyncEverySec)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := saveWaiting(t, d)
	go d.RunSyncer(ctx, 100*time.Millisecond, slog.New(slog.DiscardHandler))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := unwrittenBytes(t, path)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of the upload still wait in memory 5 s after Save: the syncer did not write it", n>>10)
		}
	}
}
