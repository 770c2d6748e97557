package yolo

import (
	"context"
	"time"

	"yoloserve/internal/onnx"
)

// batcher gathers concurrent single-image runs into one session run of up
// to max images, waiting at most wait after the first arrives. It is used
// for models with a dynamic batch dimension, where one run of n images
// costs less than n runs (most of all on a GPU).
type batcher struct {
	session  *onnx.Session
	model    *Model
	max      int
	wait     time.Duration
	requests chan *batchRequest
	// full holds a batch of max images, made at the first batch of two
	// or more; bindings[n], for n from 2 to max-1, is the first n of them.
	full     *onnx.Binding
	bindings map[int]*onnx.Binding
	done     chan struct{}
}

type batchRequest struct {
	b     *onnx.Binding // a batch-1 binding: input to read, output to fill
	taken time.Duration // the batch's run time, set before done
	err   error
	done  chan struct{}
}

func newBatcher(s *onnx.Session, m *Model, max int, wait time.Duration) *batcher {
	bt := &batcher{session: s, model: m, max: max, wait: wait,
		requests: make(chan *batchRequest), bindings: map[int]*onnx.Binding{}, done: make(chan struct{})}
	go bt.loop()
	return bt
}

// run submits b's input and waits for its output. It returns the run time
// of the batch it joined, or the run's error.
func (bt *batcher) run(ctx context.Context, b *onnx.Binding) (time.Duration, error) {
	r := &batchRequest{b: b, done: make(chan struct{})}
	select {
	case bt.requests <- r:
	case <-bt.done:
		return 0, errClosed
	}
	// Once submitted the request is in a batch: wait for it even if ctx
	// ends, since the batch writes into b.
	<-r.done
	return r.taken, r.err
}

func (bt *batcher) close() {
	close(bt.done)
	for _, b := range bt.bindings {
		b.Close()
	}
	if bt.full != nil {
		bt.full.Close()
	}
}

func (bt *batcher) loop() {
	var batch []*batchRequest
	for {
		select {
		case r := <-bt.requests:
			batch = append(batch[:0], r)
		case <-bt.done:
			return
		}
		timer := time.NewTimer(bt.wait)
	gather:
		for len(batch) < bt.max {
			select {
			case r := <-bt.requests:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		bt.runBatch(batch)
	}
}

func (bt *batcher) runBatch(batch []*batchRequest) {
	finish := func(d time.Duration, err error) {
		for _, r := range batch {
			r.taken, r.err = d, err
			close(r.done)
		}
	}
	if len(batch) == 1 {
		t := time.Now()
		err := bt.session.Run(batch[0].b)
		finish(time.Since(t), err)
		return
	}
	b, err := bt.binding(len(batch))
	if err != nil {
		finish(0, err)
		return
	}
	n := len(batch)
	in, out := b.Input(), b.Output()
	inSize, outSize := len(in)/n, len(out)/n
	for i, r := range batch {
		copy(in[i*inSize:(i+1)*inSize], r.b.Input())
	}
	t := time.Now()
	err = bt.session.Run(b)
	d := time.Since(t)
	if err == nil {
		for i, r := range batch {
			copy(r.b.Output(), out[i*outSize:(i+1)*outSize])
		}
	}
	finish(d, err)
}

// binding returns the binding for a batch of n images (2 to max): the
// first n of the full batch's tensors. It returns ONNX Runtime's error
// when the tensors cannot be made.
func (bt *batcher) binding(n int) (*onnx.Binding, error) {
	if bt.full == nil {
		full, err := bt.session.NewBinding(bt.max, [2]int64{int64(bt.model.Height), int64(bt.model.Width)}, bt.model.outputShape(bt.max))
		if err != nil {
			return nil, err
		}
		bt.full = full
	}
	if n == bt.max {
		return bt.full, nil
	}
	if b, ok := bt.bindings[n]; ok {
		return b, nil
	}
	b, err := bt.full.Prefix(n)
	if err != nil {
		return nil, err
	}
	bt.bindings[n] = b
	return b, nil
}
