package upload

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// A mark is an empty object that an API puts in its upload store, so that
// a worker can tell, before it takes a task, whether it reads the same
// store: the same folder for UPLOAD_STORE=dir, Redis for redis. The API
// says in Redis which marks it keeps; a worker that finds none of them in
// its own store sees none of the API's uploads either. Marks are not
// uploads: Load, Delete and a count of the folder's uploads never see
// them, and the sweeper removes one left by a killed API as it removes
// orphaned uploads.

// markPattern is the shape of the ids newID makes.
var markPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// markFilePrefix begins a mark's file name in a Dir: hidden, and not a
// name Save makes.
const markFilePrefix = ".mark-"

// redisMarkPrefix namespaces the mark keys of a Redis store, apart from
// its uploads.
const redisMarkPrefix = "yoloserve:upload-mark:"

// PutMark creates a new mark and returns its id. It returns an error when
// the file cannot be created (a full or unwritable disk). A mark takes no
// room but a name, so the reserve does not apply.
func (d *Dir) PutMark(_ context.Context) (string, error) {
	id, err := newID()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(filepath.Join(d.path, markFilePrefix+id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("upload folder mark: %w", err)
	}
	return id, f.Close()
}

// HasMark reports whether the folder holds the mark id. It returns an
// error only when the folder cannot be read; an id PutMark could not have
// made is not there.
func (d *Dir) HasMark(_ context.Context, id string) (bool, error) {
	if !markPattern.MatchString(id) {
		return false, nil
	}
	_, err := os.Stat(filepath.Join(d.path, markFilePrefix+id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// DeleteMark removes a mark; a missing one is not an error.
func (d *Dir) DeleteMark(_ context.Context, id string) error {
	if !markPattern.MatchString(id) {
		return nil
	}
	return d.remove(markFilePrefix + id)
}

// IsMarkFile says whether a folder entry is a mark, which is no upload.
func IsMarkFile(name string) bool {
	id, ok := strings.CutPrefix(name, markFilePrefix)
	return ok && markPattern.MatchString(id)
}

// PutMark creates a new mark, expiring after the store's maximum age as an
// upload does, and returns its id. It returns Redis's error.
func (s *Redis) PutMark(ctx context.Context) (string, error) {
	id, err := newID()
	if err != nil {
		return "", err
	}
	return id, s.rdb.Set(ctx, redisMarkPrefix+id, "", s.maxAge).Err()
}

// HasMark reports whether Redis holds the mark id; it returns Redis's
// error.
func (s *Redis) HasMark(ctx context.Context, id string) (bool, error) {
	if !markPattern.MatchString(id) {
		return false, nil
	}
	n, err := s.rdb.Exists(ctx, redisMarkPrefix+id).Result()
	return n == 1, err
}

// DeleteMark removes a mark; a missing one is not an error.
func (s *Redis) DeleteMark(ctx context.Context, id string) error {
	if !markPattern.MatchString(id) {
		return nil
	}
	return s.rdb.Del(ctx, redisMarkPrefix+id).Err()
}
