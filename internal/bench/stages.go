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
	"yoloserve/internal/imagelib"
	"yoloserve/internal/sched"
	"yoloserve/internal/yolo"
)

// StagesJob is what a stages process measures (this program run again
// with -stages): each photo through the default worker's detector, Runs
// times, with the worker's decoders (libjpeg-turbo, and libdeflate in
// front of libpng), then with Go's decoders.
type StagesJob struct {
	Model    string   `json:"model"`
	Library  string   `json:"library"`
	Provider string   `json:"provider"`
	Images   []string `json:"images"`
	Runs     int      `json:"runs"`
}

// StagesRun is what a stages process measured.
type StagesRun struct {
	Policy   string        `json:"policy"`   // its threads' scheduling policy: "batch" as a worker's, or "normal"
	Stages   []StageResult `json:"stages"`   // the worker's decoders
	Decoders []StageResult `json:"decoders"` // Go's decoders
}

// RunStages puts the process's threads under SCHED_BATCH as a worker
// does and measures job. It returns an error when a decoder library or
// the detector cannot be opened or an image fails; a kernel that refuses
// SCHED_BATCH leaves the normal policy, as a worker's does, and the
// result says so.
func RunStages(job StagesJob) (StagesRun, error) {
	policy, _ := sched.BatchOrNormal() // as a worker does at its start, before ONNX Runtime starts its threads
	r, err := measureStages(job)
	r.Policy = policy
	return r, err
}

// measureStages measures job in this process, under the policy it has.
// It returns an error when a decoder library or the detector cannot be
// opened or an image fails.
func measureStages(job StagesJob) (StagesRun, error) {
	var r StagesRun
	turbo, err := imagelib.OpenJPEG("")
	if err != nil {
		return r, fmt.Errorf("bench needs libjpeg-turbo: %w", err)
	}
	libpng, err := imagelib.OpenPNG("")
	if err != nil {
		return r, fmt.Errorf("bench needs libpng: %w", err)
	}
	png, err := imagelib.OpenDeflatePNG("", libpng)
	if err != nil {
		return r, fmt.Errorf("bench needs libdeflate: %w", err)
	}
	if r.Stages, err = stages(job, &decode.Decoder{JPEG: turbo, PNG: png}); err != nil {
		return r, err
	}
	r.Decoders, err = stages(job, &decode.Decoder{JPEG: decode.GoJPEG{}, PNG: decode.GoPNG{}})
	return r, err
}

// runStages measures the detector's stages in a process of its own
// (cfg.Exe), under the worker's scheduling policy, which the bare
// sessions of the rest of the bench do not take; in this process when
// there is no cfg.Exe.
//
// The process is killed when ctx ends.
func runStages(ctx context.Context, cfg *Config, runs int) (StagesRun, error) {
	job := StagesJob{Model: cfg.Model, Library: cfg.Library, Provider: cfg.Provider, Images: cfg.Images, Runs: runs}
	if cfg.Exe == "" {
		r, err := measureStages(job)
		r.Policy = "normal"
		return r, err
	}
	c, err := startChild(ctx, cfg.Exe, StagesFlag, job)
	if err != nil {
		return StagesRun{}, err
	}
	var r StagesRun
	if err := c.wait(&r); err != nil {
		return StagesRun{}, err
	}
	return r, nil
}

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
// how many were). Each image first runs once uncounted: a fresh
// detector's first runs grow its buffers and start the strips' threads
// (bus.jpg, the first photo, decoded in a median 3.9 ms of five runs
// against 3.1 once warm).
func stages(job StagesJob, dec *decode.Decoder) ([]StageResult, error) {
	runs := job.Runs
	d, err := yolo.Open(yolo.Config{ModelPath: job.Model, Library: job.Library, Provider: job.Provider, Decoder: dec})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	hasSolo := d.Config().SoloThreads > 0
	var out []StageResult
	for _, path := range job.Images {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if _, err := d.Detect(context.Background(), data, detect.DefaultParams()); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
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
		return nil, errors.New("no JPEG among the images")
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
func detectorBatching(cfg *Config, jpeg decode.JPEGDecoder, images [][]byte, batch int, padding yolo.BatchPadding) (DetectorRun, error) {
	callers := 2 * batch
	d, err := yolo.Open(yolo.Config{ModelPath: cfg.Dynamic, Library: cfg.Library, Provider: cfg.Provider,
		Concurrency: callers, BatchMax: batch, BatchPadding: padding, Decoder: &decode.Decoder{JPEG: jpeg}})
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
	before := d.BatchStats()
	lat, errs, wall := closedLoop(callers, cfg.Load, do)
	after := d.BatchStats()
	c := d.Config()
	return DetectorRun{Provider: cfg.Provider, BatchMax: c.BatchMax, Padding: string(c.BatchPadding), Callers: callers, Threads: c.Threads,
		ImagesPerS: float64(len(lat)) / wall.Seconds(), P50MS: percentile(lat, 50), P99MS: percentile(lat, 99), Errors: errs,
		Batches: batchShare(before, after, wall)}, nil
}
