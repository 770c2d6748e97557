package asynq

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
)

// The API and the workers of a queue must share an upload store: the same
// folder with UPLOAD_STORE=dir, or Redis with redis. A worker that reads
// another store (UPLOAD_STORE=dir on another host, another UPLOAD_DIR,
// another UPLOAD_STORE) finds no upload for any task. So that it can tell
// before it takes one, each API keeps a mark in its store (upload/mark.go)
// and its id in a live set of its queue (liveset.go), and a worker looks
// for the live marks in its own store every interval. A worker that finds
// none of them, while some are live, sees none of the APIs' uploads: it
// logs an error that names the settings, reports not ready, and takes no
// task until it finds one, so that the tasks wait for a worker that can
// run them instead of failing. Where no API keeps a mark (none runs, or
// one from before marks), a worker cannot tell and takes tasks; one whose
// upload it cannot find it hands back (errUploadUnseen).
//
// An API puts a new mark every interval and withdraws the one before, whose
// object it deletes an interval later, so that a worker that has read an
// id from the set still finds its object, and no mark is old enough for
// the sweeper. A killed API's last mark goes stale in the set after three
// intervals, and the sweeper removes its object after UPLOAD_MAX_AGE.

// uploadMarksKey is the live set of the marks of the queue's APIs. Its
// hash tag puts it beside asynq's keys of the queue on a Redis cluster.
func uploadMarksKey(queue string) string { return "yoloserve:{" + queue + "}:upload-marks" }

// defaultMarkInterval is how often an API puts a new mark, and a worker
// looks for the marks, by default.
const defaultMarkInterval = 10 * time.Second

// UploadMarker is what the API needs of its upload store to mark it.
type UploadMarker interface {
	// PutMark creates a new mark and returns its id.
	PutMark(ctx context.Context) (string, error)
	// DeleteMark removes a mark; a missing one is not an error.
	DeleteMark(ctx context.Context, id string) error
}

// UploadMarksConfig configures an API's marks. Zero values mean defaults.
type UploadMarksConfig struct {
	Queue    string        // asynq queue name (default "detect")
	Interval time.Duration // how often a new mark is put (default 10s)
	Logger   *slog.Logger  // default slog.Default()
}

// UploadMarks keeps an API's mark in its upload store and in Redis, from
// StartUploadMarks until Stop.
type UploadMarks struct {
	rdb      redis.UniversalClient
	key      string
	store    UploadMarker
	interval time.Duration
	log      *slog.Logger
	turns    *periodic

	// current is the mark in the set. unsure are marks that a turn
	// failed to announce, which Redis may yet have taken: they are taken
	// out of the set at the next turn that reaches Redis, or go stale.
	// withdrawn are the marks taken out at the last turn, whose objects
	// go at the next. Only the turns, and Stop once they have ended, use
	// them.
	current   string
	unsure    []unsureMark
	withdrawn []string
}

// unsureMark is a mark a turn failed to announce, and when.
type unsureMark struct {
	id string
	at time.Time
}

// StartUploadMarks puts a mark in store and says so in Redis at once, and
// again every interval until Stop. It returns once the first mark is
// announced, or after a second: a Redis that does not answer yet holds
// the API's start no longer, and is tried again at the next interval.
func StartUploadMarks(rdb redis.UniversalClient, cfg UploadMarksConfig, store UploadMarker) *UploadMarks {
	if cfg.Queue == "" {
		cfg.Queue = defaultQueue
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultMarkInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &UploadMarks{rdb: rdb, key: uploadMarksKey(cfg.Queue), store: store, interval: cfg.Interval, log: cfg.Logger}
	m.turns = startPeriodic(m.interval, m.turn)
	return m
}

// turn puts a new mark and announces it in place of the current one and
// any unsure, then deletes the objects of the marks withdrawn at the turn
// before. When the store takes no mark (its disk full, Redis refusing
// writes), the marks are withdrawn: a worker then cannot tell, and takes
// tasks, where a mark it could not find would stop it. Failures are
// logged at debug level: a full disk or Redis down is logged where
// uploads fail.
func (m *UploadMarks) turn(ctx context.Context) {
	id, err := m.store.PutMark(ctx)
	if err != nil {
		m.log.Debug("marking the upload store", "error", err)
		m.withdraw(ctx)
		return
	}
	out := m.takeOut(ctx)
	_, err = m.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		keepLive(ctx, p, m.key, id, time.Now(), 3*m.interval)
		if len(out) > 0 {
			p.ZRem(ctx, m.key, anySlice(out)...)
		}
		return nil
	})
	if err != nil {
		// Redis may have run the commands and lost the reply: the new
		// mark stays until a turn takes it out.
		m.log.Debug("announcing the upload store's mark", "error", err)
		m.unsure = append(m.unsure, unsureMark{id, time.Now()})
		return
	}
	m.deleteMarks(ctx, m.withdrawn)
	m.current, m.unsure, m.withdrawn = id, nil, out
}

// withdraw takes the current and unsure marks out of the set and deletes
// every object it put. A failure leaves the marks in the set to go stale,
// and their objects to the sweeper.
func (m *UploadMarks) withdraw(ctx context.Context) {
	out := m.takeOut(ctx)
	if len(out) > 0 {
		if err := m.rdb.ZRem(ctx, m.key, anySlice(out)...).Err(); err != nil {
			m.log.Debug("withdrawing the upload store's mark", "error", err)
			return
		}
	}
	m.deleteMarks(ctx, append(out, m.withdrawn...))
	m.current, m.unsure, m.withdrawn = "", nil, nil
}

