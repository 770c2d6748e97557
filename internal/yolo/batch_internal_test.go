package yolo

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/testenv"
)

// TestWarmUpRunsEveryBatchSizeOnCUDA: on CUDA a batching detector runs
// every size of run once at Open, largest first, so that no batch pays
// the CUDA provider's first run of its size; on the CPU, one image. The
// warm-up's runs count in no BatchStats. (The CUDA list is run here on
// the CPU session; the GPU run of the parity tests opens batching
// detectors on CUDA.)
func TestWarmUpRunsEveryBatchSizeOnCUDA(t *testing.T) {
	for _, c := range []struct {
		provider string
		padding  BatchPadding
		max      int
		want     []int
	}{
		{"cuda", PadNone, 4, []int{4, 3, 2, 1}},
		{"cuda", PadPow2, 8, []int{8, 4, 2, 1}},
		{"cuda", PadPow2, 6, []int{6, 4, 2, 1}},
		{"cuda", PadFull, 8, []int{8}},
		{"cpu", PadNone, 4, []int{1}},
	} {
		if diff := cmp.Diff(c.want, warmSizes(c.provider, c.padding, c.max)); diff != "" {
			t.Errorf("%s warm-up sizes, padding %s, BATCH_MAX %d (-want +got):\n%s", c.provider, c.padding, c.max, diff)
		}
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
	if err := d.batcher.warmUp(warmSizes("cuda", PadNone, 4)); err != nil {
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
