package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
)

// Queue is what the API needs of the queue.
type Queue interface {
	Enqueue(ctx context.Context, job detect.Job) (string, error)
	Task(ctx context.Context, id string) (detect.TaskInfo, error)
	Wait(ctx context.Context, id string) (detect.TaskInfo, error)
	Ping(ctx context.Context) error
}

// Uploads is what the API needs of the upload store.
type Uploads interface {
	// Save returns the new upload's name; with an error, a name is
	// returned too when the upload may have been stored all the same.
	Save(ctx context.Context, data []byte) (string, error)
	// Discard removes an upload that was not enqueued, such that a save
	// of it still on its way cannot land after it; a missing one is not
	// an error.
	Discard(ctx context.Context, ref string) error
}

// Room is where the uploads go, as the API asks it for room.
type Room interface {
	// Admit is asked before an upload of at most size bytes is read; an
	// error (an EUNAVAILABLE *Error) refuses the upload with it.
	Admit(size int64) error
	// Done follows each admitted upload, with the size it was admitted
	// with and the bytes stored, 0 when it was not.
	Done(size, stored int64)
}

// Models is what the API needs to know of the models the workers serve.
type Models interface {
	// Models returns the models the workers serve, as read at most
	// maxAge ago (0: now), empty when no worker has said; an
	// EUNAVAILABLE *Error when they cannot be read.
	Models(ctx context.Context, maxAge time.Duration) ([]detect.ServedModel, error)
}

// Config configures the API. Zero values mean defaults.
type Config struct {
	Addr           string   // listen address (default ":5000")
	APIKeys        []string // when set, requests but health checks need one
	RateLimit      float64  // requests per second per key or address; 0: none
	RateBurst      int      // burst above RateLimit (default 20)
	MaxUploadBytes int64    // largest body (default 20 MiB)
	MaxPixels      int      // largest image, width×height (default 40 MP)
	// MaxInflight bounds the uploads read at once (default 64). Past it,
	// POST /predict answers 503 with Retry-After.
	MaxInflight int
	// MaxInflightBytes bounds the memory of the bodies read at once: each
	// counts its Content-Length, or twice MaxUploadBytes (the most its
	// buffer can grow to) without one, from before it is read until it is
	// stored. Past it, POST /predict answers 503 with Retry-After. Default
	// 256 MiB, or twice MaxUploadBytes if more.
	MaxInflightBytes int64
	// MinUploadRate, when above 0, is the pace an upload's body must keep
	// (pace.go): no pause over UploadIdle (default 10s), and from
	// UploadGrace (default 5s) on, at least MinUploadRate bytes a second
	// on average. A body that falls behind is answered 408 and frees its
	// slot. 0: none; a body may take the server's two-minute read timeout.
	MinUploadRate           int64
	UploadGrace, UploadIdle time.Duration
	// Room, when set, is asked before each upload is read, and told once
	// it is stored or dropped. The API passes Redis's memory watch, so
	// that a nearly full Redis keeps room for the results of the tasks
	// it holds.
	Room Room
	// Models, when set, are the models the workers serve: POST /predict
	// refuses (400) classes that none of them has, and GET /models lists
	// them. Unset: the workers check classes, and GET /models is absent.
	Models Models
	// CORSOrigins are the origins whose pages may call the API from a
	// browser ("https://app.example", "https://*.example", "*"); none:
	// no CORS headers, and browsers keep other origins' pages out.
	CORSOrigins []string
	MaxWait     time.Duration
	Logger      *slog.Logger
	// RefusalLogInterval is how long the refusals (503) of one reason
	// after the first are counted before their count is logged (default
	// 10s): a burst logs two lines an interval, not one a request.
	RefusalLogInterval time.Duration
	Registry           *prometheus.Registry // default: a new one
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	queue    Queue
	uploads  Uploads
	log      *slog.Logger
	refused  *refusals // how the 503s are counted and logged
	router   chi.Router
	server   *http.Server
	metrics  *apiMetrics
	limiter  *rateLimiter
	inflight chan struct{} // one token per upload being read
	bodies   *bodyBudget   // the bytes of the bodies being read
	buffers  bufferPool
	readers  readerPool
	// stopping ends when Shutdown begins: requests waiting on ?wait
	// answer the task's state then, instead of holding the shutdown.
	stopping context.Context
	stop     context.CancelFunc
	// dropping ends when Shutdown returns: the background deletes of
	// uploads not enqueued (dropUpload) go on through the shutdown, and
	// drops counts them.
	dropping context.Context
	endDrops context.CancelFunc
	drops    sync.WaitGroup
}