// takeOut returns the marks to take out of the set: the current one and
// the unsure ones, but for those gone stale since, whose objects it
// deletes (Redis down for long, the unsure would pile up).
func (m *UploadMarks) takeOut(ctx context.Context) []string {
	var out []string
	stale := time.Now().Add(-3 * m.interval)
	m.unsure = slices.DeleteFunc(m.unsure, func(u unsureMark) bool {
		if u.at.Before(stale) {
			m.deleteMarks(ctx, []string{u.id})
			return true
		}
		out = append(out, u.id)
		return false
	})
	if m.current != "" {
		out = append(out, m.current)
	}
	return out
}

// anySlice returns ids as the arguments of a Redis command.
func anySlice(ids []string) []any {
	a := make([]any, len(ids))
	for i, id := range ids {
		a[i] = id
	}
	return a
}

// deleteMarks deletes the objects of the marks ids.
func (m *UploadMarks) deleteMarks(ctx context.Context, ids []string) {
	for _, id := range ids {
		if err := m.store.DeleteMark(ctx, id); err != nil {
			m.log.Debug("deleting an upload store mark", "id", id, "error", err)
		}
	}
}

// Stop ends the turns, once the one in progress ends, and withdraws the
// API's mark, waiting for Redis a second at most: a mark Redis does not
// take back goes stale in three intervals. Later calls do nothing.
func (m *UploadMarks) Stop() { m.turns.stop(m.withdraw) }

// MarkReader is what a worker needs of its upload store to look for the
// APIs' marks.
type MarkReader interface {
	// HasMark reports whether the store holds the mark id.
	HasMark(ctx context.Context, id string) (bool, error)
}

// uploadWatch looks for the APIs' marks in a worker's upload store.
type uploadWatch struct {
	rdb   redis.UniversalClient
	key   string
	store MarkReader
	log   *slog.Logger

	blind   atomic.Bool
	all     atomic.Bool // the last look found every live mark, and some were live
	mu      sync.Mutex
	sees    chan struct{} // closed when blind turns false; nil while it is false
	partial bool          // the last look found some marks, not all
}

func newUploadWatch(rdb redis.UniversalClient, queue string, store MarkReader, log *slog.Logger) *uploadWatch {
	return &uploadWatch{rdb: rdb, key: uploadMarksKey(queue), store: store, log: log}
}

// look reads the live marks and looks for them in the store. A worker is
// blind when some are live and it finds none; it sees the uploads of some
// APIs only when it finds some but not all. What counts is the marks live
// after the look, each of them looked for: the set is read again until it
// holds no mark not looked for (three times at most), so that a mark
// withdrawn meanwhile (its API stopped, its object deleted) is not taken
// for one the worker cannot see, and a mark turned meanwhile is replaced
// by the new one. When Redis or the store does not answer, the worker
// stays as it was.
func (u *uploadWatch) look(ctx context.Context) {
	seen := map[string]bool{} // whether the store has each mark looked for
	var live []string
	for range 3 {
		ids, err := liveMembers(ctx, u.rdb, u.key, time.Now())
		if err != nil {
			u.log.Debug("reading the APIs' upload store marks", "error", err)
			return
		}
		live = ids
		fresh := false
		for _, id := range ids {
			if _, ok := seen[id]; ok {
				continue
			}
			fresh = true
			if seen[id], err = u.store.HasMark(ctx, id); err != nil {
				u.log.Debug("looking for an upload store mark", "id", id, "error", err)
				return
			}
		}
		if !fresh {
			break
		}
	}
	found := 0
	for _, id := range live {
		if seen[id] {
			found++
		}
	}
	u.set(found, len(live))
}

// set records what a look found: the marks of found APIs of the marks
// live; it logs a change.
func (u *uploadWatch) set(found, live int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.all.Store(live > 0 && found == live)
	partial := found > 0 && found < live
	if partial && !u.partial {
		u.log.Warn("this worker sees the uploads of some of the APIs on its queue, not of all: the tasks of the others fail on it and are retried on other workers. The APIs and "+sameStoreAdvice,
			"api_marks", live, "found", found)
	}
	u.partial = partial
	blind := live > 0 && found == 0
	if blind == u.blind.Load() {
		return
	}
	u.blind.Store(blind)
	if blind {
		u.sees = make(chan struct{})
		u.log.Error("this worker sees none of the uploads of the APIs on its queue, and takes no task until it does: the API and "+sameStoreAdvice,
			"api_marks", live)
		return
	}
	close(u.sees)
	u.sees = nil
	u.log.Info("this worker sees the APIs' uploads again: it takes tasks")
}

// seesAll reports whether the last look found the marks of every API on
// the queue, and some API keeps one: an upload the worker cannot find,
// no worker would.
func (u *uploadWatch) seesAll() bool { return u.all.Load() }

// held returns nil while the worker sees the uploads (or cannot tell),
// else a channel closed when it sees them again.
func (u *uploadWatch) held() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sees
}

// sameStoreAdvice ends the log lines of a worker that does not see (all)
// the APIs' uploads: what the API and the workers must share.
const sameStoreAdvice = "every worker need the same UPLOAD_STORE, and with UPLOAD_STORE=dir the same folder as UPLOAD_DIR (across hosts, set UPLOAD_STORE=redis on all)"

// errBlind is what a blind worker's readiness returns.
var errBlind = detect.Errorf(detect.EUNAVAILABLE, "not ready: this worker does not see the API's uploads (UPLOAD_STORE, UPLOAD_DIR)")

// ready returns errBlind while the worker is blind, else nil.
func (u *uploadWatch) ready() error {
	if u.blind.Load() {
		return errBlind
	}
	return nil
}
