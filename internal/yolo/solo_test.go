package yolo_test

import (
	"context"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
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
	d.IgnoreCrowding()
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

// TestLoneImageLeavesNoCoreSpinning: the solo session's threads stop
// busy-waiting when a run returns. ONNX Runtime's default spinning would
// burn about 40 ms of a core after each lone image, and take the cores of
// other workers on the host; here the process must stay near idle once
// the image is done.
func TestLoneImageLeavesNoCoreSpinning(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
	d.IgnoreCrowding()
	data := testenv.ReadImage(t, "bus.jpg")
	var worst time.Duration
	for range 3 {
		detectAlone(t, d, data)
		before := yolo.ProcessCPU()
		time.Sleep(100 * time.Millisecond)
		worst = max(worst, yolo.ProcessCPU()-before)
	}
	if d.SoloRuns() != 3 {
		t.Fatalf("%d solo runs, want 3", d.SoloRuns())
	}
	if worst > 15*time.Millisecond {
		t.Errorf("%v of CPU in the 100 ms after a lone image: the solo session's threads spin", worst)
	}
}

// TestSoloSessionRestsWhileCoresAreTaken: when another process keeps the
// cores busy, as another worker on the host would, a lone image's solo
// run finds them taken and the images that follow run on their slots'
// sessions, instead of fighting that process with spinning threads; once
// the cores are free again, lone images go back to the solo session.
func TestSoloSessionRestsWhileCoresAreTaken(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
	data := testenv.ReadImage(t, "bus.jpg")

	stop := busyCores(t, runtime.GOMAXPROCS(0))
	// The rests grow with each crowded run in a row: the third's is
	// longer than an image takes beside busy processes, under the race
	// detector too.
	deadline := time.Now().Add(20 * time.Second)
	for d.SoloCrowded() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d solo runs beside %d busy processes, %d found the cores taken, want 3", d.SoloRuns(), runtime.GOMAXPROCS(0), d.SoloCrowded())
		}
		detectAlone(t, d, data)
	}
	runs := d.SoloRuns()
	detectAlone(t, d, data)
	if d.SoloRuns() != runs {
		t.Errorf("the image after three crowded solo runs ran on the solo session too")
	}

	stop()
	deadline = time.Now().Add(20 * time.Second)
	for d.SoloRuns() == runs {
		if time.Now().After(deadline) {
			t.Fatal("no lone image ran on the solo session in 20 s after the cores were freed")
		}
		detectAlone(t, d, data)
	}
}

// TestSoloRestsGrowAndShrink: each crowded run in a row rests the solo
// session four times as long, from 100 ms up to a minute, and each
// uncrowded run shortens the next rest as much. So one run that finds the
// cores free by chance beside a busy neighbour does not start the rests
// over, and a few bring them back to 100 ms for a moment's load.
func TestSoloRestsGrowAndShrink(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
	data := testenv.ReadImage(t, "bus.jpg")
	run := func(crowded bool) time.Duration {
		t.Helper()
		d.CrowdEveryRun(crowded)
		d.EndSoloRest()
		runs := d.SoloRuns()
		detectAlone(t, d, data)
		if d.SoloRuns() != runs+1 {
			t.Fatalf("a lone image after the rest ran on its slot's session")
		}
		return d.SoloRest()
	}
	const ms = time.Millisecond
	var got []time.Duration
	for _, crowded := range []bool{true, true, true, false, true, false, false, false, false, false, true} {
		got = append(got, run(crowded))
	}
	want := []time.Duration{100 * ms, 400 * ms, 1600 * ms, 400 * ms, 1600 * ms, 400 * ms, 100 * ms, 25 * ms, 6250 * time.Microsecond, 1562500 * time.Nanosecond, 100 * ms}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rests after crowded (true) and uncrowded runs (-want +got):\n%s", diff)
	}
	for range 5 {
		run(true)
	}
	if got := d.SoloRest(); got != time.Minute {
		t.Errorf("rest after a long series of crowded runs: %v, want a minute", got)
	}
}

