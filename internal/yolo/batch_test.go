package yolo_test

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// TestBatchingGivesUnbatchedResults runs the dynamic-batch model with
// batching on, many images at once, and checks every result against the
// same model run one image at a time: with each batch run at its own
// size, and padded (on sessions of their own for PadPow2).
func TestBatchingGivesUnbatchedResults(t *testing.T) {
	single := openDetector(t, "yolov8n-dynamic.onnx", yolo.Config{Concurrency: 1})
	for _, c := range []struct {
		padding  yolo.BatchPadding
		sessions int
	}{{yolo.PadNone, 1}, {yolo.PadPow2, 3}, {yolo.PadFull, 1}} {
		t.Run(string(c.padding), func(t *testing.T) {
			batched := openDetector(t, "yolov8n-dynamic.onnx", yolo.Config{Concurrency: 6, BatchMax: 4, BatchWait: 20 * time.Millisecond, BatchPadding: c.padding})
			cfg := batched.Config()
			if cfg.BatchMax != 4 {
				t.Fatalf("batching is off (BatchMax %d)", cfg.BatchMax)
			}
			if cfg.Sessions != c.sessions {
				t.Errorf("%d sessions, want %d", cfg.Sessions, c.sessions)
			}
			checkBatched(t, single, batched)
		})
	}
}

