package yolo

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/detect"
)

// anchor is one synthetic candidate: a box in input pixels (centre, size)
// and its class scores.
type anchor struct {
	cx, cy, w, h float32
	scores       map[int]float32
}

// tensor lays anchors out as the model's [4+nc, n] output.
func tensor(nc int, anchors []anchor) []float32 {
	n := len(anchors)
	out := make([]float32, (4+nc)*n)
	for i, a := range anchors {
		out[i], out[n+i], out[2*n+i], out[3*n+i] = a.cx, a.cy, a.w, a.h
		for c, s := range a.scores {
			out[(4+c)*n+i] = s
		}
	}
	return out
}

func classesOf(dets []detect.Detection) (out []int) {
	for _, d := range dets {
		out = append(out, d.Class)
	}
	return out
}

func TestPostprocess(t *testing.T) {
	names := []string{"a", "b", "c"}
	lb := NewLetterbox(640, 640, 640, 640) // identity geometry
	def := nmsParams{conf: 0.25, iou: 0.7, maxDet: 300}
	// Two boxes of 100×100 shifted by 10 px: IoU 90/110 = 0.818.
	overlap := []anchor{
		{100, 100, 100, 100, map[int]float32{0: 0.9}},
		{110, 100, 100, 100, map[int]float32{0: 0.8}},
	}
	for _, tc := range []struct {
		name    string
		anchors []anchor
		p       func(nmsParams) nmsParams
		want    []int // classes of the kept boxes, in order
	}{
		{"empty", nil, nil, nil},
		{"overlap same class suppressed", overlap, nil, []int{0}},
		{"overlap below iou kept", overlap, func(p nmsParams) nmsParams { p.iou = 0.85; return p }, []int{0, 0}},
		{"different classes kept", []anchor{
			{100, 100, 100, 100, map[int]float32{0: 0.9}},
			{110, 100, 100, 100, map[int]float32{1: 0.8}},
		}, nil, []int{0, 1}},
		{"agnostic suppresses across classes", []anchor{
			{100, 100, 100, 100, map[int]float32{0: 0.9}},
			{110, 100, 100, 100, map[int]float32{1: 0.8}},
		}, func(p nmsParams) nmsParams { p.agnostic = true; return p }, []int{0}},
		{"conf is exclusive", []anchor{
			{100, 100, 10, 10, map[int]float32{0: 0.25}},
			{300, 300, 10, 10, map[int]float32{1: 0.2501}},
		}, nil, []int{1}},
		{"sorted by confidence", []anchor{
			{100, 100, 10, 10, map[int]float32{0: 0.3}},
			{300, 300, 10, 10, map[int]float32{1: 0.9}},
			{500, 500, 10, 10, map[int]float32{2: 0.6}},
		}, nil, []int{1, 2, 0}},
		{"max_det keeps the best", []anchor{
			{100, 100, 10, 10, map[int]float32{0: 0.3}},
			{300, 300, 10, 10, map[int]float32{1: 0.9}},
			{500, 500, 10, 10, map[int]float32{2: 0.6}},
		}, func(p nmsParams) nmsParams { p.maxDet = 2; return p }, []int{1, 2}},
		// The class filter applies after the best class is chosen, as in
		// Ultralytics: an anchor whose best class is 2 is dropped even
		// though its class-0 score passes.
		{"classes filter after best class", []anchor{
			{100, 100, 10, 10, map[int]float32{0: 0.5, 2: 0.7}},
			{300, 300, 10, 10, map[int]float32{0: 0.4}},
		}, func(p nmsParams) nmsParams { p.keep = []bool{true, false, false}; return p }, []int{0}},
		// A suppressed box does not suppress others: 1 overlaps 0 and 2,
		// 0 and 2 do not overlap; 0 and 2 are kept.
		{"chain", []anchor{
			{100, 100, 100, 100, map[int]float32{0: 0.9}},
			{150, 100, 100, 100, map[int]float32{0: 0.8}},
			{200, 100, 100, 100, map[int]float32{0: 0.7}},
		}, func(p nmsParams) nmsParams { p.iou = 0.3; return p }, []int{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := def
			if tc.p != nil {
				p = tc.p(p)
			}
			var pp postprocessor
			dets := pp.run([][]float32{tensor(3, tc.anchors)}, nil, 3, len(tc.anchors), p, lb, names)
			if diff := cmp.Diff(tc.want, classesOf(dets)); diff != "" {
				t.Errorf("classes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPostprocessScalesAndClips(t *testing.T) {
	// A 1280×640 image letterboxed to 640×640: gain 0.5, 160 px padding
	// above and below.
	lb := NewLetterbox(1280, 640, 640, 640)
	var pp postprocessor
	dets := pp.run([][]float32{tensor(1, []anchor{
		{320, 320, 100, 50, map[int]float32{0: 0.9}},
		{10, 170, 40, 40, map[int]float32{0: 0.8}}, // pokes out of the image
	})}, nil, 1, 2, nmsParams{conf: 0.25, iou: 0.7, maxDet: 300}, lb, []string{"a"})
	want := []detect.Box{
		{X1: 540, Y1: 270, X2: 740, Y2: 370},
		{X1: 0, Y1: 0, X2: 60, Y2: 60},
	}
	var got []detect.Box
	for _, d := range dets {
		got = append(got, d.Box)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("boxes (-want +got):\n%s", diff)
	}
}

// TestBestClass checks both ways of finding each anchor's best class (the
// sparse one for a usual conf, the class-major one when many anchors pass)
// against a plain search, ties and NaN included.
func TestBestClass(t *testing.T) {
	const nc, n = 80, 8400
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]float32, (4+nc)*n)
	object := make([]bool, n) // one anchor in 30 sees an object
	for i := range object {
		object[i] = r.IntN(30) == 0
	}
	for i := 4 * n; i < len(out); i++ {
		out[i] = float32(r.Float64() * 0.01)
		if object[i%n] {
			out[i] = float32(r.Float64())
		}
		if r.IntN(50) == 0 && i >= 5*n {
			out[i] = out[i-n] // ties with the class above, now and then
		}
	}
	out[4*n+7] = float32(math.NaN())
	out[5*n-1] = 0.9 // the last anchor, in the short block at a row's end
	avx2 := useAVX2
	t.Cleanup(func() { useAVX2 = avx2 })
	for _, loops := range []string{"go", "avx2"} {
		if loops == "avx2" && !avx2 {
			continue
		}
		useAVX2 = loops == "avx2"
		testBestClass(t, loops, out, nc, n)
	}
}

// testBestClass checks bestClass on out against a plain search.
func testBestClass(t *testing.T, loops string, out []float32, nc, n int) {
	t.Helper()
	for _, conf := range []float32{0, 0.005, 0.25, 0.5, 0.99, 1} {
		var pp postprocessor
		got := pp.bestClass(out[4*n:], nc, n, conf)
		above := 0
		for i := 0; i < n; i++ {
			best, class := out[4*n+i], int32(0)
			for c := 1; c < nc; c++ {
				if v := out[(4+c)*n+i]; v > best {
					best, class = v, int32(c)
				}
			}
			if !(best > conf) {
				if got[i] > conf {
					t.Fatalf("%s loops, conf %v: anchor %d reads %v, want at most conf (best %v)", loops, conf, i, got[i], best)
				}
				continue
			}
			above++
			if got[i] != best || pp.class[i] != class {
				t.Fatalf("%s loops, conf %v: anchor %d = (%v, class %d), want (%v, class %d)", loops, conf, i, got[i], pp.class[i], best, class)
			}
		}
		t.Logf("%s loops, conf %v: %d anchors above", loops, conf, above)
	}
}

func BenchmarkBestClass(b *testing.B) {
	const nc, n = 80, 8400
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]float32, (4+nc)*n)
	for i := 4 * n; i < len(out); i++ {
		out[i] = float32(r.Float64() * 0.01)
		if i%n%97 == 0 {
			out[i] = float32(r.Float64())
		}
	}
	var pp postprocessor
	for b.Loop() {
		pp.bestClass(out[4*n:], nc, n, 0.25)
	}
}

// TestSplitCandidates checks the split head's candidates (splitCandidates)
// against a plain search over every anchor's scores: the sigmoid of each
// logit, the first class of the largest score, kept when above conf. The
// logits include large ones, whose float32 scores round to 1 and tie, and
// ones right at each conf's logit.
func TestSplitCandidates(t *testing.T) {
	const nc = 5
	head := &splitHead{levels: []level{{8, 8, 8}, {16, 4, 4}, {32, 2, 2}}}
	r := rand.New(rand.NewPCG(5, 6))
	confs := []float32{0, 0.001, 0.25, 0.5, 0.9, 1}
	var outs [][]float32
	for _, l := range head.levels {
		n := l.anchors()
		dist := make([]float32, 4*regMax*n)
		for i := range dist {
			dist[i] = float32(r.NormFloat64() * 3)
		}
		logits := make([]float32, nc*n)
		for i := range logits {
			logits[i] = float32(r.NormFloat64()*3 - 4)
		}
		for i := 0; i < n; i++ {
			switch r.IntN(4) {
			case 0: // two scores of 1, or within a step of it
				for range 2 {
					logits[r.IntN(nc)*n+i] = 14 + float32(r.Float64()*20)
				}
			case 1: // a logit at a conf's
				c := float64(confs[1+r.IntN(len(confs)-2)])
				logits[r.IntN(nc)*n+i] = float32(math.Log(c/(1-c))) + float32(r.IntN(5)-2)*1e-7
			}
		}
		outs = append(outs, dist, logits)
	}
	for _, conf := range confs {
		var want []candidate
		for li, l := range head.levels {
			dist, logits := outs[2*li], outs[2*li+1]
			n := l.anchors()
			for i := 0; i < n; i++ {
				best, class := sigmoid(logits[i]), 0
				for c := 1; c < nc; c++ {
					if s := sigmoid(logits[c*n+i]); s > best {
						best, class = s, c
					}
				}
				if best > conf {
					cx, cy, w, h := decodeBox(dist, n, i, l)
					want = append(want, candidate{cx - w/2, cy - h/2, cx + w/2, cy + h/2, best, class})
				}
			}
		}
		var pp postprocessor
		pp.splitCandidates(outs, head, nc, nmsParams{conf: conf})
		if diff := cmp.Diff(want, pp.cands, cmp.AllowUnexported(candidate{})); diff != "" {
			t.Errorf("conf %v: candidates (-plain +split):\n%s", conf, diff)
		}
		t.Logf("conf %v: %d candidates", conf, len(want))
	}
}
