package bench

import (
	"fmt"
	"sync"
	"time"

	"yoloserve/internal/onnx"
)

// floor times bare sessions: one session at several thread counts, and
// several sessions side by side, the way ortbench does.
func floor(cfg *Config, model string, sessions, threads, batch, runs int, noSpin bool) (FloorResult, error) {
	info, err := onnx.Inspect(model)
	if err != nil {
		return FloorResult{}, err
	}
	out := append([]int64{}, info.OutputShape...)
	type worker struct {
		s *onnx.Session
		b *onnx.Binding
	}
	ws := make([]worker, sessions)
	for i := range ws {
		s, err := onnx.NewSession(model, info, onnx.Options{IntraOpThreads: threads, NoSpinning: noSpin})
		if err != nil {
			return FloorResult{}, err
		}
		defer s.Close()
		b, err := s.NewBinding(batch, [2]int64{640, 640}, out)
		if err != nil {
			return FloorResult{}, err
		}
		defer b.Close()
		for j, in := 0, b.Input(); j < len(in); j++ {
			in[j] = float32(j%251) / 255
		}
		for k := 0; k < 3; k++ { // warm up
			if err := s.Run(b); err != nil {
				return FloorResult{}, err
			}
		}
		ws[i] = worker{s, b}
	}
	times := make([][]float64, sessions)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < runs; r++ {
				t := time.Now()
				ws[i].s.Run(ws[i].b)
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
	return FloorResult{
		Name:     fmt.Sprintf("%d session(s) x %d thread(s)%s, batch %d", sessions, threads, map[bool]string{true: " no-spin"}[noSpin], batch),
		Sessions: sessions, Threads: threads, Batch: batch, MedianMS: med, PerImageMS: med / float64(batch),
		ImagesPerS: float64(sessions*runs*batch) / wall.Seconds(),
	}, nil
}
