package asynq

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// An idle worker learns of new tasks from the API instead of polling for
// them. Enqueue pushes a wake-up token onto its queue's token list; the
// worker's asynq server runs on a client whose dequeue, when it finds the
// queue empty, pops a token (BLPOP, which waits for one) and looks again.
// Redis hands each token to one waiting worker, so a task wakes one idle
// worker however many there are; a token nobody waits for stays in the
// list, so a worker that looks after the task was enqueued cannot miss it.
// A task that arrives at an idle worker is taken within a Redis round trip
// instead of half a poll interval later, and an idle worker asks Redis
// once per PollInterval instead of a hundred times a second. Tasks that no
// API announces (retries, tasks recovered from a dead worker, tasks
// enqueued by other asynq clients) are taken at the next poll.

// tokensKey is the list of wake-up tokens of queue. Its hash tag puts it
// beside asynq's keys of the queue on a Redis cluster.
func tokensKey(queue string) string { return "yoloserve:{" + queue + "}:wake" }

// maxTokens bounds the token list. Tokens pile up only while no worker
// waits for one (every worker busy, or none running); the workers find
// those tasks with their next dequeues, and each token left costs one
// empty dequeue later. One token would be enough for correctness.
const maxTokens = 64

// announce pushes a wake-up token for a task enqueued on queue. It
// returns Redis's error; the task is in the queue either way, and without
// the token a worker finds it at its next poll.
func announce(ctx context.Context, rdb redis.UniversalClient, queue string) error {
	key := tokensKey(queue)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, key, "1")
		p.LTrim(ctx, key, 0, maxTokens-1)
		return nil
	})
	return err
}

// maxDequeueWait bounds how long one dequeue waits. asynq computes a
// task's lease (30s) before the dequeue runs and renews it every 5s, so a
// wait of 10s still leaves the lease 15s to spare.
const maxDequeueWait = 10 * time.Second

// popRetry is how long the popper waits after a failed pop (Redis down,
// failing over) before it tries again.
const popRetry = 200 * time.Millisecond

// wakeup lets a worker's empty dequeue wait for a token of its queue.
type wakeup struct {
	rdb redis.UniversalClient
	key string
	// pending and paused are the first keys of asynq's dequeue script,
	// which no other script of asynq's has together.
	pending, paused string
	maxWait         time.Duration
	// block is how long one BLPOP waits: maxWait in whole seconds, at
	// least one (go-redis sends Redis whole seconds).
	block time.Duration
	// full returns nil while the server has a free slot, else a channel
	// closed when one of its tasks ends (see occupancy).
	full func() <-chan struct{}
	// held returns nil while the server may take tasks, else a channel
	// closed when it may again (see uploadWatch); nil: it always may.
	held func() <-chan struct{}

	tokens  chan struct{} // a popped token, handed to a waiting dequeue
	stopped chan struct{} // closed by stop: no dequeue waits any more
	once    sync.Once

	mu      sync.Mutex
	waiting int  // dequeues waiting for a token
	popping bool // the popper runs
}

func newWakeup(rdb redis.UniversalClient, queue string, maxWait time.Duration, full, held func() <-chan struct{}) *wakeup {
	maxWait = min(maxWait, maxDequeueWait)
	if held == nil {
		held = func() <-chan struct{} { return nil }
	}
	return &wakeup{
		rdb: rdb, key: tokensKey(queue),
		pending: pendingKey(queue), paused: pausedKey(queue),
		maxWait: maxWait, block: max(maxWait.Round(time.Second), time.Second), full: full, held: held,
		tokens: make(chan struct{}), stopped: make(chan struct{}),
	}
}

// stop ends every wait, so that asynq's processor, which waits inside the
// dequeue, stops at once. A pop in flight ends with its BLPOP (or when the
// client is closed); a token it takes then goes back to the list.
func (w *wakeup) stop() {
	w.once.Do(func() { close(w.stopped) })
}

