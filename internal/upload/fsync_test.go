package upload

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

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
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Dirty:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no Dirty in /proc/meminfo")
	return 0
}

// diskDir returns a Dir on a disk the kernel writes back (not tmpfs), or
// skips the test where there is none.
func diskDir(tb testing.TB, fsync string) *Dir {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skip("reads /proc/meminfo")
	}
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
	before := dirtyBytes(t)
	if _, err := d.Save(context.Background(), make([]byte, fsyncUpload)); err != nil {
		t.Fatal(err)
	}
	saved := dirtyBytes(t)
	if saved-before < fsyncUpload/2 {
		t.Skipf("the kernel wrote the upload before Sync (dirty memory %d MiB before, %d after)", before>>20, saved>>20)
	}
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
	before := dirtyBytes(t)
	if _, err := d.Save(ctx, make([]byte, fsyncUpload)); err != nil {
		t.Fatal(err)
	}
	saved := dirtyBytes(t)
	if saved-before < fsyncUpload/2 {
		t.Skipf("the kernel wrote the upload at once (dirty memory %d MiB before, %d after)", before>>20, saved>>20)
	}
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
