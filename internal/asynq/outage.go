package asynq

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// asynqLogger routes asynq's logs to slog. While Redis does not answer,
// or answers MISCONF (it cannot write to its disk), asynq's loops log each
// failed call at error level, some ninety lines a minute; with an outage,
// those go to debug, and the outage logs one line when it begins and one
// when Redis answers again.
type asynqLogger struct {
	l   *slog.Logger
	out *outage // nil: every line as asynq gives it
}

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }

func (a asynqLogger) Error(args ...any) {
	msg := fmt.Sprint(args...)
	if a.out != nil && a.out.within(msg) {
		a.l.Debug(msg)
		return
	}
	a.l.Error(msg)
}

// outage follows a Redis that fails the worker's PING: one that does not
// answer, or answers with an error (MISCONF while it cannot write to its
// disk), from the first error asynq logs while a PING fails, until a PING
// succeeds again.
type outage struct {
	ping  func(context.Context) error
	log   *slog.Logger
	probe time.Duration // how often a PING is sent during an outage

	ctx    context.Context // ends with the server: no more PINGs
	cancel context.CancelFunc

	mu    sync.Mutex
	since time.Time // zero while Redis answers
	done  chan struct{}
}

// newOutage returns an outage that PINGs Redis with ping every probe
// while one lasts, and logs its start and end to log.
func newOutage(ping func(context.Context) error, probe time.Duration, log *slog.Logger) *outage {
	ctx, cancel := context.WithCancel(context.Background())
	return &outage{ping: ping, log: log, probe: probe, ctx: ctx, cancel: cancel}
}

// within reports whether asynq's error line msg falls within an outage:
// one is under way, or Redis does not answer a PING now, which begins
// one (logged with msg). Outside an outage it PINGs Redis in the caller's
// goroutine, for up to the PING's two seconds when Redis does not answer;
// asynq logs after its own call failed, so that goroutine is held only
// once per outage.
func (o *outage) within(msg string) bool {
	if o.down() {
		return true
	}
	err := o.ping(o.ctx)
	if err == nil || o.ctx.Err() != nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() {
		return true
	}
	o.since = time.Now()
	o.done = make(chan struct{})
	o.log.Error("Redis fails the worker's PING: the worker takes no task until Redis answers it; asynq's errors go to the debug log meanwhile", "error", err, "asynq", msg)
	go o.watch(o.since, o.done)
	return true
}

// down reports whether an outage is under way.
func (o *outage) down() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.since.IsZero()
}

// watch PINGs Redis every probe until it answers, then ends the outage
// that began at since and closes done; it returns early when the server
// stops.
func (o *outage) watch(since time.Time, done chan struct{}) {
	defer close(done)
	until(o.ctx, o.probe, func() bool {
		if o.ping(o.ctx) != nil {
			return false
		}
		o.mu.Lock()
		o.since = time.Time{}
		o.mu.Unlock()
		o.log.Info("Redis answers again", "after", time.Since(since).Round(time.Second))
		return true
	})
}

// stop ends the PINGs and waits for a watch under way to return.
func (o *outage) stop() {
	o.cancel()
	o.mu.Lock()
	done := o.done
	o.mu.Unlock()
	if done != nil {
		<-done
	}
}
