package upload

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Spare files: a Dir does not delete the file of an upload a worker is
// done with, but moves it to a subfolder of spares, and Save writes the
// next upload over a spare's bytes instead of creating a file. Creating a
// file and deleting it cost more than renaming one and overwriting its
// blocks on every file system measured (BenchmarkDirUploads;
// docs/performance.md, The API's intake): for a 110 KB upload saved,
// synced and later deleted, 0.36–0.43 ms against 1.10–1.12 ms on a
// development machine's root file system (ext4 without a journal, mounted
// with discard: each new inode passes over those deleted in the last
// minutes, each freed block is discarded at once), 0.43–0.50 against
// 0.47–0.58 ms on ext4 with a journal, 0.09 against 0.13–0.15 ms on tmpfs.
// Emptying a spare as it is kept cost 0.93 ms there: ext4 then writes the
// next upload out when its file is closed (auto_da_alloc), and discards
// the freed blocks.
//
// Spares wait under random names. Each was once an upload, and Save
// creates a file only when it finds no spare, so they number about as
// many as the uploads that once waited at the same time, at most, and hold
// no more of the disk than those did. They keep an upload's bytes until
// they are overwritten or removed: the sweeper removes those unused for
// UPLOAD_MAX_AGE, and all of them while the disk has less free than the
// reserve, when Delete removes uploads instead of keeping them. A spare is
// taken by renaming it to the new upload's name without replacing
// (renameat2 with RENAME_NOREPLACE), which is atomic: of two processes
// that try the same spare, one gets it and the other tries the next.
// Where the file system cannot rename so (NFS), a Dir keeps no spares.

// SpareFolder is the subfolder of the upload folder that holds spare
// files, which are no uploads.
const SpareFolder = ".spare"

// spareBatch is how many spare names a Dir reads from the folder at once.
const spareBatch = 256

// spareRecheck is how many times the cost of a read of the spare folder
// that found none a Dir waits before it reads the folder again: a folder
// once grown large takes long to read even when empty, and such reads
// then take at most about 1% of the time. The cost is the CPU time the
// read took (readCost), which a busy machine that preempts the read does
// not inflate as it does the wall time: a read held up for 20 ms made the
// Dir pass over the spares for 2 s.
const spareRecheck = 100

// spareRecheckMin is the least a Dir waits before it reads an empty spare
// folder again: spares come back as uploads end, and reading for them
// more often than a hundred times a second only takes the cores from the
// uploads when they are busiest.
const spareRecheckMin = 10 * time.Millisecond

// spares hands out and takes back a Dir's spare files; a nil *spares has
// none (take finds none, keep keeps none, sweep does nothing).
type spares struct {
	folder string
	// off is set when the file system turned out not to rename without
	// replacing: the Dir then creates and deletes files, as without
	// spares.
	off atomic.Bool

	// readNames reads up to n names from the folder: readNames, or in
	// tests one that is held up as a busy machine can hold a read up.
	readNames func(folder string, n int) []string

	mu        sync.Mutex
	names     []string  // read from the folder or kept here, not yet tried
	nextCheck time.Time // when an empty folder may be read again
	reading   bool      // an upload is reading the folder
}

// newSpares returns the spares of the upload folder path, making their
// subfolder, or nil when it cannot be made or the folder's file system
// cannot rename without replacing (tried on probe, a file in path, which
// it removes once moved).
func newSpares(path, probe string) *spares {
	folder := filepath.Join(path, SpareFolder)
	if err := os.MkdirAll(folder, 0o750); err != nil {
		return nil
	}
	moved := filepath.Join(folder, filepath.Base(probe))
	if renameNoReplace(probe, moved) != nil {
		return nil
	}
	os.Remove(moved)
	return &spares{folder: folder, readNames: readNames}
}

// on reports whether there are spares to take and keep: false for a nil
// *spares, and once the file system turned out not to rename without
// replacing.
func (s *spares) on() bool { return s != nil && !s.off.Load() }

