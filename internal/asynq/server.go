package asynq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
)

// Detector is what the worker needs of the detector.
type Detector interface {
	Detect(ctx context.Context, data []byte, p detect.Params) (*detect.Result, error)
}

// Uploads is what the worker needs of the upload store: its uploads, and
// the APIs' marks (uploadmarks.go).
type Uploads interface {
	// Load reads an upload into buf (grown as needed; a store may return
	// other memory instead) and returns its bytes.
	Load(ctx context.Context, ref string, buf []byte) ([]byte, error)
	Delete(ctx context.Context, ref string) error
	MarkReader
}

// ServerConfig configures a Server. Zero values mean defaults.
type ServerConfig struct {
	Queue           string        // asynq queue name (default "detect")
	Concurrency     int           // tasks run at once, the detector's slots (default 1)
	ShutdownTimeout time.Duration // how long Shutdown waits for running tasks (default 30s)
	// Prefetch is how many tasks the server takes beyond Concurrency,
	// from a backlog only; each reads its upload and waits for a slot,
	// so that a slot does not stand empty while the end of the task
	// before is recorded and the next is fetched (prefetch.go). 0: none.
	Prefetch int
	// PollInterval is how long a worker with a free slot waits for the
	// announcement of a task before it looks at the queue anyway (default
	// 1s, at most 10s). Announced tasks are taken at once; the poll finds
	// the others: retries, tasks recovered from a dead worker, tasks that
	// other asynq clients enqueued.
	PollInterval time.Duration
	// ResultTTL is how long a result stays readable when Redis lost its
	// task while it ran (default 1h); otherwise the API's retention, set
	// at enqueue, holds.
	ResultTTL time.Duration
	// Model is the model the detector runs, which the server announces
	// in Redis from Start until Stop or Shutdown, so that the API can
	// refuse classes it lacks (models.go). A zero Model is not announced.
	Model detect.Model
	// AnnounceInterval is how often the model is announced again
	// (default 10s); an announcement goes stale after three intervals.
	AnnounceInterval time.Duration
	// UploadMaxAge is how long the API keeps an upload whose task has not
	// ended (UPLOAD_MAX_AGE, default 2h): an upload missing sooner has
	// not expired, and the worker says it cannot see the API's uploads.
	UploadMaxAge time.Duration
	// MarkInterval is how often the worker looks in its upload store for
	// the marks the APIs keep (default 10s): while it finds none of them,
	// it takes no task (uploadmarks.go).
	MarkInterval time.Duration
	// LeaseCheckInterval is how often the worker looks for tasks whose
	// worker stopped renewing their lease (killed, frozen, cut off from
	// Redis), to take them back 5s after the lease ended (lease.go;
	// default 5s).
	LeaseCheckInterval time.Duration
	Logger             *slog.Logger // default slog.Default()
	Registerer         prometheus.Registerer
}

// Server is the worker: an asynq server running detection tasks.
type Server struct {
	srv       *asynq.Server
	rdb       redis.UniversalClient
	resultTTL time.Duration
	// uploadMaxAge: an upload missing sooner than this after the API
	// stored it was not expired but never seen (errUploadUnseen).
	uploadMaxAge time.Duration
	wakeup       *wakeup
	detector     Detector
	uploads      Uploads
	buffers      *uploadBuffers // the memory uploads are read into
	log          *slog.Logger
	metrics      *workerMetrics
	occupied     *occupancy
	announce     func() *announcer // nil when no model is announced
	announcer    *announcer        // running from Start until Stop or Shutdown
	watch        *uploadWatch
	markInterval time.Duration
	looks        *periodic // the watch's looks, from Start until Stop or Shutdown
	queue        string
	// leaseInterval is how often leases are looked at, by leases from
	// Start until Stop or Shutdown (lease.go).
	leaseInterval time.Duration
	leases        *periodic
	// outage turns asynq's error lines while Redis does not answer into
	// one line when it stops and one when it answers again (outage.go).
	outage *outage
}

