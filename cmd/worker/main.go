// Command worker runs detection tasks from the Redis queue with YOLO on
// ONNX Runtime, and serves /healthz, /readyz and /metrics on WORKER_ADDR.
// Configuration comes from the environment and .env (see README).
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"yoloserve/internal/asynq"
	"yoloserve/internal/config"
	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/onnx"
	"yoloserve/internal/sched"
	"yoloserve/internal/upload"
	"yoloserve/internal/yolo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	if len(os.Args) > 1 && os.Args[1] == "-healthcheck" {
		return apihttp.Probe(cfg.WorkerAddr)
	}
	log := cfg.Logger()
	asynq.RouteRedisLogs(log)
	// Before ONNX Runtime starts its threads, which inherit the policy.
	policy, err := sched.BatchOrNormal()
	if err != nil {
		log.Warn("the worker's threads keep the normal scheduling policy", "error", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	jpeg := imagelib.JPEGOrFallback(cfg.TurboJPEGLib, log)
	png := imagelib.PNGOrFallback(cfg.LibPNGLib, cfg.LibDeflateLib, log)
	model := cfg.ResolveModel()
	opened := time.Now()
	det, err := yolo.Open(yolo.Config{
		ModelPath: model, Library: cfg.ORTLib, Telemetry: cfg.ORTTelemetry, Provider: cfg.ORTProvider, FallbackCPU: cfg.ORTFallbackCPU, ConvAlgoSearch: cfg.ORTConvSearch, Pageable: !cfg.ORTPinned,
		TF32: cfg.ORTTF32, Concurrency: cfg.Concurrency(), Threads: cfg.ORTThreads, Sessions: cfg.ORTSessions, SoloThreads: cfg.ORTSoloThreads,
		BatchMax: cfg.BatchMax, BatchWait: cfg.BatchWait, BatchPadding: yolo.BatchPadding(cfg.BatchPadding), HeadDecode: cfg.HeadDecode,
		Decoder: &decode.Decoder{JPEG: jpeg, PNG: png, MaxPixels: cfg.MaxPixels},
	})
	if errors.Is(err, onnx.ErrCUDAUnavailable) {
		return fmt.Errorf("%w (set ORT_FALLBACK_CPU=true to run on CPU instead)", err)
	}
	if err != nil {
		return err
	}
	defer det.Close()
	dc := det.Config()
	loaded := []any{"model", model, "ort_lib", dc.Library, "ort_version", onnx.Version(), "provider", det.Provider(),
		"classes", det.Model().Classes(), "input", fmt.Sprintf("%dx%d", det.Model().Width, det.Model().Height),
		"dynamic_batch", det.Model().DynamicBatch, "batch_max", dc.BatchMax, "batch_padding", dc.BatchPadding,
		"concurrency", dc.Concurrency, "prefetch", cfg.Prefetch, "ort_telemetry", cfg.ORTTelemetry, "ort_sessions", dc.Sessions, "ort_threads", dc.Threads, "ort_solo_threads", dc.SoloThreads, "head_decode", det.Head(), "jpeg", jpeg.Name(), "png", png.Name()}
	if det.Provider() == "cuda" {
		loaded = append(loaded, "cudnn_conv_algo_search", cfg.ORTConvSearch, "tf32", cfg.ORTTF32, "host_memory", det.HostMemory())
	}
	// The sessions made and warmed up (on CUDA with batching, each size of run once).
	loaded = append(loaded, "load_s", fmt.Sprintf("%.2f", time.Since(opened).Seconds()))
	log.Info("model loaded", loaded...)

	tlsExpiry := &asynq.TLSExpiry{}
	rdb, err := asynq.NewClient(cfg.RedisURL, asynq.TLSFiles{CA: cfg.RedisTLSCA, Cert: cfg.RedisTLSCert, Key: cfg.RedisTLSKey, Logger: log, Expiry: tlsExpiry})
	if err != nil {
		return err
	}
	defer rdb.Close()
	uploads, err := upload.Open(upload.Config{Kind: cfg.UploadStore, Dir: cfg.UploadDir,
		DiskReserve: cfg.UploadDiskReserve, MaxAge: cfg.UploadMaxAge}, rdb)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), tlsExpiry,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "yoloserve_worker_solo_runs_total", Help: "Images that ran alone on the solo session, with every core.",
		}, func() float64 { return float64(det.SoloRuns()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "yoloserve_worker_solo_crowded_total",
			Help: "Solo runs that found the cores taken by other processes, after each of which the solo session rested.",
		}, func() float64 { return float64(det.SoloCrowded()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "yoloserve_worker_solo_yielded_total",
			Help: "Solo runs stopped just after they began, so that an image right behind could run beside theirs on the slots' sessions.",
		}, func() float64 { return float64(det.SoloYielded()) }))
	if dc.BatchMax > 1 {
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "yoloserve_worker_batches_total", Help: "Session runs of batches (BATCH_MAX > 1); the images in them over these is the mean batch.",
			}, func() float64 { return float64(det.BatchStats().Batches) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "yoloserve_worker_batch_images_total", Help: "Images in the session runs of batches.",
			}, func() float64 { return float64(det.BatchStats().Images) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "yoloserve_worker_batch_run_seconds_total",
				Help: "Time the session spent running batches: its rate is the share of the time the session (a GPU) was busy.",
			}, func() float64 { return det.BatchStats().Busy.Seconds() }))
	}
	srv := asynq.NewServer(rdb, asynq.ServerConfig{
		Queue: cfg.Queue, Concurrency: dc.Concurrency, Prefetch: cfg.Prefetch, ShutdownTimeout: cfg.ShutdownGrace, PollInterval: cfg.PollInterval,
		ResultTTL: cfg.ResultTTL, UploadMaxAge: cfg.UploadMaxAge, Model: det.Model().Describe(), Logger: log, Registerer: reg,
	}, det, uploads)

	health := &http.Server{
		Addr: cfg.WorkerAddr, ReadHeaderTimeout: 5 * time.Second,
		Handler: apihttp.HealthHandler(func(ctx context.Context) error {
			if det.Err() != nil {
				return detect.Errorf(detect.EUNAVAILABLE, "The worker's GPU stopped working; the worker is stopping.")
			}
			if err := srv.Ready(); err != nil {
				return err
			}
			return srv.Ping(ctx)
		}, reg),
	}
	hl, err := net.Listen("tcp", cfg.WorkerAddr)
	if err != nil {
		return fmt.Errorf("%w; set WORKER_ADDR to a free address", err)
	}
	go func() {
		if err := health.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health server", "addr", cfg.WorkerAddr, "error", err)
			stop()
		}
	}()
	attrs := []any{"queue", cfg.Queue, "health", cfg.WorkerAddr, "redis", cfg.Redacted(), "sched", policy, "upload_store", cfg.UploadStore}
	if dir, ok := uploads.(*upload.Dir); ok {
		go dir.RunSweeper(ctx, cfg.UploadMaxAge, time.Minute, log)
		attrs = append(attrs, "upload_spares", dir.KeepsSpares())
	}
	go asynq.RunJanitor(ctx, rdb, asynq.JanitorConfig{Queue: cfg.Queue, TTL: cfg.ResultTTL, Logger: log, Lost: srv.LostTasks()})
	go asynq.WarnOfDataLoss(ctx, rdb, 5*time.Second, log)

	// asynq keeps reconnecting while Redis is down; /readyz says so.
	if err := srv.Start(); err != nil {
		return err
	}
	log.Info("worker running", attrs...)
	var lost error
	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing running tasks", "timeout", cfg.ShutdownGrace)
	case <-det.Lost():
		// Every run of this process would fail: the tasks it holds go
		// back to the queue, at once or, on their last attempt, at the
		// shutdown (asynq.Server.handBack), and the exit status has the
		// worker started again.
		lost = det.Err()
		log.Error("the GPU stopped working: stopping, so that the worker is started again; its running tasks go back to the queue", "error", lost, "timeout", cfg.ShutdownGrace)
	}
	srv.Stop()
	srv.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := health.Shutdown(sctx); err != nil {
		return err
	}
	return lost
}
