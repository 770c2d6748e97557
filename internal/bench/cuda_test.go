package bench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
)

// The GPU's service figures, measured here on the CPU provider (the same
// steps, a session on the CPU): the worker starts batching on the dynamic
// model, every lone task and load is measured without an error, and the
// figures hold together (a task's service time within its POST → result,
// each of its stages within its service time).
func TestServiceWithBatchingWorker(t *testing.T) {
	lib := initONNX(t)
	cfg := &Config{BinDir: testenv.Binaries(t), Library: lib, Provider: "cpu", Load: time.Second,
		Model: testenv.Model(t, "yolov8n.onnx"), Dynamic: testenv.Model(t, "yolov8n-dynamic.onnx")}
	s, err := newSystem(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	bodies := []body{newBody(testenv.ReadImage(t, "bus.jpg")), newBody(testenv.ReadImage(t, "zidane.jpg"))}
	run, err := s.measureCUDA(context.Background(), bodies, cudaWorker{batch: 4}, []int{1, 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", run)
	if run.Concurrency != 8 || run.BatchMax != 4 {
		t.Errorf("BATCH_MAX %d with %d slots, want 4 with 8", run.BatchMax, run.Concurrency)
	}
	if run.BareMS <= 0 || run.ServiceMS <= 0 || run.IdleLatencyMS < run.ServiceMS {
		t.Errorf("bare %.1f ms, service %.1f ms, POST → result %.1f ms: want them measured, the service within POST → result",
			run.BareMS, run.ServiceMS, run.IdleLatencyMS)
	}
	// Each stage is within its task's service time, so the medians keep
	// that order (a sum of medians need not).
	if sp := run.Speed; sp.Inference <= 0 || sp.Decode <= 0 || max(sp.Decode, sp.Preprocess, sp.Inference, sp.Postprocess) > run.ServiceMS {
		t.Errorf("stages %+v against a service time of %.1f ms: want decoding and inference measured, each stage within the service", sp, run.ServiceMS)
	}
	if len(run.Loads) != 2 {
		t.Fatalf("%d loads, want 2", len(run.Loads))
	}
	for _, lv := range run.Loads {
		if lv.Errors != 0 || lv.ImagesPerS <= 0 || lv.P50MS <= 0 || lv.CPUPerImage.Worker <= 0 {
			t.Errorf("%d clients: %.1f img/s, p50 %.1f ms, %d errors, worker CPU %.1f ms an image: want images done without an error",
				lv.Clients, lv.ImagesPerS, lv.P50MS, lv.Errors, lv.CPUPerImage.Worker)
		}
		// The worker's batch counters, read around the load: a lone
		// client's images go one a batch, and the session runs for part
		// of the load's time.
		b := lv.Batches
		if b == nil || b.MeanImages < 1 || b.MeanImages > 4 || b.SessionBusy <= 0 || b.SessionBusy > 1.05 {
			t.Errorf("%d clients: batches %+v, want a mean of 1 to 4 images and the session busy for part of the time", lv.Clients, b)
		} else if lv.Clients == 1 && b.MeanImages != 1 {
			t.Errorf("one client's batches held %.2f images on average, want 1", b.MeanImages)
		}
	}
	if len(run.Cold) != 2 || run.StartS <= 0 {
		t.Errorf("%d first windows, ready in %.1f s: want 2, the start timed", len(run.Cold), run.StartS)
	}
	for _, lv := range run.Cold {
		if lv.Errors != 0 || lv.MaxMS < lv.P99MS || lv.P99MS <= 0 {
			t.Errorf("first window at %d clients: p99 %.1f ms, max %.1f ms, %d errors: want images done, the max the longest", lv.Clients, lv.P99MS, lv.MaxMS, lv.Errors)
		}
	}
	if run.PeakRSSMiB <= 0 {
		t.Errorf("peak RSS %.0f MiB, want it read", run.PeakRSSMiB)
	}
}

// TestConvSearch runs the GPU bench's comparison of convolution
// algorithm searches on the CPU provider (where the search and TF32 are
// ignored): each batch size in turn, its first run and the median after,
// both timed.
func TestConvSearch(t *testing.T) {
	initONNX(t)
	rs, err := convSearch(testenv.Model(t, "yolov8n-dynamic.onnx"), "cpu", convMath{"exhaustive", true}, []int{1, 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var batches []int
	for _, r := range rs {
		batches = append(batches, r.Batch)
		if r.Search != "exhaustive" || !r.TF32 || r.FirstMS <= 0 || r.MedianMS <= 0 {
			t.Errorf("%+v: want the search and TF32 named and both runs timed", r)
		}
	}
	if diff := cmp.Diff([]int{1, 2}, batches); diff != "" {
		t.Errorf("batch sizes run (-want +got):\n%s", diff)
	}
}

// TestShapeChanges runs the GPU bench's two input shapes in turn on the
// CPU provider: both ways timed, the sizes named.
func TestShapeChanges(t *testing.T) {
	initONNX(t)
	r, err := shapeChanges(testenv.Model(t, "yolov8n-dynamic.onnx"), "cpu", 2, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sizes != [2]int{2, 1} || r.SameMS <= 0 || r.AlternatingMS <= 0 {
		t.Errorf("%+v: want sizes 2 and 1, both ways timed", r)
	}
}

// TestNumerics runs the GPU bench's comparison of outputs on the CPU
// provider, which computes a batch's rows as it computes a batch of 1,
// bit for bit; so do two CPU sessions.
func TestNumerics(t *testing.T) {
	initONNX(t)
	rs, err := numerics(testenv.Model(t, "yolov8n-dynamic.onnx"), "cpu", []convMath{{"heuristic", false}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := []NumericsRun{{Search: "heuristic", Batch: 3}}
	if diff := cmp.Diff(want, rs); diff != "" {
		t.Errorf("CPU numerics (-want +got):\n%s", diff)
	}
}

// initONNX loads the ONNX Runtime library (ORT_LIB, else the one `make
// build` fetched) and returns its path.
func initONNX(t *testing.T) string {
	t.Helper()
	lib, err := onnx.FindLibrary(os.Getenv("ORT_LIB"))
	if err != nil {
		t.Fatal(err)
	}
	if err := onnx.Init(lib, onnx.Env{}); err != nil {
		t.Fatal(err)
	}
	return lib
}
