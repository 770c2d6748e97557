// Package upload keeps uploaded images until a worker has processed them.
package upload

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"yoloserve/internal/detect"
)

// Dir stores uploads as files in a folder shared by the API and the
// workers. File names are made by the server; the client's name is never
// used as a path.
type Dir struct {
	path    string
	reserve int64  // bytes Save leaves free on the folder's disk
	fsync   string // FsyncEverySec, FsyncAlways; else FsyncNo (fsync.go)
	// unsynced is set by Save under FsyncEverySec and cleared by Sync.
	unsynced atomic.Bool
	// spares are the files of finished uploads that Save writes over
	// (spare.go); nil where the file system cannot rename without
	// replacing.
	spares *spares
}

// refPattern is the shape of the names newRef makes.
var refPattern = regexp.MustCompile(`^[0-9a-f]{32}\.upload$`)

// newRef makes a new random upload name.
func newRef() (string, error) {
	id, err := newID()
	if err != nil {
		return "", err
	}
	return id + ".upload", nil
}

// newID makes a new random id of 32 hex digits: an upload's name before
// its extension, a mark's id.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// errNoUpload is what Load returns for an upload that is gone (or a name
// newRef could not have made).
var errNoUpload = detect.Errorf(detect.ENOTFOUND, "No such upload.")

// NewDir returns a Dir on path, creating the folder when missing, that
// leaves reserve bytes free on the folder's disk (0: none), and that
// keeps spare files where the folder's file system can (spare.go). It
// returns an error when the folder cannot be created or written.
func NewDir(path string, reserve int64) (*Dir, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("UPLOAD_DIR %s: %w", path, err)
	}
	f, err := os.CreateTemp(path, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("UPLOAD_DIR %s is not writable: %w", path, err)
	}
	f.Close()
	sp := newSpares(path, f.Name())
	os.Remove(f.Name()) // where newSpares did not move it
	return &Dir{path: path, reserve: max(reserve, 0), spares: sp}, nil
}

// KeepsSpares reports whether the Dir reuses the files of finished
// uploads (spare.go).
func (d *Dir) KeepsSpares() bool { return d.spares.on() }

// errStore is what a client reads when an upload cannot be stored (a full
// or unwritable disk): a fault of the service, worth a retry.
var errStore = detect.Unavailable(detect.ReasonUploadStore, "The upload could not be stored; try again shortly.")

