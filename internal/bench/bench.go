// Package bench measures the service against its floor, the bare ONNX
// Runtime session: the floor at several thread counts, the detector's
// stages, and the real processes (API, worker, Redis) under load. make
// bench prints its table and writes its JSON.
package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"yoloserve/internal/detect"
	"yoloserve/internal/yolo"
)

// Config says what to measure. Zero values mean defaults.
type Config struct {
	Model   string        // the float32 static model
	Dynamic string        // the dynamic-batch model (batching figures)
	Images  []string      // photos to run
	BinDir  string        // where bin/api and bin/worker are
	Library string        // ONNX Runtime library
	Load    time.Duration // how long each load window runs (default 5s)
	// Workers lists worker configurations to measure; empty: the default
	// and its alternatives.
	Workers []WorkerConfig
	// ServiceOnly skips the floor tables and the detector figures;
	// DetectorOnly skips the processes (for a machine without Redis; on
	// CUDA the processes run with the worker on the GPU);
	// IntakeOnly measures only the API's intake.
	ServiceOnly, DetectorOnly, IntakeOnly bool
	// IntakeRounds is how many times the API's intake is measured in a
	// row against one API (default 1). With the workers paused, each
	// round's uploads stay on the disk, so later rounds meet a backlog of
	// gigabytes, as when workers are down or slower than the uploads.
	IntakeRounds int
	// Provider is where the floor, the detector and the worker run: "cpu"
	// (default) or "cuda". On CUDA the service runs with the worker
	// batching on Dynamic (CUDA's figures), without the CPU's
	// configurations, the intake and the neighbours.
	Provider  string
	FloorRuns int // timed runs per floor figure (default 20)
	// Rounds is how many pairs of bare and 16-client windows each worker
	// configuration runs (default 5); the ratio is their median.
	Rounds int
	// Exe is this program, run again with -neighbour for the neighbours
	// figures; empty skips them.
	Exe string
	Out io.Writer // the table (default: none)
	// LogDir is where the processes keep their warnings and errors:
	// redis.log, api.log and worker.log (every worker configuration's in
	// turn), each written afresh by a run, so that a figure that missed
	// can be read against what the service said meanwhile (an upload
	// refused, Redis's memory, a slow disk). Empty: they log only errors,
	// to the bench's stderr.
	LogDir string
}

// WorkerConfig is a worker's WORKER_CONCURRENCY, ORT_THREADS,
// ORT_SESSIONS and ORT_SOLO_THREADS.
type WorkerConfig struct {
	Concurrency, Threads, Sessions, Solo int
}

// ParseWorkerConfig reads CONCURRENCYxTHREADSxSESSIONS[xSOLO], SOLO
// being ORT_SOLO_THREADS (default 0: every core; 1: no solo session).
func ParseWorkerConfig(s string) (WorkerConfig, error) {
	var w WorkerConfig
	n, _ := fmt.Sscanf(s, "%dx%dx%dx%d", &w.Concurrency, &w.Threads, &w.Sessions, &w.Solo)
	if n < 3 || w.Concurrency < 1 || w.Threads < 1 || w.Sessions < 1 || w.Solo < 0 {
		return w, fmt.Errorf("%q: want CONCURRENCYxTHREADSxSESSIONS[xSOLO_THREADS]", s)
	}
	return w, nil
}

