package yolo_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// TestHeadDecodeInGo runs every shared image through each shared model
// with its head decoded in Go and in ONNX Runtime, under parameters that
// let many boxes through, filter classes or suppress across them, and
// requires the same detections: the same classes and order, boxes within
// a hundredth of a pixel and scores within their last rounding.
func TestHeadDecodeInGo(t *testing.T) {
	if testenv.Provider() == "cuda" {
		t.Skip("on CUDA the head decodes in ONNX Runtime by default")
	}
	params := map[string]func(*detect.Params){
		"default":  func(*detect.Params) {},
		"low conf": func(p *detect.Params) { p.Conf, p.MaxDet = 0.001, 300 },
		"classes":  func(p *detect.Params) { p.Classes = []string{"person", "bus"}; p.Conf = 0.1 },
		"agnostic": func(p *detect.Params) { p.Agnostic, p.IoU, p.Conf = true, 0.3, 0.05 },
	}
	for _, model := range []string{"yolov8n.onnx", "yolov8n-dynamic.onnx"} {
		t.Run(model, func(t *testing.T) {
			inGo := openDetector(t, model, yolo.Config{Concurrency: 1})
			whole := openDetector(t, model, yolo.Config{Concurrency: 1, HeadDecode: yolo.HeadONNX})
			if inGo.Head() != yolo.HeadGo || whole.Head() != yolo.HeadONNX {
				t.Fatalf("heads decode in %q and %q, want go and onnx", inGo.Head(), whole.Head())
			}
			boxes := 0
			for _, img := range testenv.Images(t) {
				data := testenv.ReadImage(t, filepath.Base(img))
				for name, set := range params {
					p := detect.DefaultParams()
					set(&p)
					want, err := whole.Detect(context.Background(), data, p)
					if err != nil {
						t.Fatal(err)
					}
					got, err := inGo.Detect(context.Background(), data, p)
					if err != nil {
						t.Fatal(err)
					}
					isConf := func(p cmp.Path) bool { return strings.HasSuffix(p.String(), "Confidence") }
					opts := cmp.Options{
						// Boxes are rounded to hundredths, scores to 5 decimals.
						cmp.FilterPath(func(p cmp.Path) bool { return !isConf(p) }, cmpopts.EquateApprox(0, 0.0101)),
						cmp.FilterPath(isConf, cmpopts.EquateApprox(0, 0.0000101)),
					}
					if diff := cmp.Diff(want.Detections, got.Detections, opts); diff != "" {
						t.Errorf("%s, %s: detections (-onnx +go):\n%s", filepath.Base(img), name, diff)
					}
					boxes += len(want.Detections)
				}
			}
			if boxes < 1000 {
				t.Errorf("only %d detections compared", boxes)
			}
		})
	}
}

// TestHeadDecodeCheck opens the shared int8 model, whose head quantizes
// the box distributions' softmax before their expectation: decoded in Go
// its boxes would stray from the model's own by a tenth of a pixel, so
// the detector's check at Open keeps the model whole and says why.
func TestHeadDecodeCheck(t *testing.T) {
	if testenv.Provider() == "cuda" {
		t.Skip("on CUDA the head decodes in ONNX Runtime by default")
	}
	d := openDetector(t, "yolov8n-int8.onnx", yolo.Config{Concurrency: 1, HeadDecode: yolo.HeadGo})
	if h := d.Head(); !strings.HasPrefix(h, "onnx (its split head does not decode as the whole model: anchor ") {
		t.Errorf("Head() = %q, want the whole model and why", h)
	}
	res, err := d.Detect(context.Background(), testenv.ReadImage(t, "bus.jpg"), detect.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Detections) < 3 {
		t.Errorf("%d detections on bus.jpg", len(res.Detections))
	}
}
