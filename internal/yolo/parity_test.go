package yolo_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
	"testing"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// openDetector opens a detector on a shared model, with libjpeg-turbo
// (which parity needs) and libpng, as the worker has them, unless cfg
// brings its own decoder, on testenv.Provider unless cfg names one.
func openDetector(tb testing.TB, model string, cfg yolo.Config) *yolo.Detector {
	tb.Helper()
	if cfg.Provider == "" {
		cfg.Provider = testenv.Provider()
	}
	if cfg.Decoder == nil {
		jpeg, err := imagelib.OpenJPEG("")
		if err != nil {
			tb.Fatalf("parity needs libjpeg-turbo (apt-get install libturbojpeg0): %v", err)
		}
		libpng, err := imagelib.OpenPNG("")
		if err != nil {
			tb.Fatalf("the worker's decoders need libpng (apt-get install libpng16-16): %v", err)
		}
		png, err := imagelib.OpenDeflatePNG("", libpng)
		if err != nil {
			tb.Fatalf("the worker's decoders need libdeflate (apt-get install libdeflate0): %v", err)
		}
		cfg.Decoder = &decode.Decoder{JPEG: jpeg, PNG: png}
	}
	cfg.ModelPath = testenv.Model(tb, model)
	d, err := yolo.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(d.Close)
	return d
}

// paramsOf turns a reference variant's params into request parameters.
func paramsOf(tb testing.TB, m map[string]any) detect.Params {
	tb.Helper()
	p := detect.DefaultParams()
	for k, v := range m {
		switch k {
		case "conf":
			p.Conf = v.(float64)
		case "iou":
			p.IoU = v.(float64)
		case "max_det":
			p.MaxDet = int(v.(float64))
		case "agnostic":
			p.Agnostic = v.(bool)
		case "classes":
			for _, c := range v.([]any) {
				p.Classes = append(p.Classes, fmt.Sprint(c))
			}
		default:
			tb.Fatalf("unknown reference parameter %q", k)
		}
	}
	return p
}

func asTestDetections(r *detect.Result) []testenv.Detection {
	var out []testenv.Detection
	for _, d := range r.Detections {
		out = append(out, testenv.Detection{Class: d.Class, Confidence: d.Confidence,
			Box: [4]float64{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}})
	}
	return out
}

// TestParity runs every shared image and parameter variant through the
// three shared models and compares with what Ultralytics gives.
func TestParity(t *testing.T) {
	ref := testenv.LoadReference(t)
	for _, model := range []struct{ file, ref string }{
		{"yolov8n.onnx", "yolov8n.onnx"},
		{"yolov8n-dynamic.onnx", "yolov8n.onnx"},
		{"yolov8n-int8.onnx", "yolov8n-int8.onnx"},
	} {
		t.Run(model.file, func(t *testing.T) {
			d := openDetector(t, model.file, yolo.Config{Concurrency: 1})
			total := testenv.Parity{WorstIoU: 1}
			images := ref.Models[model.ref]
			names := make([]string, 0, len(images))
			for n := range images {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, img := range names {
				want := images[img]
				data := testenv.ReadImage(t, img)
				tol := testenv.JPEGTolerance
				if strings.HasSuffix(img, ".png") {
					tol = testenv.PNGTolerance
				}
				for vname, v := range want.Variants {
					p := paramsOf(t, v.Params)
					res, err := d.Detect(context.Background(), data, p)
					if err != nil {
						t.Fatalf("%s %s: %v", img, vname, err)
					}
					if res.Image.Width != want.Width || res.Image.Height != want.Height {
						t.Errorf("%s: image %dx%d, want %dx%d", img, res.Image.Width, res.Image.Height, want.Width, want.Height)
					}
					if len(res.Detections) > p.MaxDet {
						t.Errorf("%s %s: %d detections over max_det %d", img, vname, len(res.Detections), p.MaxDet)
					}
					for i := 1; i < len(res.Detections); i++ {
						if res.Detections[i].Confidence > res.Detections[i-1].Confidence {
							t.Errorf("%s %s: detections not sorted by confidence", img, vname)
						}
					}
					got := testenv.Compare(v.Detections, asTestDetections(res), p.Conf, tol)
					for _, pr := range got.Problems {
						t.Errorf("%s %s: %s", img, vname, pr)
					}
					total.Matched += got.Matched
					total.Counted += got.Counted
					total.WorstIoU = math.Min(total.WorstIoU, got.WorstIoU)
					total.WorstDConf = math.Max(total.WorstDConf, got.WorstDConf)
				}
			}
			t.Logf("parity %s: matched %d/%d, worst IoU %.4f, worst |Δconf| %.4f",
				model.file, total.Matched, total.Counted, total.WorstIoU, total.WorstDConf)
			if total.Counted == 0 {
				t.Fatal("no reference detection was compared")
			}
		})
	}
}

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