type workerMetrics struct {
	tasks    *prometheus.CounterVec
	duration prometheus.Histogram
	inFlight prometheus.GaugeFunc // reads occupied
	lost     prometheus.Counter   // the janitor's too, see LostTasks
	unseen   prometheus.GaugeFunc // reads watch
	redisUp  prometheus.GaugeFunc // pings Redis
	// recovered counts the tasks taken back from other workers, by
	// outcome (retry, failure).
	recovered *prometheus.CounterVec
}

// NewServer returns a worker on rdb that runs tasks with det, reading
// uploads from up.
func NewServer(rdb redis.UniversalClient, cfg ServerConfig, det Detector, up Uploads) *Server {
	if cfg.Queue == "" {
		cfg.Queue = defaultQueue
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = defaultResultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AnnounceInterval <= 0 {
		cfg.AnnounceInterval = defaultAnnounceInterval
	}
	if cfg.UploadMaxAge <= 0 {
		cfg.UploadMaxAge = 2 * time.Hour
	}
	if cfg.MarkInterval <= 0 {
		cfg.MarkInterval = defaultMarkInterval
	}
	if cfg.LeaseCheckInterval <= 0 {
		cfg.LeaseCheckInterval = defaultLeaseCheckInterval
	}
	cfg.Prefetch = max(0, cfg.Prefetch)
	s := &Server{rdb: rdb, resultTTL: cfg.ResultTTL, uploadMaxAge: cfg.UploadMaxAge, markInterval: cfg.MarkInterval, queue: cfg.Queue, leaseInterval: cfg.LeaseCheckInterval, detector: det, uploads: up, buffers: newUploadBuffers(cfg.Concurrency + cfg.Prefetch), log: cfg.Logger, occupied: newOccupancy(cfg.Concurrency), metrics: &workerMetrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yoloserve_worker_tasks_total", Help: "Tasks processed, by outcome (success, failure, retry).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "yoloserve_worker_task_seconds", Help: "Service time of a task: upload read to result written.",
			Buckets: prometheus.ExponentialBuckets(0.005, 1.6, 18),
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "yoloserve_worker_lost_tasks_total",
			Help: "Tasks whose data Redis lost (evicted, or Redis restarted without persistence or failed over): each counted when this worker wrote the result of one it ran, or its janitor took one out of the queue. Any increase means Redis is losing data.",
		}),
		recovered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "yoloserve_worker_recovered_tasks_total",
			Help: "Tasks this worker took back from a worker that stopped renewing their lease (killed, frozen, or cut off from Redis), by outcome: retry, or failure on their last attempt.",
		}, []string{"outcome"}),
	}}
	// Each outcome's series starts at 0, so that increase() and rate()
	// over them count the first task too.
	for _, outcome := range []string{"success", "failure", "retry"} {
		s.metrics.tasks.WithLabelValues(outcome)
	}
	for _, outcome := range []string{"retry", "failure"} {
		s.metrics.recovered.WithLabelValues(outcome)
	}
	s.metrics.inFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "yoloserve_worker_tasks_in_flight", Help: "Tasks the worker holds: running, or taken ahead and waiting for a slot (WORKER_PREFETCH).",
	}, func() float64 { return float64(s.occupied.held()) })
	s.watch = newUploadWatch(rdb, cfg.Queue, up, cfg.Logger)
	s.metrics.unseen = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "yoloserve_worker_uploads_unseen",
		Help: "1 while the worker finds none of the marks the APIs keep in their upload store, and so takes no task: it does not share the API's UPLOAD_STORE or UPLOAD_DIR. Else 0.",
	}, func() float64 {
		if s.watch.ready() != nil {
			return 1
		}
		return 0
	})
	s.metrics.redisUp = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "yoloserve_worker_redis_up",
		Help: "1 when Redis answered the worker's PING, sent as /metrics is read, within " + redisUpTimeout.String() + " (an error reply such as MISCONF, Redis's disk full, counts as an answer); else 0: a worker cut off from Redis takes no task.",
	}, func() float64 {
		var reply redis.Error
		if err := s.Ping(context.Background()); err != nil && !errors.As(err, &reply) {
			return 0
		}
		return 1
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.metrics.tasks, s.metrics.duration, s.metrics.inFlight, s.metrics.lost, s.metrics.unseen, s.metrics.recovered, s.metrics.redisUp)
	}
	if cfg.Model.Name != "" {
		s.announce = func() *announcer {
			return startAnnouncer(rdb, cfg.Queue, cfg.Model, cfg.AnnounceInterval, cfg.Logger)
		}
	}
	s.wakeup = newWakeup(rdb, cfg.Queue, cfg.PollInterval, s.occupied.full, s.watch.held)
	s.outage = newOutage(s.Ping, time.Second, cfg.Logger)
	s.srv = asynq.NewServerFromRedisClient(scriptClient{rdb, s.wakeup.dequeue}, asynq.Config{
		Concurrency:     cfg.Concurrency + cfg.Prefetch,
		Queues:          map[string]int{cfg.Queue: 1},
		ShutdownTimeout: cfg.ShutdownTimeout,
		// The dequeue itself waits for announced tasks (wakeup.go); asynq
		// only pauses briefly between two empty dequeues.
		TaskCheckInterval:        time.Millisecond,
		DelayedTaskCheckInterval: time.Second,
		RetryDelayFunc:           retryDelay,
		IsFailure:                isFailure,
		Logger:                   asynqLogger{l: cfg.Logger, out: s.outage},
		LogLevel:                 asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			logFailure(ctx, cfg.Logger, err)
		}),
	})
	return s
}

