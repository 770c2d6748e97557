package asynq

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// An upload's enqueue is one Redis round trip. asynq's client enqueues a
// task with a script (the task's hash, then its id on the pending list);
// the API also refuses a task while MaxQueue tasks wait, and pushes a
// wake-up token for an idle worker (wakeup.go). As commands of their own
// those were three round trips, each a wait for Redis and then for the
// API to be scheduled again, which on a busy machine is most of an
// upload's time; and the check was not atomic with the enqueue, so that
// concurrent uploads could each find room for one more. The Queue's asynq
// client runs on a scriptClient whose enqueuer runs asynq's enqueue script
// as enqueueScript instead: the same writes, with the check before them
// and the token after, in one step.

// enqueueScript is asynq v0.26's enqueue script (enqueueCmd in its
// internal/rdb), with the queue's limit checked first and a wake-up token
// pushed last.
//
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:pending
// KEYS[3] -> yoloserve:{<qname>}:wake (tokensKey)
// ARGV[1], ARGV[2], ARGV[3] -> asynq's: the task message, its id, the unix time in ns
// ARGV[4] -> MaxQueue
// ARGV[5] -> maxTokens
//
// It returns 1 when the task was enqueued, 0 when a task with its id
// exists (asynq's answer), and -1-n when n >= MaxQueue tasks wait.
var enqueueScript = redis.NewScript(`
local n = redis.call("LLEN", KEYS[2])
if n >= tonumber(ARGV[4]) then
	return -1 - n
end
if redis.call("EXISTS", KEYS[1]) == 1 then
	return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
redis.call("LPUSH", KEYS[2], ARGV[2])
redis.call("LPUSH", KEYS[3], "1")
redis.call("LTRIM", KEYS[3], 0, tonumber(ARGV[5]) - 1)
return 1
`)

// errQueueFull is what asynq is told when enqueueScript refused a task;
// Enqueue reads the refusal from its enqueueOutcome instead.
var errQueueFull = errors.New("queue full")

// enqueueOutcome is what the enqueuer tells the Enqueue whose context
// carries it (under outcomeKey): whether it ran enqueueScript, and whether
// the queue was full, with how many tasks waiting.
type enqueueOutcome struct {
	folded  bool
	full    bool
	waiting int64
}

// outcomeKey is the context key of an Enqueue's *enqueueOutcome.
type outcomeKey struct{}

// enqueuer runs asynq's enqueue script on a queue as enqueueScript when an
// Enqueue asks for it (its context carries an enqueueOutcome).
type enqueuer struct {
	rdb                         redis.UniversalClient
	taskPrefix, pending, tokens string // the queue's keys
	maxQueue                    int
}

func newEnqueuer(rdb redis.UniversalClient, queue string, maxQueue int) enqueuer {
	return enqueuer{rdb: rdb, taskPrefix: taskKey(queue, ""), pending: pendingKey(queue), tokens: tokensKey(queue), maxQueue: maxQueue}
}

// run is the Queue's scriptClient's: it runs enqueueScript in place of
// asynq's enqueue script, told by its keys and arguments, and returns its
// result; any other script, or one no Enqueue asked for, it runs as asynq
// sent it (next). A full queue is an error to asynq, and the count of
// waiting tasks to the Enqueue.
func (e enqueuer) run(ctx context.Context, keys []string, args []any, next func() *redis.Cmd) *redis.Cmd {
	out, _ := ctx.Value(outcomeKey{}).(*enqueueOutcome)
	if out == nil || len(keys) != 2 || len(args) != 3 ||
		!strings.HasPrefix(keys[0], e.taskPrefix) || keys[1] != e.pending {
		return next()
	}
	out.folded = true
	cmd := enqueueScript.Run(ctx, e.rdb, []string{keys[0], keys[1], e.tokens},
		args[0], args[1], args[2], e.maxQueue, maxTokens)
	if n, err := cmd.Int64(); err == nil && n < 0 {
		out.full, out.waiting = true, -1-n
		cmd.SetErr(errQueueFull)
	}
	return cmd
}
