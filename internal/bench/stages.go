package bench

import (
	"context"
	"os"
	"path/filepath"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/yolo"
)

// stages runs each image through a detector (one image at a time, two
// threads) and takes the median of each stage.
func stages(cfg *Config, jpeg decode.JPEGDecoder, runs int) ([]StageResult, error) {
	d, err := yolo.Open(yolo.Config{ModelPath: cfg.Model, Library: cfg.Library, Concurrency: 1, Threads: 2,
		Decoder: &decode.Decoder{JPEG: jpeg}})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var out []StageResult
	for _, path := range cfg.Images {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var dec, pre, inf, post []float64
		var res *detect.Result
		for i := 0; i < runs; i++ {
			if res, err = d.Detect(context.Background(), data, detect.DefaultParams()); err != nil {
				return nil, err
			}
			dec = append(dec, res.SpeedMS.Decode)
			pre = append(pre, res.SpeedMS.Preprocess)
			inf = append(inf, res.SpeedMS.Inference)
			post = append(post, res.SpeedMS.Postprocess)
		}
		r := StageResult{Image: filepath.Base(path), Decoder: jpeg.Name(), Pixels: res.Image.Width * res.Image.Height,
			DecodeMS: median(dec), PreMS: median(pre), InferenceMS: median(inf), PostMS: median(post)}
		r.Overhead = (r.DecodeMS + r.PreMS + r.PostMS) / r.InferenceMS
		out = append(out, r)
	}
	return out, nil
}
