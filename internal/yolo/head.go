package yolo

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"slices"

	"yoloserve/internal/onnx"
)

// Where a model's head turns its raw outputs into boxes and scores
// (Config.HeadDecode).
const (
	// HeadAuto decodes in Go on the CPU and in ONNX Runtime on CUDA.
	HeadAuto = ""
	// HeadGo runs the model up to its head's raw outputs and decodes them
	// in Go, for the anchors that can pass the confidence threshold only.
	HeadGo = "go"
	// HeadONNX runs the whole model in ONNX Runtime.
	HeadONNX = "onnx"
)

// regMax is the bins of a YOLOv8 head's distribution of each box side
// (Ultralytics' DFL, reg_max 16).
const regMax = 16

// splitHead is a YOLOv8 model whose graph ends at its head's raw outputs:
// for each level (strides 8, 16 and 32), the box sides' distributions
// [4·16, h, w] and the class logits [nc, h, w]. What the whole model does
// after them (the distributions' softmax and expectation, the anchors,
// the strides, the class sigmoid, and the concatenations of a [4+nc, N]
// output) takes a tenth of its time on the CPU, most of it on anchors
// that no confidence threshold lets through; the detector does it in Go
// for the few that can pass (decodeBox, sigmoid).
type splitHead struct {
	model   []byte   // the pruned graph
	outputs []string // the levels' box then class outputs, level by level
	levels  []level
}

// level is one output level of a YOLOv8 head: its stride in input pixels
// and its grid.
type level struct{ stride, h, w int }

// anchors is the level's number of anchors.
func (l level) anchors() int { return l.h * l.w }

// findSplit reads the model file at path and finds its head's raw
// outputs (findHeadOutputs). It returns the model pruned to them, or an
// error that says why the model's head cannot be split.
func findSplit(path string, m *Model) (*splitHead, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	g, err := onnx.ReadGraph(data)
	if err != nil {
		return nil, err
	}
	box, cls, err := findHeadOutputs(g)
	if err != nil {
		return nil, err
	}
	if len(box) != 3 {
		return nil, fmt.Errorf("its head has %d levels, not 3", len(box))
	}
	sh := &splitHead{}
	for i := range box {
		stride := 8 << i
		sh.levels = append(sh.levels, level{stride: stride, h: m.Height / stride, w: m.Width / stride})
		sh.outputs = append(sh.outputs, box[i], cls[i])
	}
	if sh.model, err = g.Prune(sh.outputs); err != nil {
		return nil, err
	}
	return sh, nil
}

// errNoHead is wrapped by findHeadOutputs's errors.
var errNoHead = errors.New("no YOLOv8 detection head")

// findHeadOutputs finds the raw outputs of an Ultralytics YOLOv8 (or
// YOLO11) detection head in g, level by level: the tensors the head's
// Reshapes take into the box and class Concats. The graph's output is
// Concat(boxes, Sigmoid(Concat(Reshape(class logits)...))), and the boxes
// come from Softmax(Transpose(Reshape(Concat(Reshape(distributions)...)))).
// It returns an error wrapping errNoHead when g is not of that shape.
func findHeadOutputs(g *onnx.Graph) (box, cls []string, err error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", errNoHead, what) }
	if len(g.Outputs) != 1 {
		return nil, nil, bad("the graph has more than one output")
	}
	out := producer(g, g.Outputs[0], "Concat")
	if out == nil || len(out.Inputs) != 2 {
		return nil, nil, bad("the output is not a Concat of boxes and scores")
	}
	sig := producer(g, out.Inputs[1], "Sigmoid")
	if sig == nil {
		return nil, nil, bad("the scores are not a Sigmoid")
	}
	if cls, err = levelInputs(g, sig.Inputs[0]); err != nil {
		return nil, nil, bad("the class logits: " + err.Error())
	}
	soft := findAbove(g, out.Inputs[0], "Softmax", 24)
	if soft == nil {
		return nil, nil, bad("the boxes come from no Softmax")
	}
	rs := soft
	for _, op := range []string{"Transpose", "Reshape"} {
		if rs = producer(g, rs.Inputs[0], op); rs == nil {
			return nil, nil, bad("the Softmax does not take a Transpose of a Reshape")
		}
	}
	if box, err = levelInputs(g, rs.Inputs[0]); err != nil {
		return nil, nil, bad("the box distributions: " + err.Error())
	}
	if len(box) != len(cls) {
		return nil, nil, bad("the boxes and the classes have different levels")
	}
	return box, cls, nil
}

