package yolo

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/onnx"
)

// Config configures a Detector. Zero values mean defaults.
type Config struct {
	// ModelPath is the ONNX model.
	ModelPath string
	// Library is the ONNX Runtime library; empty resolves it with
	// onnx.FindLibrary. Telemetry leaves ONNX Runtime's own telemetry on
	// (onnx.Env; off by default).
	Library   string
	Telemetry bool
	// Provider is "cpu" (default) or "cuda"; FallbackCPU runs on CPU when
	// CUDA cannot be set up.
	Provider    string
	FallbackCPU bool
	// ConvAlgoSearch is how the CUDA provider picks its convolutions'
	// algorithms for a batch size it has not run, and Pageable keeps the
	// tensors on the CUDA provider's side in Go's memory instead of
	// page-locked memory: onnx.Options's.
	ConvAlgoSearch string
	Pageable       bool
	// TF32 lets the CUDA provider compute in TF32 on the GPU's tensor
	// cores (onnx.Options.TF32); by default it computes in float32, as
	// the CPU does.
	TF32 bool
	// Concurrency is how many images are processed at once, each slot
	// with its own session (default: one per two cores, at least two).
	Concurrency int
	// Sessions is how many ONNX Runtime sessions the slots share
	// (default: one per slot, at most Concurrency). Sessions side by side
	// give the best throughput; fewer save memory.
	Sessions int
	// Threads is ONNX Runtime's intra-op thread count per session
	// (default: the slot's share of the cores; all of them when batching,
	// where one batch runs at a time). Idle threads never spin:
	// spinning threads take the cores that decoding and the letterbox of
	// the next image need (measured: letterbox 5.1 ms with spinning, 2.8
	// without, on bus.jpg).
	Threads int
	// SoloThreads is the intra-op thread count of the solo session: one
	// more session, which runs an image that is alone in the detector, so
	// that a lone request gets every core instead of its slot's share
	// (measured on two cores: 64–65 ms per inference on two threads
	// against 101–104 ms on one). A run starts on it only when no other
	// image is in the detector; one that arrives meanwhile runs on its
	// slot's session. Its threads spin during a run and stop when it
	// returns; a run that finds the cores taken by other processes makes
	// it rest for a while (see soloSession). 0 means every core. A value
	// no larger than Threads, a single slot (whose image is always alone:
	// Threads decide), a GPU or batching mean no solo session.
	SoloThreads int
	// Decoder decodes images (default: Go's decoders, no pixel limit
	// beyond decode.DefaultMaxPixels).
	Decoder *decode.Decoder
	// BatchMax > 1 gathers concurrent images into one session run, for
	// models with a dynamic batch dimension; a batch holds at most
	// Concurrency images, one a slot (Config says BatchMax is Concurrency
	// when it is larger). BatchWait is how long the first image of a
	// batch waits for others (default 2 ms). On CUDA, Open runs every
	// size of run once, so that no batch pays the first run of its size.
	// BatchPadding is the size of run a batch takes (default: PadPow2 on
	// CUDA, PadNone on the CPU).
	BatchMax     int
	BatchWait    time.Duration
	BatchPadding BatchPadding
	// HeadDecode is where the model's head decodes its raw outputs into
	// boxes and scores: HeadGo, HeadONNX, or HeadAuto (the default): Go
	// on the CPU, ONNX Runtime on CUDA. The same detections either way;
	// in Go, a tenth less CPU an image on yolov8n (splitHead). A model
	// whose head cannot be split, or whose split does not give the whole
	// model's boxes and scores at Open, runs whole (Detector.Head says
	// why).
	HeadDecode string
}

// Detector runs a YOLO model on images. Detect is safe for concurrent use.
type Detector struct {
	model    *Model
	sessions []*onnx.Session
	decoder  *decode.Decoder
	slots    chan *slot
	made     int // slots made, which Close takes back
	closing  sync.Once
	batcher  *batcher // nil when batching is off
	cfg      Config
	head     string // where the head decodes, and why (Head)

	solo    *soloSession // nil when there is none
	inside  atomic.Int32 // images holding a slot
	slotRun atomic.Int64 // the last run on a slot's session, in ns

	// probe runs a blank image after a failed run, on CUDA (probeDevice);
	// nil on the CPU, whose failed runs leave nothing broken behind.
	probe func() error
	// lost is closed, and lostErr set before it, once a failed run and
	// its probe say the device stopped working (runFailed, under lostMu).
	lostMu  sync.Mutex
	lost    chan struct{}
	lostErr error
}