// NewServer builds the API on q and up.
func NewServer(cfg Config, q Queue, up Uploads) *Server {
	if cfg.Addr == "" {
		cfg.Addr = ":5000"
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = 20
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 20 << 20
	}
	if cfg.MaxPixels <= 0 {
		cfg.MaxPixels = decode.DefaultMaxPixels
	}
	if cfg.UploadGrace <= 0 {
		cfg.UploadGrace = defaultUploadGrace
	}
	if cfg.UploadIdle <= 0 {
		cfg.UploadIdle = defaultUploadIdle
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 64
	}
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = max(256<<20, 2*cfg.MaxUploadBytes)
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RefusalLogInterval <= 0 {
		cfg.RefusalLogInterval = 10 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	inflight := make(chan struct{}, cfg.MaxInflight)
	bodies := &bodyBudget{max: cfg.MaxInflightBytes}
	metrics := newAPIMetrics(cfg.Registry, inflight, bodies)
	s := &Server{cfg: cfg, queue: q, uploads: up, log: cfg.Logger, metrics: metrics,
		inflight: inflight, bodies: bodies, refused: newRefusals(cfg.Logger, cfg.RefusalLogInterval, metrics.refusals)}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.dropping, s.endDrops = context.WithCancel(context.Background())
	if cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst)
	}
	r := chi.NewRouter()
	r.Use(s.recoverer, s.instrument)
	if len(cfg.CORSOrigins) > 0 {
		// Outside the keys' check: a browser's preflight carries no key.
		r.Use(cors.Handler(cors.Options{
			AllowedOrigins: cfg.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodPost},
			AllowedHeaders: []string{"Authorization", "Content-Type"},
			ExposedHeaders: []string{"Location", "Retry-After"},
			MaxAge:         300,
		}))
	}
	r.Get("/healthz", Healthz)
	r.Get("/readyz", Readyz(q.Ping))
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	r.Get("/openapi.json", serveOpenAPI)
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate, s.rateLimit)
		r.Post("/predict", s.predict)
		r.Get("/result/{id}", s.result)
		if cfg.Models != nil {
			r.Get("/models", s.models)
		}
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.Error(w, r, detect.Errorf(detect.ENOTFOUND, "No such endpoint: POST /predict, GET /result/{task_id}, GET /models, /healthz, /readyz, /metrics, /openapi.json."))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "Method not allowed."})
	})
	s.router = r
	s.server = &http.Server{
		Addr:              cfg.Addr,
		Handler:           r,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       readTimeout,
		WriteTimeout:      cfg.MaxWait + writeSlack,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

// ServeHTTP serves one request; tests use it through httptest.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// Serve accepts connections on l until Shutdown. It returns nil after a
// Shutdown and the listener's error otherwise.
func (s *Server) Serve(l net.Listener) error {
	if err := s.server.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting and waits for requests in flight until ctx
// ends; requests waiting on ?wait answer the task's state at once, so
// that their clients ask again (of another replica) instead of being cut
// off. When ctx ends first, it closes every connection, cutting off the
// requests still in flight, and returns an error that counts the uploads
// among them and wraps ctx's error. Once the requests are done, it waits,
// until ctx ends, for the deletes of uploads not enqueued that still wait
// for Redis (dropUpload).
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	defer s.endDrops()
	err := s.server.Shutdown(ctx)
	if err == nil {
		// Uploads whose delete waits for Redis are deleted yet, if Redis
		// answers before ctx ends; else they go at UPLOAD_MAX_AGE.
		dropped := make(chan struct{})
		go func() {
			s.drops.Wait()
			close(dropped)
		}()
		select {
		case <-dropped:
		case <-ctx.Done():
		}
		return nil
	}
	n := len(s.inflight)
	s.server.Close()
	return fmt.Errorf("stopped waiting for requests in flight, %d of them uploads being read, and cut them off: %w", n, err)
}
