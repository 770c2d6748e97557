package asynq

import (
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"yoloserve/internal/detect"
)

func TestTaskInfoStates(t *testing.T) {
	lastErr := "The image is bad" + skipRetrySuffix
	for _, tc := range []struct {
		state asynq.TaskState
		want  detect.Status
	}{
		{asynq.TaskStatePending, detect.StatusPending},
		{asynq.TaskStateScheduled, detect.StatusPending},
		{asynq.TaskStateAggregating, detect.StatusPending},
		{asynq.TaskStateActive, detect.StatusStarted},
		{asynq.TaskStateRetry, detect.StatusRetry},
		{asynq.TaskStateCompleted, detect.StatusSuccess},
		{asynq.TaskStateArchived, detect.StatusFailure},
	} {
		got := taskInfo(&asynq.TaskInfo{ID: "x", State: tc.state, LastErr: lastErr})
		if got.Status != tc.want {
			t.Errorf("%v → %s, want %s", tc.state, got.Status, tc.want)
		}
		if (got.Error != "") != (tc.want == detect.StatusFailure) {
			t.Errorf("%v: error %q", tc.state, got.Error)
		}
		if tc.want == detect.StatusFailure && got.Error != "The image is bad" {
			t.Errorf("failure message %q", got.Error)
		}
		// A written result is final in every state: the worker writes it
		// as the last step of a successful attempt, and the task may be
		// put back, retried or archived before asynq records the end.
		got = taskInfo(&asynq.TaskInfo{ID: "x", State: tc.state, Result: []byte(`{}`), LastErr: lastErr})
		if got.Status != detect.StatusSuccess || string(got.Result) != `{}` || got.Error != "" {
			t.Errorf("%v with a result → %+v, want SUCCESS with the result", tc.state, got)
		}
	}
	for _, raw := range []string{"asynq: task lease expired", "context deadline exceeded", "context canceled"} {
		if m := failureMessage(raw); strings.Contains(m, raw) {
			t.Errorf("asynq's own errors must be rephrased: %q", m)
		}
	}
}
