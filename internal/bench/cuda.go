package bench

import (
	"context"
	"fmt"
	"math"
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
	// TF32: the worker ran with ORT_CUDA_TF32=true.
	TF32 bool `json:"tf32"`
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
	TF32     bool    `json:"tf32"`
	Batch    int     `json:"batch"`
	FirstMS  float64 `json:"first_ms"`
	MedianMS float64 `json:"median_ms"`
}

// convMath is how a CUDA session computes its convolutions: how it picks
// their algorithms (ORT_CUDNN_CONV_ALGO_SEARCH) and whether in TF32.
type convMath struct {
	search string
	tf32   bool
}

func (c convMath) String() string {
	return fmt.Sprintf("%s, %s", c.search, map[bool]string{true: "TF32", false: "float32"}[c.tf32])
}

// convMaths are the ways the bench compares: the worker's default first,
// then ONNX Runtime's own TF32 and its own search, and one fixed
// algorithm for every shape.
var convMaths = []convMath{{"heuristic", false}, {"heuristic", true}, {"exhaustive", false}, {"default", false}}

// convSearch opens a session of model on provider computing as c and runs
// each of batches in turn, the first run timed alone and then runs more.
// It returns an error when the session cannot be made or run.
func convSearch(model, provider string, c convMath, batches []int, runs int) ([]ConvSearchRun, error) {
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, err
	}
	s, err := onnx.NewSession(model, info, onnx.Options{Provider: provider, ConvAlgoSearch: c.search, TF32: c.tf32})
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
		out = append(out, ConvSearchRun{Search: c.search, TF32: c.tf32, Batch: n, FirstMS: times[0], MedianMS: median(times[1:])})
	}
	return out, nil
}

// ShapeRun is one CUDA session on the dynamic model run at one batch size
// over and over, then at two sizes in turn, both run before: what a
// session pays when a run's input shape is not its last run's.
type ShapeRun struct {
	Sizes         [2]int  `json:"sizes"`
	SameMS        float64 `json:"same_ms"`
	AlternatingMS float64 `json:"alternating_ms"`
}

// shapeChanges measures a ShapeRun of sizes a and b < a with runs runs
// each way. It returns an error when the session cannot be made or run.
func shapeChanges(model, provider string, a, b, runs int) (ShapeRun, error) {
	r := ShapeRun{Sizes: [2]int{a, b}}
	br, err := newBare(model, onnx.Options{Provider: provider}, 1, a)
	if err != nil {
		return r, err
	}
	defer br.close()
	s, full := br.ss[0], br.bs[0]
	part, err := full.Prefix(b)
	if err != nil {
		return r, err
	}
	defer part.Close()
	timed := func(order []*onnx.Binding) ([]float64, error) {
		var times []float64
		for _, bd := range order {
			t := time.Now()
			if err := s.Run(bd); err != nil {
				return nil, err
			}
			times = append(times, ms(time.Since(t)))
		}
		return times, nil
	}
	if _, err := timed([]*onnx.Binding{full, part, full}); err != nil { // the smaller size's first run (newBare ran the full one), and back
		return r, err
	}
	same, alternating := make([]*onnx.Binding, runs), make([]*onnx.Binding, runs)
	for i := range runs {
		same[i], alternating[i] = full, full
		if i%2 == 1 {
			alternating[i] = part
		}
	}
	ts, err := timed(same)
	if err != nil {
		return r, err
	}
	ta, err := timed(alternating)
	if err != nil {
		return r, err
	}
	r.SameMS, r.AlternatingMS = median(ts), median(ta)
	return r, nil
}

// NumericsRun compares a CUDA session's outputs, computing as
// Search and TF32 say, on one input: in a batch of 1 against each row of
// a batch of Batch holding it in every row, and against a CPU session's.
// Zero is bit for bit.
type NumericsRun struct {
	Search string `json:"search"`
	TF32   bool   `json:"tf32"`
	Batch  int    `json:"batch"`
	// MaxBatchDiff is the largest |difference| between the batch of 1's
	// output and a row of the batch's; MaxCPUDiff between the batch of
	// 1's and the CPU session's. Outputs are box coordinates in pixels
	// of the 640×640 input and class scores in [0, 1].
	MaxBatchDiff float64 `json:"max_batch_diff"`
	MaxCPUDiff   float64 `json:"max_cpu_diff"`
}

// numerics measures a NumericsRun for each of maths at batch, its
// sessions on provider (CUDA but in tests). It returns an error when a
// session cannot be made or run.
func numerics(model, provider string, maths []convMath, batch int) ([]NumericsRun, error) {
	// outputs runs a session made with o at batch 1 and at batch, every
	// row of its input the same, and returns the two outputs.
	outputs := func(o onnx.Options) ([]float32, []float32, error) {
		br, err := newBare(model, o, 1, batch)
		if err != nil {
			return nil, nil, err
		}
		defer br.close()
		s, full := br.ss[0], br.bs[0]
		in := full.Input()
		row := len(in) / batch
		for j := range in {
			in[j] = float32(j%row%251) / 255
		}
		one, err := full.Prefix(1)
		if err != nil {
			return nil, nil, err
		}
		defer one.Close()
		if err := s.Run(one); err != nil {
			return nil, nil, err
		}
		single := append([]float32(nil), one.Output()...)
		if err := s.Run(full); err != nil {
			return nil, nil, err
		}
		return single, append([]float32(nil), full.Output()...), nil
	}
	cpu, _, err := outputs(onnx.Options{Provider: "cpu"})
	if err != nil {
		return nil, err
	}
	var out []NumericsRun
	for _, c := range maths {
		single, batched, err := outputs(onnx.Options{Provider: provider, ConvAlgoSearch: c.search, TF32: c.tf32})
		if err != nil {
			return nil, err
		}
		r := NumericsRun{Search: c.search, TF32: c.tf32, Batch: batch}
		for i, v := range batched {
			r.MaxBatchDiff = max(r.MaxBatchDiff, math.Abs(float64(v-single[i%len(single)])))
		}
		for i, v := range single {
			r.MaxCPUDiff = max(r.MaxCPUDiff, math.Abs(float64(v-cpu[i])))
		}
		out = append(out, r)
	}
	return out, nil
}

