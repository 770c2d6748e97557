// Package onnx wraps ONNX Runtime (through onnxruntime_go) behind a small
// API: find and load the shared library once, inspect a model, and run a
// float32 session on preallocated tensors, on CPU or CUDA.
package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"
)

// LibraryName is the file name of the ONNX Runtime core library.
const LibraryName = "libonnxruntime.so.1"

// BuildDir is where `make build` puts the library, relative to the checkout.
const BuildDir = "lib/onnxruntime"

// FindLibrary resolves the ONNX Runtime library: override when set (it must
// exist), else beside the running binary, else in the build folder next to
// the binary's bin/ folder, else in the build folder of the working
// directory or one of its parents (how tests find it). It returns an error
// that lists where it looked.
func FindLibrary(override string) (string, error) {
	if override != "" {
		if _, err := os.Stat(override); err != nil {
			return "", fmt.Errorf("ORT_LIB=%s: %w", override, err)
		}
		return override, nil
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		tried = append(tried, filepath.Join(dir, LibraryName), filepath.Join(dir, "..", BuildDir, LibraryName))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			tried = append(tried, filepath.Join(dir, BuildDir, LibraryName))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
	}
	return "", fmt.Errorf("onnx: %s not found (run `make build`, or set ORT_LIB); looked in %v", LibraryName, tried)
}

var (
	initMu  sync.Mutex
	initLib string
)

// Env is how Init sets up the process's ONNX Runtime environment; the zero
// value is the service's default.
type Env struct {
	// Telemetry leaves ONNX Runtime's own telemetry as the library and
	// the process's environment have it. The library the build fetches
	// (1.31, as 1.30) has it on for Linux: a process that loads it looks up
	// Microsoft's collector within seconds and again every few seconds to
	// send usage events, keeps a device ID and a cache of those events
	// under ~/.cache/Microsoft/DeveloperTools/.onnxruntime, and leaves a
	// .ses file in TMPDIR (1.30 a mat-debug-PID.log beside it).
	// False, the default, turns all of it off before the library loads,
	// with ONNX Runtime's own switch, ORT_DISABLE_TELEMETRY=1 in the
	// process's environment (which its child processes inherit).
	Telemetry bool
}

// TelemetrySwitch is the environment variable that turns ONNX Runtime's
// telemetry off when it is 1 as the library loads.
const TelemetrySwitch = "ORT_DISABLE_TELEMETRY"

// Init loads the library at path and creates the ONNX Runtime environment
// as env says, once per process; a second call with the same path,
// relative or absolute, does nothing, with another path it fails. It
// returns an error naming the file when the library cannot be loaded.
func Init(path string, env Env) error {
	initMu.Lock()
	defer initMu.Unlock()
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if initLib != "" {
		if initLib != path {
			return fmt.Errorf("onnx: already initialised with %s, not %s", initLib, path)
		}
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("onnx: library %s: %w", path, err)
	}
	if !env.Telemetry {
		if err := os.Setenv(TelemetrySwitch, "1"); err != nil {
			return fmt.Errorf("onnx: %s: %w", TelemetrySwitch, err)
		}
	}
	ort.SetSharedLibraryPath(path)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("onnx: cannot load %s: %w", path, err)
	}
	initLib = path
	return nil
}

// Version is the loaded library's version ("1.31.1"), or "" before Init
// has loaded one.
func Version() string {
	initMu.Lock()
	defer initMu.Unlock()
	if initLib == "" {
		return ""
	}
	return ort.GetVersion()
}

// ModelInfo describes a model's single input and first output.
type ModelInfo struct {
	InputName, OutputName   string
	InputShape, OutputShape []int64 // -1 (or below 1) for a free dimension
	Outputs                 int
	Metadata                map[string]string
}