// slot is the per-image working memory, reused from image to image.
type slot struct {
	session *onnx.Session
	img     decode.Image
	resize  resizer
	post    postprocessor
	binding *onnx.Binding // nil with batching, where an image's tensors are its seat's
	outs    [][]float32   // binding's outputs
	// boxed is the letterbox of the last image in binding's input. The
	// next image of the same geometry overwrites all of it but the
	// padding, which is left as it is (bus.jpg: 1.2 MB, 0.14 ms of a
	// core).
	boxed Letterbox
}

// keepPixels is the largest image whose decoding buffers a slot keeps for
// the next image: a phone camera's 12 MP.
const keepPixels = 12_000_000

// trim drops the slot's decoding buffers when they are larger than
// keepPixels needs (three bytes a pixel) and has the memory handed back to
// the operating system in the background, so that one huge upload does not
// leave the worker holding hundreds of megabytes: two slots were still
// holding 725 MB after two rotated 40 MP photos, against 200 MB before
// them; with trim, 208 MB.
func (s *slot) trim() {
	if cap(s.img.Pix) <= 3*keepPixels {
		return
	}
	s.img = decode.Image{}
	go debug.FreeOSMemory()
}

// Open loads the library and the model, checks the model, creates the
// working memory and runs the model once to warm it up. It returns an
// error naming the file at fault when the library or the model cannot be
// used.
func Open(cfg Config) (*Detector, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency()
	}
	if cfg.Decoder == nil {
		cfg.Decoder = &decode.Decoder{}
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 2 * time.Millisecond
	}
	if cfg.HeadDecode != HeadAuto && cfg.HeadDecode != HeadGo && cfg.HeadDecode != HeadONNX {
		return nil, fmt.Errorf("head decoding %q: want go or onnx", cfg.HeadDecode)
	}
	lib, err := onnx.FindLibrary(cfg.Library)
	if err != nil {
		return nil, err
	}
	cfg.Library = lib
	if err := onnx.Init(lib, onnx.Env{Telemetry: cfg.Telemetry}); err != nil {
		return nil, err
	}
	info, err := onnx.Inspect(cfg.ModelPath)
	if err != nil {
		return nil, err
	}
	model, err := NewModel(cfg.ModelPath, info)
	if err != nil {
		return nil, err
	}
	if !model.DynamicBatch {
		cfg.BatchMax = 1
	}
	// A batch never holds more images than there are slots.
	cfg.BatchMax = min(cfg.BatchMax, cfg.Concurrency)
	// A GPU and the batcher need only one session (a padding batcher
	// makes one more for each further size of run: startBatcher).
	sessions := cfg.Sessions
	if sessions <= 0 || sessions > cfg.Concurrency {
		sessions = cfg.Concurrency
	}
	if cfg.Provider == "cuda" || cfg.BatchMax > 1 {
		sessions = 1
	}
	cfg.Sessions = sessions
	if cfg.Threads <= 0 {
		// The batcher runs one batch at a time, which gets every core.
		runs := cfg.Concurrency
		if cfg.BatchMax > 1 {
			runs = 1
		}
		cfg.Threads = DefaultThreads(runs)
	}
	d := &Detector{model: model, decoder: cfg.Decoder, slots: make(chan *slot, cfg.Concurrency), lost: make(chan struct{})}
	// Sessions run the split model once Open has set model.split.
	newSession := func(threads int, solo bool) (*onnx.Session, error) {
		o := onnx.Options{
			Provider: cfg.Provider, IntraOpThreads: threads, FallbackCPU: cfg.FallbackCPU, ConvAlgoSearch: cfg.ConvAlgoSearch,
			Pageable: cfg.Pageable, TF32: cfg.TF32, NoSpinning: !solo, StopSpinning: solo,
		}
		if model.split != nil {
			o.Model, o.Outputs = model.split.model, model.split.outputs
		}
		return onnx.NewSession(cfg.ModelPath, info, o)
	}
	if d.head, err = planHead(cfg, model, newSession); err != nil {
		return nil, err
	}
	for i := 0; i < sessions; i++ {
		s, err := newSession(cfg.Threads, false)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.sessions = append(d.sessions, s)
	}
	cfg.SoloThreads = SoloThreads(cfg.Concurrency, cfg.Threads, cfg.SoloThreads)
	if cfg.BatchMax > 1 || d.sessions[0].Provider() != "cpu" {
		cfg.SoloThreads = 0
	}
	if cfg.SoloThreads > 0 {
		s, err := newSession(cfg.SoloThreads, true)
		if err != nil {
			d.Close()
			return nil, err
		}
		stop, err := onnx.NewInterrupt()
		if err != nil {
			s.Close()
			d.Close()
			return nil, err
		}
		d.solo = &soloSession{s: s, stop: stop, threads: cfg.SoloThreads, minShare: soloMinShare}
	}
	if cfg.BatchMax > 1 {
		if err := d.startBatcher(&cfg, newSession); err != nil {
			d.Close()
			return nil, err
		}
	} else {
		cfg.BatchPadding = PadNone
	}
	d.cfg = cfg
	for i := 0; i < cfg.Concurrency; i++ {
		s := &slot{session: d.sessions[i%len(d.sessions)]}
		// With batching, an image's tensors are its seat in a batch.
		if d.batcher == nil {
			b, err := s.session.NewBinding(1, [2]int64{int64(model.Height), int64(model.Width)}, model.outputShapes(1)...)
			if err != nil {
				d.Close()
				return nil, err
			}
			s.binding, s.outs = b, b.Outputs()
		}
		d.slots <- s
		d.made++
	}
	if err := d.warmUp(); err != nil {
		d.Close()
		return nil, fmt.Errorf("model %s: warm-up run failed: %w", cfg.ModelPath, err)
	}
	if d.Provider() == "cuda" {
		d.probe = d.probeDevice
	}
	if model.split != nil {
		// In the sessions now: 12 MB for yolov8n, handed back.
		model.split.model = nil
		debug.FreeOSMemory()
	}
	return d, nil
}

