package asynq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
)

// TaskType is the asynq type name of a detection task.
const TaskType = "detect:image"

// DoneChannel is the Redis pub/sub channel on which workers announce the
// id of each task they finished, so that waiting requests need not poll.
const DoneChannel = "yoloserve:done"

// QueueConfig configures a Queue. Zero values mean defaults.
type QueueConfig struct {
	Queue     string        // asynq queue name (default "detect")
	ResultTTL time.Duration // how long a result stays readable (default 1h)
	Timeout   time.Duration // longest a task may run (default 60s)
	Retries   int           // retries after a transient failure
	MaxQueue  int           // pending tasks before Enqueue refuses (default 10000)
	// ReplicaAcks > 0 makes Enqueue wait (up to ReplicaWait, default
	// 500ms) until that many replicas hold the task, so that a failover
	// loses no accepted task. Once they do not in time, Enqueue stops
	// waiting until they catch up (replicas.go).
	ReplicaAcks int
	ReplicaWait time.Duration
	Logger      *slog.Logger
}

// The defaults the API's Queue, the worker's Server and its janitor
// share: they must agree on the queue and on how long a result stays.
const (
	defaultQueue     = "detect"
	defaultResultTTL = time.Hour
)

func (c *QueueConfig) defaults() {
	if c.Queue == "" {
		c.Queue = defaultQueue
	}
	if c.ResultTTL <= 0 {
		c.ResultTTL = defaultResultTTL
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 10000
	}
	if c.ReplicaWait <= 0 {
		c.ReplicaWait = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Queue is the API's side of the queue: it enqueues jobs and reads task
// states. It is a Prometheus collector of its tasks' replication
// (replicas.go).
type Queue struct {
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	cfg       QueueConfig
	waiters   *waiters
	// unfolded is set once asynq has enqueued without enqueueScript (a
	// newer asynq): MaxQueue is then checked by a command of its own.
	unfolded atomic.Bool
	replicas *replicaWatch
}

// NewQueue returns a Queue on rdb and starts listening for finished tasks.
// Close stops it; rdb stays the caller's.
func NewQueue(rdb redis.UniversalClient, cfg QueueConfig) *Queue {
	cfg.defaults()
	q := &Queue{
		rdb:       rdb,
		client:    asynq.NewClientFromRedisClient(scriptClient{rdb, newEnqueuer(rdb, cfg.Queue, cfg.MaxQueue).run}),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		cfg:       cfg,
		waiters:   newWaiters(rdb),
		replicas:  newReplicaWatch(),
	}
	return q
}

// Close stops listening for finished tasks, and the replicas' probe.
func (q *Queue) Close() error {
	q.waiters.close()
	q.replicas.close()
	return nil
}

// unavailable wraps a Redis failure as the EUNAVAILABLE error clients see.
func unavailable(err error) error {
	return fmt.Errorf("%w (%v)", detect.Unavailable(detect.ReasonRedis, "The queue is unavailable; try again in a few seconds."), err)
}

// Ping checks that Redis answers. It returns an EUNAVAILABLE *Error when
// Redis does not, or refuses (loading, a wrong password), but nil when
// Redis refuses only writes because it cannot write its files (MISCONF: a
// full disk), which it answers PING with too: results are still read,
// and uploads are answered 503 by their own errors.
func (q *Queue) Ping(ctx context.Context) error {
	if err := q.rdb.Ping(ctx).Err(); err != nil && !strings.HasPrefix(err.Error(), "MISCONF ") {
		return unavailable(err)
	}
	return nil
}

// allQueuesKey is asynq's set of queue names.
const allQueuesKey = "asynq:queues"

// pendingKey is asynq's list of tasks waiting in a queue (the list KEDA's
// Redis scaler watches too).
func pendingKey(queue string) string { return "asynq:{" + queue + "}:pending" }

// taskKey is asynq's hash of one task: its encoded message, its state
// and its result.
func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// pausedKey is asynq's mark of a paused queue.
func pausedKey(queue string) string { return "asynq:{" + queue + "}:paused" }

// activeKey is asynq's list of the tasks workers hold, and leaseKey the
// sorted set of their leases' ends.
func activeKey(queue string) string { return "asynq:{" + queue + "}:active" }
func leaseKey(queue string) string  { return "asynq:{" + queue + "}:lease" }

// retryKey is asynq's sorted set of tasks waiting to be retried.
func retryKey(queue string) string { return "asynq:{" + queue + "}:retry" }

// Pending returns how many tasks wait in the queue.
func (q *Queue) Pending(ctx context.Context) (int64, error) {
	n, err := q.rdb.LLen(ctx, pendingKey(q.cfg.Queue)).Result()
	if err != nil {
		return 0, unavailable(err)
	}
	return n, nil
}

// queueFull is the EUNAVAILABLE error of an upload refused while waiting
// tasks are at MaxQueue.
func queueFull(waiting int64) error {
	return detect.Unavailable(detect.ReasonQueueFull, "The queue is full (%d images waiting); try again shortly.", waiting)
}

// Enqueue adds a detection job with a new id and returns the id. It
// returns an EUNAVAILABLE *Error when Redis does not answer or MaxQueue
// tasks are waiting.
//
// The check, the task and the wake-up token for an idle worker are one
// script, one round trip (enqueue.go). Should asynq enqueue without the
// script this package knows (a newer asynq), that task is enqueued
// unchecked and the token pushed after it; from then on each Enqueue
// reads the queue's length first, as a command of its own, so that
// MaxQueue still holds, though concurrent uploads may each find room for
// one more.
func (q *Queue) Enqueue(ctx context.Context, job detect.Job) (string, error) {
	payload, err := json.Marshal(job)
	if err != nil {
		return "", err
	}
	if q.unfolded.Load() {
		n, err := q.Pending(ctx)
		if err != nil {
			return "", err
		}
		if n >= int64(q.cfg.MaxQueue) {
			return "", queueFull(n)
		}
	}
	id := uuid.NewString()
	out := &enqueueOutcome{}
	_, err = q.client.EnqueueContext(context.WithValue(ctx, outcomeKey{}, out), asynq.NewTask(TaskType, payload),
		asynq.TaskID(id), asynq.Queue(q.cfg.Queue), asynq.Retention(q.cfg.ResultTTL),
		asynq.Timeout(q.cfg.Timeout), asynq.MaxRetry(q.cfg.Retries))
	switch {
	case out.full:
		return "", queueFull(out.waiting)
	case err != nil:
		return "", unavailable(err)
	case !out.folded:
		if !q.unfolded.Swap(true) {
			q.cfg.Logger.Error("asynq enqueued without the script this service knows: MAX_QUEUE is now checked by a command of its own before each enqueue, and idle workers are woken by another")
		}
		// Wake an idle worker, even if the client has gone meanwhile.
		if err := announce(context.WithoutCancel(ctx), q.rdb, q.cfg.Queue); err != nil {
			q.cfg.Logger.Warn("announcing a task", "task_id", id, "error", err)
		}
	}
	if q.cfg.ReplicaAcks > 0 {
		q.replicate(ctx, id)
	}
	return id, nil
}

// Task returns a task's state. It returns an ENOTFOUND *Error for an id
// that never existed or whose result expired, and an EUNAVAILABLE *Error
// when Redis does not answer.
//
// One HMGET of the task's hash answers every state but a failure, in one
// round trip where asynq's inspector takes two (it first checks that the
// queue exists) and decodes the task's message. A failure's error is in
// that message, and an id without a hash may be one of a queue Redis lost,
// so those two go through the inspector. A hash with a result is SUCCESS
// whatever else it holds (Redis may have lost the rest while the task
// ran, see Server.writeResult); one with a state but neither message nor
// result is a task Redis lost (see lostInfo).
func (q *Queue) Task(ctx context.Context, id string) (detect.TaskInfo, error) {
	vals, err := q.rdb.HMGet(ctx, taskKey(q.cfg.Queue, id), "state", "result", "msg").Result()
	if err != nil {
		return detect.TaskInfo{}, unavailable(err)
	}
	state, ok := vals[0].(string)
	result, _ := vals[1].(string)
	_, hasMsg := vals[2].(string)
	switch {
	case result != "" || (ok && hasMsg && state != "archived"):
		return stateInfo(id, state, []byte(result), ""), nil
	case ok && !hasMsg:
		return lostInfo(id), nil
	}
	t, err := q.inspector.GetTaskInfo(q.cfg.Queue, id)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		// asynq's client registers a queue name in Redis once per process;
		// a Redis that lost its data (restarted without persistence) lacks
		// it while tasks flow. Register it again and look once more.
		if err := q.rdb.SAdd(ctx, allQueuesKey, q.cfg.Queue).Err(); err != nil {
			return detect.TaskInfo{}, unavailable(err)
		}
		t, err = q.inspector.GetTaskInfo(q.cfg.Queue, id)
	}
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return detect.TaskInfo{}, detect.Errorf(detect.ENOTFOUND, "No task %s: it never existed or its result has expired.", id)
	} else if err != nil {
		return detect.TaskInfo{}, unavailable(err)
	}
	return taskInfo(t), nil
}

