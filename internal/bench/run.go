package bench

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"time"

	"yoloserve/internal/imagelib"
	"yoloserve/internal/onnx"
	"yoloserve/internal/yolo"
)

// Run measures everything and returns the report. When ctx ends (the
// bench interrupted), it stops at the end of the measurement under way,
// stops the processes it started, removes their folder and returns
// ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	rep, err := run(ctx, cfg)
	if ctx.Err() != nil { // any other error is the interruption's echo
		return nil, ctx.Err()
	}
	return rep, err
}

func run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Load <= 0 {
		cfg.Load = 5 * time.Second
	}
	if cfg.FloorRuns <= 0 {
		cfg.FloorRuns = 20
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 5
	}
	if cfg.Provider == "" {
		cfg.Provider = "cpu"
	}
	if cfg.IntakeOnly {
		cfg.ServiceOnly = true
	}
	rep := &Report{Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()),
		ONNXRuntime: onnx.Version()}
	cfg.printf("== %s; ONNX Runtime %s (%s)\n", rep.Machine, rep.ONNXRuntime, cfg.Library)
	// Cores as the worker counts them (a container's CPU limit, if any).
	ncpu := runtime.GOMAXPROCS(0)
	if !cfg.ServiceOnly {
		if err := rep.floorAndStages(ctx, &cfg, ncpu); err != nil {
			return nil, err
		}
	}
	if !cfg.DetectorOnly && cfg.Provider == "cpu" {
		if err := rep.service(ctx, &cfg, ncpu); err != nil {
			return nil, err
		}
	}
	if !cfg.DetectorOnly && cfg.Provider == "cuda" && cfg.Dynamic != "" {
		if err := rep.serviceCUDA(ctx, &cfg); err != nil {
			return nil, err
		}
	}
	// Solo sessions need two cores or more.
	if !cfg.ServiceOnly && cfg.Provider == "cpu" && cfg.Exe != "" && ncpu >= 2 {
		if err := rep.neighbours(ctx, &cfg); err != nil {
			return nil, err
		}
	}
	rep.ratios(cfg.Provider)
	cfg.printf("== ratios\n")
	for _, r := range rep.Ratios {
		met := "MET"
		if !r.Met {
			met = "not met"
		}
		if r.Note != "" {
			met += " (" + r.Note + ")"
		}
		cfg.printf("  %-58s %8.3f  target %-8s %s\n", r.Name, r.Value, r.Target, met)
	}
	return rep, nil
}