// startBatcher starts the batcher on the detector's session, with a
// session more for each further size of run cfg.BatchPadding takes
// (filled in when empty, by the session's provider). It returns the
// error of a session that cannot be made.
func (d *Detector) startBatcher(cfg *Config, newSession func(threads int, solo bool) (*onnx.Session, error)) error {
	if cfg.BatchPadding == "" {
		cfg.BatchPadding = defaultPadding(d.Provider())
	}
	sizes := cfg.BatchPadding.sizes(cfg.BatchMax)
	if sizes == nil {
		sizes = []int{0} // one session runs every size
	}
	var runs []batchRun
	for i, n := range sizes {
		s := d.sessions[0]
		if i > 0 {
			var err error
			if s, err = newSession(cfg.Threads, false); err != nil {
				return err
			}
			d.sessions = append(d.sessions, s)
		}
		runs = append(runs, batchRun{size: n, session: s})
	}
	cfg.Sessions = len(d.sessions)
	d.batcher = newBatcher(runs, d.model, cfg.BatchMax, cfg.BatchWait, d.runFailed)
	return nil
}

// warmUp runs every slot once on a blank input, so that the first request
// does not pay ONNX Runtime's lazy initialisation; with batching, the
// batcher's first tensors once for each of warmSizes.
func (d *Detector) warmUp() error {
	if d.batcher != nil {
		return d.batcher.warmUp(warmSizes(d.Provider(), d.cfg.BatchPadding, d.cfg.BatchMax))
	}
	for i := 0; i < cap(d.slots); i++ {
		s := <-d.slots
		err := s.session.Run(s.binding)
		d.slots <- s
		if err != nil {
			return err
		}
	}
	if d.solo != nil {
		s := <-d.slots
		err := d.solo.s.Run(s.binding)
		d.slots <- s
		return err
	}
	return nil
}

// Model describes the loaded model.
func (d *Detector) Model() *Model { return d.model }

// Provider says where inference runs: "cpu" or "cuda".
func (d *Detector) Provider() string { return d.sessions[0].Provider() }