// TestLoneImageKeepsToItsCoreWhileSoloRests: while the solo session rests
// because other processes took the cores, a lone image is decoded on its
// own core, as one with company is: a strip handed to another core would
// wait for it, or hold up the process that has it. Once the rest is over,
// lone images are decoded in strips again.
func TestLoneImageKeepsToItsCoreWhileSoloRests(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	jpeg, err := imagelib.OpenJPEG("")
	if err != nil {
		t.Fatalf("needs libjpeg-turbo (apt-get install libturbojpeg0): %v", err)
	}
	counter := &stripCounter{StripDecoder: jpeg}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1, Decoder: &decode.Decoder{JPEG: counter}})
	data := testenv.ReadImage(t, "bus.jpg") // with restart markers
	d.CrowdEveryRun(true)
	want := detectAlone(t, d, data)
	if counter.calls.Load() != 1 {
		t.Fatalf("the first lone image was decoded in strips %d times, want 1", counter.calls.Load())
	}
	// Two more crowded solo runs: the rest is then 1.6 s, longer than an
	// image takes under the race detector.
	for range 2 {
		d.EndSoloRest()
		detectAlone(t, d, data)
	}
	calls, runs := counter.calls.Load(), d.SoloRuns()
	if diff := cmp.Diff(want, detectAlone(t, d, data)); diff != "" {
		t.Errorf("a lone image while the solo session rests (-first +resting):\n%s", diff)
	}
	if d.SoloRuns() != runs {
		t.Fatal("a lone image ran on the solo session during its rest")
	}
	if got := counter.calls.Load() - calls; got != 0 {
		t.Errorf("a lone image during the solo session's rest was decoded in strips (%d calls)", got)
	}
	d.EndSoloRest()
	detectAlone(t, d, data)
	if got := counter.calls.Load() - calls; got != 1 {
		t.Errorf("the lone image after the rest was decoded in strips %d times, want 1", got)
	}
}

// stripCounter counts the calls of the strip decoder it wraps.
type stripCounter struct {
	decode.StripDecoder
	calls atomic.Int64
}

func (c *stripCounter) DecodeJPEGStrips(strips []decode.Strip) bool {
	c.calls.Add(1)
	return c.StripDecoder.DecodeJPEGStrips(strips)
}

// TestSoloRunGivesWay: an image about to run on its slot's session does
// not share the cores with a solo run's spinning threads. A solo run that
// has only begun is stopped, and the lone image runs again on its slot's
// session with the same detections; one near its end is waited for.
// Either way the next lone image runs on the solo session.
func TestSoloRunGivesWay(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("a solo session needs more cores than a slot's share")
	}
	for _, c := range []struct {
		name string
		solo time.Duration // how long solo runs take, against slot runs of 10 ms
		stop bool
	}{
		{"a run that has only begun", time.Hour, true},
		{"a run near its end", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
			d.IgnoreCrowding()
			data := testenv.ReadImage(t, "bus.jpg")
			want := detectAlone(t, d, data)
			stopped, finished, got := giveWayInFlight(t, d, data, 10*time.Millisecond, c.solo)
			if stopped != c.stop {
				t.Errorf("stopped %v, want %v", stopped, c.stop)
			}
			if wantFinished := !c.stop; finished != wantFinished || (d.SoloYielded() == 1) != c.stop {
				t.Errorf("the lone image finished on the solo session: %v, want %v (%d stopped runs)", finished, wantFinished, d.SoloYielded())
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("the lone image's detections (-alone +given way):\n%s", diff)
			}
			runs := d.SoloRuns()
			if diff := cmp.Diff(want, detectAlone(t, d, data)); diff != "" {
				t.Errorf("the next lone image (-first +next):\n%s", diff)
			}
			if d.SoloRuns() != runs+1 {
				t.Errorf("the next lone image did not run on the solo session")
			}
		})
	}
}

// detectAlone detects data alone in d and returns the detections.
func detectAlone(t *testing.T, d *yolo.Detector, data []byte) []detect.Detection {
	t.Helper()
	r, err := d.Detect(context.Background(), data, detect.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	return r.Detections
}

// giveWayInFlight detects data alone in d and, once its solo run is seen
// in flight, gives way as an image right behind it would (GiveWay with
// slot and solo), checking that the run has ended when GiveWay returns.
// A run that ends before it is seen is tried again, ten times at most. It
// returns whether GiveWay stopped the run, whether the lone image finished
// on the solo session, and its detections.
func giveWayInFlight(t *testing.T, d *yolo.Detector, data []byte, slot, solo time.Duration) (stopped, finished bool, dets []detect.Detection) {
	t.Helper()
	type result struct {
		r   *detect.Result
		err error
	}
attempts:
	for range 10 {
		runs := d.SoloRuns()
		done := make(chan result, 1)
		go func() {
			r, err := d.Detect(context.Background(), data, detect.DefaultParams())
			done <- result{r, err}
		}()
		inFlight := false
		for !inFlight {
			select {
			case r := <-done:
				if r.err != nil {
					t.Fatal(r.err)
				}
				continue attempts // it ended before it was seen
			default:
			}
			if d.SoloRunning() {
				inFlight, stopped = d.GiveWay(slot, solo)
				if d.SoloRunning() {
					t.Error("GiveWay returned while the solo run went on")
				}
			}
			time.Sleep(50 * time.Microsecond)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		return stopped, d.SoloRuns() == runs+1, r.r.Detections
	}
	t.Fatal("in 10 lone images, no solo run was seen in flight")
	return
}

// busyCores starts n processes that keep a core busy each, and returns a
// function that stops them (also called at the end of the test).
func busyCores(tb testing.TB, n int) (stop func()) {
	tb.Helper()
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
		cmds = nil
	}
	tb.Cleanup(stop)
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			tb.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	return stop
}