// take renames a spare file to name (which must not exist) and returns it
// opened for writing at its start, with its size; or nil when there is
// none to take, so that the caller creates the file.
func (s *spares) take(name string) (*os.File, int64) {
	if !s.on() {
		return nil, 0
	}
	for {
		spare := s.next()
		if spare == "" {
			return nil, 0
		}
		// Dated now before it takes the upload's name, so that the
		// sweeper never finds an upload dated when its file became a
		// spare (and removes it as an orphan) before Save writes it.
		from := filepath.Join(s.folder, spare)
		now := time.Now()
		os.Chtimes(from, now, now)
		switch err := renameNoReplace(from, name); {
		case errors.Is(err, fs.ErrNotExist):
			continue // taken by another process, or swept
		case errors.Is(err, errNoRenameNoReplace):
			s.off.Store(true)
			return nil, 0
		case err != nil:
			return nil, 0
		}
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			os.Remove(name)
			return nil, 0
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			os.Remove(name)
			return nil, 0
		}
		return f, info.Size()
	}
}

// next returns the name of a spare to try: one this process kept, or one
// of a batch read from the folder when it has none; or "" when the folder
// has none, or another upload is reading it. The read is made without
// the lock, so that the uploads behind it do not queue for it: an upload
// that finds the folder being read creates its file.
func (s *spares) next() string {
	s.mu.Lock()
	if name := s.pop(); name != "" || s.reading || time.Now().Before(s.nextCheck) {
		s.mu.Unlock()
		return name
	}
	s.reading = true
	s.mu.Unlock()
	start := time.Now()
	names, cost := readCost(func() []string { return s.readNames(s.folder, spareBatch) })
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = false
	if len(names) == 0 {
		s.nextCheck = start.Add(max(spareRecheck*cost, spareRecheckMin))
	}
	// Spares kept meanwhile are in names too, or in the folder still:
	// a name tried twice is found gone the second time.
	s.names = append(s.names, names...)
	return s.pop()
}

// wallCost returns what read returns and the wall time it took: the cost
// where a thread's CPU clock cannot be read.
func wallCost(read func() []string) ([]string, time.Duration) {
	start := time.Now()
	names := read()
	return names, time.Since(start)
}

// pop takes the last name of s.names, or "" when there is none; s.mu
// must be held.
func (s *spares) pop() string {
	if len(s.names) == 0 {
		return ""
	}
	n := s.names[len(s.names)-1]
	s.names = s.names[:len(s.names)-1]
	return n
}

// readNames returns up to n names from folder (none when it cannot be
// read).
func readNames(folder string, n int) []string {
	f, err := os.Open(folder)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(n)
	return names
}

// keep moves the upload file path to the spares; it reports false when it
// did not (no spares, or the move failed), and the caller then removes the
// file.
func (s *spares) keep(path string) bool {
	if !s.on() {
		return false
	}
	id, err := newID()
	if err != nil {
		return false
	}
	spare := filepath.Join(s.folder, id)
	if os.Rename(path, spare) != nil {
		return false
	}
	// Dated when it became a spare, for sweep.
	now := time.Now()
	os.Chtimes(spare, now, now)
	s.mu.Lock()
	if len(s.names) < spareBatch {
		s.names = append(s.names, id)
		s.nextCheck = time.Time{}
	}
	s.mu.Unlock()
	return true
}

// sweep removes the spares unused since before cutoff, and the others too
// while short reports that the disk is short of room; it makes the spare
// folder again if it was removed.
func (s *spares) sweep(cutoff time.Time, short func() bool) {
	if s == nil {
		return
	}
	os.MkdirAll(s.folder, 0o750)
	entries, err := os.ReadDir(s.folder)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && (info.ModTime().Before(cutoff) || short()) {
			os.Remove(filepath.Join(s.folder, e.Name()))
		}
	}
}
