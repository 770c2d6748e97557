package bench

import (
	"fmt"
	"sync"
	"time"

	"yoloserve/internal/onnx"
)

// bare is the floor: ONNX Runtime sessions side by side, each with its own
// input and output, run in a loop the way ortbench does.
type bare struct {
	name                     string
	sessions, threads, batch int
	ss                       []*onnx.Session
	bs                       []*onnx.Binding
}

// spinning is how the idle intra-op threads of a bare session wait.
type spinning int

const (
	// spinOn is ONNX Runtime's default: they spin, also for tens of
	// milliseconds after a run.
	spinOn spinning = iota
	// spinInRun: they spin during a run and stop when it returns; runs
	// are as fast, and the threads do not take the cores from what comes
	// next (the worker's tasks, in a pair).
	spinInRun
	// spinOff: they never spin.
	spinOff
)

// options returns a session's options on provider with threads intra-op
// threads that spin as sp says.
func (sp spinning) options(provider string, threads int) onnx.Options {
	return onnx.Options{Provider: provider, IntraOpThreads: threads, NoSpinning: sp == spinOff, StopSpinning: sp == spinInRun}
}

// newBare loads sessions copies of model with options o (its provider,
// "cpu" or "cuda", its threads), fills their inputs and warms them up. It
// returns an error when a session cannot be made or run.
func newBare(model string, o onnx.Options, sessions, batch int) (*bare, error) {
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, err
	}
	out := append([]int64{}, info.OutputShape...)
	br := &bare{sessions: sessions, threads: o.IntraOpThreads, batch: batch,
		name: fmt.Sprintf("%d session(s) x %d thread(s)%s, batch %d", sessions, o.IntraOpThreads, map[bool]string{true: " no-spin"}[o.NoSpinning], batch)}
	for range sessions {
		s, err := onnx.NewSession(model, info, o)
		if err != nil {
			br.close()
			return nil, err
		}
		br.ss = append(br.ss, s)
		b, err := s.NewBinding(batch, [2]int64{640, 640}, out)
		if err != nil {
			br.close()
			return nil, err
		}
		br.bs = append(br.bs, b)
		fillInput(b)
		for range 3 { // warm up
			if err := s.Run(b); err != nil {
				br.close()
				return nil, err
			}
		}
	}
	if len(br.ss) > 0 && br.ss[0].Provider() == "cuda" { // where its tensors are: pinned, or pageable and why
		br.name = fmt.Sprintf("%d CUDA session(s), %s memory, batch %d", sessions, br.ss[0].HostMemory(), batch)
	}
	return br, nil
}

// fillInput fills b's input with a fixed pattern of values in [0, 1),
// as a letterboxed image's are, for the bare sessions' runs.
func fillInput(b *onnx.Binding) {
	for j, in := 0, b.Input(); j < len(in); j++ {
		in[j] = float32(j%251) / 255
	}
}

func (br *bare) close() {
	for _, b := range br.bs {
		b.Close()
	}
	for _, s := range br.ss {
		s.Close()
	}
}

// run runs every session in a loop, side by side, until each has run runs
// times (runs > 0) or for d, and returns the median run time and the
// throughput.
func (br *bare) run(runs int, d time.Duration) FloorResult {
	times := make([][]float64, len(br.ss))
	var wg sync.WaitGroup
	start := time.Now()
	more := func(r int) bool { // whether a session that has run r times goes on
		if runs > 0 {
			return r < runs
		}
		return time.Since(start) < d
	}
	for i := range br.ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; more(r); r++ {
				t := time.Now()
				br.ss[i].Run(br.bs[i])
				times[i] = append(times[i], ms(time.Since(t)))
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var all []float64
	for _, t := range times {
		all = append(all, t...)
	}
	med := median(all)
	return FloorResult{Name: br.name, Sessions: br.sessions, Threads: br.threads, Batch: br.batch,
		MedianMS: med, PerImageMS: med / float64(br.batch), ImagesPerS: float64(len(all)*br.batch) / wall.Seconds()}
}

// once runs the first session once and returns its time.
func (br *bare) once() float64 {
	t := time.Now()
	br.ss[0].Run(br.bs[0])
	return ms(time.Since(t))
}

// floor measures sessions side by side for runs runs each.
func floor(model string, o onnx.Options, sessions, batch, runs int) (FloorResult, error) {
	br, err := newBare(model, o, sessions, batch)
	if err != nil {
		return FloorResult{}, err
	}
	defer br.close()
	return br.run(runs, 0), nil
}