// retryDelay backs off 1s, 2s, 4s... up to 30s: a transient fault (Redis
// blip, a worker killed) is retried soon. A task handed back by a worker
// whose device stopped working (handBack) goes back without delay.
func retryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if !isFailure(err) {
		return 0
	}
	return min(time.Duration(1<<min(n, 5))*time.Second, 30*time.Second)
}

// Start announces the model (ServerConfig.Model), looks for the APIs'
// upload store marks, and starts processing tasks, which it takes none of
// while it finds marks but none in its store (uploadmarks.go). A Redis
// that does not answer yet is retried, not an error; Start returns an
// error only when the server was started or shut down before.
func (s *Server) Start() error {
	if s.announce != nil && s.announcer == nil {
		s.announcer = s.announce()
	}
	if s.looks == nil {
		s.looks = startPeriodic(s.markInterval, s.watch.look)
	}
	if s.leases == nil {
		s.leases = startPeriodic(s.leaseInterval, s.recoverLeases)
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc(TaskType, s.process)
	if err := s.srv.Start(mux); err != nil {
		s.wakeup.stop()
		s.stopBackground()
		return err
	}
	return nil
}

// redisUpTimeout bounds the PING of yoloserve_worker_redis_up and of Ping.
const redisUpTimeout = 2 * time.Second

// Ping returns nil when Redis answers a PING within two seconds (or
// before ctx ends), else the client's error.
func (s *Server) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisUpTimeout)
	defer cancel()
	return s.rdb.Ping(ctx).Err()
}

// Ready returns an EUNAVAILABLE *detect.Error, saying why, while the
// worker takes no task because it does not see the API's uploads
// (uploadmarks.go); else nil.
func (s *Server) Ready() error { return s.watch.ready() }

// Stop stops taking new tasks, announcing the model, looking for the
// upload store marks and taking back other workers' tasks; running tasks
// go on.
func (s *Server) Stop() {
	s.wakeup.stop()
	s.stopBackground()
	s.srv.Stop()
}

// stopBackground ends the model's announcements, if any run, the watch
// for the upload store marks, and the looks at the leases.
func (s *Server) stopBackground() {
	if s.announcer != nil {
		s.announcer.stop()
	}
	if s.looks != nil {
		s.looks.stop(nil)
	}
	if s.leases != nil {
		s.leases.stop(nil)
	}
}

