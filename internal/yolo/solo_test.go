package yolo_test

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// TestSoloSessionRunsLoneImages: an image alone in the detector runs on
// the solo session with every core, one that has company on its slot's
// session, and both give the same detections.
func TestSoloSessionRunsLoneImages(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
	if got := d.Config().SoloThreads; got != runtime.GOMAXPROCS(0) {
		t.Fatalf("solo session with %d threads, want %d (every core)", got, runtime.GOMAXPROCS(0))
	}
	ctx := context.Background()
	for _, name := range []string{"bus.jpg", "zidane.jpg"} {
		data := testenv.ReadImage(t, name)
		before := d.SoloRuns()
		alone, err := d.Detect(ctx, data, detect.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		if d.SoloRuns() != before+1 {
			t.Errorf("%s alone: %d solo runs, want 1", name, d.SoloRuns()-before)
		}
		release, err := d.Occupy(ctx)
		if err != nil {
			t.Fatal(err)
		}
		shared, err := d.Detect(ctx, data, detect.DefaultParams())
		release()
		if err != nil {
			t.Fatal(err)
		}
		if d.SoloRuns() != before+1 {
			t.Errorf("%s beside another image ran on the solo session", name)
		}
		if diff := cmp.Diff(alone.Detections, shared.Detections); diff != "" {
			t.Errorf("%s: solo and slot sessions differ (-solo +slot):\n%s", name, diff)
		}
	}
}

// TestNoSoloSessionWhereItGainsNothing: no solo session when a slot
// already has every core, when it is turned off, or when batching runs
// one batch at a time on every core.
func TestNoSoloSessionWhereItGainsNothing(t *testing.T) {
	for _, c := range []struct {
		name, model string
		cfg         yolo.Config
	}{
		{"one slot", "yolov8n.onnx", yolo.Config{Concurrency: 1}},
		{"one slot of one thread", "yolov8n.onnx", yolo.Config{Concurrency: 1, Threads: 1}},
		{"turned off", "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1, SoloThreads: 1}},
		{"batching", "yolov8n-dynamic.onnx", yolo.Config{Concurrency: 4, BatchMax: 4}},
	} {
		d := openDetector(t, c.model, c.cfg)
		if got := d.Config().SoloThreads; got != 0 {
			t.Errorf("%s: solo session with %d threads, want none", c.name, got)
		}
		if _, err := d.Detect(context.Background(), testenv.ReadImage(t, "bus.jpg"), detect.DefaultParams()); err != nil {
			t.Fatal(err)
		}
		if n := d.SoloRuns(); n != 0 {
			t.Errorf("%s: %d solo runs", c.name, n)
		}
	}
}

// TestLoneImageLeavesNoCoreSpinning: the solo session's threads do not
// busy-wait. ONNX Runtime's default spinning would burn about 40 ms of a
// core after each lone image, and take the cores of other workers on the
// host; here the process must stay near idle once the image is done.
func TestLoneImageLeavesNoCoreSpinning(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
	data := testenv.ReadImage(t, "bus.jpg")
	var worst time.Duration
	for range 3 {
		if _, err := d.Detect(context.Background(), data, detect.DefaultParams()); err != nil {
			t.Fatal(err)
		}
		before := processCPU(t)
		time.Sleep(100 * time.Millisecond)
		worst = max(worst, processCPU(t)-before)
	}
	if d.SoloRuns() != 3 {
		t.Fatalf("%d solo runs, want 3", d.SoloRuns())
	}
	if worst > 15*time.Millisecond {
		t.Errorf("%v of CPU in the 100 ms after a lone image: the solo session's threads spin", worst)
	}
}

// processCPU returns the CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
