package yolo_test

import (
	"context"
	"testing"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// BenchmarkDetect reports each stage per image on the shared photos: one
// image at a time on two ONNX Runtime threads, with libjpeg-turbo and with
// Go's decoder. The overhead metric is (decode+letterbox+nms)/inference.
func BenchmarkDetect(b *testing.B) {
	for _, dec := range []struct {
		name string
		jpeg decode.JPEGDecoder
	}{{"turbo", nil}, {"go", decode.GoJPEG{}}} {
		cfg := yolo.Config{Concurrency: 1, Threads: 2}
		if dec.jpeg != nil {
			cfg.Decoder = &decode.Decoder{JPEG: dec.jpeg}
		}
		d := openDetector(b, "yolov8n.onnx", cfg)
		for _, name := range testenv.Images(b) {
			data := testenv.ReadImage(b, name)
			b.Run(dec.name+"/"+name, func(b *testing.B) {
				var s detect.Speed
				n := 0
				for b.Loop() {
					r, err := d.Detect(context.Background(), data, detect.DefaultParams())
					if err != nil {
						b.Fatal(err)
					}
					s.Decode += r.SpeedMS.Decode
					s.Preprocess += r.SpeedMS.Preprocess
					s.Inference += r.SpeedMS.Inference
					s.Postprocess += r.SpeedMS.Postprocess
					n++
				}
				f := float64(n)
				b.ReportMetric(s.Decode/f, "decode-ms")
				b.ReportMetric(s.Preprocess/f, "letterbox-ms")
				b.ReportMetric(s.Inference/f, "inference-ms")
				b.ReportMetric(s.Postprocess/f, "nms-ms")
				b.ReportMetric((s.Decode+s.Preprocess+s.Postprocess)/s.Inference, "overhead")
			})
		}
	}
}

// BenchmarkHeadDecode compares the head decoded in ONNX Runtime and in Go
// (Config.HeadDecode) on one 1-thread session, as a worker's slot runs an
// image under load: inference plus NMS per image, bus.jpg, default
// parameters.
func BenchmarkHeadDecode(b *testing.B) {
	data := testenv.ReadImage(b, "bus.jpg")
	for _, head := range []string{yolo.HeadONNX, yolo.HeadGo} {
		d := openDetector(b, "yolov8n.onnx", yolo.Config{Concurrency: 1, Threads: 1, HeadDecode: head})
		b.Run(head, func(b *testing.B) {
			var inference, nms float64
			n := 0
			for b.Loop() {
				r, err := d.Detect(context.Background(), data, detect.DefaultParams())
				if err != nil {
					b.Fatal(err)
				}
				inference += r.SpeedMS.Inference
				nms += r.SpeedMS.Postprocess
				n++
			}
			b.ReportMetric(inference/float64(n), "inference-ms")
			b.ReportMetric(nms/float64(n), "nms-ms")
		})
	}
}