// Report is everything make bench measured; it is written as JSON.
type Report struct {
	Machine string `json:"machine"`
	// ONNXRuntime is the version of the ONNX Runtime library measured.
	ONNXRuntime string        `json:"onnxruntime"`
	Floor       []FloorResult `json:"floor"`
	// FloorSplit is the floor of the model cut before its head's
	// decoding, as a worker whose head decodes in Go runs it
	// (HEAD_DECODE): a 2-thread session, and a 1-thread session per
	// core. Not what the ratios compare with, which is the whole model,
	// as a user's own script runs it; empty on CUDA.
	FloorSplit []FloorResult `json:"floor_split_head,omitempty"`
	Stages     []StageResult `json:"stages"`
	Decoders   []StageResult `json:"decoders"`
	// StagesPolicy is the scheduling policy the stages ran under: "batch"
	// as a worker's, or "normal".
	StagesPolicy string        `json:"stages_policy"`
	Batching     []FloorResult `json:"batching"`
	// BatchingPageable is Batching on a GPU with the tensors in ordinary
	// (pageable) memory; Batching's are page-locked, as the worker's.
	BatchingPageable []FloorResult `json:"batching_pageable,omitempty"`
	// ConvSearch is the bare CUDA session on the dynamic model computing
	// each way of convMaths, at the batch sizes of Batching (Provider
	// "cuda").
	ConvSearch []ConvSearchRun `json:"conv_search,omitempty"`
	// Shapes is one CUDA session taking two input shapes in turn, and
	// Numerics the CUDA outputs against the CPU's and across batch sizes
	// (Provider "cuda").
	Shapes   *ShapeRun     `json:"shapes,omitempty"`
	Numerics []NumericsRun `json:"numerics,omitempty"`
	// DetectorBatching is the detector path on the dynamic model at each
	// batch size, against Batching's bare session at the same size.
	DetectorBatching []DetectorRun `json:"detector_batching"`
	Workers          []WorkerRun   `json:"workers"`
	// CUDA is the service with its worker on CUDA, at each batch size
	// (Provider "cuda").
	CUDA []CUDARun `json:"cuda,omitempty"`
	// Neighbours is two worker detectors sharing the cores, with solo
	// sessions and without, in alternating rounds.
	Neighbours []NeighboursRun `json:"neighbours"`
	Upload     UploadResult    `json:"upload"`
	// UploadRounds holds every round of the intake when there were
	// several (Config.IntakeRounds); Upload is the first.
	UploadRounds []UploadResult `json:"upload_rounds,omitempty"`
	Ratios       []Ratio        `json:"ratios"`
	// Logs lists the files the processes wrote their warnings and errors
	// to (Config.LogDir), none when they logged to stderr or did not run.
	Logs []string `json:"logs,omitempty"`
}

// FloorResult is one bare-session figure.
type FloorResult struct {
	Name       string  `json:"name"`
	Sessions   int     `json:"sessions"`
	Threads    int     `json:"threads"`
	Batch      int     `json:"batch"`
	MedianMS   float64 `json:"median_ms"` // per run
	PerImageMS float64 `json:"per_image_ms"`
	ImagesPerS float64 `json:"images_per_s"`
}

// StageResult is the detector's median stage times on one image.
type StageResult struct {
	Image       string  `json:"image"`
	Decoder     string  `json:"decoder"`
	Pixels      int     `json:"pixels"`
	DecodeMS    float64 `json:"decode_ms"`
	PreMS       float64 `json:"preprocess_ms"`
	InferenceMS float64 `json:"inference_ms"`
	PostMS      float64 `json:"postprocess_ms"`
	Overhead    float64 `json:"overhead_ratio"` // (decode+pre+post) / inference
	// Runs is how many times the image was detected (more than asked
	// for when other processes took the cores); SoloRuns how many of
	// those ran on the solo session with the cores free, whose runs alone
	// the medians are of when there are any (0 for a detector without a
	// solo session).
	Runs     int `json:"runs"`
	SoloRuns int `json:"solo_runs"`
}