// floorAndStages measures the bare floor, the bare session's batches, the
// detector's stages and the detector path with batching, on cfg.Provider.
func (rep *Report) floorAndStages(ctx context.Context, cfg *Config, ncpu int) error {
	cfg.printf("== floor: bare ONNX Runtime session (%s, %s)\n", cfg.Model, cfg.Provider)
	// On a GPU threads hardly matter.
	type setup struct {
		sessions, threads int
		spin              spinning
	}
	dc := yolo.DefaultConcurrency()
	floors := []setup{{1, 1, spinOn}, {1, 2, spinOn}, {1, ncpu, spinOn}, {ncpu, 1, spinOn}, {2, 2, spinOff}, {dc, yolo.DefaultThreads(dc), spinOff}}
	batches := []int{1, 4, 8}
	if cfg.Provider == "cuda" {
		floors, batches = []setup{{1, 1, spinOn}}, []int{1, 8, 32}
	}
	seen := map[setup]bool{}
	for _, f := range floors {
		if seen[f] {
			continue
		}
		seen[f] = true
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := floor(cfg.Model, f.spin.options(cfg.Provider, f.threads), f.sessions, 1, cfg.FloorRuns)
		if err != nil {
			return err
		}
		rep.Floor = append(rep.Floor, r)
		cfg.printf("  %-34s %7.1f ms/run  %6.1f img/s\n", r.Name, r.MedianMS, r.ImagesPerS)
	}
	if cfg.Provider != "cuda" {
		if err := rep.floorSplit(ctx, cfg, ncpu); err != nil {
			return err
		}
	}
	if cfg.Dynamic != "" {
		cfg.printf("== batching: bare session on the dynamic model\n")
		// On a GPU, the batches again with the tensors in ordinary memory,
		// as ortbench and ../shared/tools/gpu/README.md ran them: what the
		// page-locked tensors the worker uses buy.
		memories := []*[]FloorResult{&rep.Batching}
		if cfg.Provider == "cuda" {
			memories = append(memories, &rep.BatchingPageable)
		}
		for i, results := range memories {
			o := spinOn.options(cfg.Provider, ncpu)
			o.Pageable = i == 1
			for _, b := range batches {
				if err := ctx.Err(); err != nil {
					return err
				}
				r, err := floor(cfg.Dynamic, o, 1, b, max(3, cfg.FloorRuns/b))
				if err != nil {
					return err
				}
				*results = append(*results, r)
				cfg.printf("  %-34s %7.1f ms/run  %6.1f ms/img  %6.1f img/s\n", r.Name, r.MedianMS, r.PerImageMS, r.ImagesPerS)
			}
		}
	}
	if cfg.Dynamic != "" && cfg.Provider == "cuda" {
		cfg.printf("== the CUDA provider's convolutions (ORT_CUDNN_CONV_ALGO_SEARCH, TF32 or float32), bare session on the dynamic model: each batch size's first run, then the median of %d\n", cfg.FloorRuns)
		for _, c := range convMaths {
			if err := ctx.Err(); err != nil {
				return err
			}
			rs, err := convSearch(cfg.Dynamic, cfg.Provider, c, batches, cfg.FloorRuns)
			if err != nil {
				return err
			}
			rep.ConvSearch = append(rep.ConvSearch, rs...)
			for _, r := range rs {
				cfg.printf("  %-21s batch %2d: first run %8.1f ms, then %7.2f ms (%.2f ms/img)\n", c, r.Batch, r.FirstMS, r.MedianMS, r.MedianMS/float64(r.Batch))
			}
		}
		sh, err := shapeChanges(cfg.Dynamic, cfg.Provider, 8, 7, cfg.FloorRuns)
		if err != nil {
			return err
		}
		rep.Shapes = &sh
		cfg.printf("== one CUDA session, batches of %d and %d both run before: %.2f ms a run of %d over and over, %.2f ms a run taking the two in turn\n",
			sh.Sizes[0], sh.Sizes[1], sh.SameMS, sh.Sizes[0], sh.AlternatingMS)
		nr, err := numerics(cfg.Dynamic, cfg.Provider, convMaths, 8)
		if err != nil {
			return err
		}
		rep.Numerics = nr
		cfg.printf("== CUDA outputs on one input: a batch of 1 against each row of a batch of 8, and against the CPU (largest |difference|; 0: bit for bit)\n")
		for _, r := range nr {
			cfg.printf("  %-21s batch of 8 %.3g, CPU %.3g\n", convMath{r.Search, r.TF32}, r.MaxBatchDiff, r.MaxCPUDiff)
		}
	}

	turbo, err := imagelib.OpenJPEG("")
	if err != nil {
		return fmt.Errorf("bench needs libjpeg-turbo: %w", err)
	}
	sr, err := runStages(ctx, cfg, 15)
	if err != nil {
		return err
	}
	rep.Stages, rep.Decoders, rep.StagesPolicy = sr.Stages, sr.Decoders, sr.Policy
	cfg.printf("== detector stages, one image at a time through the default worker's detector, in a process under the %s scheduling policy (median ms of the runs on its solo session with the cores free, when any; solo: how many of the runs)\n", sr.Policy)
	cfg.printf("  %-16s %-14s %8s %8s %8s %9s %8s %9s %5s\n", "image", "decoder", "pixels", "decode", "letterbox", "inference", "nms", "overhead", "solo")
	for _, r := range append(sr.Stages, sr.Decoders...) {
		cfg.printf("  %-16s %-14s %8d %8.2f %8.2f %9.2f %8.2f %8.1f%% %2d/%d\n", r.Image, r.Decoder, r.Pixels, r.DecodeMS, r.PreMS, r.InferenceMS, r.PostMS, 100*r.Overhead, r.SoloRuns, r.Runs)
	}
	if cfg.Dynamic != "" {
		images, err := readJPEGs(cfg.Images)
		if err != nil {
			return err
		}
		cfg.printf("== detector path with batching, dynamic model, callers back to back for %v\n", cfg.Load)
		type variant struct {
			batch   int
			padding yolo.BatchPadding
		}
		var variants []variant
		for _, b := range batches {
			if cfg.Provider == "cuda" && b > 1 {
				// The default padding on CUDA, then the others.
				for _, p := range []yolo.BatchPadding{yolo.PadPow2, yolo.PadNone, yolo.PadFull} {
					variants = append(variants, variant{b, p})
				}
				continue
			}
			variants = append(variants, variant{b, ""})
		}
		for _, v := range variants {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := v.batch
			r, err := detectorBatching(cfg, turbo, images, b, v.padding)
			if err != nil {
				return err
			}
			for _, f := range rep.Batching {
				if f.Batch == b {
					r.Bare, r.BarePS = f.Name, f.ImagesPerS
				}
			}
			rep.DetectorBatching = append(rep.DetectorBatching, r)
			cfg.printf("  BATCH_MAX %2d, padding %-4s, %2d callers, %d thread(s): %6.1f img/s  p50 %6.1f  p99 %6.1f ms  errors %d  (bare %s: %.1f img/s, %.2f of it)%s\n",
				r.BatchMax, r.Padding, r.Callers, r.Threads, r.ImagesPerS, r.P50MS, r.P99MS, r.Errors, r.Bare, r.BarePS, r.ImagesPerS/r.BarePS, r.Batches)
		}
	}

	return nil
}

