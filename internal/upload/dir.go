// Package upload keeps uploaded images until a worker has processed them.
package upload

import (
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
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
)

// Dir stores uploads as files in a folder shared by the API and the
// workers. File names are made by the server; the client's name is never
// used as a path.
type Dir struct {
	path string
}

// refPattern is the shape of the names newRef makes.
var refPattern = regexp.MustCompile(`^[0-9a-f]{32}\.upload$`)

// newRef makes a new random upload name.
func newRef() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]) + ".upload", nil
}

// errNoUpload is what Load returns for an upload that is gone (or a name
// newRef could not have made).
var errNoUpload = detect.Errorf(detect.ENOTFOUND, "No such upload.")

// NewDir returns a Dir on path, creating the folder when missing. It
// returns an error when the folder cannot be created or written.
func NewDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o750); err != nil {
		return nil, fmt.Errorf("UPLOAD_DIR %s: %w", path, err)
	}
	f, err := os.CreateTemp(path, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("UPLOAD_DIR %s is not writable: %w", path, err)
	}
	f.Close()
	os.Remove(f.Name())
	return &Dir{path: path}, nil
}

// errStore is what a client reads when an upload cannot be stored (a full
// or unwritable disk): a fault of the service, worth a retry.
var errStore = detect.Errorf(detect.EUNAVAILABLE, "The upload could not be stored; try again shortly.")

// Save writes data under a new random name and returns that name. It
// returns an EUNAVAILABLE *Error when the file cannot be written (a full
// or unwritable disk), having removed what it wrote.
//
// The file is written under its final name, not aside and renamed: no
// reader can see it half-written, since its task is enqueued only once
// Save has returned, and one left half-written by a crash is an orphan
// that Sweep removes like any other. A rename took the folder's lock and
// a journal transaction more per upload, which a slow disk made the
// slowest step of an upload.
func (d *Dir) Save(_ context.Context, data []byte) (string, error) {
	ref, err := newRef()
	if err != nil {
		return "", err
	}
	name := filepath.Join(d.path, ref)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("%w (%v)", errStore, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("%w (%v)", errStore, err)
	}
	return ref, nil
}

// Load returns an upload's bytes. It returns an ENOTFOUND *Error when there
// is no such upload (or ref is not a name Save makes).
func (d *Dir) Load(_ context.Context, ref string) ([]byte, error) {
	if !refPattern.MatchString(ref) {
		return nil, errNoUpload
	}
	b, err := os.ReadFile(filepath.Join(d.path, ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoUpload
	}
	return b, err
}

// Delete removes an upload; a missing one is not an error.
func (d *Dir) Delete(_ context.Context, ref string) error {
	if !refPattern.MatchString(ref) {
		return nil
	}
	err := os.Remove(filepath.Join(d.path, ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Sweep removes uploads older than maxAge: orphans whose task never ran to
// its end (a crash during or after the save, before the enqueue; a task
// deleted by hand). It also removes the ".tmp-" files that earlier
// versions wrote before renaming them, left by a crash. It returns how
// many it removed.
func (d *Dir) Sweep(maxAge time.Duration) (int, error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-maxAge)
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !refPattern.MatchString(name) && !(len(name) > 5 && name[:5] == ".tmp-") {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		if os.Remove(filepath.Join(d.path, name)) == nil {
			n++
		}
	}
	return n, nil
}

// RunSweeper sweeps every interval until ctx ends, logging what it removed.
func (d *Dir) RunSweeper(ctx context.Context, maxAge, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := d.Sweep(maxAge); err != nil {
			log.Warn("sweeping uploads", "error", err)
		} else if n > 0 {
			log.Info("removed orphaned uploads", "count", n, "older_than", maxAge)
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
	Load(ctx context.Context, ref string) ([]byte, error)
	Delete(ctx context.Context, ref string) error
}

// Open returns the store kind names ("dir" or "redis"): a Dir on dir, or
// Redis on rdb with uploads expiring after maxAge. It returns an error for
// an unknown kind or a folder that cannot be used.
func Open(kind, dir string, rdb redis.UniversalClient, maxAge time.Duration) (Store, error) {
	switch kind {
	case "", "dir":
		return NewDir(dir)
	case "redis":
		return NewRedis(rdb, maxAge), nil
	}
	return nil, fmt.Errorf("UPLOAD_STORE=%q: want dir or redis", kind)
}
