package testenv

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// Reference is ../shared/reference/detections.json: what Ultralytics
// gives, per model and image, for each parameter variant.
type Reference struct {
	Defaults struct {
		Conf float64 `json:"conf"`
	} `json:"defaults"`
	Models map[string]map[string]ReferenceImage `json:"models"`
}

// ReferenceImage is one image's entry: its upright size and variants.
type ReferenceImage struct {
	Width    int
	Height   int
	Variants map[string]ReferenceVariant
}

// ReferenceVariant is the detections for one parameter set.
type ReferenceVariant struct {
	Params     map[string]any       `json:"params"`
	Detections []ReferenceDetection `json:"detections"`
}

// ReferenceDetection is one reference detection.
type ReferenceDetection struct {
	ClassID    int        `json:"class_id"`
	ClassName  string     `json:"class_name"`
	Confidence float64    `json:"confidence"`
	Box        [4]float64 `json:"box"`
}

// UnmarshalJSON reads width, height and every other key as a variant.
func (r *ReferenceImage) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	r.Variants = map[string]ReferenceVariant{}
	for k, v := range raw {
		var err error
		switch k {
		case "width":
			err = json.Unmarshal(v, &r.Width)
		case "height":
			err = json.Unmarshal(v, &r.Height)
		default:
			var rv ReferenceVariant
			err = json.Unmarshal(v, &rv)
			r.Variants[k] = rv
		}
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// LoadReference reads the shared reference detections.
func LoadReference(tb testing.TB) *Reference {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(SharedDir(tb), "reference", "detections.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var r Reference
	if err := json.Unmarshal(b, &r); err != nil {
		tb.Fatal(err)
	}
	return &r
}

// Detection is a detection to compare, from whatever produced it.
type Detection struct {
	Class      int
	Confidence float64
	Box        [4]float64
}

// Tolerance is how close is close (the reference README).
type Tolerance struct {
	MinIoU   float64 // same-class match needs IoU at least this...
	EdgePx   float64 // ...or every edge within this many pixels
	MaxDConf float64 // and |Δconfidence| at most this
}

// JPEGTolerance and PNGTolerance are the reference README's bounds.
var (
	JPEGTolerance = Tolerance{MinIoU: 0.9, EdgePx: 2, MaxDConf: 0.03}
	PNGTolerance  = Tolerance{MinIoU: 0.99, EdgePx: 0, MaxDConf: 0.005}
)

// Parity is the outcome of comparing detections with a reference.
type Parity struct {
	Matched, Counted int
	WorstIoU         float64
	WorstDConf       float64
	Problems         []string
}

// Compare checks got against want for threshold conf: every reference
// detection above conf+0.05 must have a same-class detection within tol,
// and no detection in got above conf+0.05 may lack a reference
// counterpart (matched one to one, by confidence order).
func Compare(want []ReferenceDetection, got []Detection, conf float64, tol Tolerance) Parity {
	p := Parity{WorstIoU: 1}
	used := make([]bool, len(got))
	for _, w := range want {
		if w.Confidence <= conf+0.05 {
			continue
		}
		p.Counted++
		best, bestIoU := -1, -1.0
		for i, g := range got {
			if used[i] || g.Class != w.ClassID {
				continue
			}
			iou := IoU(w.Box, g.Box)
			if iou > bestIoU {
				best, bestIoU = i, iou
			}
		}
		if best < 0 {
			p.Problems = append(p.Problems, fmt.Sprintf("missing %s %.3f %v", w.ClassName, w.Confidence, w.Box))
			continue
		}
		g := got[best]
		edgesOK := tol.EdgePx > 0
		for k := range 4 {
			edgesOK = edgesOK && math.Abs(g.Box[k]-w.Box[k]) <= tol.EdgePx
		}
		dconf := math.Abs(g.Confidence - w.Confidence)
		if (bestIoU < tol.MinIoU && !edgesOK) || dconf > tol.MaxDConf {
			p.Problems = append(p.Problems, fmt.Sprintf("%s %.3f %v matched %.3f %v: IoU %.4f, Δconf %.4f",
				w.ClassName, w.Confidence, w.Box, g.Confidence, g.Box, bestIoU, dconf))
			continue
		}
		used[best] = true
		p.Matched++
		p.WorstIoU = math.Min(p.WorstIoU, bestIoU)
		p.WorstDConf = math.Max(p.WorstDConf, dconf)
	}
	for i, g := range got {
		if used[i] || g.Confidence <= conf+0.05 {
			continue
		}
		// An extra is allowed only when a reference box of the same class
		// sits just under the bar (it crossed it by a rounding).
		near := false
		for _, w := range want {
			if w.ClassID == g.Class && IoU(w.Box, g.Box) >= tol.MinIoU && math.Abs(w.Confidence-g.Confidence) <= tol.MaxDConf {
				near = true
			}
		}
		if !near {
			p.Problems = append(p.Problems, fmt.Sprintf("extra class %d %.3f %v", g.Class, g.Confidence, g.Box))
		}
	}
	return p
}

// IoU is the intersection over union of two [x1, y1, x2, y2] boxes.
func IoU(a, b [4]float64) float64 {
	w := math.Max(0, math.Min(a[2], b[2])-math.Max(a[0], b[0]))
	h := math.Max(0, math.Min(a[3], b[3])-math.Max(a[1], b[1]))
	inter := w * h
	union := (a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}