// startSystem reads the photos as uploads and starts Redis and the API
// (newSystem). It returns them with the function that stops the system
// and lists its logs in rep, or an error when a photo cannot be read or a
// process cannot start.
func (rep *Report) startSystem(cfg *Config) (*system, []body, func(), error) {
	images, err := readJPEGs(cfg.Images)
	if err != nil {
		return nil, nil, nil, err
	}
	sys, err := newSystem(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	var bodies []body
	for _, data := range images {
		bodies = append(bodies, newBody(data))
	}
	return sys, bodies, func() {
		sys.stop()
		rep.Logs = sys.logPaths()
	}, nil
}

// service measures the real processes: each worker configuration under
// load, then the API's intake.
func (rep *Report) service(ctx context.Context, cfg *Config, ncpu int) error {
	cfg.printf("== the service: redis-server, bin/api, bin/worker as processes\n")
	sys, bodies, stop, err := rep.startSystem(cfg)
	if err != nil {
		return err
	}
	defer stop()
	// The default configuration first, then the alternatives: without
	// the solo session, a session per slot with every core, one such
	// session shared.
	dc := yolo.DefaultConcurrency()
	dt := yolo.DefaultThreads(dc)
	configs := cfg.Workers
	if len(configs) == 0 {
		configs = []WorkerConfig{{dc, dt, dc, 0}, {dc, dt, dc, 1}, {dc, ncpu, dc, 1}, {dc, ncpu, 1, 1}}
	}
	if cfg.IntakeOnly {
		configs = nil
	}
	for _, wc := range configs {
		run, err := sys.measureWorker(ctx, bodies, wc, ncpu)
		if err != nil {
			return err
		}
		rep.Workers = append(rep.Workers, run)
		cfg.printf("  worker %s (bare %d-thread session %.1f ms, best bare %.1f img/s, in pairs): service %.1f ms (decode %.1f, letterbox %.1f, inference %.1f, nms %.1f, outside the detector %.1f), idle POST→result %.1f ms, solo %.0f%% (%d crowded), peak RSS %.0f MiB\n",
			run.name(), run.loneThreads(), run.BareMS, run.BareBestPS, run.ServiceMS, run.Speed.Decode, run.Speed.Preprocess, run.Speed.Inference, run.Speed.Postprocess, run.OutsideMS, run.IdleLatencyMS, 100*run.LoneSoloShare, run.LoneCrowded, run.PeakRSSMiB)
	}
	up := jpegOfSize(100 << 10)
	rounds := max(cfg.IntakeRounds, 1)
	for i := range rounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		u := sys.measureUpload(up, 32, 1000, 5*time.Second)
		round := ""
		if rounds > 1 {
			rep.UploadRounds = append(rep.UploadRounds, u)
			round = fmt.Sprintf(", round %d of %d", i+1, rounds)
		}
		if i == 0 {
			rep.Upload = u
		}
		cfg.printf("== API intake, workers paused%s, %d-byte JPEG: %d clients back to back: %.0f accepted/s, p50 %.1f ms, p99 %.1f ms, errors %d%s; at %.0f/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms, errors %d%s\n",
			round, u.Bytes, u.Clients, u.AcceptedPS, u.P50MS, u.P99MS, u.Errors, windowNotes(u.Refused, u.Slow), u.Rate, u.RateP50MS, u.RateP99MS, u.RateMaxMS, u.RateErrors, windowNotes(u.RateRefused, u.RateSlow))
	}
	return nil
}

