package upload

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// When the uploads a Dir writes reach its disk, named as Redis's
// appendfsync (UPLOAD_FSYNC).
//
// Left to the kernel (FsyncNo), a written upload stays in memory only
// until it is 30 s old, or until the memory waiting to be written passes
// a tenth of the machine's. A backlog (workers paused, or slower than
// the uploads) then piles up gigabytes of it, and when the kernel writes
// them out at once, the API's writes wait: on a 2-core machine with 24 GB,
// once 1–2 GB were waiting, the API's intake at 1,000 uploads/s stalled
// for over 100 ms in 12 of 36 windows of 5 s (the longest upload 965 ms),
// refusing 3,053 uploads past MAX_INFLIGHT_UPLOADS; synced every second,
// in 5 of 36 (212 ms), refusing 555 (docs/performance.md, The API's
// intake). So a backlog is written as it comes, and a host that crashes
// or loses power loses at most the last second's uploads, as Redis with
// appendfsync everysec loses its last second's tasks. The price is paid
// in short bursts: there, the uploads are written where the kernel would
// have kept them in memory.
const (
	// FsyncEverySec: RunSyncer makes them reach the disk every second,
	// and Sync once more at the end.
	FsyncEverySec = "everysec"
	// FsyncAlways: Save returns once the upload is on the disk.
	FsyncAlways = "always"
	// FsyncNo: the kernel writes them when it sees fit.
	FsyncNo = "no"
)

// Sync makes the uploads Save wrote under FsyncEverySec since the last
// Sync reach the disk, with whatever else the folder's file system holds
// in memory (syncfs(2): one call whatever their number, where an fsync of
// each would commit the file system's journal once an upload). It does
// nothing when Save wrote nothing since, and under the other policies. It
// returns the error of opening the folder or of the sync (a failing
// disk); those uploads are then synced again next time.
func (d *Dir) Sync() error {
	if !d.unsynced.Swap(false) {
		return nil
	}
	f, err := os.Open(d.path)
	if err == nil {
		err = syncFS(f)
		f.Close()
	}
	if err != nil {
		d.unsynced.Store(true)
	}
	return err
}

// RunSyncer calls Sync every interval until ctx ends, under
// FsyncEverySec; under the other policies it returns at once. It logs the
// first failure of a run of syncs, and when they work again.
func (d *Dir) RunSyncer(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if d.fsync != FsyncEverySec {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch err := d.Sync(); {
		case err != nil && !failing:
			log.Error("the uploads written since the last sync could not be made to reach the disk (UPLOAD_FSYNC=everysec); they are tried again at the next", "upload_dir", d.path, "error", err)
			failing = true
		case err == nil && failing:
			log.Info("the uploads reach the disk again", "upload_dir", d.path)
			failing = false
		}
	}
}

// syncDir makes the folder's entries (a new upload's name) reach the
// disk, for FsyncAlways. It returns the error of opening or syncing it.
func (d *Dir) syncDir() error {
	f, err := os.Open(d.path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