// Inspect reads a model's inputs, outputs and metadata. It returns an error
// naming the file when it is missing or not an ONNX model, or when its
// input or output is not a float32 tensor.
func Inspect(path string) (ModelInfo, error) {
	var mi ModelInfo
	if _, err := os.Stat(path); err != nil {
		return mi, fmt.Errorf("model %s: %w", path, err)
	}
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return mi, fmt.Errorf("model %s is not a readable ONNX model: %w", path, err)
	}
	if len(ins) != 1 || len(outs) < 1 {
		return mi, fmt.Errorf("model %s has %d inputs and %d outputs; a YOLO detection model has one input and one output", path, len(ins), len(outs))
	}
	for _, io := range []ort.InputOutputInfo{ins[0], outs[0]} {
		if io.OrtValueType != ort.ONNXTypeTensor || io.DataType != ort.TensorElementDataTypeFloat {
			return mi, fmt.Errorf("model %s: %q is %s; a float32 tensor is expected", path, io.Name, io.String())
		}
	}
	mi = ModelInfo{
		InputName: ins[0].Name, OutputName: outs[0].Name,
		InputShape: ins[0].Dimensions.Clone(), OutputShape: outs[0].Dimensions.Clone(),
		Outputs: len(outs), Metadata: map[string]string{},
	}
	md, err := ort.GetModelMetadata(path)
	if err != nil {
		return mi, fmt.Errorf("model %s: reading metadata: %w", path, err)
	}
	defer md.Destroy()
	keys, err := md.GetCustomMetadataMapKeys()
	if err != nil {
		return mi, fmt.Errorf("model %s: reading metadata: %w", path, err)
	}
	for _, k := range keys {
		if v, ok, err := md.LookupCustomMetadataMap(k); err == nil && ok {
			mi.Metadata[k] = v
		}
	}
	return mi, nil
}

// Options configure a session.
type Options struct {
	// Provider is "cpu" (the default) or "cuda".
	Provider string
	// IntraOpThreads is ONNX Runtime's intra-op thread count; 0 lets it
	// choose (one per core).
	IntraOpThreads int
	// CUDADevice is the GPU index for the CUDA provider.
	CUDADevice int
	// ConvAlgoSearch is how the CUDA provider picks each convolution's
	// algorithm for an input shape (a batch size) it has not run before:
	// "heuristic" (the default: cuDNN's heuristics, nothing timed),
	// "exhaustive" (ONNX Runtime's own default: every algorithm is timed
	// on that shape's first run, which then takes far longer, up to
	// seconds) or "default" (one fixed algorithm). No effect on the CPU.
	ConvAlgoSearch string
	// TF32 lets the CUDA provider's convolutions and matrix products
	// round their inputs to TF32 (10-bit mantissa) on the tensor cores of
	// Ampere and later GPUs, as ONNX Runtime does by default; without it
	// they stay in float32, as on the CPU. No effect on the CPU.
	TF32 bool
	// FallbackCPU runs on CPU when the CUDA provider cannot be set up,
	// instead of failing.
	FallbackCPU bool
	// Pageable keeps a CUDA session's bindings in Go's memory. By default
	// they are page-locked (the CUDA runtime's cudaHostAlloc), which the
	// GPU copies to and from directly, where pageable memory goes through
	// the driver's staging buffers; a session whose CUDA runtime cannot
	// be loaded keeps them in Go's memory all the same (HostMemory says
	// why). No effect on the CPU.
	Pageable bool
	// NoSpinning stops idle intra-op threads from busy-waiting, which
	// matters when several sessions share the cores.
	NoSpinning bool
	// StopSpinning lets the threads busy-wait between the operators of a
	// run but stops them when it returns (ONNX Runtime otherwise spins on
	// for tens of milliseconds after each run, taking a core). No effect
	// with NoSpinning.
	StopSpinning bool
	// Model is the model's bytes, loaded instead of the file at path,
	// which then only names it in errors; Outputs are the outputs a run
	// writes, in its bindings' order (default: the model's first
	// output). Together: a pruned graph (Graph.Prune) and its outputs.
	Model   []byte
	Outputs []string
	// oneThread runs a CPU session as a CUDA one is run, on one locked
	// thread (thread), for tests on machines without a GPU.
	oneThread bool
}

// ErrCUDAUnavailable is wrapped by NewSession's error when the CUDA
// provider cannot be set up and no fallback to CPU was asked for.
var ErrCUDAUnavailable = errors.New("onnx: CUDA provider unavailable")

// Session is a loaded model. Run may be called from several goroutines at
// once, each with its own Binding; on CUDA the runs then take turns.
type Session struct {
	s        *ort.DynamicAdvancedSession
	info     ModelInfo
	provider string
	// thread makes, runs and closes a CUDA session; nil on the CPU, where
	// runs go side by side on their callers' threads.
	thread *thread
	// pinned: the bindings are page-locked; else pinErr says why not,
	// when they were to be.
	pinned bool
	pinErr error
}

