package asynq

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
)

// maxHandBacks is how many times a task is given back with its attempts
// untouched by workers whose device stopped working while it ran. Past
// it, such an attempt counts as failed: an image that breaks the device
// itself would otherwise stop worker after worker for ever.
const maxHandBacks = 3

// handBack gives back task id, which the detector cannot run because its
// device stopped working (the worker is stopping, cmd/worker), to a
// worker that can run it, with its attempts untouched. A task with an
// attempt left goes back to the queue at once: it returns errHandedBack,
// which asynq does not count as a failure (isFailure) and retries
// without delay (retryDelay). asynq ends a task that fails on its last
// attempt whatever the error, so such a task is held until asynq cancels
// its context at the worker's shutdown, which puts it back in the queue;
// handBack then returns the context's error. A task given back
// maxHandBacks times already fails the attempt instead, with
// errDeviceLostAgain.
func (s *Server) handBack(ctx context.Context, id string) error {
	n, err := handBackCmd.Run(ctx, s.rdb, []string{runningTaskKey(ctx, id)}).Int()
	if err != nil {
		// Uncounted, it goes back as the first would.
		s.log.Warn("counting the task's hand-backs", "task_id", id, "error", err)
	}
	switch {
	case n > maxHandBacks:
		s.log.Error("the detector's device stopped working, and workers' devices had stopped working with this task before: the attempt counts as failed", "task_id", id, "handed_back", n-1)
		return errDeviceLostAgain
	case !lastAttempt(ctx):
		s.log.Warn("the detector's device stopped working: the task goes back to the queue", "task_id", id)
		return errHandedBack
	}
	s.log.Warn("the detector's device stopped working: the task, on its last attempt, goes back to the queue at the worker's shutdown", "task_id", id)
	<-ctx.Done()
	return ctx.Err()
}

// handBackCmd counts a hand-back of the task whose hash is KEYS[1], in
// the hash (which goes with the task), and returns the count; 0 when
// Redis lost the task.
var handBackCmd = redis.NewScript(`
if redis.call("HEXISTS", KEYS[1], "msg") == 0 then
	return 0
end
return redis.call("HINCRBY", KEYS[1], "handbacks", 1)`)

// errHandedBack is the error of a task given back by a worker whose
// device stopped working (handBack).
var errHandedBack = fmt.Errorf("the worker's device stopped working; the task went back to the queue: %w", detect.ErrDeviceLost)

// errDeviceLostAgain is the error of an attempt that found the device
// stopped, once the task has been given back maxHandBacks times; on the
// last attempt, the sentence its client reads.
var errDeviceLostAgain = errors.New("The workers' GPU stopped working each time this image ran; submit it again later.")

// isFailure reports whether a task's attempt that ended with err counts
// as one of its attempts: every error but errHandedBack's.
func isFailure(err error) bool { return !errors.Is(err, errHandedBack) }
