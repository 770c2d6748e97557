package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/sched"
	"yoloserve/internal/yolo"
)

// Neighbour is one of two worker detectors measured side by side on the
// same cores, each in its own process, as two workers on one host without
// CPU limits: each takes its images one at a time, so that each image is
// alone in its detector and runs on the solo session when there is one.
// It counts what it did in Windows windows of For each: the first shows a
// start, where a crowded solo session probes the cores often, the later
// ones the steady state.
type Neighbour struct {
	Model   string        `json:"model"`
	Library string        `json:"library"`
	Image   string        `json:"image"`
	Solo    int           `json:"solo"` // ORT_SOLO_THREADS (1: no solo session)
	For     time.Duration `json:"for"`
	Windows int           `json:"windows"`
}

// NeighbourResult is what one neighbour did.
type NeighbourResult struct {
	SoloThreads int              `json:"solo_threads"` // 0: no solo session
	Policy      string           `json:"policy"`       // its threads' scheduling policy: "batch" as a worker's, or "normal"
	Windows     []NeighbourCount `json:"windows"`
}

// NeighbourCount is what a neighbour did in one window.
type NeighbourCount struct {
	Images   int     `json:"images"`
	Seconds  float64 `json:"seconds"`
	SoloRuns int64   `json:"solo_runs"`
	Crowded  int64   `json:"crowded"` // solo runs that found the cores taken
}

// RunNeighbour puts the process's threads under SCHED_BATCH as a worker
// does, opens a detector with the worker's defaults and n.Solo, and runs
// n.Image through it one at a time for n.Windows windows of n.For. It
// returns an error when the detector cannot be opened or an image fails;
// a kernel that refuses SCHED_BATCH leaves the normal policy, as a
// worker's does, and the result says so.
func RunNeighbour(n Neighbour) (NeighbourResult, error) {
	policy, _ := sched.BatchOrNormal() // as a worker does at its start, before ONNX Runtime starts its threads
	jpeg, err := imagelib.OpenJPEG("")
	if err != nil {
		return NeighbourResult{}, err
	}
	d, err := yolo.Open(yolo.Config{ModelPath: n.Model, Library: n.Library, SoloThreads: n.Solo,
		Decoder: &decode.Decoder{JPEG: jpeg}})
	if err != nil {
		return NeighbourResult{}, err
	}
	defer d.Close()
	data, err := os.ReadFile(n.Image)
	if err != nil {
		return NeighbourResult{}, err
	}
	r := NeighbourResult{SoloThreads: d.Config().SoloThreads, Policy: policy}
	for range n.Windows {
		c := NeighbourCount{SoloRuns: -d.SoloRuns(), Crowded: -d.SoloCrowded()}
		start := time.Now()
		for time.Since(start) < n.For {
			if _, err := d.Detect(context.Background(), data, detect.DefaultParams()); err != nil {
				return r, err
			}
			c.Images++
		}
		c.Seconds = time.Since(start).Seconds()
		c.SoloRuns += d.SoloRuns()
		c.Crowded += d.SoloCrowded()
		r.Windows = append(r.Windows, c)
	}
	return r, nil
}

// NeighboursRun is two neighbours' throughput together, with or without
// solo sessions, window by window.
type NeighboursRun struct {
	SoloThreads int               `json:"solo_threads"` // each one's; 0: none
	Policy      string            `json:"policy"`       // "batch", or "normal" where a neighbour's kernel refused SCHED_BATCH
	Windows     []NeighboursCount `json:"windows"`
}

// NeighboursCount is two neighbours' throughput in one window.
type NeighboursCount struct {
	ImagesPerS float64 `json:"images_per_s"` // together
	SoloShare  float64 `json:"solo_share"`   // of the images
	Crowded    int64   `json:"crowded"`      // solo runs that found the cores taken
}

// neighbours measures two neighbours at a time, with solo sessions and
// without, in alternating rounds of two 8 s windows. Each neighbour is
// this program (cfg.Exe) run again with -neighbour, killed when ctx ends.
func (rep *Report) neighbours(ctx context.Context, cfg *Config) error {
	jpegs, err := jpegPaths(cfg.Images)
	if err != nil {
		return err
	}
	cfg.printf("== two workers' detectors on the same cores, each with one image at a time (%s), two 8 s windows\n", filepath.Base(jpegs[0]))
	const rounds = 2
	for range rounds {
		for _, solo := range []int{0, 1} {
			n := Neighbour{Model: cfg.Model, Library: cfg.Library, Image: jpegs[0], Solo: solo, For: 8 * time.Second, Windows: 2}
			run, err := runNeighbours(ctx, cfg.Exe, n)
			if err != nil {
				return err
			}
			rep.Neighbours = append(rep.Neighbours, run)
			name := "no solo sessions"
			if run.SoloThreads > 0 {
				name = fmt.Sprintf("solo sessions of %d threads", run.SoloThreads)
			}
			if run.Policy != "batch" {
				name += ", " + run.Policy + " policy"
			}
			cfg.printf("  %-28s", name)
			for _, w := range run.Windows {
				cfg.printf("  %5.1f img/s together (solo %3.0f%%, %d crowded)", w.ImagesPerS, 100*w.SoloShare, w.Crowded)
			}
			cfg.printf("\n")
		}
	}
	return nil
}

// runNeighbours starts two neighbours at once and adds up what they did,
// window by window. It waits for both before it returns, also on error.
func runNeighbours(ctx context.Context, exe string, n Neighbour) (NeighboursRun, error) {
	var err error
	var children []*child
	for range 2 {
		var c *child
		if c, err = startChild(ctx, exe, NeighbourFlag, n); err != nil {
			break
		}
		children = append(children, c)
	}
	results := make([]NeighbourResult, len(children))
	for i, c := range children {
		if werr := c.wait(&results[i]); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return NeighboursRun{}, err
	}
	run := NeighboursRun{Windows: make([]NeighboursCount, n.Windows)}
	images, solo := make([]float64, n.Windows), make([]float64, n.Windows)
	for i, r := range results {
		if len(r.Windows) != n.Windows {
			return run, fmt.Errorf("%s's answer %q: %d windows, want %d", NeighbourFlag, children[i].out.String(), len(r.Windows), n.Windows)
		}
		run.SoloThreads = r.SoloThreads
		if run.Policy == "" || r.Policy == "normal" {
			run.Policy = r.Policy
		}
		for j, w := range r.Windows {
			run.Windows[j].ImagesPerS += float64(w.Images) / w.Seconds
			run.Windows[j].Crowded += w.Crowded
			images[j] += float64(w.Images)
			solo[j] += float64(w.SoloRuns)
		}
	}
	for j := range run.Windows {
		run.Windows[j].SoloShare = solo[j] / images[j]
	}
	return run, nil
}
