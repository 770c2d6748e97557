package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
)

// TestInterruptedBenchCleansUp: a bench stopped while it measures the
// service (SIGINT or SIGTERM to the bench alone, as a supervisor or `kill`
// sends it) exits 130 within seconds and leaves neither a process of its
// own (redis-server, the API, the worker) nor their temporary folder,
// which holds the uploads, a gigabyte during the API's intake.
func TestInterruptedBenchCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bench, redis-server, the API and a worker as processes")
	}
	lib, err := onnx.FindLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "bench")
	if out, err := exec.Command("go", "build", "-o", exe, "yoloserve/cmd/bench").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			tmp := t.TempDir()
			cmd := exec.Command(exe, "-service-only", "-workers", "2x1x2", "-bin", testenv.Binaries(t),
				"-model", testenv.Model(t, "yolov8n.onnx"), "-images", filepath.Dir(testenv.Image(t, "bus.jpg")),
				"-out", filepath.Join(tmp, "results.json"), "-logs", "-")
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "ORT_LIB="+lib)
			var out testenv.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = testenv.DieWithTest()
			cmd.WaitDelay = 5 * time.Second // its children may hold its output
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var waitErr error
			exited := make(chan struct{})
			go func() { waitErr = cmd.Wait(); close(exited) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-exited })

			testenv.Eventually(t, 60*time.Second, "the bench never started its worker", func() bool {
				return len(procsIn(t, tmp, "worker")) == 1
			})
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
				if ee, ok := waitErr.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
					t.Errorf("the bench exited with %v, want status 130:\n%s", waitErr, &out)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the bench still runs 30 s after %v:\n%s", sig, &out)
			}
			if !strings.Contains(out.String(), "bench: interrupted") {
				t.Errorf("the bench does not say it was interrupted:\n%s", &out)
			}
			if left := procsIn(t, tmp, ""); len(left) > 0 {
				t.Errorf("processes left running in the bench's folder: %v", left)
			}
			if left, _ := filepath.Glob(filepath.Join(tmp, "yoloserve-bench-*")); len(left) > 0 {
				t.Errorf("the bench left its folder: %v", left)
			}
		})
	}
}

// procsIn returns the names of the processes (comm) whose working folder
// or command line is under dir, only those named name when it is not
// empty.
func procsIn(t *testing.T, dir, name string) []string {
	t.Helper()
	procs, err := procfs.AllProcs()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, p := range procs {
		comm, err := p.Comm()
		if err != nil || (name != "" && comm != name) {
			continue
		}
		cwd, _ := p.Cwd()
		args, _ := p.CmdLine()
		if strings.HasPrefix(cwd, dir) || strings.Contains(strings.Join(args, " "), dir) {
			found = append(found, comm)
		}
	}
	return found
}