// Wait returns the task's state once it is final, or its state when ctx
// ends first. It reads the state again when a worker announces the task
// done, and once a second in case an announcement was missed. Errors are
// those of Task, except that a read finding Redis unavailable is tried
// again, ever less often up to once a second, until ctx ends: a wait rides
// out an outage shorter than itself, and the second after one during which
// go-redis still refuses to dial (its pool stops dialing after as many
// failed dials as it has connections, and tries again once a second). The
// EUNAVAILABLE error is returned when ctx ends first.
//
// ctx bounds the wait, not the reads: a read that starts as the wait's
// time runs out (or after) still answers the state.
func (q *Queue) Wait(ctx context.Context, id string) (detect.TaskInfo, error) {
	read := context.WithoutCancel(ctx)
	var unavailable backoff
	for {
		// Listen before looking, so that an end announced in between is
		// not missed.
		done, cancel := q.waiters.add(id)
		ti, err := q.Task(read, id)
		if ridesOut(ctx, err) {
			cancel()
			if !unavailable.sleep(ctx) {
				return ti, err
			}
			continue
		}
		unavailable = backoff{}
		if err != nil || ti.Status.Done() {
			cancel()
			return ti, err
		}
		select {
		case <-ctx.Done():
			cancel()
			return ti, nil
		case <-done:
			cancel()
			ti, err := q.settle(ctx, read, id)
			if ridesOut(ctx, err) {
				continue
			}
			if err != nil || ti.Status.Done() || ctx.Err() != nil {
				return ti, err
			}
		case <-time.After(time.Second):
			cancel()
		}
	}
}

