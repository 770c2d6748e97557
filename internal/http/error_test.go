package http

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"yoloserve/internal/detect"
)

// TestErrorUnavailable checks that unavailability is answered with 503 and
// Retry-After, and logged as a warning unless the client has gone, whose
// request's commands its own context cut short.
func TestErrorUnavailable(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.7:6379: connection refused")
	err := detect.Errorf(detect.EUNAVAILABLE, "The queue is unavailable; try again in a few seconds.")
	for _, tc := range []struct {
		name     string
		gone     bool
		wantWarn bool
	}{
		{"client waiting", false, true},
		{"client gone", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.gone {
				cancel()
			}
			r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/result/x", nil)
			w := httptest.NewRecorder()
			Error(w, r, log, errors.Join(err, cause))
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
				t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
			}
			if strings.Contains(w.Body.String(), "10.0.0.7") {
				t.Errorf("the answer leaks the cause: %s", w.Body)
			}
			if warned := strings.Contains(logs.String(), "level=WARN"); warned != tc.wantWarn {
				t.Errorf("warning logged: %v, want %v; log: %q", warned, tc.wantWarn, logs.String())
			}
		})
	}
}
