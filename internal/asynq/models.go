package asynq

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"yoloserve/internal/detect"
)

// The workers of a queue say what model they serve, so that the API can
// answer a request for a class no worker's model has with 400 at once,
// where the worker that took the task would fail it, and can list the
// models (GET /models). Each worker adds an announcement, its id and its
// model's description as JSON, to a live set of its queue (liveset.go),
// and adds it again every interval. A worker that stops removes its
// announcement; one that is killed leaves it to go stale, which only lets
// the API accept a class that a worker may then refuse, as it did before
// workers said anything. Workers from before announcements carried an id
// wrote the model alone, one member for all the workers serving it.

// modelsKey is the live set of the models queue's workers serve. Its
// hash tag puts it beside asynq's keys of the queue on a Redis cluster.
func modelsKey(queue string) string { return "yoloserve:{" + queue + "}:models" }

// defaultAnnounceInterval is how often a worker says again what it
// serves; its entry goes stale after three intervals.
const defaultAnnounceInterval = 10 * time.Second

// announcement is a worker's member of the models of its queue.
type announcement struct {
	Worker string       `json:"worker"` // an id of its own, made at its start
	Model  detect.Model `json:"model"`
}

// announcer keeps a worker's model in the models of its queue.
type announcer struct {
	rdb      redis.UniversalClient
	key      string
	member   []byte // the announcement's JSON
	interval time.Duration
	log      *slog.Logger
	writes   *periodic
}

// startAnnouncer adds m to the models queue's workers serve, at once, and
// then every interval until stop. It returns once the first write has
// ended, or after a second: a Redis that does not answer yet holds the
// worker's start no longer, and is tried again at the next interval.
func startAnnouncer(rdb redis.UniversalClient, queue string, m detect.Model, interval time.Duration, log *slog.Logger) *announcer {
	member, _ := json.Marshal(announcement{Worker: uuid.NewString(), Model: m}) // strings and ints: it cannot fail
	a := &announcer{rdb: rdb, key: modelsKey(queue), member: member, interval: interval, log: log}
	a.writes = startPeriodic(interval, a.write)
	return a
}

// write adds the model, its entry stale three intervals from now, and
// drops the entries gone stale. A failure is logged at debug level:
// Redis being down is logged elsewhere.
func (a *announcer) write(ctx context.Context) {
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		keepLive(ctx, p, a.key, a.member, time.Now(), 3*a.interval)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		a.log.Debug("announcing the model the worker serves", "error", err)
	}
}

// stop ends the announcements, once the write in progress ends, and
// removes this worker's, waiting for Redis a second at most: one Redis
// does not take then goes stale in its time. Later calls do nothing.
func (a *announcer) stop() {
	a.writes.stop(func(ctx context.Context) {
		if err := a.rdb.ZRem(ctx, a.key, a.member).Err(); err != nil {
			a.log.Debug("removing the worker's announcement of its model", "error", err)
		}
	})
}

// sameModel says whether two announcements are of the same model.
func sameModel(a, b detect.Model) bool {
	return a.Name == b.Name && a.Input == b.Input && slices.Equal(a.Classes, b.Classes)
}

// ServedModels reads the models the workers of a queue serve, as they
// announce them (ServerConfig.Model), keeping the last reading for a while.
// Concurrent readers share one read.
type ServedModels struct {
	rdb   redis.UniversalClient
	key   string
	reads singleflight.Group

	mu     sync.Mutex
	models []detect.ServedModel
	readAt time.Time // when the last reading that succeeded began
}

// NewServedModels returns a reader of the models queue's workers serve.
// An empty queue is the default queue, as everywhere.
func NewServedModels(rdb redis.UniversalClient, queue string) *ServedModels {
	if queue == "" {
		queue = defaultQueue
	}
	return &ServedModels{rdb: rdb, key: modelsKey(queue)}
}

// Models returns the models the workers serve, each with the number of
// workers that announce it, sorted by name, as read from Redis at most
// maxAge ago; with 0, or when the last reading is older,
// as read by the reading in flight or one that begins now. It returns an
// empty list when no worker has said what it serves in the last three
// announce intervals, and an EUNAVAILABLE *Error when Redis does not
// answer (within the client's timeouts: NewClient's are a second to
// connect and two to read) or ctx ends first.
func (s *ServedModels) Models(ctx context.Context, maxAge time.Duration) ([]detect.ServedModel, error) {
	s.mu.Lock()
	models, readAt := s.models, s.readAt
	s.mu.Unlock()
	if !readAt.IsZero() && time.Since(readAt) < maxAge {
		return models, nil
	}
	select {
	case r := <-s.reads.DoChan("", s.read):
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]detect.ServedModel), nil
	case <-ctx.Done():
		return nil, unavailable(ctx.Err())
	}
}

// read reads the models that are not stale and keeps them as the last
// reading. It returns an EUNAVAILABLE *Error when Redis does not answer.
// It runs for every caller that waits for it, so no caller's context
// ends it.
func (s *ServedModels) read() (any, error) {
	ctx := context.Background()
	readAt := time.Now()
	members, err := liveMembers(ctx, s.rdb, s.key, readAt)
	if err != nil {
		return nil, unavailable(err)
	}
	models := make([]detect.ServedModel, 0, len(members))
	for _, m := range members {
		var a announcement
		if json.Unmarshal([]byte(m), &a) != nil || a.Model.Name == "" {
			// A worker from before announcements had an id wrote
			// the model alone.
			if json.Unmarshal([]byte(m), &a.Model) != nil || a.Model.Name == "" {
				continue // not a worker's: it goes stale like any other
			}
		}
		i := slices.IndexFunc(models, func(s detect.ServedModel) bool { return sameModel(s.Model, a.Model) })
		if i < 0 {
			models = append(models, detect.ServedModel{Model: a.Model})
			i = len(models) - 1
		}
		models[i].Workers++
	}
	sort.SliceStable(models, func(i, j int) bool { return models[i].Name < models[j].Name })
	s.mu.Lock()
	s.models, s.readAt = models, readAt
	s.mu.Unlock()
	return models, nil
}