// DetectorRun is the detector path (decode, letterbox, inference, NMS) in
// one process, with callers calling Detect back to back: a worker's slots
// without the queue.
type DetectorRun struct {
	Provider   string  `json:"provider"`
	BatchMax   int     `json:"batch_max"`
	Padding    string  `json:"padding"`
	Callers    int     `json:"callers"`
	Threads    int     `json:"threads"`
	ImagesPerS float64 `json:"images_per_s"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	Errors     int     `json:"errors"`
	// Bare names the bare session at the same batch size (Batching's) and
	// BarePS is its throughput.
	Bare   string  `json:"bare"`
	BarePS float64 `json:"bare_per_s"`
	// Batches is what the batcher's session ran over the load.
	Batches *BatchShare `json:"batches,omitempty"`
}

// WorkerRun is the system measured with one worker configuration.
type WorkerRun struct {
	Concurrency int `json:"concurrency"`
	Threads     int `json:"threads"`
	Sessions    int `json:"sessions"`
	SoloThreads int `json:"solo_threads"` // the solo session's, 0 when none
	// LoneTasks are the sequential tasks, their bare runs with the threads
	// a lone task runs on: the solo session's when there is one, else a
	// slot's.
	LoneTasks
	// LoneSoloShare is the share of the sequential tasks that ran on the
	// solo session: below 1 when some found the cores taken.
	LoneSoloShare float64 `json:"lone_solo_share"`
	// LoneCrowded counts the sequential tasks' solo runs that found the
	// cores taken, after each of which the solo session rested and the
	// lone tasks meanwhile ran on their slots' sessions.
	LoneCrowded int64       `json:"lone_crowded"`
	Loads       []LoadLevel `json:"loads"` // 1, 4 and 16 clients (16: pooled over the rounds)
	// Rounds pairs the best bare throughput with the 16-client throughput
	// measured right after it; ThroughputRatio is the median of their
	// ratios and BareBestPS the median bare figure.
	Rounds          []Round `json:"rounds"`
	ThroughputRatio float64 `json:"throughput_ratio"`
	BareBestPS      float64 `json:"bare_best_per_s"`
	// CeilingRatio is the throughput ratio the 16-client costs allow with
	// every core busy: see ceiling. A throughput ratio close to it is
	// bounded by the costs beside the inference, not by idle cores.
	CeilingRatio float64 `json:"ceiling_ratio"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
}

// LoneTasks are tasks sent to the worker one at a time, each after a run
// of a bare session (lonePairs): the service time and the idle latency
// against the floor.
type LoneTasks struct {
	// BareMS is the median of the bare session's runs interleaved with
	// the tasks.
	BareMS        float64 `json:"bare_ms"`
	ServiceMS     float64 `json:"service_ms"`      // worker: upload read → result written, median
	IdleLatencyMS float64 `json:"idle_latency_ms"` // POST until the result is readable, median, one client
	// ServiceRatio and IdleRatio are the medians over the pairs of the
	// task's service time and POST → result over the bare run just before
	// it: a pair shares the machine's conditions, which drift between
	// pairs (the medians of the figures above may come from different
	// moments).
	ServiceRatio float64      `json:"service_ratio"`
	IdleRatio    float64      `json:"idle_ratio"`
	Speed        detect.Speed `json:"speed_ms"` // the worker's stages, each its median over the sequential run
	// OutsideMS is the median over the pairs of the counted task's service
	// time less its detector stages: the upload's read, the result's write
	// to Redis, and the steps between.
	OutsideMS float64 `json:"outside_ms"`
	// Pairs are the sequential tasks, each with the bare run just before
	// it, in the order they ran: the figures above are their medians, and
	// a pair's stages show where its service time went.
	Pairs []Pair `json:"pairs"`
}

// Pair is one sequential task and the bare session's run just before it,
// in ms.
type Pair struct {
	BareMS    float64      `json:"bare_ms"`
	ServiceMS float64      `json:"service_ms"` // the worker's: upload read → result written
	IdleMS    float64      `json:"idle_ms"`    // POST until the result was readable
	Speed     detect.Speed `json:"speed_ms"`   // the task's detector stages
}