// Head says where the model's head decodes its raw outputs: "go", or
// "onnx" with why when Config.HeadDecode asked for Go or left it to the
// detector ("onnx (on CUDA)", "onnx (its head cannot be split: ...)").
func (d *Detector) Head() string { return d.head }

// HostMemory says where the tensors the GPU copies from and to are, on
// CUDA: onnx.Session.HostMemory.
func (d *Detector) HostMemory() string { return d.sessions[0].HostMemory() }

// Config returns the configuration in effect, defaults filled in;
// SoloThreads is 0 when there is no solo session.
func (d *Detector) Config() Config { return d.cfg }

// SoloRuns returns how many images have run on the solo session.
func (d *Detector) SoloRuns() int64 {
	if d.solo == nil {
		return 0
	}
	return d.solo.runs.Load()
}

// SoloCrowded returns how many of the solo session's runs found its cores
// taken by other processes, each of which made it rest.
func (d *Detector) SoloCrowded() int64 {
	if d.solo == nil {
		return 0
	}
	return d.solo.crowded.Load()
}

// SoloYielded returns how many solo runs were stopped so that an image
// right behind could run beside theirs on the slots' sessions.
func (d *Detector) SoloYielded() int64 {
	if d.solo == nil {
		return 0
	}
	return d.solo.yielded.Load()
}

// BatchStats counts what a batching detector's session has run.
type BatchStats struct {
	// Batches is the session's runs, Images the images in them, and Busy
	// the session's time running them: Images/Batches is the mean batch,
	// and Busy over a span of time the share of it the session (a GPU)
	// was running.
	Batches, Images int64
	Busy            time.Duration
}

// BatchStats returns what the batcher has run since Open, its warm-up
// left out; all zero when batching is off.
func (d *Detector) BatchStats() BatchStats {
	if d.batcher == nil {
		return BatchStats{}
	}
	bt := d.batcher
	return BatchStats{Batches: bt.batches.Load(), Images: bt.images.Load(), Busy: time.Duration(bt.busy.Load())}
}

// Close waits for the images in the detector to be done, then releases
// the sessions and the working memory; calls after the first do nothing.
// A Detect called after Close waits for a slot until its context ends.
func (d *Detector) Close() { d.closing.Do(d.close) }

func (d *Detector) close() {
	// Each image holds its slot until Detect returns, through its run on
	// the solo session or in a batch: taking every slot back waits for
	// them (a worker whose shutdown time ran out returns while its last
	// runs go on).
	for range d.made {
		if s := <-d.slots; s.binding != nil {
			s.binding.Close()
		}
	}
	if d.batcher != nil {
		d.batcher.close()
	}
	for _, s := range d.sessions {
		s.Close()
	}
	if d.solo != nil {
		d.solo.s.Close()
		d.solo.stop.Close()
	}
}

