package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
)

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "-"+StagesFlag { // run again by runStages
		if err := RunChild(StagesFlag, os.Args[2], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if err := testenv.RemoveBinaries(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// The bench's Redis keeps no append-only file, which the API warns of as
// it starts: with a log folder, that warning is kept in api.log, the
// API's info lines are not, the system lists the logs it wrote, and a
// second system in the same folder writes its logs afresh.
func TestSystemKeepsProcessWarnings(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{BinDir: testenv.Binaries(t), LogDir: dir}
	for range 2 {
		s, err := newSystem(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.stop()
		want := []string{filepath.Join(dir, "api.log"), filepath.Join(dir, "redis.log")}
		if diff := cmp.Diff(want, s.logPaths()); diff != "" {
			t.Errorf("logPaths() (-want +got):\n%s", diff)
		}
	}
	api := readLog(t, dir, "api")
	if n := strings.Count(api, "appendonly no"); n != 1 {
		t.Errorf("api.log holds the append-only warning %d times, want 1:\n%s", n, api)
	}
	if strings.Contains(api, "level=INFO") {
		t.Errorf("api.log holds info lines, want warnings and errors only:\n%s", api)
	}
	if redis := readLog(t, dir, "redis"); !strings.Contains(redis, "Redis is starting") {
		t.Errorf("redis.log does not say Redis started:\n%s", redis)
	}
	if _, err := os.Stat(filepath.Join(dir, "worker.log")); !os.IsNotExist(err) {
		t.Errorf("worker.log without a worker: %v, want none", err)
	}
}

func readLog(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A worker that stops at start, here one asked for CUDA on a machine
// without it, fails the bench at once with the reason in worker.log,
// rather than after the minute a worker has to get ready.
func TestWorkerStoppingAtStartFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	lib, err := onnx.FindLibrary(os.Getenv("ORT_LIB"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSystem(&Config{BinDir: testenv.Binaries(t), LogDir: dir, Model: testenv.Model(t, "yolov8n.onnx"), Library: lib})
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	err = s.startWorkerEnv("ORT_PROVIDER=cuda", "ORT_FALLBACK_CPU=false")
	if err == nil || !strings.Contains(err.Error(), "stopped at start") {
		t.Fatalf("startWorkerEnv(ORT_PROVIDER=cuda) without a GPU: %v, want the worker stopped at start", err)
	}
	if log := readLog(t, dir, "worker"); !strings.Contains(log, "CUDA") {
		t.Errorf("worker.log does not say why (CUDA):\n%s", log)
	}
}
