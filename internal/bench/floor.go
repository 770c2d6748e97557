package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"yoloserve/internal/onnx"
	"yoloserve/internal/yolo"
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
// "cpu" or "cuda", its threads; o.Model and o.Outputs a pruned graph, of
// output shapes outs), fills their inputs and warms them up. It returns an
// error when a session cannot be made or run.
func newBare(model string, o onnx.Options, sessions, batch int, outs ...[]int64) (*bare, error) {
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, err
	}
	if outs == nil {
		outs = [][]int64{info.OutputShape}
	}
	br := &bare{sessions: sessions, threads: o.IntraOpThreads, batch: batch,
		name: fmt.Sprintf("%d session(s) x %d thread(s)%s, batch %d", sessions, o.IntraOpThreads, map[bool]string{true: " no-spin"}[o.NoSpinning], batch)}
	for range sessions {
		s, err := onnx.NewSession(model, info, o)
		if err != nil {
			br.close()
			return nil, err
		}
		br.ss = append(br.ss, s)
		b, err := s.NewBinding(batch, [2]int64{640, 640}, outs...)
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

// floor measures sessions side by side for runs runs each (newBare says
// what o and outs are).
func floor(model string, o onnx.Options, sessions, batch, runs int, outs ...[]int64) (FloorResult, error) {
	br, err := newBare(model, o, sessions, batch, outs...)
	if err != nil {
		return FloorResult{}, err
	}
	defer br.close()
	return br.run(runs, 0), nil
}

// floorSplit measures the floor of cfg.Model cut before its head's
// decoding (yolo.SplitModel) into rep.FloorSplit: a 2-thread session, and
// ncpu 1-thread sessions side by side, each against the whole model's
// like floor in rep.Floor. A model whose head cannot be split is said and
// skipped. It returns a session's error, or ctx's.
func (rep *Report) floorSplit(ctx context.Context, cfg *Config, ncpu int) error {
	info, err := onnx.Inspect(cfg.Model)
	if err != nil {
		return err
	}
	sp, err := yolo.SplitModel(cfg.Model, info)
	if err != nil {
		cfg.printf("  no floor of the model cut before its head's decoding: %v\n", err)
		return nil
	}
	for _, f := range [][2]int{{1, 2}, {ncpu, 1}} {
		if err := ctx.Err(); err != nil {
			return err
		}
		o := spinOn.options(cfg.Provider, f[1])
		o.Model, o.Outputs = sp.Model, sp.Outputs
		r, err := floor(cfg.Model, o, f[0], 1, cfg.FloorRuns, sp.Shapes...)
		if err != nil {
			return err
		}
		r.Name += ", head split"
		rep.FloorSplit = append(rep.FloorSplit, r)
		var whole float64
		for _, w := range rep.Floor {
			if w.Sessions == f[0] && w.Threads == f[1] && w.Batch == 1 {
				whole = w.ImagesPerS
				break
			}
		}
		cfg.printf("  %-34s %7.1f ms/run  %6.1f img/s", r.Name, r.MedianMS, r.ImagesPerS)
		if whole > 0 {
			cfg.printf("  (%.2fx the whole model's)", r.ImagesPerS/whole)
		}
		cfg.printf("\n")
	}
	return nil
}
