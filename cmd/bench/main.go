// Command bench measures the service against the bare ONNX Runtime floor:
// make bench prints a table and writes bench/results.json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"yoloserve/internal/bench"
	"yoloserve/internal/config"
	"yoloserve/internal/onnx"
)

func main() {
	err := run()
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "bench: interrupted; its processes are stopped and their folder removed")
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	env, err := config.Parse(os.Getenv) // MODEL_PATH and ORT_LIB, as the worker reads them
	if err != nil {
		return err
	}
	shared := filepath.Join("..", "shared")
	defModel := filepath.Join(shared, "models", "yolov8n.onnx")
	if env.ModelSet {
		defModel = env.ModelPath
	}
	model := flag.String("model", defModel, "float32 static model (default: MODEL_PATH, else the shared folder's yolov8n.onnx)")
	dynamic := flag.String("dynamic", filepath.Join(shared, "models", "yolov8n-dynamic.onnx"), "dynamic-batch model (empty: skip)")
	images := flag.String("images", filepath.Join(shared, "images"), "folder of photos (its .jpg, .jpeg and .png files)")
	bin := flag.String("bin", "bin", "folder with api and worker")
	out := flag.String("out", "bench/results.json", "JSON report")
	logs := flag.String("logs", "", "folder for the processes' warnings and errors: redis.log, api.log, worker.log (default: the JSON report's; - for none)")
	load := flag.Duration("load", 5*time.Second, "duration of each load window")
	workers := flag.String("workers", "", "worker configurations to measure, CONCURRENCYxTHREADSxSESSIONS[xSOLO_THREADS],... (SOLO_THREADS 1: no solo session; default: the default configuration and its alternatives)")
	serviceOnly := flag.Bool("service-only", false, "measure only the processes under load")
	detectorOnly := flag.Bool("detector-only", false, "skip the processes (a machine without redis-server)")
	intakeOnly := flag.Bool("intake-only", false, "measure only the API's intake")
	intakeRounds := flag.Int("intake-rounds", 1, "times the API's intake is measured in a row against one API, its uploads piling up as a backlog's")
	provider := flag.String("provider", "cpu", "where the floor, the detector and the worker run: cpu or cuda (cuda: the worker batches on the -dynamic model)")
	neighbour := flag.String(bench.NeighbourFlag, "", "run as one of two neighbouring detectors (JSON, given by the bench itself) and print what it did")
	stagesJob := flag.String(bench.StagesFlag, "", "measure the detector's stages under the worker's scheduling policy (JSON, given by the bench itself) and print them")
	flag.Parse()

	lib, err := onnx.FindLibrary(env.ORTLib)
	if err != nil {
		return err
	}
	if err := onnx.Init(lib, onnx.Env{}); err != nil {
		return err
	}
	if *neighbour != "" {
		return bench.RunChild(bench.NeighbourFlag, *neighbour, os.Stdout)
	}
	if *stagesJob != "" {
		return bench.RunChild(bench.StagesFlag, *stagesJob, os.Stdout)
	}
	all, err := filepath.Glob(filepath.Join(*images, "*"))
	if err != nil {
		return err
	}
	var paths []string // the photos: other files in the folder are not the bench's
	for _, p := range all {
		switch strings.ToLower(filepath.Ext(p)) {
		case ".jpg", ".jpeg", ".png":
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return fmt.Errorf("-images %s: no .jpg, .jpeg or .png file", *images)
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	if *provider != "cpu" && *provider != "cuda" {
		return fmt.Errorf("-provider %q: want cpu or cuda", *provider)
	}
	cfg := bench.Config{Model: abs(*model), Library: abs(lib), Images: paths, BinDir: abs(*bin), Load: *load, Out: os.Stdout,
		ServiceOnly: *serviceOnly, DetectorOnly: *detectorOnly, IntakeOnly: *intakeOnly, IntakeRounds: *intakeRounds, Provider: *provider}
	if exe, err := os.Executable(); err == nil {
		cfg.Exe = exe
	}
	if *workers != "" {
		for _, w := range strings.Split(*workers, ",") {
			c, err := bench.ParseWorkerConfig(w)
			if err != nil {
				return fmt.Errorf("-workers %w", err)
			}
			cfg.Workers = append(cfg.Workers, c)
		}
	}
	if *dynamic != "" {
		cfg.Dynamic = abs(*dynamic)
	}
	switch *logs {
	case "":
		cfg.LogDir = abs(filepath.Dir(*out))
	case "-":
	default:
		cfg.LogDir = abs(*logs)
	}
	// Ctrl-C or SIGTERM ends the run at the end of the measurement under
	// way (seconds), so that the service's processes and their folder of
	// uploads (a gigabyte during the API's intake) are not left behind; a
	// second signal kills the bench at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer context.AfterFunc(ctx, func() {
		stop()
		fmt.Fprintln(os.Stderr, "bench: stopping at the end of this measurement (again to kill it now)")
	})() // unregistered before stop ends ctx on the way out
	start := time.Now()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return err
	}
	fmt.Printf("== done in %v; wrote %s\n", time.Since(start).Round(time.Second), *out)
	if len(rep.Logs) > 0 {
		fmt.Printf("== the processes' warnings and errors: %s\n", strings.Join(rep.Logs, ", "))
	}
	return nil
}