// Shutdown waits for running tasks up to the shutdown timeout and stops;
// tasks still running then go back to the queue. It returns once every
// handler has returned, so that the caller may then close what they use
// (the detector, the Redis client).
func (s *Server) Shutdown() {
	s.wakeup.stop()
	s.stopBackground()
	s.srv.Shutdown()
	s.outage.stop()
	// asynq returns as soon as it has put the tasks still running back
	// in the queue, and cancels their contexts; their handlers may still
	// be in the detector, until its run ends.
	s.occupied.idle()
}

// permanent marks err as final: the task ends as FAILURE now, its message
// being the sentence clients read.
func permanent(msg string) error { return fmt.Errorf("%s%w", msg, skipRetry) }

// skipRetry wraps asynq.SkipRetry with the separator state.go strips.
var skipRetry = fmt.Errorf(": %w", asynq.SkipRetry)

// process runs one task: read the upload, detect, write the result,
// delete the upload, announce the end. A task whose upload is gone but
// whose result an earlier attempt wrote ends with that result. Errors
// from the image or the parameters are final; other errors are retried,
// and on the last attempt the upload is deleted too. An error once asynq
// has cancelled the task's context decides nothing: asynq has already put
// the task back in the queue (its worker's shutdown time ran out) or
// retries it (its lease was lost), so the upload stays for the next
// attempt; one left by a task that lost its lease on the last attempt
// goes with the upload sweeper. A task past its deadline (TASK_TIMEOUT)
// fails as any other. A task the detector cannot run because its device
// is lost (detect.ErrDeviceLost) is given back with its attempts
// untouched (handBack).
func (s *Server) process(ctx context.Context, t *asynq.Task) (err error) {
	s.occupied.begin()
	defer s.occupied.end()
	start := time.Now()
	id, _ := asynq.GetTaskID(ctx)
	var job detect.Job
	announced := false // by the result's write
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("task panicked", "task_id", id, "panic", p, "stack", string(debug.Stack()))
			err = permanent("Internal error while processing the image.")
		}
		interrupted := err != nil && errors.Is(ctx.Err(), context.Canceled)
		final := !interrupted && (err == nil || failsForGood(ctx, err))
		outcome := "retry"
		switch {
		case err == nil:
			outcome = "success"
		case final:
			outcome = "failure"
		}
		// The service time ends with the result's write: the upload's
		// delete that follows is not the client's wait.
		elapsed := time.Since(start)
		s.metrics.duration.Observe(elapsed.Seconds())
		if final {
			// The announcement races asynq's own bookkeeping of the end;
			// waiters look again until the state is final.
			s.ended(context.WithoutCancel(ctx), id, job.Upload, !announced)
		}
		s.metrics.tasks.WithLabelValues(outcome).Inc()
		if s.log.Enabled(ctx, slog.LevelDebug) {
			args := []any{"task_id", id, "outcome", outcome, "ms", detect.Millis(elapsed)}
			if err != nil {
				args = append(args, "error", err)
			}
			s.log.Debug("task ended", args...)
		}
	}()
	if err := json.Unmarshal(t.Payload(), &job); err != nil || job.Upload == "" {
		return permanent("The task is malformed.")
	}
	data, err := s.uploads.Load(ctx, job.Upload, s.buffers.get())
	defer func() { s.buffers.put(data) }() // the detector keeps no part of it
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if detect.ErrorCode(err) == detect.ENOTFOUND {
		// An attempt before this one may have written the result and
		// deleted the upload, and then not seen its end recorded: its
		// worker's shutdown time ran out at that moment, or it died.
		written, rerr := s.resultWritten(ctx, id)
		switch {
		case rerr != nil:
			s.log.Error("reading the task's result", "task_id", id, "error", rerr)
			return errInternal
		case written:
			return nil
		}
		switch age := time.Since(job.StoredAt); {
		case job.StoredAt.IsZero() || age >= s.uploadMaxAge:
			return permanent("The uploaded image is gone (it expired before a worker took it); submit it again.")
		case s.watch.seesAll():
			// This worker sees every API's store: no worker would find
			// the upload, and the deployment is not at fault.
			s.log.Warn("an upload the API stored within UPLOAD_MAX_AGE is missing, though this worker sees the uploads of every API on its queue: it was removed (by hand, by the sweeper of a worker with a shorter UPLOAD_MAX_AGE, or by an API whose enqueue seemed to fail)",
				"task_id", id, "stored_ago", age.Round(time.Millisecond))
			return permanent("The uploaded image is gone; submit it again.")
		default:
			s.log.Error("an upload the API stored within UPLOAD_MAX_AGE is missing: this worker does not see the API's uploads. The API and "+sameStoreAdvice,
				"task_id", id, "stored_ago", age.Round(time.Millisecond))
			return errUploadUnseen
		}
	}
	if err != nil {
		s.log.Error("reading upload", "task_id", id, "error", err)
		return errInternal
	}
	res, err := s.detector.Detect(ctx, data, job.Params)
	if ctx.Err() != nil {
		// The shutdown time or the lease ran out, or the deadline
		// passed (asynq logs which): nothing more can be written for
		// this attempt.
		return ctx.Err()
	}
	if errors.Is(err, detect.ErrDeviceLost) {
		return s.handBack(ctx, id)
	}
	switch detect.ErrorCode(err) {
	case "":
	case detect.EINVALID, detect.EUNSUPPORTED, detect.ETOOLARGE:
		return permanent(detect.ErrorMessage(err))
	default:
		s.log.Error("detect", "task_id", id, "error", err)
		return errInternal
	}
	b, err := json.Marshal(res)
	if err != nil {
		s.log.Error("encoding the result", "task_id", id, "error", err)
		return errInternal
	}
	lost, err := s.writeResult(ctx, id, b)
	if err != nil {
		s.log.Error("writing the result", "task_id", id, "error", err)
		return errInternal
	}
	announced = true
	if lost {
		s.metrics.lost.Inc()
		s.log.Warn("Redis lost the task while it ran (restarted without persistence, failed over, or evicting); its result is kept for its client",
			"task_id", id, "result_ttl", s.resultTTL)
	}
	return nil
}