// summarize sets the run's sequential figures from its pairs: each the
// median over the pairs, the ratios too (so that a pair's task is set
// against the bare run that shared its moment). With no pairs it leaves
// them zero.
func (run *LoneTasks) summarize(pairs []Pair) {
	run.Pairs = pairs
	if len(pairs) == 0 {
		return
	}
	var bare, service, idle, outside, serviceRatio, idleRatio []float64
	var speeds []detect.Speed
	for _, p := range pairs {
		sp := p.Speed
		bare, service, idle = append(bare, p.BareMS), append(service, p.ServiceMS), append(idle, p.IdleMS)
		outside = append(outside, p.ServiceMS-(sp.Decode+sp.Preprocess+sp.Inference+sp.Postprocess))
		serviceRatio, idleRatio = append(serviceRatio, p.ServiceMS/p.BareMS), append(idleRatio, p.IdleMS/p.BareMS)
		speeds = append(speeds, sp)
	}
	run.BareMS, run.ServiceMS, run.IdleLatencyMS = median(bare), median(service), median(idle)
	run.OutsideMS = median(outside)
	run.ServiceRatio, run.IdleRatio = median(serviceRatio), median(idleRatio)
	run.Speed = medianSpeed(speeds)
}

// ceiling returns the throughput, as a share of the bare sessions', that
// a machine of ncpu cores would reach if every core were busy with the
// service: the bare sessions' CPU per image (one core each, barePS
// images/s on ncpu cores) over the CPU the service's processes used per
// image. It returns 0 when either is unknown.
func ceiling(ncpu int, barePS float64, used CPUShare) float64 {
	total := used.Worker + used.API + used.Redis + used.Client
	if barePS <= 0 || total <= 0 {
		return 0
	}
	return coreMSPerImage(ncpu, barePS) / total
}

// slowShare is the share of the run's fastest bare speed under which a
// configuration's bare measurements are taken to have met a slow stretch.
const slowShare = 0.7

// slowStretch returns a note for a figure whose bare measurement ran at
// speed, under slowShare of the fastest like measurement of the run
// (fastest; both in runs or images a second), else "": what says which
// measurement. In such a stretch the inference slows down more than the
// service's costs beside it (decoding, the API, Redis, the load
// generator), so the figure's ratio to its bare measurement reads better
// than the machine's usual and does not compare with other runs'.
func slowStretch(speed, fastest float64, what string) string {
	if speed <= 0 || speed >= slowShare*fastest {
		return ""
	}
	return fmt.Sprintf("a slow stretch: %s at %.2f of this run's fastest; not comparable", what, speed/fastest)
}

// coreMSPerImage returns the milliseconds of one core an image takes when
// ncpu cores together do perS images a second.
func coreMSPerImage(ncpu int, perS float64) float64 { return float64(ncpu) * 1000 / perS }

// name is the configuration in short: slots × threads / sessions, and
// the solo session.
func (w WorkerRun) name() string {
	solo := "no solo"
	if w.SoloThreads > 0 {
		solo = fmt.Sprintf("solo %d", w.SoloThreads)
	}
	return fmt.Sprintf("%dx%d/%ds, %s", w.Concurrency, w.Threads, w.Sessions, solo)
}

// loneThreads is how many threads a task alone in the worker runs on.
func (w WorkerRun) loneThreads() int { return max(w.Threads, w.SoloThreads) }

// Round is a bare throughput window and the service's 16-client window
// that followed it, of the same length.
type Round struct {
	BarePS    float64 `json:"bare_per_s"`
	ServicePS float64 `json:"service_per_s"`
}

// LoadLevel is throughput and latency at a number of concurrent clients.
type LoadLevel struct {
	Clients    int     `json:"clients"`
	ImagesPerS float64 `json:"images_per_s"`
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
	P99MS      float64 `json:"p99_ms"`
	MaxMS      float64 `json:"max_ms"`
	Errors     int     `json:"errors"`
	// CPUPerImage is the CPU time each process used per finished image.
	CPUPerImage CPUShare `json:"cpu_ms_per_image"`
	// Speed is the worker's mean stage times (wall) over the images.
	Speed detect.Speed `json:"speed_ms"`
	// SoloShare is the share of the images that ran on the solo session.
	SoloShare float64 `json:"solo_share"`
	// Machine is where the machine's CPU time went that CPUPerImage does
	// not count.
	Machine MachineShare `json:"machine"`
	// Batches is what a batching worker's session ran (GPU mode).
	Batches *BatchShare `json:"batches,omitempty"`
}

