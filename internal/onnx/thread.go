package onnx

import "runtime"

// thread runs calls one at a time on one goroutine locked to its OS
// thread. A CUDA session makes, runs and destroys itself on one: the CUDA
// provider keeps per-thread state (its cuDNN and cuBLAS handles, made on
// a thread's first run), which Go's goroutines, moving from thread to
// thread between cgo calls, would spread over every thread they meet.
// Measured on an H200 (docs/performance.md): sixteen goroutines running
// one CUDA session at once stopped within seconds on "CUDA failure 700:
// an illegal memory access was encountered", after which every run of
// the process failed; the GPU runs one session's runs one at a time all
// the same.
type thread struct {
	calls chan func()
}

// newThread starts the goroutine; stop ends it.
func newThread() *thread {
	t := &thread{calls: make(chan func())}
	go func() {
		// Never unlocked: the thread ends with the goroutine, and the
		// provider's state for it with the thread.
		runtime.LockOSThread()
		for f := range t.calls {
			f()
		}
	}()
	return t
}

// do runs f on the thread and returns when f has; a nil thread runs f on
// the caller's.
func (t *thread) do(f func()) {
	if t == nil {
		f()
		return
	}
	done := make(chan struct{})
	t.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}

// stop ends the thread once the calls under way have run; a nil thread
// has nothing to stop.
func (t *thread) stop() {
	if t != nil {
		close(t.calls)
	}
}
