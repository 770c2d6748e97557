package onnx

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The class logits and the box distributions of the shared YOLOv8 models'
// head, before its decoding.
const (
	classLogits = "/model.22/Concat_1_output_0"
	boxBins     = "/model.22/Concat_output_0"
)

// TestPrune cuts the shared model at its head's class logits and box
// distributions, in that order: the pruned graph loads from its bytes,
// keeps the file's metadata, has those outputs and none of the nodes
// after them, and its logits are what the whole model's scores are made
// from (their sigmoid, for the same input).
func TestPrune(t *testing.T) {
	path, info := openModel(t, "yolov8n.onnx")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ReadGraph(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"output0"}, g.Outputs); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	if p := g.Producer("output0"); p == nil || p.Op != "Concat" {
		t.Errorf("output0 is made by %+v, want a Concat", p)
	}
	if p := g.Producer("images"); p != nil {
		t.Errorf("the input is made by %+v, want no node", p)
	}
	pruned, err := g.Prune([]string{classLogits, boxBins})
	if err != nil {
		t.Fatal(err)
	}
	pg, err := ReadGraph(pruned)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{classLogits, boxBins}, pg.Outputs); diff != "" {
		t.Errorf("pruned outputs (-want +got):\n%s", diff)
	}
	if len(pg.Nodes) >= len(g.Nodes) || slices.ContainsFunc(pg.Nodes, func(n Node) bool { return n.Op == "Softmax" || n.Op == "Sigmoid" && n.Inputs[0] == classLogits }) {
		t.Errorf("pruned graph has %d nodes of %d, the head's decoding among them", len(pg.Nodes), len(g.Nodes))
	}
	file := filepath.Join(t.TempDir(), "pruned.onnx")
	if err := os.WriteFile(file, pruned, 0o600); err != nil {
		t.Fatal(err)
	}
	pinfo, err := Inspect(file)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(info.Metadata, pinfo.Metadata); diff != "" {
		t.Errorf("pruned metadata (-whole +pruned):\n%s", diff)
	}

	whole := runOnce(t, path, info, Options{}, info.OutputShape)
	parts := runOnce(t, path, info, Options{Model: pruned, Outputs: []string{classLogits, boxBins}}, []int64{1, 80, 8400}, []int64{1, 64, 8400})
	const n = 8400
	if len(parts[0]) != 80*n || len(parts[1]) != 64*n {
		t.Fatalf("pruned outputs of %d and %d values, want %d and %d", len(parts[0]), len(parts[1]), 80*n, 64*n)
	}
	for i, logit := range parts[0] {
		score := 1 / (1 + math.Exp(-float64(logit)))
		if want := float64(whole[0][4*n+i]); math.Abs(score-want) > 1e-6+1e-5*want {
			t.Fatalf("class score %d: sigmoid of the pruned logit %g is %g, the whole model's %g", i, logit, score, want)
		}
	}
}

// runOnce runs a session of path (or o.Model) on a gray input and returns
// its outputs, of shapes outputs.
func runOnce(t *testing.T, path string, info ModelInfo, o Options, outputs ...[]int64) [][]float32 {
	t.Helper()
	s, err := NewSession(path, info, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := s.NewBinding(1, [2]int64{640, 640}, outputs...)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range b.Input() {
		b.Input()[i] = float32(i%640) / 640
	}
	if err := s.Run(b); err != nil {
		t.Fatal(err)
	}
	var outs [][]float32
	for _, o := range b.Outputs() {
		outs = append(outs, slices.Clone(o))
	}
	return outs
}

// TestGraphErrors: bytes that are not a model, a model cut short, and a
// cut at a tensor no node makes each give an error.
func TestGraphErrors(t *testing.T) {
	path, _ := openModel(t, "yolov8n.onnx")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"text":      []byte("this is not a model"),
		"cut short": data[:len(data)/2],
		"empty":     nil,
	} {
		if _, err := ReadGraph(b); !errors.Is(err, errNotModel) {
			t.Errorf("%s: ReadGraph: %v, want errNotModel", name, err)
		}
	}
	g, err := ReadGraph(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{"images", "model.22.dfl.conv.weight", "nothing"} {
		if _, err := g.Prune([]string{out}); err == nil {
			t.Errorf("Prune(%q): no error", out)
		}
	}
}