// NewSession loads the model at path. It returns an error when the library
// was not initialised, the model cannot be loaded, or the CUDA provider
// cannot be set up (unless o.FallbackCPU); the error says why.
func NewSession(path string, info ModelInfo, o Options) (*Session, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx: session options: %w", err)
	}
	defer opts.Destroy()
	if o.IntraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return nil, err
		}
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	if o.NoSpinning {
		if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
			return nil, err
		}
	} else if o.StopSpinning {
		if err := opts.AddSessionConfigEntry("session.force_spinning_stop", "1"); err != nil {
			return nil, err
		}
	}
	provider := "cpu"
	if o.Provider == "cuda" {
		search, ok := convAlgoSearch[o.ConvAlgoSearch]
		if !ok {
			return nil, fmt.Errorf("onnx: convolution algorithm search %q: want heuristic, exhaustive or default", o.ConvAlgoSearch)
		}
		if err := appendCUDA(opts, o.CUDADevice, search, o.TF32); err != nil {
			if !o.FallbackCPU {
				return nil, fmt.Errorf("%w: %v", ErrCUDAUnavailable, err)
			}
			// A failed append leaves the options usable for CPU.
		} else {
			provider = "cuda"
		}
	}
	var th *thread
	if provider == "cuda" || o.oneThread {
		th = newThread()
	}
	outputs := o.Outputs
	if outputs == nil {
		outputs = []string{info.OutputName}
	}
	var s *ort.DynamicAdvancedSession
	th.do(func() {
		if o.Model != nil {
			s, err = ort.NewDynamicAdvancedSessionWithONNXData(o.Model, []string{info.InputName}, outputs, opts)
		} else {
			s, err = ort.NewDynamicAdvancedSession(path, []string{info.InputName}, outputs, opts)
		}
	})
	if err != nil {
		th.stop()
		if provider == "cuda" && o.FallbackCPU {
			o.Provider = "cpu"
			return NewSession(path, info, o)
		}
		return nil, fmt.Errorf("onnx: loading %s (%s): %w", path, provider, err)
	}
	sess := &Session{s: s, info: info, provider: provider, thread: th}
	if provider == "cuda" && !o.Pageable {
		// The provider is loaded, and with it the runtime it links.
		sess.pinErr = openCUDARuntime()
		sess.pinned = sess.pinErr == nil
	}
	return sess, nil
}

// convAlgoSearch maps Options.ConvAlgoSearch to the CUDA provider's
// cudnn_conv_algo_search values.
var convAlgoSearch = map[string]string{"": "HEURISTIC", "heuristic": "HEURISTIC", "exhaustive": "EXHAUSTIVE", "default": "DEFAULT"}

func appendCUDA(opts *ort.SessionOptions, device int, search string, tf32 bool) error {
	cuda, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer cuda.Destroy()
	useTF32 := "0"
	if tf32 {
		useTF32 = "1"
	}
	if err := cuda.Update(map[string]string{"device_id": fmt.Sprint(device), "cudnn_conv_algo_search": search, "use_tf32": useTF32}); err != nil {
		return err
	}
	return opts.AppendExecutionProviderCUDA(cuda)
}

// Provider says where the session runs: "cpu" or "cuda".
func (s *Session) Provider() string { return s.provider }

// HostMemory says where a CUDA session's bindings are: "pinned"
// (page-locked), or "pageable" with why, when they were to be pinned
// (Options.Pageable); "" on the CPU.
func (s *Session) HostMemory() string {
	switch {
	case s.provider != "cuda":
		return ""
	case s.pinned:
		return "pinned"
	case s.pinErr != nil:
		return "pageable (" + s.pinErr.Error() + ")"
	}
	return "pageable"
}

// Close releases the session. It returns ONNX Runtime's error when the
// session cannot be released.
func (s *Session) Close() error {
	var err error
	s.thread.do(func() { err = s.s.Destroy() })
	s.thread.stop()
	return err
}

// Binding holds the input and output tensors of one batch size.
type Binding struct {
	Batch int
	// tensors are the input, then the outputs in the session's order;
	// values are the same, as Run passes them.
	tensors []*ort.Tensor[float32]
	values  []ort.Value
	// pinned holds the page-locked memory of the tensors, freed after
	// them; nil for Go's memory.
	pinned []unsafe.Pointer
}

// NewBinding allocates tensors for batch images, with the model's free
// dimensions other than the batch taken from inputHW (height, width of
// the input) and outputShapes (one for each of the session's outputs, in
// its order; their batch dimension is batch). It returns an error when a
// dimension stays unknown.
func (s *Session) NewBinding(batch int, inputHW [2]int64, outputShapes ...[]int64) (*Binding, error) {
	shapes := []ort.Shape{ort.NewShape(int64(batch), s.info.InputShape[1], inputHW[0], inputHW[1])}
	for _, o := range outputShapes {
		shapes = append(shapes, ort.NewShape(append([]int64{int64(batch)}, o[1:]...)...))
	}
	for _, shape := range shapes {
		for _, d := range shape {
			if d < 1 {
				return nil, errors.New("onnx: binding with an unknown dimension")
			}
		}
	}
	b := &Binding{Batch: batch}
	if s.pinned {
		// Pinned memory that cannot be had leaves the binding in Go's:
		// slower copies, the same results.
		if b.bindPinned(shapes) == nil {
			return b, nil
		}
	}
	for _, shape := range shapes {
		t, err := ort.NewEmptyTensor[float32](shape)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.add(t)
	}
	return b, nil
}

