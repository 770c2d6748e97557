package yolo

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/testenv"
)

// TestWarmUpRunsEveryBatchSizeOnCUDA: on CUDA a batching detector runs
// every batch size once at Open, largest first, so that no batch pays
// the CUDA provider's first run of its size; on the CPU, one image. The
// warm-up's runs count in no BatchStats. (The CUDA list is run here on
// the CPU session; the GPU run of the parity tests opens batching
// detectors on CUDA.)
func TestWarmUpRunsEveryBatchSizeOnCUDA(t *testing.T) {
	if diff := cmp.Diff([]int{4, 3, 2, 1}, warmSizes("cuda", 4)); diff != "" {
		t.Errorf("CUDA warm-up sizes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{1}, warmSizes("cpu", 4)); diff != "" {
		t.Errorf("CPU warm-up sizes (-want +got):\n%s", diff)
	}
	d, err := Open(Config{ModelPath: testenv.Model(t, "yolov8n-dynamic.onnx"), Provider: "cpu", Concurrency: 8, BatchMax: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// rowsRun says which rows of a batch's output a run has written: an
	// output never written is all zeros, a blank image's is not.
	rowsRun := func(s *slab) []bool {
		out := s.full.Output()
		n := len(out) / s.full.Batch
		var ran []bool
		for row := range s.full.Batch {
			ran = append(ran, slices.ContainsFunc(out[row*n:(row+1)*n], func(v float32) bool { return v != 0 }))
		}
		return ran
	}
	if diff := cmp.Diff([]bool{true, false, false, false}, rowsRun(d.batcher.slabs[0])); diff != "" {
		t.Errorf("rows the CPU warm-up ran (-want +got):\n%s", diff)
	}
	if err := d.batcher.warmUp(warmSizes("cuda", 4)); err != nil {
		t.Fatal(err)
	}
	s := d.batcher.slabs[len(d.batcher.slabs)-1]
	if diff := cmp.Diff([]bool{true, true, true, true}, rowsRun(s)); diff != "" {
		t.Errorf("rows the CUDA warm-up ran (-want +got):\n%s", diff)
	}
	for n := 1; n < 4; n++ {
		if _, ok := s.prefix[n]; !ok {
			t.Errorf("the CUDA warm-up never ran a batch of %d", n)
		}
	}
	if st := d.BatchStats(); st != (BatchStats{}) {
		t.Errorf("the warm-up counted in the batch stats: %+v", st)
	}
}
