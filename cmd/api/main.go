// Command api is the HTTP API: it checks uploads, stores them and enqueues
// detection tasks in Redis, and answers task states. Configuration comes
// from the environment and .env (see README).
package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"yoloserve/internal/asynq"
	"yoloserve/internal/config"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/upload"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	if len(os.Args) > 1 && os.Args[1] == "-healthcheck" {
		return apihttp.Probe(cfg.APIAddr)
	}
	log := cfg.Logger()
	asynq.RouteRedisLogs(log)
	tlsExpiry := &asynq.TLSExpiry{}
	rdb, err := asynq.NewClient(cfg.RedisURL, asynq.TLSFiles{CA: cfg.RedisTLSCA, Cert: cfg.RedisTLSCert, Key: cfg.RedisTLSKey, Logger: log, Expiry: tlsExpiry})
	if err != nil {
		return err
	}
	defer rdb.Close()
	uploads, err := upload.Open(upload.Config{Kind: cfg.UploadStore, Dir: cfg.UploadDir,
		DiskReserve: cfg.UploadDiskReserve, MaxAge: cfg.UploadMaxAge, Fsync: cfg.UploadFsync}, rdb)
	if err != nil {
		return err
	}
	queue := asynq.NewQueue(rdb, asynq.QueueConfig{
		Queue: cfg.Queue, ResultTTL: cfg.ResultTTL, Timeout: cfg.TaskTimeout,
		Retries: cfg.TaskRetries, MaxQueue: cfg.MaxQueue, ReplicaAcks: cfg.RedisWaitReplicas, Logger: log,
	})
	defer queue.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), tlsExpiry,
		asynq.NewDepthCollector(rdb, cfg.Queue), queue)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	memory := asynq.WatchMemory(ctx, rdb, 250*time.Millisecond, cfg.UploadStore == "redis", log)
	reg.MustRegister(memory)
	dir, _ := uploads.(*upload.Dir) // nil with UPLOAD_STORE=redis
	if dir != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "yoloserve_api_upload_disk_free_bytes",
			Help: "Bytes free on UPLOAD_DIR's disk to the API's user, read at each scrape (NaN when it cannot be read); uploads that would leave less than UPLOAD_DISK_RESERVE get 503.",
		}, func() float64 {
			free, err := dir.Free()
			if err != nil {
				return math.NaN()
			}
			return float64(free)
		}))
	}
	srv := apihttp.NewServer(apihttp.Config{
		Addr: cfg.APIAddr, APIKeys: cfg.APIKeys, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		MaxUploadBytes: cfg.MaxUploadBytes, MaxPixels: cfg.MaxPixels, MaxInflight: cfg.MaxInflight,
		MaxInflightBytes: cfg.MaxInflightBytes, MinUploadRate: cfg.UploadMinRate, Room: memory, Models: asynq.NewServedModels(rdb, cfg.Queue), CORSOrigins: cfg.CORSOrigins, Logger: log,
		Registry: reg,
	}, queue, uploads)

	// Workers look for this mark in their upload store before they take
	// tasks: one that reads another store takes none.
	marks := asynq.StartUploadMarks(rdb, asynq.UploadMarksConfig{Queue: cfg.Queue, Logger: log}, uploads)
	defer marks.Stop()
	if dir != nil {
		go dir.RunSyncer(ctx, time.Second, log) // UPLOAD_FSYNC=everysec
	}
	go asynq.WarnOfDataLoss(ctx, rdb, 5*time.Second, log)
	go asynq.WarnIfNoWorkers(ctx, rdb, cfg.Queue, 10*time.Second, time.Minute, log)
	l, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("%w; set API_ADDR to a free address", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	// The folder's settings only where uploads go to a folder.
	attrs := []any{"addr", cfg.APIAddr, "redis", cfg.Redacted(), "upload_store", cfg.UploadStore}
	if dir != nil {
		attrs = append(attrs, "upload_dir", cfg.UploadDir, "upload_fsync", cfg.UploadFsync, "upload_spares", dir.KeepsSpares())
	}
	log.Info("api listening", append(attrs, "auth", len(cfg.APIKeys) > 0, "rate_limit", cfg.RateLimit)...)
	// Checked once serving: a Redis that does not answer holds the PING
	// for its read timeout, and clients meanwhile get 503, not a refused
	// connection.
	if err := queue.Ping(ctx); err != nil {
		log.Warn("Redis does not answer the API yet; /predict answers 503 until it does", "redis", cfg.Redacted(), "error", err)
	}
	if dir != nil {
		if err := dir.CheckRoom(0); err != nil {
			log.Warn("uploads are refused until the upload folder's disk has room", "error", err)
		}
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil {
		err = fmt.Errorf("%w (SHUTDOWN_TIMEOUT is %v)", err, cfg.ShutdownGrace)
	}
	// The uploads accepted since the syncer's last round.
	if dir != nil {
		if serr := dir.Sync(); serr != nil {
			log.Error("the last uploads could not be made to reach the disk", "upload_dir", cfg.UploadDir, "error", serr)
		}
	}
	return err
}
