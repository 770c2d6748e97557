package upload

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"yoloserve/internal/detect"
)

func TestDirSaveLoadDelete(t *testing.T) {
	d, err := NewDir(filepath.Join(t.TempDir(), "uploads"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref, err := d.Save(ctx, []byte("data"))
	if err != nil || !refPattern.MatchString(ref) {
		t.Fatalf("Save: %q %v", ref, err)
	}
	if b, err := d.Load(ctx, ref, nil); err != nil || string(b) != "data" {
		t.Fatalf("Load: %q %v", b, err)
	}
	if err := d.Delete(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Load(ctx, ref, nil); detect.ErrorCode(err) != detect.ENOTFOUND {
		t.Errorf("Load after Delete: %v", err)
	}
	// Names that are not Save's are never opened.
	for _, bad := range []string{"../../etc/passwd", "/etc/passwd", "x.upload", ""} {
		if _, err := d.Load(ctx, bad, nil); detect.ErrorCode(err) != detect.ENOTFOUND {
			t.Errorf("Load(%q): %v", bad, err)
		}
	}
}

// TestDirLoadIntoBuffer: Load reads an upload into the caller's buffer
// when it has room, so that a worker reuses its memory from task to task,
// and into memory of its own when it has not; either way the bytes are the
// upload's, whatever the buffer held.
func TestDirLoadIntoBuffer(t *testing.T) {
	d, err := NewDir(filepath.Join(t.TempDir(), "uploads"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 10_000) // 160 KB
	ref, err := d.Save(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		buf   []byte
		reuse bool
	}{
		{"no buffer", nil, false},
		{"a buffer with room, holding other bytes", bytes.Repeat([]byte{0xee}, 200_000), true},
		{"a buffer one byte too short", make([]byte, len(data)-1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := d.Load(ctx, ref, tc.buf)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("Load: %d bytes, %v; want the upload's %d", len(got), err, len(data))
			}
			if reused := cap(tc.buf) > 0 && &got[:1][0] == &tc.buf[:1][0]; reused != tc.reuse {
				t.Errorf("read into the buffer given: %v, want %v", reused, tc.reuse)
			}
		})
	}
}

func TestSweepRemovesOnlyOldOrphans(t *testing.T) {
	dir := t.TempDir()
	d, err := NewDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, _ := d.Save(ctx, []byte("old"))
	fresh, _ := d.Save(ctx, []byte("fresh"))
	tmp := filepath.Join(dir, ".tmp-123")
	os.WriteFile(tmp, nil, 0o600)
	other := filepath.Join(dir, "README")
	os.WriteFile(other, nil, 0o600)
	past := time.Now().Add(-3 * time.Hour)
	for _, p := range []string{filepath.Join(dir, old), tmp, other} {
		os.Chtimes(p, past, past)
	}
	n, marks, err := d.Sweep(2 * time.Hour)
	if err != nil || n != 2 || marks != 0 {
		t.Fatalf("Sweep removed %d uploads and %d marks (%v), want the old upload and temp file", n, marks, err)
	}
	for p, want := range map[string]bool{filepath.Join(dir, old): false, tmp: false, filepath.Join(dir, fresh): true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", p, err == nil, want)
		}
	}
}

// TestOpenRefusesUnknownSettings: a store kind or sync policy Open does
// not know is an error that names the variable, not a store that quietly
// runs as another (an unknown policy would leave uploads unsynced).
func TestOpenRefusesUnknownSettings(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		name string
	}{
		{Config{Kind: "disk", Dir: t.TempDir()}, "UPLOAD_STORE"},
		{Config{Dir: t.TempDir(), Fsync: "sometimes"}, "UPLOAD_FSYNC"},
	} {
		if s, err := Open(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("Open(%+v) = %v, %v; want an error naming %s", tc.cfg, s, err, tc.name)
		}
	}
}
