package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"yoloserve/internal/onnx"
	"yoloserve/internal/yolo"
)

// CUDARun is the service with its worker on CUDA (ORT_PROVIDER=cuda) on
// the dynamic model: tasks one at a time, each after a run of a bare CUDA
// session at batch 1 (lonePairs, as on the CPU), then closed loops of
// clients.
type CUDARun struct {
	BatchMax    int `json:"batch_max"`
	Concurrency int `json:"concurrency"`
	// LoneTasks are the sequential tasks, their bare runs a bare CUDA
	// session's at batch 1.
	LoneTasks
	Loads []LoadLevel `json:"loads"`
	// StartS is how long the worker took from its start to ready (its
	// sessions made and warmed at batch 1); Cold are the short first
	// windows at each load, whose batch sizes the CUDA provider meets
	// for the first time (the first batch of a size picks its
	// convolutions).
	StartS float64     `json:"start_s"`
	Cold   []LoadLevel `json:"cold_loads"`
	// Bare names the bare CUDA session at batch BatchMax (Batching's) and
	// BarePS is its throughput; Ratio is the best load's throughput over
	// it.
	Bare       string  `json:"bare"`
	BarePS     float64 `json:"bare_per_s"`
	Ratio      float64 `json:"ratio"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// ConvSearchRun is a bare CUDA session on the dynamic model that picks its
// convolutions' algorithms one way (Search, as ORT_CUDNN_CONV_ALGO_SEARCH):
// the first run of a batch size (of batch 1, the session's first run
// altogether) and its median run after it.
type ConvSearchRun struct {
	Search   string  `json:"search"`
	Batch    int     `json:"batch"`
	FirstMS  float64 `json:"first_ms"`
	MedianMS float64 `json:"median_ms"`
}

// convSearches are the ways the bench compares: the worker's default,
// and ONNX Runtime's own.
var convSearches = []string{"heuristic", "exhaustive"}

// convSearch opens a session of model on provider with search and runs
// each of batches in turn, the first run timed alone and then runs more.
// It returns an error when the session cannot be made or run.
func convSearch(model, provider, search string, batches []int, runs int) ([]ConvSearchRun, error) {
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, err
	}
	s, err := onnx.NewSession(model, info, onnx.Options{Provider: provider, ConvAlgoSearch: search})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	full, err := s.NewBinding(slices.Max(batches), [2]int64{640, 640}, info.OutputShape)
	if err != nil {
		return nil, err
	}
	defer full.Close()
	fillInput(full)
	var out []ConvSearchRun
	for _, n := range batches {
		b := full
		if n < full.Batch {
			if b, err = full.Prefix(n); err != nil {
				return nil, err
			}
			defer b.Close()
		}
		times := make([]float64, 0, runs+1)
		for range runs + 1 {
			t := time.Now()
			if err := s.Run(b); err != nil {
				return nil, err
			}
			times = append(times, ms(time.Since(t)))
		}
		out = append(out, ConvSearchRun{Search: search, Batch: n, FirstMS: times[0], MedianMS: median(times[1:])})
	}
	return out, nil
}

// cudaBatches are the BATCH_MAX values the service runs with on CUDA:
// batching off (the worker's default sixteen slots on CUDA), and batches
// of 8 and 32 with twice as many slots as a batch holds, so that one
// batch gathers while another runs.
var cudaBatches = []int{1, 8, 32}

// cudaClients are the closed-loop loads the service runs under on CUDA.
var cudaClients = []int{1, 16, 64, 128}

// serviceCUDA measures redis-server, bin/api and bin/worker with the
// worker on CUDA at each of cudaBatches. It returns an error when a
// process cannot start or a lone task fails, and ctx's error once ctx
// ends.
func (rep *Report) serviceCUDA(ctx context.Context, cfg *Config) error {
	cfg.printf("== the service on CUDA: redis-server, bin/api, bin/worker with ORT_PROVIDER=cuda on %s\n", cfg.Dynamic)
	sys, bodies, stop, err := rep.startSystem(cfg)
	if err != nil {
		return err
	}
	defer stop()
	for _, b := range cudaBatches {
		if err := ctx.Err(); err != nil {
			return err
		}
		run, err := sys.measureCUDA(ctx, bodies, b, cudaClients)
		if err != nil {
			return err
		}
		for _, f := range rep.Batching {
			if f.Batch == b {
				run.Bare, run.BarePS = f.Name, f.ImagesPerS
			}
		}
		best := 0.0
		for _, lv := range run.Loads {
			best = max(best, lv.ImagesPerS)
		}
		if run.BarePS > 0 {
			run.Ratio = best / run.BarePS
		}
		rep.CUDA = append(rep.CUDA, run)
		cfg.printf("  worker on CUDA, BATCH_MAX %d, %d slots, ready in %.1f s: service %.1f ms (decode %.1f, letterbox %.1f, inference %.1f, nms %.1f), idle POST→result %.1f ms, against a bare batch-1 run of %.2f ms; best %.1f img/s, %.2f of the bare %s (%.1f img/s); peak RSS %.0f MiB\n",
			run.BatchMax, run.Concurrency, run.StartS, run.ServiceMS, run.Speed.Decode, run.Speed.Preprocess, run.Speed.Inference, run.Speed.Postprocess,
			run.IdleLatencyMS, run.BareMS, best, run.Ratio, run.Bare, run.BarePS, run.PeakRSSMiB)
	}
	return nil
}

// batchCounts reads a batching worker's batches, their images and its
// session's run time, as its detector's BatchStats; all zero with batch
// 1, where the worker has none. It returns an error when the worker does
// not answer or lacks them.
func (s *system) batchCounts(batch int) (yolo.BatchStats, error) {
	if batch <= 1 {
		return yolo.BatchStats{}, nil
	}
	v, err := s.metrics("yoloserve_worker_batches_total", "yoloserve_worker_batch_images_total", "yoloserve_worker_batch_run_seconds_total")
	if err != nil {
		return yolo.BatchStats{}, err
	}
	return yolo.BatchStats{Batches: int64(v[0]), Images: int64(v[1]), Busy: time.Duration(v[2] * float64(time.Second))}, nil
}

// measureCUDA runs the worker on the system's provider (CUDA but in
// tests) with BATCH_MAX batch, under loads of each of clients. It returns
// an error when the worker does not start or a lone task fails, and ctx's
// error at the next step once ctx ends.
func (s *system) measureCUDA(ctx context.Context, bodies []body, batch int, clients []int) (CUDARun, error) {
	run := CUDARun{BatchMax: batch, Concurrency: 16}
	if batch > 1 {
		run.Concurrency = 2 * batch
	}
	one, err := newBare(s.cfg.Dynamic, spinOn.options(s.cfg.Provider, 1), 1, 1)
	if err != nil {
		return run, err
	}
	defer one.close()
	env := []string{"ORT_PROVIDER=" + s.cfg.Provider, "MODEL_PATH=" + s.cfg.Dynamic,
		fmt.Sprintf("BATCH_MAX=%d", batch), fmt.Sprintf("WORKER_CONCURRENCY=%d", run.Concurrency)}
	if p := os.Getenv("LD_LIBRARY_PATH"); p != "" { // where the CUDA libraries are
		env = append(env, "LD_LIBRARY_PATH="+p)
	}
	start := time.Now()
	if err := s.startWorkerEnv(env...); err != nil {
		return run, err
	}
	defer s.stopWorker()
	run.StartS = time.Since(start).Seconds()
	// The CUDA provider picks its convolution algorithms for each batch
	// size on the first run of that size: every load runs once first.
	for _, c := range clients {
		if err := ctx.Err(); err != nil {
			return run, err
		}
		lv := level(c, s.window(bodies, c, s.cfg.Load/5))
		run.Cold = append(run.Cold, lv)
		s.cfg.printf("  worker on CUDA, BATCH_MAX %d, %3d clients, first %v: %7.1f img/s  p50 %6.1f  p99 %6.1f  max %6.1f ms  errors %d\n",
			batch, c, s.cfg.Load/5, lv.ImagesPerS, lv.P50MS, lv.P99MS, lv.MaxMS, lv.Errors)
	}
	pairs, err := s.lonePairs(ctx, one, bodies[0])
	if err != nil {
		return run, err
	}
	run.summarize(pairs)
	for _, c := range clients {
		if err := ctx.Err(); err != nil {
			return run, err
		}
		before, err := s.batchCounts(batch)
		if err != nil {
			return run, err
		}
		w := s.window(bodies, c, s.cfg.Load)
		after, err := s.batchCounts(batch)
		if err != nil {
			return run, err
		}
		lv := level(c, w)
		lv.Batches = batchShare(before, after, w.wall)
		run.Loads = append(run.Loads, lv)
		u, sp := lv.CPUPerImage, lv.Speed
		s.cfg.printf("  worker on CUDA, BATCH_MAX %d, %3d clients: %7.1f img/s  p50 %6.1f  p99 %6.1f ms  errors %d  CPU ms/img: worker %.1f api %.1f redis %.1f client %.1f  stages ms: decode %.1f letterbox %.1f inference %.1f nms %.1f%s\n",
			batch, c, lv.ImagesPerS, lv.P50MS, lv.P99MS, lv.Errors, u.Worker, u.API, u.Redis, u.Client, sp.Decode, sp.Preprocess, sp.Inference, sp.Postprocess, lv.Batches)
	}
	run.PeakRSSMiB = peakRSS(s.worker.Process.Pid)
	return run, nil
}
