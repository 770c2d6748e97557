package yolo

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"yoloserve/internal/onnx"
)

// maxSlabs is how many batches' tensors a batcher keeps at most: one
// taking seats, one running, and one whose images read their detections.
// Its runs then follow one another without waiting on the images' copies
// or their letterbox.
const maxSlabs = 3

// batcher gathers concurrent images into one session run of up to max
// images, waiting at most wait after the first is ready. It is used for
// models with a dynamic batch dimension, where one run of n images costs
// less than n runs (most of all on a GPU).
//
// An image takes a seat in the batch that is open (join) before its
// letterbox, writes its input straight into the batch's tensors, and
// reads its detections straight from them once the batch has run: there
// are no copies in or out. Those copies took 0.44–0.50 ms an image on
// the batcher's one goroutine (a batch of 32: 8.7–9.9 ms in, 5.2–6.2 ms
// out, on the machine of docs/performance.md) while the session waited:
// about half of the bare CUDA session's 1 ms an image on an H200.
type batcher struct {
	// runs are the sizes of run the batches take, smallest first, each
	// on a session of its own; a single one of size 0 runs every batch
	// at its own size (BatchPadding).
	runs  []batchRun
	model *Model
	max   int
	wait  time.Duration
	// failed turns a failed batch's error into its seats' (the
	// detector's runFailed, which probes a GPU once a batch).
	failed  func(error) error
	stopped chan struct{} // closed when the runner has returned
	// What the runner has run: batches, the images in them, and the
	// session's time running them, in ns.
	batches, images, busy atomic.Int64

	mu sync.Mutex
	// cond is signalled when a seat is ready, an open batch's wait has
	// passed, a slab is free again, and at close.
	cond   *sync.Cond
	open   *slab   // the batch taking seats; nil when there is none
	queue  []*slab // batches closed to seats, oldest first, not yet run
	free   []*slab
	slabs  []*slab // every slab made, which close releases
	closed bool
}

// slab holds the tensors of one batch of max images and the state of the
// batch they hold.
type slab struct {
	full   *onnx.Binding
	prefix map[int]*onnx.Binding // the first n images, made by the runner (and the warm-up)
	// Guarded by the batcher's mu:
	seats, ready, left int
	waited             bool // the wait since its first ready seat has passed
	gen                int  // counts the slab's batches, so that the wait's timer of an earlier one does nothing
	ran                chan struct{}
	// Set by the runner before ran is closed:
	taken time.Duration
	err   error
}

// seat is one image's place in a batch. Its owner writes Input, calls run,
// reads Output, then calls leave; leave is due after run whatever run
// returned.
type seat struct {
	bt  *batcher
	s   *slab
	row int
}

// batchRun is a size of run and the session that runs it.
type batchRun struct {
	size    int // 0: any
	session *onnx.Session
}

// newBatcher starts a batcher over runs. failed says what the error of a
// batch's failed run becomes, once for all its seats.
func newBatcher(runs []batchRun, m *Model, max int, wait time.Duration, failed func(error) error) *batcher {
	bt := &batcher{runs: runs, model: m, max: max, wait: wait, failed: failed, stopped: make(chan struct{})}
	bt.cond = sync.NewCond(&bt.mu)
	go bt.loop()
	return bt
}

// join takes a seat in the open batch, opening one when there is none,
// and waits for a slab when all of them hold batches. It returns
// errClosed after close, or ONNX Runtime's error when a slab's tensors
// cannot be made.
func (bt *batcher) join() (*seat, error) {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	for bt.open == nil {
		switch {
		case bt.closed:
			return nil, errClosed
		case len(bt.free) > 0:
			bt.open = bt.free[len(bt.free)-1]
			bt.free = bt.free[:len(bt.free)-1]
		case len(bt.slabs) < maxSlabs:
			s, err := bt.newSlab()
			if err != nil {
				return nil, err
			}
			bt.open = s
		default:
			bt.cond.Wait()
		}
	}
	s := bt.open
	st := &seat{bt: bt, s: s, row: s.seats}
	s.seats++
	if s.seats == bt.max {
		bt.open = nil
		bt.queue = append(bt.queue, s)
	}
	return st, nil
}

// newSlab makes the tensors of one more batch; bt.mu must be held. It
// returns ONNX Runtime's error when they cannot be made.
func (bt *batcher) newSlab() (*slab, error) {
	full, err := bt.runs[0].session.NewBinding(bt.max, [2]int64{int64(bt.model.Height), int64(bt.model.Width)}, bt.model.outputShapes(bt.max)...)
	if err != nil {
		return nil, err
	}
	s := &slab{full: full, prefix: map[int]*onnx.Binding{}, ran: make(chan struct{})}
	bt.slabs = append(bt.slabs, s)
	return s, nil
}

// warmUp makes the first batch's tensors and runs the sessions on blank
// images of them, once for each batch size of sizes in turn (each on the
// session that runs it), so that no request pays ONNX Runtime's lazy
// initialisation, nor on CUDA the first run of its batch size
// (warmSizes). The runs count in no BatchStats. It returns the first
// error.
func (bt *batcher) warmUp(sizes []int) error {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	s, err := bt.newSlab()
	if err != nil {
		return err
	}
	bt.free = append(bt.free, s)
	for _, n := range sizes {
		size, session := bt.runFor(n)
		b, err := s.binding(size)
		if err != nil {
			return err
		}
		if err := session.Run(b); err != nil {
			return err
		}
	}
	return nil
}

