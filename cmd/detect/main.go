// Command detect runs the detector on image files and prints one JSON line
// per image: {"file": PATH, "result": RESULT} or {"file": PATH, "error":
// "..."}. It exits 1 when any image failed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"yoloserve/internal/config"
	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/yolo"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "detect:", err)
		return 2
	}
	fs := flag.NewFlagSet("detect", flag.ContinueOnError)
	model := fs.String("model", cfg.ResolveModel(), "ONNX model (MODEL_PATH)")
	conf := fs.Float64("conf", detect.DefaultConf, "confidence threshold, 0-1")
	iou := fs.Float64("iou", detect.DefaultIoU, "NMS IoU threshold, 0-1")
	maxDet := fs.Int("max-det", detect.DefaultMaxDet, "most detections per image, 1-1000")
	classes := fs.String("classes", "", "keep only these classes: comma-separated ids or names")
	agnostic := fs.Bool("agnostic", false, "class-agnostic NMS")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: detect [-model PATH] [-conf X] [-iou X] [-max-det N] [-classes LIST] [-agnostic] IMAGE...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	p := detect.Params{Conf: *conf, IoU: *iou, MaxDet: *maxDet, Agnostic: *agnostic}
	if *classes != "" {
		for _, c := range strings.Split(*classes, ",") {
			p.Classes = append(p.Classes, strings.TrimSpace(c))
		}
	}
	if err := p.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "detect:", detect.ErrorMessage(err))
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := yolo.Open(yolo.Config{
		ModelPath: *model, Library: cfg.ORTLib, Telemetry: cfg.ORTTelemetry, Provider: cfg.ORTProvider, FallbackCPU: cfg.ORTFallbackCPU,
		Concurrency: 1, Threads: cfg.ORTThreads,
		Decoder: &decode.Decoder{JPEG: imagelib.JPEGOrFallback(cfg.TurboJPEGLib, log), PNG: imagelib.PNGOrFallback(cfg.LibPNGLib, cfg.LibDeflateLib, log),
			MaxPixels: cfg.MaxPixels},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "detect:", err)
		return 2
	}
	defer d.Close()
	enc := json.NewEncoder(os.Stdout)
	failed := false
	for _, path := range fs.Args() {
		line := struct {
			File   string         `json:"file"`
			Result *detect.Result `json:"result,omitempty"`
			Error  string         `json:"error,omitempty"`
		}{File: path}
		data, err := os.ReadFile(path)
		if err == nil {
			line.Result, err = d.Detect(context.Background(), data, p)
		}
		if err != nil {
			failed = true
			line.Error = err.Error()
			if detect.ErrorCode(err) != detect.EINTERNAL {
				line.Error = detect.ErrorMessage(err)
			}
		}
		enc.Encode(line)
	}
	if failed {
		return 1
	}
	return 0
}