// ratios sets the figures that have targets against them; a figure that
// was not measured is left out, and so is the detector's overhead on
// CUDA: its target is a share of the CPU's inference, where a GPU's
// takes less time than decoding the image.
func (rep *Report) ratios(provider string) {
	add := func(name string, v float64, target string, met bool, note string) {
		rep.Ratios = append(rep.Ratios, Ratio{Name: name, Value: v, Target: target, Met: met, Note: note})
	}
	// The fastest bare measurements of the run: the rounds' throughput,
	// and the pairs' runs a second for each number of lone threads. The
	// floor's best throughput counts too, so that a stretch over every
	// configuration's rounds is marked; a floor of slow minutes only
	// lowers the bar. The floor's single sessions are no reference for
	// the pairs: they run back to back with their threads spinning,
	// where a pair's bare session runs once after a pause, and read up
	// to 1/0.73 as fast as the pairs' in ordinary runs.
	fastest := 0.0
	fastestPairs := map[int]float64{}
	for _, f := range rep.Floor { // batch 1 only; batches are in rep.Batching
		fastest = max(fastest, f.ImagesPerS)
	}
	for _, w := range rep.Workers {
		fastest = max(fastest, w.BareBestPS)
		if w.BareMS > 0 {
			fastestPairs[w.loneThreads()] = max(fastestPairs[w.loneThreads()], 1000/w.BareMS)
		}
	}
	worst := 0.0
	for _, s := range rep.Stages {
		if s.Pixels <= 2_000_000 && strings.HasSuffix(s.Image, ".jpg") {
			worst = max(worst, s.Overhead)
		}
	}
	if len(rep.Stages) > 0 && provider != "cuda" {
		add("detector (decode+letterbox+nms)/inference, worst ≤2 MP JPEG", worst, "≤ 0.15", worst <= 0.15, "")
	}
	for _, w := range rep.Workers {
		name := "worker " + w.name()
		bare := fmt.Sprintf("bare %d-thread session", w.loneThreads())
		pairs := ""
		if w.BareMS > 0 {
			pairs = slowStretch(1000/w.BareMS, fastestPairs[w.loneThreads()], "its pairs' "+bare)
		}
		add(name+": service time / "+bare, w.ServiceRatio, "≤ 1.15", w.ServiceRatio <= 1.15, pairs)
		add(name+": idle POST→result / "+bare, w.IdleRatio, "≤ 1.30", w.IdleRatio <= 1.30, pairs)
		add(name+": 16-client throughput / best bare", w.ThroughputRatio, "≥ 0.90", w.ThroughputRatio >= 0.90,
			slowStretch(w.BareBestPS, fastest, "its rounds' best bare"))
		add(name+": peak RSS MiB", w.PeakRSSMiB, "≤ 400", w.PeakRSSMiB <= 400, "")
	}
	if rep.Upload.Clients > 0 {
		add("API accepted 100 KB uploads per second (32 clients back to back)", rep.Upload.AcceptedPS, "≥ 1000", rep.Upload.AcceptedPS >= 1000, "")
		add(fmt.Sprintf("API upload p99 ms at %.0f uploads/s", rep.Upload.Rate), rep.Upload.RateP99MS, "≤ 50", rep.Upload.RateP99MS <= 50 && rep.Upload.RateErrors == 0, "")
	}
}

// windowNotes says, after an intake window's figures, how many of its
// uploads the API refused, by reason, and how many spent over slowStep in
// a step, by step: " (503: uploads_in_flight 9; over 32 ms: store 41)";
// nothing when there were none.
func windowNotes(refused, slow map[string]int) string {
	var notes []string
	if len(refused) > 0 {
		notes = append(notes, "503: "+countsText(refused))
	}
	if len(slow) > 0 {
		notes = append(notes, fmt.Sprintf("over %d ms: %s", slowStep.Milliseconds(), countsText(slow)))
	}
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

// countsText lists counts by key, in the keys' order: "queue_full 1,
// redis 4".
func countsText(counts map[string]int) string {
	parts := make([]string, 0, len(counts))
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// jpegOfSize makes a noisy photo-like JPEG of at least n bytes.
func jpegOfSize(n int) []byte {
	for side := 128; ; side += 32 {
		m := image.NewRGBA(image.Rect(0, 0, side, side))
		r := rand.New(rand.NewPCG(1, 2))
		for i := range m.Pix {
			m.Pix[i] = byte(i/4%side + r.IntN(64))
		}
		var b bytes.Buffer
		jpeg.Encode(&b, m, &jpeg.Options{Quality: 90})
		if b.Len() >= n {
			return b.Bytes()
		}
	}
}
