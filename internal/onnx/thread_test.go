package onnx

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/testenv"
)

// TestThreadTakesTurnsOnOneOSThread: calls from many goroutines run one
// at a time, all on the same OS thread, which is not the callers'.
func TestThreadTakesTurnsOnOneOSThread(t *testing.T) {
	th := newThread()
	defer th.stop()
	var mu sync.Mutex
	tids := map[int]int{}
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				th.do(func() {
					n := inside.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					mu.Lock()
					tids[syscall.Gettid()]++
					mu.Unlock()
					inside.Add(-1)
				})
			}
		}()
	}
	wg.Wait()
	if len(tids) != 1 {
		t.Errorf("calls ran on %d OS threads, want 1: %v", len(tids), tids)
	}
	if m := most.Load(); m != 1 {
		t.Errorf("%d calls ran at once, want 1", m)
	}
	var nilThread *thread
	ran := false
	nilThread.do(func() { ran = true })
	nilThread.stop()
	if !ran {
		t.Error("a nil thread did not run the call on the caller's")
	}
}

// TestSessionOnOneThread: a session made, run and closed on its own
// thread, as a CUDA session is (here on the CPU), gives the output of one
// run on its callers' threads, with runs from several goroutines at once.
func TestSessionOnOneThread(t *testing.T) {
	model, info := openModel(t, "yolov8n.onnx")
	run := func(o Options, callers int) [][]float32 {
		t.Helper()
		s, err := NewSession(model, info, o)
		if err != nil {
			t.Fatal(err)
		}
		if (s.thread != nil) != o.oneThread {
			t.Errorf("session on a thread of its own: %v, want %v", s.thread != nil, o.oneThread)
		}
		outs := make([][]float32, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := s.NewBinding(1, [2]int64{640, 640}, info.OutputShape)
				if err != nil {
					t.Error(err)
					return
				}
				defer b.Close()
				for j, in := 0, b.Input(); j < len(in); j++ {
					in[j] = float32((i+j)%251) / 255
				}
				if err := s.Run(b); err != nil {
					t.Error(err)
					return
				}
				outs[i] = append([]float32(nil), b.Output()...)
			}()
		}
		wg.Wait()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		return outs
	}
	want := run(Options{IntraOpThreads: 1}, 3)
	got := run(Options{IntraOpThreads: 1, oneThread: true}, 3)
	if !cmp.Equal(want, got) {
		t.Error("a session on its own thread gives other outputs than one on its callers' threads")
	}
}

// openModel loads the ONNX Runtime library (ORT_LIB, else the one `make
// build` fetched) and returns the path of the shared model name and what
// it holds.
func openModel(t *testing.T, name string) (string, ModelInfo) {
	t.Helper()
	lib, err := FindLibrary(os.Getenv("ORT_LIB"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Init(lib, Env{}); err != nil {
		t.Fatal(err)
	}
	model := testenv.Model(t, name)
	info, err := Inspect(model)
	if err != nil {
		t.Fatal(err)
	}
	return model, info
}