// producer returns the node of g that makes tensor when it is an op, or
// nil.
func producer(g *onnx.Graph, tensor, op string) *onnx.Node {
	if n := g.Producer(tensor); n != nil && n.Op == op {
		return n
	}
	return nil
}

// levelInputs returns the tensors that the Reshapes concatenated into
// tensor take, or an error when tensor is not such a Concat.
func levelInputs(g *onnx.Graph, tensor string) ([]string, error) {
	cat := producer(g, tensor, "Concat")
	if cat == nil {
		return nil, errors.New("not a Concat")
	}
	var ins []string
	for _, in := range cat.Inputs {
		r := producer(g, in, "Reshape")
		if r == nil {
			return nil, errors.New("a Concat of other than Reshapes")
		}
		ins = append(ins, r.Inputs[0])
	}
	return ins, nil
}

// findAbove returns the nearest node of type op among those that tensor
// is made from, at most depth nodes up, or nil.
func findAbove(g *onnx.Graph, tensor, op string, depth int) *onnx.Node {
	seen := map[string]bool{}
	next := []string{tensor}
	for d := 0; d < depth && len(next) > 0; d++ {
		var up []string
		for _, t := range next {
			n := g.Producer(t)
			if n == nil || seen[t] {
				continue
			}
			seen[t] = true
			if n.Op == op {
				return n
			}
			up = append(up, n.Inputs...)
		}
		next = up
	}
	return nil
}

// outputShapes returns the shapes of the split model's outputs for batch
// images of nc classes, in the order of s.outputs.
func (s *splitHead) outputShapes(batch, nc int) [][]int64 {
	var shapes [][]int64
	for _, l := range s.levels {
		shapes = append(shapes,
			[]int64{int64(batch), 4 * regMax, int64(l.h), int64(l.w)},
			[]int64{int64(batch), int64(nc), int64(l.h), int64(l.w)})
	}
	return shapes
}

// decodeBox returns the box of anchor i of a level, centre and size in
// input pixels, from the level's box distributions dist ([4·16, n], n
// the level's anchors), as the whole model computes it in float32: each
// side the expectation of the softmax of its 16 bins, the anchor at the
// cell's centre, then (x1+x2)/2, (y1+y2)/2, x2-x1, y2-y1 times the
// stride.
func decodeBox(dist []float32, n, i int, l level) (cx, cy, w, h float32) {
	var side [4]float32
	for k := range side {
		var bins [regMax]float64
		top := math.Inf(-1)
		for j := range bins {
			bins[j] = float64(dist[(k*regMax+j)*n+i])
			top = max(top, bins[j])
		}
		var sum, mean float64
		for j, v := range bins {
			e := math.Exp(v - top)
			sum += e
			mean += e * float64(j)
		}
		side[k] = float32(mean / sum)
	}
	ax, ay := float32(i%l.w)+0.5, float32(i/l.w)+0.5
	x1, y1 := ax-side[0], ay-side[1]
	x2, y2 := ax+side[2], ay+side[3]
	s := float32(l.stride)
	return (x1 + x2) / 2 * s, (y1 + y2) / 2 * s, (x2 - x1) * s, (y2 - y1) * s
}

// sigmoid is the logistic function in float32, as the whole model's
// Sigmoid gives a class score (to within its last bit).
func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

// logitBelow returns a logit under which no class score passes a
// confidence test of conf: each anchor's best logit is compared with it
// before its score is computed. It is a little under conf's logit, so
// that rounding cannot drop a score that passes; -Inf for conf ≤ 0.
func logitBelow(conf float32) float32 {
	if conf <= 0 {
		return float32(math.Inf(-1))
	}
	if conf >= 1 {
		return float32(math.Inf(1))
	}
	c := float64(conf)
	return float32(math.Log(c/(1-c)) - 0.01)
}

// splitTolerance is how far the split head's decoding may stray from the
// whole model's output in checkSplit: in input pixels for the boxes (the
// two compute the softmax and the sums in different orders; a wrong
// anchor or stride is off by 4 pixels or more), and in score, relative
// to the score (a millionth more, as ONNX Runtime's Sigmoid holds logits
// under -18 at -18).
const (
	splitBoxTolerance   = 0.01
	splitScoreTolerance = 1e-4
)