// ended deletes the upload (if any) of task id, which ended for good, and
// then, when announce is set, announces its end to the clients waiting on
// it (a result's write announces it itself, see writeResultCmd); it logs
// what it could not do.
func (s *Server) ended(ctx context.Context, id, upload string, announce bool) {
	if upload != "" {
		if err := s.uploads.Delete(ctx, upload); err != nil {
			s.log.Warn("deleting upload", "task_id", id, "error", err)
		}
	}
	if !announce {
		return
	}
	if err := Announce(ctx, s.rdb, id); err != nil {
		s.log.Warn("announcing task end", "task_id", id, "error", err)
	}
}

// LostTasks is the counter of tasks whose data Redis lost, for the
// janitor's count too (JanitorConfig.Lost).
func (s *Server) LostTasks() prometheus.Counter { return s.metrics.lost }

// writeResultCmd writes a task's result (ARGV[1]) into its hash
// (KEYS[1]) and announces the task's end (ARGV[4]) on the done channel
// (ARGV[3]), as Announce does. A hash that is gone, its task lost by Redis
// while the task ran, is written anew with only the result, to expire
// after ARGV[2] seconds; it returns 1 then, 0 otherwise. A hash without
// the task's message ("msg", which asynq writes at the enqueue) is such a
// hash written by an earlier try whose reply was lost, and returns 1 too.
//
// The announcement goes out with the write, in one round trip, before
// the worker deletes the upload: a client waiting on the task is answered
// without waiting for either (docs/performance.md, What each choice
// bought).
var writeResultCmd = redis.NewScript(`
local lost = redis.call("HEXISTS", KEYS[1], "msg") == 0
redis.call("HSET", KEYS[1], "result", ARGV[1])
if lost then
	redis.call("EXPIRE", KEYS[1], ARGV[2])
end
redis.call("PUBLISH", ARGV[3], ARGV[4])
return lost and 1 or 0`)