// checkBatched runs the test images three times over, all at once,
// through batched, and checks each result against single's.
func checkBatched(t *testing.T, single, batched *yolo.Detector) {
	t.Helper()
	names := testenv.Images(t)
	want := map[string][]detect.Detection{}
	for _, n := range names {
		r, err := single.Detect(context.Background(), testenv.ReadImage(t, n), detect.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		want[n] = r.Detections
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	inferences := map[float64]int{} // batch run times shared by several images
	for round := 0; round < 3; round++ {
		for _, n := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := batched.Detect(context.Background(), testenv.ReadImage(t, n), detect.DefaultParams())
				if err != nil {
					t.Error(err)
					return
				}
				if diff := cmp.Diff(want[n], r.Detections); diff != "" {
					t.Errorf("%s batched (-unbatched +batched):\n%s", n, diff)
				}
				mu.Lock()
				inferences[r.SpeedMS.Inference]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	shared := 0
	for _, c := range inferences {
		if c > 1 {
			shared += c
		}
	}
	if shared == 0 {
		t.Error("no two images ran in the same batch")
	}
}

// TestStaticModelIgnoresBatching: batching needs a free batch dimension;
// without it each slot keeps its own session and its share of the cores.
func TestStaticModelIgnoresBatching(t *testing.T) {
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, BatchMax: 8})
	c := d.Config()
	if c.BatchMax != 1 || c.Sessions != 2 || c.Threads != yolo.DefaultThreads(2) {
		t.Errorf("BatchMax %d, %d sessions × %d threads on a static model; want 1, 2 × %d", c.BatchMax, c.Sessions, c.Threads, yolo.DefaultThreads(2))
	}
}

// TestBatchingRunsOnEveryCore: the batcher runs one batch at a time on one
// session, so by default that session gets every core, not a slot's share
// (measured on two cores with batches of four: 9.7–9.8 images/s on one
// thread, 14.6–15.5 on two).
func TestBatchingRunsOnEveryCore(t *testing.T) {
	d := openDetector(t, "yolov8n-dynamic.onnx", yolo.Config{Concurrency: 8, BatchMax: 4})
	if c := d.Config(); c.Sessions != 1 || c.Threads != runtime.GOMAXPROCS(0) {
		t.Errorf("%d sessions × %d threads, want 1 × %d", c.Sessions, c.Threads, runtime.GOMAXPROCS(0))
	}
}

// TestBatchMemoryIsTheLargestBatchs: the batcher's tensors are those of
// one batch of BATCH_MAX images, whatever sizes the batches came in.
// Batches of every smaller size, after a full one, leave the resident
// memory where the full one left it: they had each kept their own
// tensors, 7.7 MB an image (with BATCH_MAX 32 on a GPU, 4 GB for the
// sizes 1 to 32).
func TestBatchMemoryIsTheLargestBatchs(t *testing.T) {
	const max = 8
	d := openDetector(t, "yolov8n-dynamic.onnx", yolo.Config{Concurrency: max, BatchMax: max, BatchWait: 200 * time.Millisecond})
	img := testenv.ReadImage(t, "bus.jpg")
	batch := func(n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := d.Detect(context.Background(), img, detect.DefaultParams()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	batch(max)
	batch(max)
	debug.FreeOSMemory()
	before := residentMB(t)
	for n := max - 1; n >= 2; n-- {
		batch(n)
	}
	debug.FreeOSMemory()
	after := residentMB(t)
	t.Logf("resident: %d MB after full batches, %d MB after batches of %d to 2", before, after, max-1)
	if after > before+40 {
		t.Errorf("batches of %d to 2 images took %d MB more than full batches had, want at most 40", max-1, after-before)
	}
}

// TestBatchingSlotsHoldNoTensors: with batching, an image's tensors are
// its place in a batch, so a worker's memory does not grow with its slots
// (each slot had kept tensors of its own, 7.7 MB an image: 493 MB for the
// 64 slots of a GPU worker with BATCH_MAX 32). The tensors are Go memory,
// so the Go heap a detector keeps measures them, where the resident
// memory also moves with what the C allocator keeps of closed sessions.
func TestBatchingSlotsHoldNoTensors(t *testing.T) {
	heapMB := func() int {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int(m.HeapAlloc >> 20)
	}
	open := func(slots int) int {
		before := heapMB()
		d := openDetector(t, "yolov8n-dynamic.onnx", yolo.Config{Concurrency: slots, BatchMax: 2})
		r, err := d.Detect(context.Background(), testenv.ReadImage(t, "bus.jpg"), detect.DefaultParams())
		if err != nil || len(r.Detections) == 0 {
			t.Fatalf("detections %v, error %v", r, err)
		}
		took := heapMB() - before
		d.Close()
		return took
	}
	few, many := open(2), open(34)
	t.Logf("a batching detector kept %d MB of Go heap with 2 slots, %d MB with 34", few, many)
	if many > few+20 {
		t.Errorf("32 more slots kept %d MB more, want at most 20", many-few)
	}
}

// TestBatchesHoldOneImageASlot: a detector with fewer slots than BatchMax
// runs a batch as soon as every slot's image is in it, instead of waiting
// out BatchWait for images that have no slot to come in by.
func TestBatchesHoldOneImageASlot(t *testing.T) {
	const slots = 3
	start := time.Now()
	d := openDetector(t, "yolov8n-dynamic.onnx", yolo.Config{Concurrency: slots, BatchMax: 8, BatchWait: time.Minute})
	if got := d.Config().BatchMax; got != slots {
		t.Errorf("BatchMax %d with %d slots, want %d", got, slots, slots)
	}
	img := testenv.ReadImage(t, "bus.jpg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inferences := make(chan float64, slots)
	var wg sync.WaitGroup
	for range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := d.Detect(ctx, img, detect.DefaultParams())
			if err != nil {
				t.Error(err)
				return
			}
			inferences <- r.SpeedMS.Inference
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("opening the detector and detecting %d images took %v: something waited out BatchWait", slots, took)
	}
	close(inferences)
	batches := map[float64]bool{}
	for v := range inferences {
		batches[v] = true
	}
	if len(batches) != 1 {
		t.Errorf("%d images ran in %d batches, want one", slots, len(batches))
	}
	st := d.BatchStats()
	if diff := cmp.Diff(yolo.BatchStats{Batches: 1, Images: slots}, yolo.BatchStats{Batches: st.Batches, Images: st.Images}); diff != "" {
		t.Errorf("batch counts (-want +got):\n%s", diff)
	}
	if st.Busy <= 0 || st.Busy > time.Since(start) {
		t.Errorf("the session ran %v of the %v since the detector opened", st.Busy, time.Since(start))
	}
}