// add appends t to b's tensors: the input first, then the outputs.
func (b *Binding) add(t *ort.Tensor[float32]) {
	b.tensors = append(b.tensors, t)
	b.values = append(b.values, t)
}

// bindPinned makes b's tensors, the input's then the outputs' shapes, over
// zeroed page-locked memory. It returns an error, with b as it was, when
// the memory or the tensors cannot be made.
func (b *Binding) bindPinned(shapes []ort.Shape) error {
	for _, shape := range shapes {
		f, p, err := pinnedFloats(int(shape.FlattenedSize()))
		if err != nil {
			b.Close()
			return err
		}
		b.pinned = append(b.pinned, p)
		clear(f)
		t, err := ort.NewTensor(shape, f)
		if err != nil {
			b.Close()
			return err
		}
		b.add(t)
	}
	return nil
}

// Prefix returns a binding for the first n images of b's batch, over b's
// memory: runs of fewer images than b holds need no tensors of their
// own. It stays valid while b is open; closing it leaves b as it was. It
// returns an error when n is not between 1 and b.Batch, or ONNX Runtime
// cannot make the tensors.
func (b *Binding) Prefix(n int) (*Binding, error) {
	if n < 1 || n > b.Batch {
		return nil, fmt.Errorf("onnx: the first %d images of a batch of %d", n, b.Batch)
	}
	p := &Binding{Batch: n}
	for _, t := range b.tensors {
		shape := t.GetShape()
		data := t.GetData()
		data = data[:len(data)/b.Batch*n]
		shape[0] = int64(n)
		pt, err := ort.NewTensor(shape, data)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.add(pt)
	}
	return p, nil
}

// Input is the input tensor's data, [batch, 3, H, W].
func (b *Binding) Input() []float32 { return b.tensors[0].GetData() }

// Output is the first output tensor's data after Run.
func (b *Binding) Output() []float32 { return b.tensors[1].GetData() }

// Outputs are the output tensors' data after Run, in the session's order
// of outputs.
func (b *Binding) Outputs() [][]float32 {
	data := make([][]float32, len(b.tensors)-1)
	for i, t := range b.tensors[1:] {
		data[i] = t.GetData()
	}
	return data
}

// Close releases the tensors, then their page-locked memory if any.
func (b *Binding) Close() {
	for _, t := range b.tensors {
		t.Destroy()
	}
	b.tensors, b.values = nil, nil
	for _, p := range b.pinned {
		freePinned(p)
	}
	b.pinned = nil
}

// Interrupt stops a run in flight that was started with it (RunWith).
// Its methods may be called from any goroutine.
type Interrupt struct{ o *ort.RunOptions }

// NewInterrupt returns an Interrupt, or an error when ONNX Runtime cannot
// make its run options.
func NewInterrupt() (*Interrupt, error) {
	o, err := ort.NewRunOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx: run options: %w", err)
	}
	return &Interrupt{o: o}, nil
}

// Stop makes the run in flight, if any, and every run started after it
// until Reset, return an error within an operator or so.
func (i *Interrupt) Stop() error { return i.o.Terminate() }

// Reset lets runs started with i go to their end again.
func (i *Interrupt) Reset() error { return i.o.UnsetTerminate() }

// Close releases the run options.
func (i *Interrupt) Close() { i.o.Destroy() }

// RunWith is Run, stoppable through i (nil: not stoppable). A stopped run
// returns an error and leaves b's output undefined.
func (s *Session) RunWith(b *Binding, i *Interrupt) error {
	var o *ort.RunOptions
	if i != nil {
		o = i.o
	}
	var err error
	s.thread.do(func() { err = s.s.RunWithOptions(b.values[:1], b.values[1:], o) })
	if err != nil {
		return fmt.Errorf("onnx: run: %w", err)
	}
	return nil
}

// Run runs the model on b's input into b's output. It returns ONNX
// Runtime's error when the run fails.
func (s *Session) Run(b *Binding) error { return s.RunWith(b, nil) }
