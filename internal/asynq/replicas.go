package asynq

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// replicaProbeEvery is how often a Queue whose replicas fell behind asks
// whether they caught up.
const replicaProbeEvery = time.Second

// Replicas that fall behind again within replicaRelapseProbes probe
// intervals (a minute) of catching up must then keep up for twice as
// many probes in a row as the last time before uploads wait for them
// again, up to replicaHoldProbes (a minute).
const (
	replicaRelapseProbes = 60
	replicaHoldProbes    = 60
)

// replicaWatch is a Queue's view of whether its tasks reach ReplicaAcks
// replicas within ReplicaWait. While they do, each Enqueue waits for
// them. Once they do not (a replica down, or too far behind), uploads
// stop waiting: each would otherwise hold its upload slot and its bytes
// for ReplicaWait, and a replica's outage would cut the API's intake to
// MAX_INFLIGHT_UPLOADS uploads per ReplicaWait and answer the rest 503,
// while the wait adds nothing to their safety. A probe then asks once a
// second until the replicas have kept up for a while: one probe, but
// twice as many as the last time when they fell behind again within a
// minute of catching up, so that a replica that keeps falling behind
// (slow, not down) does not stall an upload and log twice every second,
// nor drop yoloserve_api_redis_replicas_behind to 0 between its
// relapses. Each change is logged once, and every task accepted without
// its replicas' acknowledgement is counted.
type replicaWatch struct {
	behind       atomic.Bool
	unreplicated atomic.Uint64
	every        time.Duration // between probes: replicaProbeEvery, shorter in tests

	mu       sync.Mutex // orders close's cancel with a probe's start; guards hold and caughtUp
	hold     int        // probes in a row the replicas last had to pass
	caughtUp time.Time  // when they last passed them
	probes   sync.WaitGroup
	ctx      context.Context // ended by close
	cancel   context.CancelFunc
}

func newReplicaWatch() *replicaWatch {
	ctx, cancel := context.WithCancel(context.Background())
	return &replicaWatch{every: replicaProbeEvery, ctx: ctx, cancel: cancel}
}

// close stops the probe and waits for it.
func (r *replicaWatch) close() {
	r.mu.Lock()
	r.cancel()
	r.mu.Unlock()
	r.probes.Wait()
}

// fellBehind returns how many probes in a row the replicas must now pass
// before uploads wait for them again: one, or twice the last time's
// (at most replicaHoldProbes) when they caught up less than
// replicaRelapseProbes ago. r.mu must be held.
func (r *replicaWatch) fellBehind() int {
	if r.caughtUp.IsZero() || time.Since(r.caughtUp) >= replicaRelapseProbes*r.every {
		r.hold = 1
	} else {
		r.hold = min(2*r.hold, replicaHoldProbes)
	}
	return r.hold
}

// replicate waits until ReplicaAcks replicas hold everything written so
// far, the task id included, unless they were found behind: then it
// returns at once, the task counted as unreplicated. A wait that comes
// short turns the watch behind and starts the probe. The task is
// accepted either way: it is on the primary.
func (q *Queue) replicate(ctx context.Context, id string) {
	r, want := q.replicas, q.cfg.ReplicaAcks
	if r.behind.Load() {
		r.unreplicated.Add(1)
		return
	}
	n, err := q.waitReplicas(ctx)
	if err == nil && n >= want {
		return
	}
	r.unreplicated.Add(1)
	switch {
	case err != nil && ctx.Err() != nil: // the client left during the wait
		return
	case err != nil:
		q.cfg.Logger.Warn("task not yet on enough replicas", "task_id", id, "want", want, "error", err)
		return
	}
	if !r.behind.CompareAndSwap(false, true) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	hold := r.fellBehind()
	q.cfg.Logger.Warn("tasks do not reach REDIS_WAIT_REPLICAS replicas in time: uploads are accepted without waiting for them until they keep up again, and a failover meanwhile may lose those tasks",
		"task_id", id, "acks", n, "want", want, "wait", q.cfg.ReplicaWait, "keep_up_for", time.Duration(hold)*r.every)
	if r.ctx.Err() == nil { // not closed
		r.probes.Add(1)
		go q.probeReplicas(hold)
	}
}

// probeReplicas asks every r.every whether ReplicaAcks replicas hold
// everything written so far, and turns the watch back once they have for
// hold probes in a row. It returns then, or when the Queue closes.
func (q *Queue) probeReplicas(hold int) {
	r := q.replicas
	defer r.probes.Done()
	passed := 0
	until(r.ctx, r.every, func() bool {
		n, err := q.waitReplicas(r.ctx)
		if err != nil || n < q.cfg.ReplicaAcks {
			passed = 0
			return false
		}
		if passed++; passed < hold {
			return false
		}
		r.mu.Lock()
		r.caughtUp = time.Now()
		r.mu.Unlock()
		r.behind.Store(false)
		q.cfg.Logger.Info("tasks reach REDIS_WAIT_REPLICAS replicas again: uploads wait for them again",
			"acks", n, "kept_up_for", time.Duration(hold)*r.every)
		return true
	})
}

// waitReplicas returns how many replicas hold everything written so far,
// waiting up to ReplicaWait for ReplicaAcks of them. WAIT counts a
// connection's own writes, and asynq enqueued on some pooled connection,
// so a marker write and the WAIT go down one connection together: the
// replication stream is ordered, so a replica that has the marker has
// the task. It returns Redis's error, or ctx's.
func (q *Queue) waitReplicas(ctx context.Context) (int, error) {
	var wait *redis.Cmd
	if _, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "yoloserve:replication-marker")
		wait = p.Do(ctx, "WAIT", q.cfg.ReplicaAcks, q.cfg.ReplicaWait.Milliseconds())
		return nil
	}); err != nil {
		return 0, err
	}
	return wait.Int()
}

var (
	unreplicatedDesc = prometheus.NewDesc("yoloserve_api_tasks_unreplicated_total",
		"Tasks this API accepted that REDIS_WAIT_REPLICAS replicas had not acknowledged: a failover before they caught up may lose them. Always 0 without REDIS_WAIT_REPLICAS.",
		nil, nil)
	behindDesc = prometheus.NewDesc("yoloserve_api_redis_replicas_behind",
		"1 while Redis's replicas do not acknowledge tasks within the wait (REDIS_WAIT_REPLICAS): uploads are then accepted without waiting for them, and counted in yoloserve_api_tasks_unreplicated_total. Always 0 without REDIS_WAIT_REPLICAS.",
		nil, nil)
)

// Describe sends the descriptions of the Queue's metrics.
func (q *Queue) Describe(ch chan<- *prometheus.Desc) {
	ch <- unreplicatedDesc
	ch <- behindDesc
}

// Collect sends the Queue's metrics: the tasks accepted without their
// replicas' acknowledgement, and whether the replicas are behind.
func (q *Queue) Collect(ch chan<- prometheus.Metric) {
	behind := 0.0
	if q.replicas.behind.Load() {
		behind = 1
	}
	ch <- prometheus.MustNewConstMetric(unreplicatedDesc, prometheus.CounterValue, float64(q.replicas.unreplicated.Load()))
	ch <- prometheus.MustNewConstMetric(behindDesc, prometheus.GaugeValue, behind)
}
