package bench

import (
	"errors"
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
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			tmp := t.TempDir()
			cmd := exec.Command(testenv.Binary(t, "bench"), "-service-only", "-workers", "2x1x2", "-bin", testenv.Binaries(t),
				"-model", testenv.Model(t, "yolov8n.onnx"), "-images", filepath.Dir(testenv.Image(t, "bus.jpg")),
				"-out", filepath.Join(tmp, "results.json"), "-logs", "-")
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "ORT_LIB="+lib)
			cmd.SysProcAttr = testenv.DieWithTest()
			cmd.WaitDelay = 5 * time.Second // its children may hold its output
			bench := testenv.Run(t, "bench", cmd)

			testenv.Eventually(t, 60*time.Second, "the bench never started its worker", func() bool {
				return processIn(tmp, "worker") != 0
			})
			bench.Signal(sig)
			var exit *exec.ExitError
			if err := bench.Wait(t, 30*time.Second); !errors.As(err, &exit) || exit.ExitCode() != 130 {
				t.Errorf("the bench exited with %v, want status 130:\n%s", err, bench.Output())
			}
			if !strings.Contains(bench.Output(), "bench: interrupted") {
				t.Errorf("the bench does not say it was interrupted:\n%s", bench.Output())
			}
			if pid := processIn(tmp, ""); pid != 0 {
				t.Errorf("process %d left running in the bench's folder", pid)
			}
			if left, _ := filepath.Glob(filepath.Join(tmp, "yoloserve-bench-*")); len(left) > 0 {
				t.Errorf("the bench left its folder: %v", left)
			}
		})
	}
}

// processIn returns the id of a running process whose working folder or
// command line is under dir, named name (comm) when name is not empty; 0
// when there is none.
func processIn(dir, name string) int {
	return testenv.LiveProcess(func(st procfs.ProcStat) bool {
		if name != "" && st.Comm != name {
			return false
		}
		p, err := procfs.NewProc(st.PID)
		if err != nil {
			return false
		}
		cwd, _ := p.Cwd()
		args, _ := p.CmdLine()
		return strings.HasPrefix(cwd, dir) || strings.Contains(strings.Join(args, " "), dir)
	})
}