// runFor returns the size of run a batch of n images takes and the
// session that runs it: the smallest of the batcher's sizes that holds
// n, or n itself where the batcher's one session runs every size.
func (bt *batcher) runFor(n int) (int, *onnx.Session) {
	for _, r := range bt.runs {
		if r.size == 0 {
			return n, r.session
		}
		if r.size >= n {
			return r.size, r.session
		}
	}
	last := bt.runs[len(bt.runs)-1]
	return last.size, last.session
}

// warmSizes returns the batch sizes a batcher of up to max images runs at
// start on provider, with padding. On CUDA that is every size of run,
// largest first: the provider picks its convolutions' algorithms on the
// first run of each input shape (onnx.Options.ConvAlgoSearch), and that
// run takes longer the more it times, up to seconds; the largest first
// also sizes the provider's memory arena in one step. On the CPU, one
// image: a size's first run there costs a few milliseconds at most
// (measured on the dynamic model, docs/performance.md).
func warmSizes(provider string, padding BatchPadding, max int) []int {
	if provider != "cuda" {
		return []int{1}
	}
	sizes := padding.sizes(max)
	if sizes == nil {
		for n := 1; n <= max; n++ {
			sizes = append(sizes, n)
		}
	}
	slices.Reverse(sizes)
	return sizes
}

// Input is the seat's input tensor, one image's.
func (st *seat) Input() []float32 { return st.rowOf(st.s.full.Input()) }

// Outputs are the seat's output tensors, one image's, once run has
// returned.
func (st *seat) Outputs() [][]float32 {
	outs := st.s.full.Outputs()
	for i, o := range outs {
		outs[i] = st.rowOf(o)
	}
	return outs
}

// rowOf returns the seat's image's part of a batch's tensor.
func (st *seat) rowOf(t []float32) []float32 {
	n := len(t) / st.s.full.Batch
	return t[st.row*n : (st.row+1)*n]
}

// run says the seat's input is written and waits for its batch to run. It
// returns the batch's run time, or the run's error.
func (st *seat) run() (time.Duration, error) {
	bt, s := st.bt, st.s
	bt.mu.Lock()
	s.ready++
	if s.ready == 1 && bt.open == s {
		gen := s.gen
		time.AfterFunc(bt.wait, func() {
			bt.mu.Lock()
			if s.gen == gen {
				s.waited = true
				bt.cond.Broadcast()
			}
			bt.mu.Unlock()
		})
	}
	bt.cond.Broadcast()
	ran := s.ran
	bt.mu.Unlock()
	<-ran
	return s.taken, s.err
}

// leave gives the seat back; the slab is free again once every seat of
// its batch has left.
func (st *seat) leave() {
	bt, s := st.bt, st.s
	bt.mu.Lock()
	defer bt.mu.Unlock()
	s.left++
	if s.left < s.seats {
		return
	}
	s.seats, s.ready, s.left, s.waited = 0, 0, 0, false
	s.gen++
	s.ran = make(chan struct{})
	bt.free = append(bt.free, s)
	bt.cond.Broadcast()
}

func (bt *batcher) close() {
	bt.mu.Lock()
	bt.closed = true
	bt.cond.Broadcast()
	bt.mu.Unlock()
	<-bt.stopped
	for _, s := range bt.slabs {
		for _, b := range s.prefix {
			b.Close()
		}
		s.full.Close()
	}
}

// loop runs the batches one after another until close.
func (bt *batcher) loop() {
	defer close(bt.stopped)
	for {
		s := bt.next()
		if s == nil {
			return
		}
		size, session := bt.runFor(s.seats)
		b, err := s.binding(size)
		var d time.Duration
		if err == nil {
			t := time.Now()
			err = session.Run(b)
			d = time.Since(t)
		}
		if err != nil {
			err = bt.failed(err)
		}
		s.taken, s.err = d, err
		bt.batches.Add(1)
		bt.images.Add(int64(s.seats))
		bt.busy.Add(int64(d))
		close(s.ran)
	}
}

// next waits for the next batch to run: the oldest closed batch once all
// its images are written, or, when none is closed, the open batch once its
// wait has passed, which it closes. It returns nil after close.
func (bt *batcher) next() *slab {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	for {
		if bt.closed {
			return nil
		}
		if o := bt.open; o != nil && o.waited && len(bt.queue) == 0 {
			bt.open = nil
			bt.queue = append(bt.queue, o)
		}
		if len(bt.queue) > 0 {
			if s := bt.queue[0]; s.ready == s.seats {
				bt.queue = append(bt.queue[:0], bt.queue[1:]...)
				return s
			}
		}
		bt.cond.Wait()
	}
}

// binding returns the binding for the slab's first n images, made once
// per size over the slab's tensors. It returns ONNX Runtime's error when
// the tensors cannot be made.
func (s *slab) binding(n int) (*onnx.Binding, error) {
	if n == s.full.Batch {
		return s.full, nil
	}
	if b, ok := s.prefix[n]; ok {
		return b, nil
	}
	b, err := s.full.Prefix(n)
	if err != nil {
		return nil, err
	}
	s.prefix[n] = b
	return b, nil
}
