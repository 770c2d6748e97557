package asynq

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// An idle worker learns of new tasks from the API instead of polling for
// them. Enqueue announces each task on its queue's channel; the worker's
// asynq server runs on a client whose dequeue, when it finds the queue
// empty, waits for such an announcement (or PollInterval) and looks again.
// A task that arrives at an idle worker is taken within a Redis round trip
// instead of half a poll interval later, and an idle worker asks Redis
// once per PollInterval instead of a hundred times a second. Tasks that no
// API announces (retries, tasks recovered from a dead worker, tasks
// enqueued by other asynq clients) are taken at the next poll.

// enqueuedChannel is the Redis pub/sub channel on which the API announces
// the tasks it enqueues on queue.
func enqueuedChannel(queue string) string { return "yoloserve:enqueued:" + queue }

// maxDequeueWait bounds how long one dequeue waits. asynq computes a
// task's lease (30s) before the dequeue runs and renews it every 5s, so a
// wait of 10s still leaves the lease 15s to spare.
const maxDequeueWait = 10 * time.Second

// wakeup listens to a queue's announcements and lets an empty dequeue wait
// for the next one.
type wakeup struct {
	rdb     redis.UniversalClient
	channel string
	// pending and paused are the first keys of asynq's dequeue script,
	// which no other script of asynq's has together.
	pending, paused string
	maxWait         time.Duration
	// full returns nil while the server has a free slot, else a channel
	// closed when one of its tasks ends (see occupancy).
	full func() <-chan struct{}

	mu      sync.Mutex
	news    chan struct{} // closed at the next announcement, then replaced
	sub     *redis.PubSub
	stopped chan struct{} // closed by stop: no dequeue waits any more
	once    sync.Once
}

func newWakeup(rdb redis.UniversalClient, queue string, maxWait time.Duration, full func() <-chan struct{}) *wakeup {
	return &wakeup{
		rdb: rdb, channel: enqueuedChannel(queue),
		pending: pendingKey(queue), paused: pausedKey(queue),
		maxWait: min(maxWait, maxDequeueWait), full: full,
		news: make(chan struct{}), stopped: make(chan struct{}),
	}
}

// start subscribes to the announcements. go-redis resubscribes by itself
// after a lost connection; announcements made meanwhile are missed, and
// their tasks wait for the next poll.
func (w *wakeup) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sub = w.rdb.Subscribe(context.Background(), w.channel)
	go func(ch <-chan *redis.Message) {
		for range ch {
			w.mu.Lock()
			close(w.news)
			w.news = make(chan struct{})
			w.mu.Unlock()
		}
	}(w.sub.Channel())
}

// stop ends the subscription and every wait, so that asynq's processor,
// which waits inside the dequeue, stops at once.
func (w *wakeup) stop() {
	w.once.Do(func() {
		close(w.stopped)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.sub != nil {
			w.sub.Close()
		}
	})
}

// next returns a channel closed at the next announcement.
func (w *wakeup) next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.news
}

// dequeue runs a script with run and returns its result, unless the script
// is asynq's dequeue (told by keys) and finds the queue empty: then it
// waits for an announcement, up to maxWait in all, and runs it again; when
// the announcement finds every slot taken, it leaves the task to workers
// with a free slot and waits for one of its own tasks to end instead. The
// channel is taken before each run, so that an announcement made while the
// script runs is not missed.
func (w *wakeup) dequeue(keys []string, run func() *redis.Cmd) *redis.Cmd {
	if len(keys) < 2 || keys[0] != w.pending || keys[1] != w.paused {
		return run()
	}
	timeout := time.NewTimer(w.maxWait)
	defer timeout.Stop()
	for {
		news := w.next()
		cmd := run()
		if !errors.Is(cmd.Err(), redis.Nil) {
			return cmd
		}
		if !w.wait(news, timeout.C) {
			return cmd
		}
		if ended := w.full(); ended != nil && !w.wait(ended, timeout.C) {
			return cmd
		}
	}
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

// wakingClient is the Redis client the worker's asynq server runs on:
// rdb, with asynq's dequeue waiting for announcements. asynq runs its
// scripts with EvalSha, and with Eval when Redis lacks the script.
type wakingClient struct {
	redis.UniversalClient
	w *wakeup
}

func (c wakingClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return c.w.dequeue(keys, func() *redis.Cmd { return c.UniversalClient.EvalSha(ctx, sha, keys, args...) })
}

func (c wakingClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.w.dequeue(keys, func() *redis.Cmd { return c.UniversalClient.Eval(ctx, script, keys, args...) })
}
