package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
)

// TestFloorSplit times bare sessions of the shared model cut before its
// head's decoding, a 2-thread one and a 1-thread one per core, and says
// their speed against the whole model's like floor; a model whose head
// cannot be split is said and skipped, not an error.
func TestFloorSplit(t *testing.T) {
	initONNX(t)
	model := testenv.Model(t, "yolov8n.onnx")
	var out strings.Builder
	cfg := &Config{Model: model, Provider: "cpu", FloorRuns: 2, Out: &out}
	whole, err := floor(model, spinOn.options("cpu", 2), 1, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Floor: []FloorResult{whole}}
	if err := rep.floorSplit(context.Background(), cfg, 2); err != nil {
		t.Fatal(err)
	}
	if len(rep.FloorSplit) != 2 {
		t.Fatalf("%d split floors, want 2: %+v", len(rep.FloorSplit), rep.FloorSplit)
	}
	for i, want := range [][2]int{{1, 2}, {2, 1}} {
		r := rep.FloorSplit[i]
		if r.Sessions != want[0] || r.Threads != want[1] || !strings.HasSuffix(r.Name, ", head split") || !(r.ImagesPerS > 0) {
			t.Errorf("split floor %d: %+v, want %d session(s) of %d thread(s), named a head split, with a speed", i, r, want[0], want[1])
		}
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[0], "x the whole model's") || strings.Contains(lines[1], "whole model") {
		t.Errorf("printed, want the first against the whole model's 2-thread floor, the second alone (none measured):\n%s", out.String())
	}

	// A model whose output is not a YOLO head's: its class logits alone.
	data, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	g, err := onnx.ReadGraph(data)
	if err != nil {
		t.Fatal(err)
	}
	pruned, err := g.Prune([]string{"/model.22/Concat_1_output_0"})
	if err != nil {
		t.Fatal(err)
	}
	logits := filepath.Join(t.TempDir(), "logits.onnx")
	if err := os.WriteFile(logits, pruned, 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	rep = &Report{}
	cfg.Model = logits
	if err := rep.floorSplit(context.Background(), cfg, 2); err != nil || rep.FloorSplit != nil {
		t.Errorf("a model without a head: %v, %+v; want no error and no floor", err, rep.FloorSplit)
	}
	if !strings.Contains(out.String(), "no floor of the model cut before its head's decoding") {
		t.Errorf("printed %q, want why there is no split floor", out.String())
	}
}