// writeResult writes the result of the task running in ctx, as asynq's
// ResultWriter does, announces the task's end, and reports whether Redis
// had lost the task: asynq would leave such a result without an expiry.
// A write that fails is tried again, ever less often up to once a second,
// for resultWriteRetry or until ctx ends: a result in hand outlives a
// short Redis outage, and the second after one in which go-redis still
// refuses to dial, instead of failing the attempt, whose retry would
// detect the image again (or, on the last attempt, fail the task). It
// returns Redis' last error.
func (s *Server) writeResult(ctx context.Context, id string, result []byte) (lost bool, err error) {
	give := time.Now().Add(resultWriteRetry)
	var unavailable backoff
	for {
		n, err := writeResultCmd.Run(ctx, s.rdb, []string{runningTaskKey(ctx, id)},
			result, max(int64(s.resultTTL/time.Second), 1), DoneChannel, id).Int()
		if err == nil || time.Now().Add(unavailable.next()).After(give) {
			return n == 1, err
		}
		s.log.Debug("writing the result failed; trying again", "task_id", id, "in", unavailable.next(), "error", err)
		if !unavailable.sleep(ctx) {
			return false, err
		}
	}
}

// resultWriteRetry is how long a worker tries to write a result that
// Redis fails to take.
const resultWriteRetry = 10 * time.Second

// resultWritten reports whether the task running in ctx already has a
// result in its hash, written by an earlier attempt. It returns Redis'
// error when it cannot tell.
func (s *Server) resultWritten(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.HStrLen(ctx, runningTaskKey(ctx, id), "result").Result()
	return n > 0, err
}

// runningTaskKey is the hash of task id, which runs in ctx.
func runningTaskKey(ctx context.Context, id string) string {
	queue, _ := asynq.GetQueueName(ctx)
	return taskKey(queue, id)
}

// errUploadUnseen fails an attempt whose upload the API stored within
// UPLOAD_MAX_AGE but this worker cannot find: a worker that does not see
// the API's uploads (another folder, another host, another UPLOAD_STORE).
// It is retried, so that a worker that sees them may take the task.
var errUploadUnseen = errors.New("The workers could not find the uploaded image that the API had stored: the service is misconfigured. Submit it again later.")

// errInternal is the message a client reads when a task failed for a
// fault of the service; the details go to the log.
var errInternal = errors.New("Internal error while processing the image; the task was retried and failed each time.")

func lastAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	max, ok2 := asynq.GetMaxRetry(ctx)
	return ok1 && ok2 && n >= max
}

// failsForGood reports whether asynq ends the task running in ctx when
// its attempt fails with err, instead of retrying it: a final error, or
// the last attempt.
func failsForGood(ctx context.Context, err error) bool {
	return errors.Is(err, asynq.SkipRetry) || lastAttempt(ctx)
}

// logFailure logs the failed attempt of the task running in ctx: its end,
// with the sentence its client reads, when it is not retried; that its
// worker lost its lease, when asynq cut it short for that; otherwise that
// it will be retried, the attempt's cause having been logged where it
// arose.
func logFailure(ctx context.Context, log *slog.Logger, err error) {
	id, _ := asynq.GetTaskID(ctx)
	if errors.Is(err, asynq.ErrLeaseExpired) {
		// asynq handed the task on when the lease ran out; it may have
		// ended elsewhere meanwhile, and whatever this attempt did is
		// not recorded.
		log.Warn("task attempt cut short: this worker lost the task's lease (it was stopped, or could not reach Redis, for longer than the lease); asynq runs the task again unless another attempt has finished it", "task_id", id)
		return
	}
	if failsForGood(ctx, err) {
		log.Warn("task failed", "task_id", id, "error", err)
		return
	}
	if !isFailure(err) {
		return // handBack logged it
	}
	retried, _ := asynq.GetRetryCount(ctx)
	retries, _ := asynq.GetMaxRetry(ctx)
	log.Warn("task attempt failed; it will be retried", "task_id", id, "attempt", retried+1, "attempts", retries+1)
}
