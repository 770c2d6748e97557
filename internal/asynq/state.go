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
	ti := detect.TaskInfo{ID: t.ID}
	switch {
	case t.State == asynq.TaskStateActive && len(t.Result) > 0:
		// The worker writes the result as its last step; asynq records
		// the completion a moment later. The result is final already.
		ti.Status = detect.StatusSuccess
		ti.Result = t.Result
	case t.State == asynq.TaskStateActive:
		ti.Status = detect.StatusStarted
	case t.State == asynq.TaskStateRetry:
		ti.Status = detect.StatusRetry
	case t.State == asynq.TaskStateCompleted:
		ti.Status = detect.StatusSuccess
		ti.Result = t.Result
	case t.State == asynq.TaskStateArchived:
		ti.Status = detect.StatusFailure
		ti.Error = failureMessage(t.LastErr)
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
