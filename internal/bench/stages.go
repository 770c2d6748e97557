package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/yolo"
)

// stages runs each image through a detector with the decoders of dec and
// takes the median of each stage. The detector is the default worker's
// (its slots, threads and solo session), fed one image at a time, so that
// each image is a lone task's: on a CPU with two cores or more it runs on
// the solo session, whose threads spin through a run as the bare session's
// do. The figures are meant for free cores: a run that found the cores
// taken by another process is slower, and sends the next lone images to
// a slot's 1-thread session for a rest (solo.go), whose inference is half
// again as long and would flatter the overhead. So an image runs until
// runs of its runs were on the solo session with the cores free, up to
// three times as many runs in all, and the medians are of those runs, or
// of all runs when none of an image's was one (StageResult.SoloRuns says
// how many were).
func stages(cfg *Config, dec *decode.Decoder, runs int) ([]StageResult, error) {
	d, err := yolo.Open(yolo.Config{ModelPath: cfg.Model, Library: cfg.Library, Provider: cfg.Provider, Decoder: dec})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	hasSolo := d.Config().SoloThreads > 0
	var out []StageResult
	for _, path := range cfg.Images {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var all, solo []detect.Speed
		var res *detect.Result
		for i := 0; i < runs || hasSolo && len(solo) < runs && i < 3*runs; i++ {
			ran, crowded := d.SoloRuns(), d.SoloCrowded()
			if res, err = d.Detect(context.Background(), data, detect.DefaultParams()); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			all = append(all, res.SpeedMS)
			if d.SoloRuns() > ran && d.SoloCrowded() == crowded {
				solo = append(solo, res.SpeedMS)
			}
		}
		speeds := all
		if len(solo) > 0 {
			speeds = solo
		}
		var decs, pre, inf, post []float64
		for _, sp := range speeds {
			decs = append(decs, sp.Decode)
			pre = append(pre, sp.Preprocess)
			inf = append(inf, sp.Inference)
			post = append(post, sp.Postprocess)
		}
		name := dec.JPEG.Name()
		if h, err := decode.Inspect(data, -1); err == nil && h.Format == decode.PNG {
			name = dec.PNG.Name()
		}
		r := StageResult{Image: filepath.Base(path), Decoder: name, Pixels: res.Image.Width * res.Image.Height,
			DecodeMS: median(decs), PreMS: median(pre), InferenceMS: median(inf), PostMS: median(post),
			Runs: len(all), SoloRuns: len(solo)}
		r.Overhead = (r.DecodeMS + r.PreMS + r.PostMS) / r.InferenceMS
		out = append(out, r)
	}
	return out, nil
}

// jpegPaths returns the JPEGs among paths, or an error when there is
// none.
func jpegPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		if strings.HasSuffix(p, ".jpg") {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("bench: no JPEG among the images")
	}
	return out, nil
}

// readJPEGs reads the JPEGs among paths. It returns an error when one
// cannot be read or there is none.
func readJPEGs(paths []string) ([][]byte, error) {
	jpegs, err := jpegPaths(paths)
	if err != nil {
		return nil, err
	}
	var images [][]byte
	for _, p := range jpegs {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		images = append(images, data)
	}
	return images, nil
}

// detectorBatching runs the detector on the dynamic model with BatchMax
// batch and twice as many callers (so that one batch can gather while
// another runs), each calling Detect back to back on images for cfg.Load:
// a worker's slots without the queue.
func detectorBatching(cfg *Config, jpeg decode.JPEGDecoder, images [][]byte, batch int) (DetectorRun, error) {
	callers := 2 * batch
	d, err := yolo.Open(yolo.Config{ModelPath: cfg.Dynamic, Library: cfg.Library, Provider: cfg.Provider,
		Concurrency: callers, BatchMax: batch, Decoder: &decode.Decoder{JPEG: jpeg}})
	if err != nil {
		return DetectorRun{}, err
	}
	defer d.Close()
	do := func(_, i int) (time.Duration, error) {
		t := time.Now()
		_, err := d.Detect(context.Background(), images[i%len(images)], detect.DefaultParams())
		return time.Since(t), err
	}
	closedLoop(callers, cfg.Load/5, do) // warm up
	lat, errs, wall := closedLoop(callers, cfg.Load, do)
	c := d.Config()
	return DetectorRun{Provider: cfg.Provider, BatchMax: c.BatchMax, Callers: callers, Threads: c.Threads,
		ImagesPerS: float64(len(lat)) / wall.Seconds(), P50MS: percentile(lat, 50), P99MS: percentile(lat, 99), Errors: errs}, nil
}
