package asynq

import (
	"strings"

	"github.com/hibiken/asynq"

	"yoloserve/internal/detect"
)

// skipRetrySuffix is what asynq appends to the message of an error
// wrapping asynq.SkipRetry; clients see the sentence without it.
var skipRetrySuffix = ": " + asynq.SkipRetry.Error()

// taskInfo maps an asynq task to what GET /result answers: a task with
// a result → SUCCESS with the result, whatever its state; otherwise
// pending, scheduled and aggregating → PENDING, active → STARTED, retry →
// RETRY, completed → SUCCESS, archived → FAILURE with the last error.
//
// The worker writes the result as the last step of a successful
// attempt, so a written result is final. asynq records the completion a
// moment later; until then the task is active, and should that attempt's
// end be lost (its worker's shutdown time ran out at that moment, or it
// died), the task goes back to the queue, or to retry, or is archived
// once its lease expires, with its result kept. A task once SUCCESS
// stays SUCCESS.
func taskInfo(t *asynq.TaskInfo) detect.TaskInfo {
	return stateInfo(t.ID, t.State.String(), t.Result, t.LastErr)
}

// stateInfo is taskInfo from the fields of asynq's task hash: the state
// as asynq stores it ("pending", "active"...), the result, and the last
// error (which only a failure needs).
func stateInfo(id, state string, result []byte, lastErr string) detect.TaskInfo {
	ti := detect.TaskInfo{ID: id}
	switch {
	case len(result) > 0 || state == "completed":
		ti.Status = detect.StatusSuccess
		ti.Result = result
	case state == "active":
		ti.Status = detect.StatusStarted
	case state == "retry":
		ti.Status = detect.StatusRetry
	case state == "archived":
		ti.Status = detect.StatusFailure
		ti.Error = failureMessage(lastErr)
	default: // pending, scheduled, aggregating
		ti.Status = detect.StatusPending
	}
	return ti
}

// lostInfo is what GET /result answers for a task whose data Redis lost
// while it waited: an evicting Redis (see WarnOfDataLoss) dropped the
// task's hash, and asynq's dequeue then left an empty "active" hash with
// no message, which no worker can run and asynq's recoverer skips.
// Without this it read STARTED for good.
func lostInfo(id string) detect.TaskInfo {
	return detect.TaskInfo{ID: id, Status: detect.StatusFailure, Error: lostMessage}
}

// lostMessage is the error of a task Redis lost.
const lostMessage = "The task was lost: Redis dropped its data before a worker could run it; submit it again."

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
	case msg == "context canceled":
		// A handler whose context asynq cancelled (the task cancelled
		// through asynq's inspector or CLI, or its lease lost) on the
		// last attempt.
		return "The task was cancelled, or its worker lost it, on its last attempt; submit it again."
	}
	return msg
}
