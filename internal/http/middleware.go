package http

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"yoloserve/internal/detect"
)

type apiMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	waiting  prometheus.Gauge
	refusals *prometheus.CounterVec // by reason (refusals.go)
	// store and enqueue time an upload's two steps that wait on other
	// systems: its write to the upload store, and its task's enqueue.
	store, enqueue prometheus.Observer
}

// The steps of an upload that yoloserve_api_upload_step_seconds times.
const (
	stepStore   = "store"
	stepEnqueue = "enqueue"
)

// newAPIMetrics registers the API's metrics on reg; inflight holds a token
// per upload being read, and bodies counts their bytes.
func newAPIMetrics(reg prometheus.Registerer, inflight chan struct{}, bodies *bodyBudget) *apiMetrics {
	// Both latency histograms: 0.5 ms doubling to 65 s (make bench reads
	// the steps' 32 ms bucket).
	latency := prometheus.ExponentialBuckets(0.0005, 2, 18)
	m := &apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yoloserve_api_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "yoloserve_api_request_seconds", Help: "HTTP request duration by route.",
			Buckets: latency,
		}, []string{"route"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "yoloserve_api_result_waits", Help: "Requests waiting (GET /result or POST /predict with ?wait) for their task to end.",
		}),
		refusals: newRefusalCounter(),
	}
	steps := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "yoloserve_api_upload_step_seconds",
		Help:    "Time a POST /predict spent in each step that waits on another system, failed or not: store (writing the upload to UPLOAD_DIR or Redis) and enqueue (the queue's length checked, the task queued and the workers woken, in Redis). A slow disk shows in store.",
		Buckets: latency,
	}, []string{"step"})
	m.store, m.enqueue = steps.WithLabelValues(stepStore), steps.WithLabelValues(stepEnqueue)
	reading := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "yoloserve_api_uploads_reading",
		Help: "POST /predict bodies being read; past MAX_INFLIGHT_UPLOADS an upload is refused with 503.",
	}, func() float64 { return float64(len(inflight)) })
	reserved := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "yoloserve_api_upload_bytes_reading",
		Help: "Bytes counted for the POST /predict bodies being read; past MAX_INFLIGHT_BYTES an upload is refused with 503.",
	}, func() float64 { return float64(bodies.held()) })
	reg.MustRegister(m.requests, m.duration, m.waiting, m.refusals, steps, reading, reserved)
	return m
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the ResponseWriter w wraps, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusClientClosed is nginx's status for a request whose client closed
// the connection before the answer.
const statusClientClosed = 499

// instrument counts requests by route pattern and status, a request whose
// client went away before its answer as statusClientClosed, and times
// them.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		if route == "" {
			route = "other"
		}
		status := sw.status
		if r.Context().Err() != nil {
			// The client went away before its answer, which nobody
			// read: counted as nginx logs it, so that 5xx counts stay
			// the service's own faults (a Redis call cut short by the
			// client's leaving answers 503).
			status = statusClientClosed
		}
		elapsed := time.Since(start)
		s.metrics.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			args := []any{"method", r.Method, "path", r.URL.Path, "status", status, "ms", detect.Millis(elapsed)}
			if loc := sw.Header().Get("Location"); loc != "" {
				args = append(args, "location", loc)
			}
			s.log.Debug("request", args...)
		}
	})
}

// recoverer turns a panic in a handler into a logged 500 without details.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic in handler", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				s.Error(w, r, detect.Errorf(detect.EINTERNAL, "Internal error."))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// bearer returns the key of an "Authorization: Bearer KEY" header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate requires one of the API keys when any is configured,
// comparing digests in constant time.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if len(s.cfg.APIKeys) == 0 {
		return next
	}
	sums := make([][32]byte, len(s.cfg.APIKeys))
	for i, k := range s.cfg.APIKeys {
		sums[i] = sha256.Sum256([]byte(k))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(bearer(r)))
		ok := 0
		for i := range sums {
			ok |= subtle.ConstantTimeCompare(got[:], sums[i][:])
		}
		if ok != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="yoloserve"`)
			s.Error(w, r, detect.Errorf(detect.EUNAUTHORIZED, "A valid API key is required: Authorization: Bearer KEY."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// rateLimiter is a token bucket per API key or client address.
type rateLimiter struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	clients map[string]*limiterEntry
	sweep   time.Time
}

type limiterEntry struct {
	l    *rate.Limiter
	seen time.Time
}

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{limit: rate.Limit(perSecond), burst: burst, clients: map[string]*limiterEntry{}}
}

// allow takes a token for key; when there is none it returns how long
// until one is due.
func (rl *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if now.Sub(rl.sweep) > time.Minute { // forget idle clients
		for k, e := range rl.clients {
			if now.Sub(e.seen) > 10*time.Minute {
				delete(rl.clients, k)
			}
		}
		rl.sweep = now
	}
	e, ok := rl.clients[key]
	if !ok {
		e = &limiterEntry{l: rate.NewLimiter(rl.limit, rl.burst)}
		rl.clients[key] = e
	}
	e.seen = now
	res := e.l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimit answers 429 with Retry-After to a key or address over its
// rate.
func (s *Server) rateLimit(next http.Handler) http.Handler {
	if s.limiter == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := bearer(r)
		if key == "" {
			key, _, _ = net.SplitHostPort(r.RemoteAddr)
		} else {
			key = "key:" + key
		}
		if ok, wait := s.limiter.allow(key, time.Now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
			s.Error(w, r, detect.Errorf(detect.ERATELIMIT, "Too many requests; slow down."))
			return
		}
		next.ServeHTTP(w, r)
	})
}
