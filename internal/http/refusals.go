package http

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"yoloserve/internal/detect"
)

// refusals counts the requests answered 503 by the reason of their error
// (detect.Error's Reason, a fixed set), and logs them so that a burst of
// them (the queue full, Redis down, at hundreds of uploads a second) does
// not flood the log: for each reason, the first refusal is a warning with
// its cause; those in the interval after it are counted, and their count
// is one warning when the interval ends. Each refusal is also a debug
// line. An error without a reason has an interval for its message.
type refusals struct {
	log   *slog.Logger
	every time.Duration
	total *prometheus.CounterVec // by reason

	mu      sync.Mutex
	counted map[string]int // by reason (or message), while its interval runs
}

// newRefusals returns refusals that log to log, a warning at most every
// interval for each reason, and count in total, a counter with the label
// reason: each Reason constant, and "other" for an error without one.
func newRefusals(log *slog.Logger, every time.Duration, total *prometheus.CounterVec) *refusals {
	for _, reason := range append(detect.UnavailableReasons(), reasonOther) {
		total.WithLabelValues(reason) // present at 0 from the start
	}
	return &refusals{log: log, every: every, total: total, counted: map[string]int{}}
}

// reasonOther counts the refusals whose error has no reason.
const reasonOther = "other"

// newRefusalCounter returns the counter of refusals by reason; the caller
// registers it.
func newRefusalCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "yoloserve_api_refusals_total",
		Help: "Requests answered 503 by reason: uploads_in_flight (MAX_INFLIGHT_UPLOADS), upload_bytes_in_flight (MAX_INFLIGHT_BYTES), queue_full (MAX_QUEUE), redis_memory (Redis nearly out of memory), redis (Redis unreachable), upload_store (the upload could not be stored: the disk under UPLOAD_DISK_RESERVE, full or unwritable, or Redis refusing it).",
	}, []string{"reason"})
}

// note counts and logs the refusal of r with err, an EUNAVAILABLE
// *detect.Error.
func (f *refusals) note(r *http.Request, err error) {
	reason := detect.ErrorReason(err)
	if reason == "" {
		reason = reasonOther
	}
	f.total.WithLabelValues(reason).Inc()
	// A message may carry numbers ("The queue is full (10012 images
	// waiting)"); the reason does not, so that a burst is one interval.
	key := reason
	if reason == reasonOther {
		key = detect.ErrorMessage(err)
	}
	f.mu.Lock()
	n, counting := f.counted[key]
	if counting {
		f.counted[key] = n + 1
	} else {
		f.counted[key] = 0
		time.AfterFunc(f.every, func() { f.end(key) })
	}
	f.mu.Unlock()
	level := slog.LevelWarn
	if counting {
		level = slog.LevelDebug
	}
	f.log.Log(r.Context(), level, "unavailable", "reason", reason, "method", r.Method, "path", r.URL.Path, "error", err)
}

// end closes the interval of key, a reason or a message, logging how many
// refusals it counted.
func (f *refusals) end(key string) {
	f.mu.Lock()
	n := f.counted[key]
	delete(f.counted, key)
	f.mu.Unlock()
	if n > 0 {
		f.log.Warn("more requests refused with 503", "count", n, "within", f.every, "reason", key)
	}
}
