package upload

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// fsyncUpload is the size of the uploads the fsync tests write: well above
// what other tests dirty in the moment between two readings of the
// machine's dirty memory, well below what makes the kernel write it out.
const fsyncUpload = 64 << 20

// dirtyBytes returns the machine's memory waiting to be written to disk
// (Dirty in /proc/meminfo).
func dirtyBytes(tb testing.TB) int64 {
	tb.Helper()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	m, err := fs.Meminfo()
	if err != nil || m.DirtyBytes == nil {
		tb.Fatalf("no Dirty in /proc/meminfo (%v)", err)
	}
	return int64(*m.DirtyBytes)
}

// saveWaiting saves an upload of fsyncUpload bytes in d and returns the
// machine's dirty memory then, having checked that the upload waits in
// it; it skips the test where the kernel wrote it at once.
func saveWaiting(tb testing.TB, d *Dir) int64 {
	tb.Helper()
	before := dirtyBytes(tb)
	if _, err := d.Save(context.Background(), make([]byte, fsyncUpload)); err != nil {
		tb.Fatal(err)
	}
	saved := dirtyBytes(tb)
	if saved-before < fsyncUpload/2 {
		tb.Skipf("the kernel wrote the upload at once (dirty memory %d MiB before, %d after)", before>>20, saved>>20)
	}
	return saved
}

// diskDir returns a Dir on a disk the kernel writes back (not tmpfs), or
// skips the test where there is none.
func diskDir(tb testing.TB, fsync string) *Dir {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "uploads")
	s, err := Open(Config{Dir: path, Fsync: fsync}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		tb.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC || st.Type == unix.RAMFS_MAGIC {
		tb.Skip("the test folder is in memory (tmpfs); set TMPDIR to a folder on a disk")
	}
	return s.(*Dir)
}

// TestSyncWritesUploads: an upload Save wrote waits in memory until Sync,
// which writes it to the disk; with nothing written since, Sync has nothing
// to write.
func TestSyncWritesUploads(t *testing.T) {
	d := diskDir(t, FsyncEverySec)
	saved := saveWaiting(t, d)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if synced := dirtyBytes(t); saved-synced < fsyncUpload/2 {
		t.Errorf("dirty memory %d MiB after Save, %d after Sync: the upload was not written", saved>>20, synced>>20)
	}
	if d.unsynced.Load() {
		t.Error("Sync left the upload to sync again")
	}
}

// TestAlwaysSavesToDisk: with UPLOAD_FSYNC=always, an upload is on the
// disk when Save returns.
func TestAlwaysSavesToDisk(t *testing.T) {
	d := diskDir(t, FsyncAlways)
	before := dirtyBytes(t)
	if _, err := d.Save(context.Background(), make([]byte, fsyncUpload)); err != nil {
		t.Fatal(err)
	}
	if after := dirtyBytes(t); after-before > fsyncUpload/2 {
		t.Errorf("dirty memory %d MiB before Save, %d after: the upload was not written", before>>20, after>>20)
	}
}

// TestSyncerWritesUploads: the API's syncer writes an upload within its
// interval of the upload's Save.
func TestSyncerWritesUploads(t *testing.T) {
	d := diskDir(t, FsyncEverySec)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	saved := saveWaiting(t, d)
	go d.RunSyncer(ctx, 100*time.Millisecond, slog.New(slog.DiscardHandler))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		synced := dirtyBytes(t)
		if saved-synced >= fsyncUpload/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dirty memory %d MiB after Save, still %d 5 s later: the syncer did not write the upload", saved>>20, synced>>20)
		}
	}
}