// checkSplit compares the split model's outputs, decoded for every
// anchor, with the whole model's output for the same input ([4+nc, N]).
// It returns an error naming the first value that differs by more than
// the tolerance.
func (s *splitHead) checkSplit(outs [][]float32, whole []float32, nc int) error {
	n := len(whole) / (4 + nc)
	base := 0
	for li, l := range s.levels {
		dist, logits := outs[2*li], outs[2*li+1]
		m := l.anchors()
		for i := 0; i < m; i++ {
			a := base + i
			cx, cy, w, h := decodeBox(dist, m, i, l)
			for k, v := range [4]float32{cx, cy, w, h} {
				if want := whole[k*n+a]; !(math.Abs(float64(v-want)) <= splitBoxTolerance) {
					return fmt.Errorf("anchor %d's box value %d reads %g where the whole model gives %g", a, k, v, want)
				}
			}
			for c := 0; c < nc; c++ {
				v, want := sigmoid(logits[c*m+i]), whole[(4+c)*n+a]
				if !(math.Abs(float64(v-want)) <= 1e-6+splitScoreTolerance*float64(want)) {
					return fmt.Errorf("anchor %d's class %d score reads %g where the whole model gives %g", a, c, v, want)
				}
			}
		}
		base += m
	}
	if base != n {
		return fmt.Errorf("the levels hold %d anchors where the whole model has %d", base, n)
	}
	return nil
}

// planHead decides where m's head decodes (Config.HeadDecode): for Go, it
// sets m.split once the split model's decoding of a test input matches
// the whole model's output (checkSplit). It returns what Detector.Head
// says, or the error of a whole-model session that cannot be made or run;
// a split that cannot be made, run or matched leaves the model whole,
// with why.
func planHead(cfg Config, m *Model, newSession func(threads int, solo bool) (*onnx.Session, error)) (string, error) {
	switch {
	case cfg.HeadDecode == HeadONNX:
		return HeadONNX, nil
	case cfg.HeadDecode == HeadAuto && cfg.Provider == "cuda":
		return HeadONNX + " (on CUDA)", nil
	}
	split, err := findSplit(cfg.ModelPath, m)
	if err != nil {
		return fmt.Sprintf("%s (its head cannot be split: %v)", HeadONNX, err), nil
	}
	whole, err := runTestInput(m, cfg.Threads, newSession)
	if err != nil {
		return "", err
	}
	m.split = split
	outs, err := runTestInput(m, cfg.Threads, newSession)
	if err == nil {
		err = split.checkSplit(outs, whole[0], m.Classes())
	}
	// The file's bytes and the test outputs, 30 MB for yolov8n, go back
	// before the detector's own sessions are made.
	whole, outs = nil, nil
	debug.FreeOSMemory()
	onnx.TrimHeap()
	if err != nil {
		m.split = nil
		return fmt.Sprintf("%s (its split head does not decode as the whole model: %v)", HeadONNX, err), nil
	}
	return HeadGo, nil
}

// runTestInput runs testInput on a session of m (split or whole) and
// returns its outputs. It returns the session's or the run's error.
func runTestInput(m *Model, threads int, newSession func(threads int, solo bool) (*onnx.Session, error)) ([][]float32, error) {
	s, err := newSession(threads, false)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := s.NewBinding(1, [2]int64{int64(m.Height), int64(m.Width)}, m.outputShapes(1)...)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	testInput(b.Input(), m.Width, m.Height)
	if err := s.Run(b); err != nil {
		return nil, err
	}
	var outs [][]float32
	for _, o := range b.Outputs() {
		outs = append(outs, slices.Clone(o))
	}
	return outs, nil
}

// testInput fills a [3, h, w] input with shapes for checkSplit: bright
// and dark rectangles over a gradient, so that anchors across the image
// see different things.
func testInput(in []float32, w, h int) {
	plane := w * h
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := float32(x+y) / float32(w+h)
			if (x/97+y/61)%3 == 0 {
				v = 1 - v/2
			}
			for c := 0; c < 3; c++ {
				in[c*plane+y*w+x] = v * float32(3-c) / 3
			}
		}
	}
}

// Split is a model cut before its head's decoding, as the sessions of a
// detector whose head decodes in Go run it: the pruned graph, its
// outputs, and their shapes for one image.
type Split struct {
	Model   []byte
	Outputs []string
	Shapes  [][]int64
}

// SplitModel returns the model at path cut before its head's decoding, for
// bare sessions to time. It returns an error when the file is not a YOLO
// detection model or its head cannot be split; it does not compare the
// split with the whole model, as Open does.
func SplitModel(path string, info onnx.ModelInfo) (*Split, error) {
	m, err := NewModel(path, info)
	if err != nil {
		return nil, err
	}
	sh, err := findSplit(path, m)
	if err != nil {
		return nil, err
	}
	return &Split{Model: sh.model, Outputs: sh.outputs, Shapes: sh.outputShapes(1, m.Classes())}, nil
}
