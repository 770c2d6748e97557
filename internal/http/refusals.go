package http

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"yoloserve/internal/detect"
)

// refusals logs the requests answered 503 so that a burst of them (the
// queue full, Redis down, at hundreds of uploads a second) does not flood
// the log: for each reason, the first refusal is a warning with its
// cause; those in the interval after it are counted, and their count is
// one warning when the interval ends. Each refusal is also a debug line.
type refusals struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	counted map[string]int // by reason (the client's message), while its interval runs
}

func newRefusals(log *slog.Logger, every time.Duration) *refusals {
	return &refusals{log: log, every: every, counted: map[string]int{}}
}

// note logs the refusal of r with err, an EUNAVAILABLE *detect.Error.
func (f *refusals) note(r *http.Request, err error) {
	reason := detect.ErrorMessage(err)
	f.mu.Lock()
	n, counting := f.counted[reason]
	if counting {
		f.counted[reason] = n + 1
	} else {
		f.counted[reason] = 0
		time.AfterFunc(f.every, func() { f.end(reason) })
	}
	f.mu.Unlock()
	level := slog.LevelWarn
	if counting {
		level = slog.LevelDebug
	}
	f.log.Log(r.Context(), level, "unavailable", "method", r.Method, "path", r.URL.Path, "error", err)
}

// end closes reason's interval, logging how many refusals it counted.
func (f *refusals) end(reason string) {
	f.mu.Lock()
	n := f.counted[reason]
	delete(f.counted, reason)
	f.mu.Unlock()
	if n > 0 {
		f.log.Warn("more requests refused with 503", "count", n, "within", f.every, "reason", reason)
	}
}
