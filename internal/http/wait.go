package http

import (
	"context"
	"strconv"
	"time"

	"yoloserve/internal/detect"
)

// writeSlack is how long an answer may take to write beyond its wait: the
// server's write timeout is the longest wait plus it, and a POST that
// waits sets its own deadline the same way once its body is in.
const writeSlack = 30 * time.Second

// parseWait reads ?wait=N, seconds from 0 to max. It returns an EINVALID
// *Error for anything else.
func parseWait(v string, max time.Duration) (time.Duration, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > max.Seconds() || f != f {
		return 0, detect.Errorf(detect.EINVALID, "wait must be a number of seconds from 0 to %d.", int(max.Seconds()))
	}
	return time.Duration(f * float64(time.Second)), nil
}

// wait returns task id's state once it ends, d passes, ctx ends or the
// server begins to shut down, whichever comes first; the request counts
// as waiting meanwhile. Errors are those of the queue's Wait.
func (s *Server) wait(ctx context.Context, id string, d time.Duration) (detect.TaskInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()
	s.metrics.waiting.Inc()
	defer s.metrics.waiting.Dec()
	return s.queue.Wait(ctx, id)
}