// BatchShare is what a batching session ran over a load: its mean batch,
// and the share of the load's time it was running (on a GPU, how busy the
// GPU was kept).
type BatchShare struct {
	MeanImages  float64 `json:"mean_images"`
	SessionBusy float64 `json:"session_busy"`
}

// String says what the batches were, for the bench's lines; nothing for
// nil.
func (b *BatchShare) String() string {
	if b == nil {
		return ""
	}
	return fmt.Sprintf("  batches: %.1f images, session busy %.0f%%", b.MeanImages, 100*b.SessionBusy)
}

// batchShare returns the BatchShare of what a session ran between the
// readings before and after, over wall, or nil when no batch ran.
func batchShare(before, after yolo.BatchStats, wall time.Duration) *BatchShare {
	n := after.Batches - before.Batches
	if n <= 0 || wall <= 0 {
		return nil
	}
	return &BatchShare{MeanImages: float64(after.Images-before.Images) / float64(n),
		SessionBusy: (after.Busy - before.Busy).Seconds() / wall.Seconds()}
}

// MachineShare is the share of all cores' time, over a load's windows,
// that went to no process: idle (with iowait), soft interrupts (loopback
// networking among them) and time the hypervisor took (steal).
type MachineShare struct {
	Idle    float64 `json:"idle"`
	SoftIRQ float64 `json:"softirq"`
	Steal   float64 `json:"steal"`
}

// CPUShare is CPU milliseconds per image, by process.
type CPUShare struct {
	Worker float64 `json:"worker"`
	API    float64 `json:"api"`
	Redis  float64 `json:"redis"`
	Client float64 `json:"client"` // the load generator
}

// UploadResult is the API's intake with workers paused: its capacity
// with Clients posting back to back, and its latency at a fixed Rate.
type UploadResult struct {
	Bytes      int     `json:"bytes"`
	Clients    int     `json:"clients"`
	AcceptedPS float64 `json:"accepted_per_s"`
	P50MS      float64 `json:"p50_ms"`
	P99MS      float64 `json:"p99_ms"`
	Errors     int     `json:"errors"`
	// Refused counts the window's uploads the API answered 503, by the
	// reason it counted them under (yoloserve_api_refusals_total); the
	// other errors are the client's own (a timeout, a refused connection).
	Refused map[string]int `json:"refused,omitempty"`
	// Slow counts the window's uploads whose step took over 32 ms, by
	// step (yoloserve_api_upload_step_seconds): store, the write to the
	// upload folder (a disk stall shows here), and enqueue, Redis.
	Slow       map[string]int `json:"slow_steps,omitempty"`
	Rate       float64        `json:"rate_per_s"`
	RateP50MS  float64        `json:"rate_p50_ms"`
	RateP99MS  float64        `json:"rate_p99_ms"`
	RateMaxMS  float64        `json:"rate_max_ms"`
	RateErrors int            `json:"rate_errors"`
	// RateRefused is Refused for the window at a fixed rate.
	RateRefused map[string]int `json:"rate_refused,omitempty"`
	// RateSlow is Slow for the window at a fixed rate.
	RateSlow map[string]int `json:"rate_slow_steps,omitempty"`
}

// Ratio is a figure against its target.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
	// Note says why the figure does not compare with other runs', when
	// it does not (see slowStretch).
	Note string `json:"note,omitempty"`
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return percentile(s, 50)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (c *Config) printf(format string, args ...any) {
	if c.Out != nil {
		fmt.Fprintf(c.Out, format, args...)
	}
}
