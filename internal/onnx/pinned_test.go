package onnx

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeCUDARuntime stands in for the CUDA runtime, which needs a GPU: its
// cudaHostAlloc hands out ordinary memory filled with NaNs (page-locked
// memory comes uninitialised), fails while FAKE_CUDART_FAIL is set, and
// it logs each allocation and free to FAKE_CUDART_LOG.
const fakeCUDARuntime = `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void note(const char *what, void *p) {
	const char *path = getenv("FAKE_CUDART_LOG");
	FILE *f = path ? fopen(path, "a") : NULL;
	if (f) { fprintf(f, "%s %p\n", what, p); fclose(f); }
}
int cudaHostAlloc(void **p, size_t n, unsigned int flags) {
	if (getenv("FAKE_CUDART_FAIL") || flags != 1) return 2;
	if (posix_memalign(p, 4096, n)) return 2;
	memset(*p, 0xff, n);
	note("alloc", *p);
	return 0;
}
int cudaFreeHost(void *p) { note("free", p); free(p); return 0; }
const char *cudaGetErrorString(int e) { return e == 2 ? "out of memory" : "unknown error"; }
`

// buildFakeCUDARuntime compiles fakeCUDARuntime with the C compiler cgo
// uses and returns the library's path.
func buildFakeCUDARuntime(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src, lib := filepath.Join(dir, "fake.c"), filepath.Join(dir, "libcudart.so.13")
	if err := os.WriteFile(src, []byte(fakeCUDARuntime), 0o644); err != nil {
		t.Fatal(err)
	}
	cc, err := exec.Command("go", "env", "CC").Output()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(strings.TrimSpace(string(cc)), "-shared", "-fPIC", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("building the fake CUDA runtime: %v\n%s", err, out)
	}
	return lib
}

// TestPinnedBindings: a CUDA session's bindings in page-locked memory
// (here a fake CUDA runtime's, on a CPU session) run as bindings in Go's
// memory do, start zeroed, and give their memory back on Close; a
// binding whose memory the runtime refuses stays in Go's memory; a
// runtime that cannot be loaded is named.
func TestPinnedBindings(t *testing.T) {
	if err := loadCUDARuntime("/nonexistent/libcudart.so.13"); err == nil || !strings.Contains(err.Error(), "/nonexistent/libcudart.so.13") {
		t.Errorf("loading a missing runtime: %v, want an error naming it", err)
	}
	if err := loadCUDARuntime(buildFakeCUDARuntime(t)); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "cudart.log")
	t.Setenv("FAKE_CUDART_LOG", log)

	model, info := openModel(t, "yolov8n-dynamic.onnx")
	s, err := NewSession(model, info, Options{IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.HostMemory(); got != "" {
		t.Errorf("a CPU session's host memory %q, want none", got)
	}
	bind := func(pinned bool, batch int) *Binding {
		t.Helper()
		s.pinned = pinned
		b, err := s.NewBinding(batch, [2]int64{640, 640}, info.OutputShape)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pb, gb := bind(true, 2), bind(false, 2)
	defer gb.Close()
	if len(pb.pinned) != 2 || gb.pinned != nil {
		t.Fatalf("page-locked blocks: %d for the pinned binding, %d for Go's; want 2 and 0", len(pb.pinned), len(gb.pinned))
	}
	if slices.ContainsFunc(pb.Input(), func(v float32) bool { return v != 0 }) || slices.ContainsFunc(pb.Output(), func(v float32) bool { return v != 0 }) {
		t.Error("a pinned binding does not start zeroed")
	}
	for _, b := range []*Binding{pb, gb} {
		for j, in := 0, b.Input(); j < len(in); j++ {
			in[j] = float32(j%251) / 255
		}
		if err := s.Run(b); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff(gb.Output(), pb.Output()); diff != "" {
		t.Errorf("pinned binding's output (-Go's +pinned):\n%.2000s", diff)
	}
	one, err := pb.Prefix(1)
	if err != nil {
		t.Fatal(err)
	}
	clear(pb.Output())
	if err := s.Run(one); err != nil {
		t.Fatal(err)
	}
	if n := len(one.Output()); !cmp.Equal(gb.Output()[:n], one.Output()) {
		t.Error("a batch of the pinned binding's first image differs from its row of the batch of two")
	}
	one.Close()
	pb.Close()
	pb.Close() // a second Close does nothing
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		what, p, _ := strings.Cut(line, " ")
		held[p] += map[string]int{"alloc": 1, "free": -1}[what]
	}
	if len(held) != 2 || slices.ContainsFunc(slices.Collect(maps.Values(held)), func(n int) bool { return n != 0 }) {
		t.Errorf("page-locked blocks after Close (1: never freed, -1: freed twice or never allocated): %v", held)
	}

	t.Setenv("FAKE_CUDART_FAIL", "1")
	fb := bind(true, 1)
	defer fb.Close()
	if fb.pinned != nil {
		t.Error("a binding whose page-locked memory was refused holds some")
	}
	if err := s.Run(fb); err != nil {
		t.Errorf("a binding left in Go's memory: %v", err)
	}
	if _, _, err := pinnedFloats(10); err == nil || !strings.Contains(err.Error(), "out of memory") {
		t.Errorf("a refused allocation: %v, want the runtime's reason", err)
	}
}