// cudaWorker is a worker configuration the service runs with on CUDA.
type cudaWorker struct {
	batch int
	tf32  bool
}

func (w cudaWorker) String() string {
	return fmt.Sprintf("BATCH_MAX %d%s", w.batch, map[bool]string{true: " in TF32"}[w.tf32])
}

// cudaWorkers are the configurations the service runs with on CUDA:
// batching off (the worker's default sixteen slots on CUDA), batches of
// 8 and 32 with twice as many slots as a batch holds, so that one batch
// gathers while another runs, and batches of 32 in TF32.
var cudaWorkers = []cudaWorker{{1, false}, {8, false}, {32, false}, {32, true}}

// cudaClients are the closed-loop loads the service runs under on CUDA.
var cudaClients = []int{1, 16, 64, 128}

// serviceCUDA measures redis-server, bin/api and bin/worker with the
// worker on CUDA in each of cudaWorkers. It returns an error when a
// process cannot start or a lone task fails, and ctx's error once ctx
// ends.
func (rep *Report) serviceCUDA(ctx context.Context, cfg *Config) error {
	cfg.printf("== the service on CUDA: redis-server, bin/api, bin/worker with ORT_PROVIDER=cuda on %s\n", cfg.Dynamic)
	sys, bodies, stop, err := rep.startSystem(cfg)
	if err != nil {
		return err
	}
	defer stop()
	for _, w := range cudaWorkers {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := w.batch
		run, err := sys.measureCUDA(ctx, bodies, w, cudaClients)
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
		cfg.printf("  worker on CUDA, %s, %d slots, ready in %.1f s: service %.1f ms (decode %.1f, letterbox %.1f, inference %.1f, nms %.1f), idle POST→result %.1f ms, against a bare batch-1 run of %.2f ms; best %.1f img/s, %.2f of the bare %s (%.1f img/s); peak RSS %.0f MiB\n",
			w, run.Concurrency, run.StartS, run.ServiceMS, run.Speed.Decode, run.Speed.Preprocess, run.Speed.Inference, run.Speed.Postprocess,
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
// tests) configured as w, under loads of each of clients. It returns
// an error when the worker does not start or a lone task fails, and ctx's
// error at the next step once ctx ends.
func (s *system) measureCUDA(ctx context.Context, bodies []body, w cudaWorker, clients []int) (CUDARun, error) {
	batch := w.batch
	run := CUDARun{BatchMax: batch, Concurrency: 16, TF32: w.tf32}
	if batch > 1 {
		run.Concurrency = 2 * batch
	}
	one, err := newBare(s.cfg.Dynamic, spinOn.options(s.cfg.Provider, 1), 1, 1)
	if err != nil {
		return run, err
	}
	defer one.close()
	env := []string{"ORT_PROVIDER=" + s.cfg.Provider, "MODEL_PATH=" + s.cfg.Dynamic,
		fmt.Sprintf("BATCH_MAX=%d", batch), fmt.Sprintf("WORKER_CONCURRENCY=%d", run.Concurrency), fmt.Sprintf("ORT_CUDA_TF32=%t", w.tf32)}
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
		s.cfg.printf("  worker on CUDA, %s, %3d clients, first %v: %7.1f img/s  p50 %6.1f  p99 %6.1f  max %6.1f ms  errors %d\n",
			w, c, s.cfg.Load/5, lv.ImagesPerS, lv.P50MS, lv.P99MS, lv.MaxMS, lv.Errors)
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
		win := s.window(bodies, c, s.cfg.Load)
		after, err := s.batchCounts(batch)
		if err != nil {
			return run, err
		}
		lv := level(c, win)
		lv.Batches = batchShare(before, after, win.wall)
		run.Loads = append(run.Loads, lv)
		u, sp := lv.CPUPerImage, lv.Speed
		s.cfg.printf("  worker on CUDA, %s, %3d clients: %7.1f img/s  p50 %6.1f  p99 %6.1f ms  errors %d  CPU ms/img: worker %.1f api %.1f redis %.1f client %.1f  stages ms: decode %.1f letterbox %.1f inference %.1f nms %.1f%s\n",
			w, c, lv.ImagesPerS, lv.P50MS, lv.P99MS, lv.Errors, u.Worker, u.API, u.Redis, u.Client, sp.Decode, sp.Preprocess, sp.Inference, sp.Postprocess, lv.Batches)
	}
	run.PeakRSSMiB = peakRSS(s.worker.Process.Pid)
	return run, nil
}
