package asynq

import (
	"strings"

	"github.com/hibiken/asynq"

	"yoloserve/internal/detect"
)

// skipRetrySuffix is what asynq appends to the message of an error
// wrapping asynq.SkipRetry; clients see the sentence without it.
var skipRetrySuffix = ": " + asynq.SkipRetry.Error()

// taskInfo maps an asynq task to what GET /result answers:
// pending, scheduled and aggregating → PENDING, active → STARTED (SUCCESS
// once its result is written), retry → RETRY, completed → SUCCESS with the
// result, archived → FAILURE with the last error.
func taskInfo(t *asynq.TaskInfo) detect.TaskInfo {
	return stateInfo(t.ID, t.State.String(), t.Result, t.LastErr)
}

// stateInfo is taskInfo from the fields of asynq's task hash: the state
// as asynq stores it ("pending", "active"...), the result, and the last
// error (which only a failure needs).
func stateInfo(id, state string, result []byte, lastErr string) detect.TaskInfo {
	ti := detect.TaskInfo{ID: id}
	switch {
	case state == "active" && len(result) > 0:
		// The worker writes the result as its last step; asynq records
		// the completion a moment later. The result is final already.
		ti.Status = detect.StatusSuccess
		ti.Result = result
	case state == "active":
		ti.Status = detect.StatusStarted
	case state == "retry":
		ti.Status = detect.StatusRetry
	case state == "completed":
		ti.Status = detect.StatusSuccess
		ti.Result = result
	case state == "archived":
		ti.Status = detect.StatusFailure
		ti.Error = failureMessage(lastErr)
	default: // pending, scheduled, aggregating
		ti.Status = detect.StatusPending
	}
	return ti
}

// failureMessage turns a task's last error into the sentence a client
// reads. Worker errors are already client-safe; asynq's own (a lease that
// expired on every attempt, a deadline) are rephrased.
func failureMessage(lastErr string) string {
	msg := strings.TrimSuffix(lastErr, skipRetrySuffix)
	switch {
	case msg == "":
		return "The task failed."
	case strings.Contains(msg, "lease expired"):
		return "The workers processing this image stopped before finishing, on every attempt; submit it again."
	case strings.Contains(msg, "context deadline exceeded"):
		return "Processing the image took longer than the task timeout, on every attempt."
	}
	return msg
}