// dequeue runs a script asynq sent (next) and returns its result, unless
// the script is asynq's dequeue (told by keys) and finds the queue empty:
// then it waits for a free slot and a token (awaitToken), up to maxWait in
// all, and runs it again. While the server is held, asynq's dequeue is not
// run but finds the queue empty, after waiting for the hold to end up to
// maxWait. It is the worker's scriptClient's run.
func (w *wakeup) dequeue(_ context.Context, keys []string, _ []any, next func() *redis.Cmd) *redis.Cmd {
	if len(keys) < 2 || keys[0] != w.pending || keys[1] != w.paused {
		return next()
	}
	timeout := time.NewTimer(w.maxWait)
	defer timeout.Stop()
	if !w.unheld(timeout.C) {
		cmd := redis.NewCmd(context.Background())
		cmd.SetErr(redis.Nil)
		return cmd
	}
	for {
		cmd := next()
		if !errors.Is(cmd.Err(), redis.Nil) || !w.awaitToken(timeout.C) {
			return cmd
		}
	}
}

// awaitToken reports whether the server holds a token with a slot free
// before timeout fired or stop was called. A worker takes a task ahead
// only from a backlog: while every slot is taken it waits for one of its
// tasks to end instead, and a token that comes once every slot is taken
// (the task just dequeued has begun) goes back to the list, for a worker
// with a free slot.
func (w *wakeup) awaitToken(timeout <-chan time.Time) bool {
	for {
		for ended := w.full(); ended != nil; ended = w.full() {
			if !w.wait(ended, timeout) {
				return false
			}
		}
		if !w.unheld(timeout) || !w.waitToken(timeout) {
			return false
		}
		if w.full() == nil && w.held() == nil {
			return true
		}
		w.putBack()
	}
}

// unheld reports whether the server may take tasks, at once or before
// timeout fired or stop was called.
func (w *wakeup) unheld(timeout <-chan time.Time) bool {
	for held := w.held(); held != nil; held = w.held() {
		if !w.wait(held, timeout) {
			return false
		}
	}
	return true
}

// putBack returns a token to the list. Should that fail, its task waits
// for a worker's next poll.
func (w *wakeup) putBack() {
	w.rdb.LPush(context.Background(), w.key, "1")
}

// wait reports whether ch closed before timeout fired or stop was called.
func (w *wakeup) wait(ch <-chan struct{}, timeout <-chan time.Time) bool {
	select {
	case <-ch:
		return true
	case <-timeout:
		return false
	case <-w.stopped:
		return false
	}
}

// waitToken reports whether a token came before timeout fired or stop was
// called. It starts the popper unless it runs.
func (w *wakeup) waitToken(timeout <-chan time.Time) bool {
	w.mu.Lock()
	w.waiting++
	if !w.popping && !w.isStopped() {
		w.popping = true
		go w.pop()
	}
	w.mu.Unlock()
	if w.wait(w.tokens, timeout) {
		return true // pop counted it out
	}
	w.mu.Lock()
	w.waiting--
	w.mu.Unlock()
	return false
}

// pop takes tokens from the list while a dequeue waits for one, and hands
// each to a waiting dequeue. A token that finds none waiting (it timed
// out, or the worker stopped) goes back to the list, for another worker.
// Blocked in BLPOP, it holds one of the client's connections; go-redis
// cannot cut a blocking command short, so it ends at its timeout or when
// the client is closed.
func (w *wakeup) pop() {
	ctx := context.Background()
	for {
		err := w.rdb.BLPop(ctx, w.block, w.key).Err()
		switch {
		case err == nil:
			select {
			case w.tokens <- struct{}{}:
				w.mu.Lock()
				w.waiting-- // here, so that the loop sees it
				w.mu.Unlock()
			default:
				w.putBack()
			}
		case !errors.Is(err, redis.Nil):
			select {
			case <-w.stopped:
			case <-time.After(popRetry):
			}
		}
		w.mu.Lock()
		done := w.waiting == 0 || w.isStopped()
		if done {
			w.popping = false
		}
		w.mu.Unlock()
		if done {
			return
		}
	}
}

// isStopped reports whether stop was called.
func (w *wakeup) isStopped() bool {
	select {
	case <-w.stopped:
		return true
	default:
		return false
	}
}