// Save writes data under a new random name and returns that name. It
// returns an EUNAVAILABLE *Error when the file would leave less than the
// Dir's reserve free on the disk, or cannot be written (a full or
// unwritable disk), having removed what it wrote. With FsyncAlways it
// returns once the file and its name are on the disk; with FsyncEverySec
// the next Sync writes them (fsync.go).
//
// The reserve keeps uploads from filling a disk that others need: with
// Docker Compose, Redis's append-only file is on the same disk, and a
// Redis that cannot write it refuses every write (or, with appendfsync
// always, exits), so the workers could not take the tasks whose uploads
// fill the disk. Uploads saved at once each see the same free space, so
// the disk may go below the reserve by what they hold together (at most
// MAX_INFLIGHT_BYTES an API).
//
// The file is a spare renamed to the upload's name, its bytes
// overwritten, where the Dir has one (spare.go), and only what the upload
// adds to a spare's size counts against the reserve; else a new file. It
// is written under its final name, not aside and renamed: no reader can
// see it half-written, since its task is enqueued only once Save has
// returned, and one left half-written by a crash is an orphan that Sweep
// removes like any other. A rename after the write took the folder's lock
// and a journal transaction more per upload, which a slow disk made the
// slowest step of an upload.
func (d *Dir) Save(_ context.Context, data []byte) (string, error) {
	ref, err := newRef()
	if err != nil {
		return "", err
	}
	name := filepath.Join(d.path, ref)
	f, size := d.spares.take(name)
	if err := d.CheckRoom(max(int64(len(data))-size, 0)); err != nil {
		if f != nil {
			// Removed, not kept: the disk needs the room.
			f.Close()
			os.Remove(name)
		}
		return "", err
	}
	if f == nil {
		f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return "", fmt.Errorf("%w (%v)", errStore, err)
	}
	_, err = f.Write(data)
	if err == nil && size > int64(len(data)) {
		err = f.Truncate(int64(len(data))) // a spare's bytes past the upload's
	}
	if err == nil && d.fsync == FsyncAlways {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && d.fsync == FsyncAlways {
		err = d.syncDir()
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("%w (%v)", errStore, err)
	}
	if d.fsync == FsyncEverySec {
		d.unsynced.Store(true)
	}
	return ref, nil
}

// CheckRoom returns an EUNAVAILABLE *Error, saying how much is free, when
// writing n bytes would leave less than the reserve free (to unprivileged
// users, as the API runs) on the folder's disk. A disk whose free space
// cannot be read is left to the write.
func (d *Dir) CheckRoom(n int64) error {
	if d.reserve == 0 {
		return nil
	}
	free, err := d.Free()
	if err != nil {
		return nil
	}
	if free-n < d.reserve {
		upload := ""
		if n > 0 {
			upload = fmt.Sprintf("; the upload has %.1f MiB", mib(n))
		}
		return fmt.Errorf("%w (the disk of %s has %.1f MiB free, and UPLOAD_DISK_RESERVE keeps %.1f MiB free%s)", errStore, d.path, mib(free), mib(d.reserve), upload)
	}
	return nil
}

// Free returns the bytes free on the folder's disk to unprivileged users
// (as the API runs), or the error of statfs(2).
func (d *Dir) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.path, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// Load reads an upload into buf, grown as needed, and returns its bytes.
// It returns an ENOTFOUND *Error when there is no such upload (or ref is
// not a name Save makes).
func (d *Dir) Load(_ context.Context, ref string, buf []byte) ([]byte, error) {
	if !refPattern.MatchString(ref) {
		return nil, errNoUpload
	}
	f, err := os.Open(filepath.Join(d.path, ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoUpload
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	// bytes.Buffer reads until the end, growing buf only when it lacks
	// room for the file and the read that finds its end (bytes.MinRead).
	b := bytes.NewBuffer(buf[:0])
	if fi, err := f.Stat(); err == nil {
		b.Grow(int(fi.Size()) + bytes.MinRead)
	}
	if _, err := b.ReadFrom(f); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Delete removes an upload, moving its file to the spares where the Dir
// keeps them (spare.go) and the disk is not short of room; a missing one
// is not an error.
func (d *Dir) Delete(_ context.Context, ref string) error {
	if !refPattern.MatchString(ref) {
		return nil
	}
	if d.spares.on() && !d.short() && d.spares.keep(filepath.Join(d.path, ref)) {
		return nil
	}
	return d.remove(ref)
}

// short reports whether the folder's disk has less free than the reserve
// (never without one, or when its free space cannot be read).
func (d *Dir) short() bool {
	if d.reserve == 0 {
		return false
	}
	free, err := d.Free()
	return err == nil && free < d.reserve
}

// Discard removes an upload whose task was not enqueued, as Delete does:
// a file's write has ended when Save returns.
func (d *Dir) Discard(ctx context.Context, ref string) error {
	return d.Delete(ctx, ref)
}

// remove removes the folder's file name; a missing one is not an error.
func (d *Dir) remove(name string) error {
	err := os.Remove(filepath.Join(d.path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Sweep removes uploads older than maxAge: orphans whose task never ran to
// its end (a crash during or after the save, before the enqueue; a task
// deleted by hand), and the marks of APIs that were killed (mark.go). It
// also removes the ".tmp-" files that earlier versions wrote before
// renaming them, left by a crash, which it counts as uploads, and the
// spare files unused for maxAge, or all of them while the disk is short
// of room (spare.go), which it does not count. It returns how many
// uploads and marks it removed, and the error of reading the folder.
func (d *Dir) Sweep(maxAge time.Duration) (uploads, marks int, err error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return 0, 0, err
	}
	cutoff := time.Now().Add(-maxAge)
	d.spares.sweep(cutoff, d.short)
	for _, e := range entries {
		name := e.Name()
		mark := IsMarkFile(name)
		if !mark && !refPattern.MatchString(name) && !strings.HasPrefix(name, ".tmp-") {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(d.path, name)) != nil {
			continue
		}
		if mark {
			marks++
		} else {
			uploads++
		}
	}
	return uploads, marks, nil
}

// RunSweeper sweeps every interval until ctx ends, logging what it removed.
func (d *Dir) RunSweeper(ctx context.Context, maxAge, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if uploads, marks, err := d.Sweep(maxAge); err != nil {
			log.Warn("sweeping uploads", "error", err)
		} else {
			if uploads > 0 {
				log.Info("removed orphaned uploads", "count", uploads, "older_than", maxAge)
			}
			if marks > 0 {
				log.Info("removed the upload store marks of APIs that were killed", "count", marks, "older_than", maxAge)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Store is an upload store as the API and the workers use it.
type Store interface {
	Save(ctx context.Context, data []byte) (string, error)
	// Load reads an upload into buf (grown as needed; a store may return
	// other memory instead) and returns its bytes.
	Load(ctx context.Context, ref string, buf []byte) ([]byte, error)
	Delete(ctx context.Context, ref string) error
	// Discard removes an upload whose task was not enqueued, such that a
	// Save still on its way cannot store it after (see Redis.Discard).
	Discard(ctx context.Context, ref string) error
	PutMark(ctx context.Context) (string, error)
	HasMark(ctx context.Context, id string) (bool, error)
	DeleteMark(ctx context.Context, id string) error
}

// Config says where uploads wait for a worker.
type Config struct {
	// Kind is "dir" (the default: files in Dir) or "redis" (keys beside
	// the tasks).
	Kind string
	// Dir is a "dir" store's folder.
	Dir string
	// DiskReserve is the bytes a "dir" store leaves free on its folder's
	// disk (0: none).
	DiskReserve int64
	// MaxAge is how long a "redis" store keeps an upload.
	MaxAge time.Duration
	// Fsync is when a "dir" store's uploads reach the disk: in Save
	// (FsyncAlways), in the Dir's syncer (FsyncEverySec), or when the
	// kernel writes them (FsyncNo, "").
	Fsync string
}

// Open returns the store cfg describes, a "redis" one on rdb. It returns
// an error for an unknown kind or sync policy, or a folder that cannot be
// used.
func Open(cfg Config, rdb redis.UniversalClient) (Store, error) {
	switch cfg.Kind {
	case "", "dir":
		switch cfg.Fsync {
		case "", FsyncEverySec, FsyncAlways, FsyncNo:
		default:
			return nil, fmt.Errorf("UPLOAD_FSYNC=%q: want %s, %s or %s", cfg.Fsync, FsyncEverySec, FsyncAlways, FsyncNo)
		}
		d, err := NewDir(cfg.Dir, cfg.DiskReserve)
		if err != nil {
			return nil, err
		}
		d.fsync = cfg.Fsync
		return d, nil
	case "redis":
		return NewRedis(rdb, cfg.MaxAge), nil
	}
	return nil, fmt.Errorf("UPLOAD_STORE=%q: want dir or redis", cfg.Kind)
}
