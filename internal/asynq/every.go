package asynq

import (
	"context"
	"sync"
	"time"
)

// every calls f at once, then every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// until calls f every interval, the first time an interval from now,
// until f returns true or ctx ends.
func until(ctx context.Context, interval time.Duration, f func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if f() {
			return
		}
	}
}

// periodic calls a function every interval, from startPeriodic until
// stop: a worker's announcement of its model and its looks for the upload
// store marks, an API's mark.
type periodic struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when the calls have ended
	stopped sync.Once
}

// startPeriodic calls f at once, then every interval until stop, with a
// context that stop cancels. It returns once the first call has returned,
// or after a second: a Redis that does not answer yet holds the caller's
// start no longer, and is tried again at the next interval.
func startPeriodic(interval time.Duration, f func(context.Context)) *periodic {
	ctx, cancel := context.WithCancel(context.Background())
	p := &periodic{cancel: cancel, done: make(chan struct{})}
	first := make(chan struct{})
	go func() {
		defer close(p.done)
		called := first // closed once, after the first call
		every(ctx, interval, func() {
			f(ctx)
			if called != nil {
				close(called)
				called = nil
			}
		})
	}()
	select {
	case <-first:
	case <-time.After(time.Second):
	}
	return p
}

// stop ends the calls, once the one in progress returns, and then calls
// last, if not nil, with a context of a second: what last cannot do in
// that time (take back what the calls wrote) it leaves to go stale. Later
// calls do nothing.
func (p *periodic) stop(last func(context.Context)) {
	p.stopped.Do(func() {
		p.cancel()
		<-p.done
		if last == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		last(ctx)
	})
}
