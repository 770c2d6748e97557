package http

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestErrorUnavailable checks that unavailability is answered with 503 and
// Retry-After, and counted by its reason and logged as a warning unless
// the client has gone, whose request's commands its own context cut short.
func TestErrorUnavailable(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.7:6379: connection refused")
	err := detect.Unavailable(detect.ReasonRedis, "The queue is unavailable; try again in a few seconds.")
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
			total := newRefusalCounter()
			s := &Server{log: log, refused: newRefusals(log, time.Hour, total)}
			s.Error(w, r, errors.Join(err, cause))
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
				t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
			}
			if strings.Contains(w.Body.String(), "10.0.0.7") {
				t.Errorf("the answer leaks the cause: %s", w.Body)
			}
			if warned := strings.Contains(logs.String(), "level=WARN"); warned != tc.wantWarn {
				t.Errorf("warning logged: %v, want %v; log: %q", warned, tc.wantWarn, logs.String())
			}
			want := 0.0
			if tc.wantWarn {
				want = 1
			}
			if got := testutil.ToFloat64(total.WithLabelValues(detect.ReasonRedis)); got != want {
				t.Errorf("refusals counted with reason %q: %v, want %v", detect.ReasonRedis, got, want)
			}
		})
	}
}

// TestRefusalsCountedByReason: each refusal is counted under its error's
// reason, one without a reason as "other", and every reason is present
// from the start, at 0.
func TestRefusalsCountedByReason(t *testing.T) {
	total := newRefusalCounter()
	log := slog.New(slog.DiscardHandler)
	s := &Server{log: log, refused: newRefusals(log, time.Hour, total)}
	for _, err := range []error{
		detect.Unavailable(detect.ReasonQueueFull, "The queue is full (7 images waiting); try again shortly."),
		detect.Unavailable(detect.ReasonQueueFull, "The queue is full (8 images waiting); try again shortly."),
		fmt.Errorf("%w (no space left on device)", detect.Unavailable(detect.ReasonUploadStore, "The upload could not be stored; try again shortly.")),
		detect.Errorf(detect.EUNAVAILABLE, "not ready"),
	} {
		s.Error(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/predict", nil), err)
	}
	got := map[string]float64{}
	for _, reason := range append(detect.UnavailableReasons(), "other") {
		got[reason] = testutil.ToFloat64(total.WithLabelValues(reason))
	}
	want := map[string]float64{
		detect.ReasonUploadsInFlight: 0, detect.ReasonUploadBytesInFlight: 0, detect.ReasonQueueFull: 2,
		detect.ReasonRedisMemory: 0, detect.ReasonRedis: 0, detect.ReasonUploadStore: 1, "other": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("refusals by reason (-want +got):\n%s", diff)
	}
	if n := testutil.CollectAndCount(total); n != len(want) {
		t.Errorf("%d series, want one for each reason and other (%d)", n, len(want))
	}
}

// TestRefusalsLogABurstInTwoLines: a burst of 503s logs, for each reason,
// one warning with its cause at once and one with the count of the rest
// once the interval has passed, even where the messages differ in their
// numbers; the next refusal after that is a warning again.
func TestRefusalsLogABurstInTwoLines(t *testing.T) {
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s := &Server{log: log, refused: newRefusals(log, 500*time.Millisecond, newRefusalCounter())}
	down := errors.Join(detect.Unavailable(detect.ReasonRedis, "The queue is unavailable; try again in a few seconds."), errors.New("connection refused"))
	refuse := func(err error, n int) {
		for range n {
			s.Error(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/predict", nil), err)
		}
	}
	for i := range 100 {
		refuse(detect.Unavailable(detect.ReasonQueueFull, "The queue is full (%d images waiting); try again shortly.", 10000+i%7), 1)
	}
	refuse(down, 3)
	if got := strings.Count(logs.String(), "level=WARN"); got != 2 || !strings.Contains(logs.String(), "connection refused") {
		t.Fatalf("%d warnings at once, want one for each reason, with its cause:\n%s", got, logs.String())
	}
	testenv.Eventually(t, 5*time.Second, "the counts were never logged", func() bool {
		return strings.Count(logs.String(), "level=WARN") == 4
	})
	for _, want := range []string{`count=99 within=500ms reason=queue_full`, `count=2 within=500ms reason=redis`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no line with %s:\n%s", want, logs.String())
		}
	}
	refuse(down, 1)
	if got := strings.Count(logs.String(), "level=WARN"); got != 5 {
		t.Errorf("%d warnings, want a fifth for the refusal after the interval:\n%s", got, logs.String())
	}
}