// The pauses of a wait's read, or a worker's result write, that found
// Redis unavailable: the first one, doubled after each failure up to the
// longest.
const (
	firstUnavailablePause = 50 * time.Millisecond
	maxUnavailablePause   = time.Second
)

// backoff paces the reads of a wait, or the result writes of a worker,
// that found Redis unavailable; its zero value starts at
// firstUnavailablePause.
type backoff struct{ pause time.Duration }

// next returns the pause the next sleep waits.
func (b *backoff) next() time.Duration {
	if b.pause == 0 {
		return firstUnavailablePause
	}
	return b.pause
}

// sleep waits the next pause, or until ctx ends, and doubles the pause
// after it up to maxUnavailablePause. It returns false when ctx ended
// first.
func (b *backoff) sleep(ctx context.Context) bool {
	pause := b.next()
	select {
	case <-ctx.Done():
		return false
	case <-time.After(pause):
	}
	b.pause = min(2*pause, maxUnavailablePause)
	return true
}

// ridesOut reports whether a wait on ctx reads again after err: Redis was
// unavailable and the wait has time left.
func ridesOut(ctx context.Context, err error) bool {
	return err != nil && detect.ErrorCode(err) == detect.EUNAVAILABLE && ctx.Err() == nil
}

// settle reads a task announced as ended, with read, until asynq has
// recorded the end or ctx ends: a failure is announced just before asynq
// archives it.
func (q *Queue) settle(ctx, read context.Context, id string) (detect.TaskInfo, error) {
	var ti detect.TaskInfo
	var err error
	for _, d := range []time.Duration{2, 5, 10, 20, 50, 100} {
		if ti, err = q.Task(read, id); err != nil || ti.Status.Done() {
			return ti, err
		}
		select {
		case <-time.After(d * time.Millisecond):
		case <-ctx.Done():
			return ti, nil
		}
	}
	return ti, nil
}

// Announce publishes that a task finished. Workers call it after writing
// the result.
func Announce(ctx context.Context, rdb redis.UniversalClient, id string) error {
	return rdb.Publish(ctx, DoneChannel, id).Err()
}

// waiters fans the done channel out to the requests waiting on each id,
// over one subscription per process, opened while anyone waits.
type waiters struct {
	rdb  redis.UniversalClient
	mu   sync.Mutex
	byID map[string][]chan struct{}
	sub  *redis.PubSub
}

func newWaiters(rdb redis.UniversalClient) *waiters {
	return &waiters{rdb: rdb, byID: map[string][]chan struct{}{}}
}

// add registers a waiter for id and returns a channel closed when the id
// is announced, and a function that unregisters it.
func (w *waiters) add(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sub == nil {
		w.sub = w.rdb.Subscribe(context.Background(), DoneChannel)
		go w.dispatch(w.sub)
	}
	w.byID[id] = append(w.byID[id], ch)
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			list := w.byID[id]
			for i, c := range list {
				if c == ch {
					w.byID[id] = append(list[:i], list[i+1:]...)
					break
				}
			}
			if len(w.byID[id]) == 0 {
				delete(w.byID, id)
			}
		})
	}
}

func (w *waiters) dispatch(sub *redis.PubSub) {
	for msg := range sub.Channel() {
		w.mu.Lock()
		for _, ch := range w.byID[msg.Payload] {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
		delete(w.byID, msg.Payload)
		w.mu.Unlock()
	}
}

func (w *waiters) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sub != nil {
		w.sub.Close()
		w.sub = nil
	}
}