// Detect decodes an image, runs the model on it and returns its
// detections. It returns an EINVALID *Error for bad parameters (an unknown
// class name among them), an EUNSUPPORTED or ETOOLARGE *Error for an
// image it cannot take, ctx's error when ctx ends while it waits for a
// free slot, an error wrapping detect.ErrDeviceLost once its GPU has
// stopped working (runFailed), and other errors for faults of the
// runtime.
func (d *Detector) Detect(ctx context.Context, data []byte, p detect.Params) (*detect.Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	keep, err := detect.ClassMask(d.model.Names, p.Classes)
	if err != nil {
		return nil, err
	}
	s, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer d.release(s)

	t0 := time.Now()
	// An image alone has the cores to itself: a JPEG with restart markers
	// is decoded in strips on all of them (bus.jpg 3.4–3.7 ms against
	// 4.8–5.2), and meanwhile the tensor is padded through, so that the
	// letterbox finds it in cache (bus.jpg's letterbox 0.75–0.94 ms
	// against 1.27–2.14). Not while the solo session rests because other
	// processes took the cores: work handed to another core then waits
	// for it, or holds up the process that has it (two workers on two
	// cores, each image alone in its own: 29.2 images/s together against
	// 28.6 with strips, 29.1 with never a strip).
	// With batching the tensor is known only once the image has its seat,
	// after its decoding.
	var padded chan struct{}
	cores := 1
	if n := runtime.GOMAXPROCS(0); n > 1 && d.alone() && !d.crowdedOut() {
		cores = n
		if d.batcher == nil {
			padded = make(chan struct{})
			go func() {
				padAll(s.binding.Input())
				close(padded)
			}()
		}
	}
	// A rotated photo stays as stored: the letterbox turns the rows it
	// reads as it reads them.
	_, err = d.decoder.DecodeStored(data, &s.img, cores)
	if padded != nil {
		<-padded
	}
	if err != nil {
		s.trim()
		return nil, err
	}
	t1 := time.Now()
	decoding := t1.Sub(t0)
	var st *seat
	var in []float32
	var outs [][]float32
	if d.batcher != nil {
		// A wait for a batch to join counts in no stage, as the wait for
		// a batch to run does not.
		if st, err = d.batcher.join(); err != nil {
			s.trim()
			return nil, err
		}
		defer st.leave()
		in, outs = st.Input(), st.Outputs()
		t1 = time.Now()
	} else {
		in, outs = s.binding.Input(), s.outs
	}
	size := s.img.Upright()
	lb := NewLetterbox(size.Width, size.Height, d.model.Width, d.model.Height)
	s.resize.cores = cores // one: the letterbox in one band, streamed
	if padded != nil || st == nil && s.boxed.samePadding(lb) {
		s.resize.fillImage(&s.img, lb, in)
	} else {
		s.resize.Fill(&s.img, lb, in)
	}
	if st == nil {
		s.boxed = lb
	}
	s.trim()
	t2 := time.Now()
	var inference time.Duration
	if st != nil {
		// A failed batch's error is runFailed's already, the same for
		// every seat.
		inference, err = st.run()
	} else {
		err = d.run(s)
		inference = time.Since(t2)
		if err != nil {
			err = d.runFailed(err)
		}
	}
	if err != nil {
		return nil, err
	}
	t3 := time.Now()
	dets := s.post.run(outs, d.model.split, d.model.Classes(), d.model.Anchors, nmsParams{
		conf: float32(p.Conf), iou: p.IoU, maxDet: p.MaxDet, keep: keep, agnostic: p.Agnostic,
	}, lb, d.model.Names)
	t4 := time.Now()
	return &detect.Result{
		Model:      d.model.Name,
		Image:      size,
		Detections: dets,
		SpeedMS: detect.Speed{
			Decode:      detect.Millis(decoding),
			Preprocess:  detect.Millis(t2.Sub(t1)),
			Inference:   detect.Millis(inference),
			Postprocess: detect.Millis(t4.Sub(t3)),
		},
	}, nil
}

// acquire waits for a free slot and counts the image in; it returns ctx's
// error when ctx ends first.
func (d *Detector) acquire(ctx context.Context) (*slot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case s := <-d.slots:
		d.inside.Add(1)
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// alone reports whether the calling image, which holds a slot, is the
// only image in the detector.
func (d *Detector) alone() bool { return d.inside.Load() == 1 }

// crowdedOut reports whether other processes were last found holding the
// cores: the solo session rests after a run that found them taken.
func (d *Detector) crowdedOut() bool {
	return d.solo != nil && d.solo.resting()
}

// release counts the image out and frees its slot.
func (d *Detector) release(s *slot) {
	d.inside.Add(-1)
	d.slots <- s
}

// DefaultConcurrency is the number of images a detector on this machine
// runs at once by default: one per two cores, at least two, so that one
// image's decoding overlaps another's inference. Cores here and in the
// other defaults are GOMAXPROCS: the machine's, or a container's CPU
// limit, which Go reads at start (a worker limited to 2 CPUs on a 64-core
// host must not start 64 threads for one image).
func DefaultConcurrency() int { return max(2, runtime.GOMAXPROCS(0)/2) }

// DefaultThreads is the intra-op thread count per session when runs
// session runs go on at once: a run's share of the cores. Measured on two
// cores (make bench): two 1-thread sessions side by side give the most
// images per second, against which a 2-thread session per slot loses a
// tenth under load.
func DefaultThreads(runs int) int {
	return max(1, runtime.GOMAXPROCS(0)/max(1, runs))
}

// errClosed is returned by a batch run after Close.
var errClosed = errors.New("yolo: detector closed")
