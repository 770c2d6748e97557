package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/testenv"
)

// TestProcessesWarnOfAnEvictingRedis: the API and the worker say at start
// that a Redis with a memory limit and an evicting policy, or without an
// append-only file, would drop their tasks, and which setting to change.
func TestProcessesWarnOfAnEvictingRedis(t *testing.T) {
	h := newHarness(t, options{})
	if err := h.rdb.ConfigSet(context.Background(), "maxmemory", "1gb").Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.rdb.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.rdb.ConfigSet(context.Background(), "maxmemory", "0")
		h.rdb.ConfigSet(context.Background(), "maxmemory-policy", "noeviction")
	})
	apiEnv, _ := h.apiEnv(t)
	api := testenv.Start(t, "api", apiEnv...)
	worker := testenv.Start(t, "worker", h.workerEnv(t)...)
	for name, p := range map[string]*testenv.Process{"api": api, "worker": worker} {
		testenv.Eventually(t, 30*time.Second, name+" never warned of the evicting Redis", func() bool {
			out := p.Output()
			return strings.Contains(out, "level=WARN") && strings.Contains(out, "maxmemory-policy allkeys-lru") && strings.Contains(out, "set maxmemory-policy noeviction") &&
				strings.Contains(out, "set appendonly yes")
		})
	}
}

// startAPIWithRedisLimit starts an API process with env added and waits
// until it has read Redis's memory limit; it returns the process and its
// URL.
func (h *harness) startAPIWithRedisLimit(limit int64, env ...string) (*testenv.Process, string) {
	h.t.Helper()
	env, url := h.apiEnv(h.t, env...)
	api := testenv.Start(h.t, "api", env...)
	awaitReady(h.t, "api", url)
	testenv.Eventually(h.t, 10*time.Second, "the API never read Redis's memory limit", func() bool {
		return metric(h.t, url, "yoloserve_redis_memory_limit_bytes") == float64(limit)
	})
	return api, url
}

// TestNearlyFullRedisKeepsRoom: with uploads stored in Redis under a
// memory limit (noeviction), the API refuses uploads with 503 once Redis
// is nearly full, before Redis itself refuses writes, so that workers can
// still write the queued tasks' results and free their uploads; then it
// takes uploads again.
func TestNearlyFullRedisKeepsRoom(t *testing.T) {
	h := newHarness(t, options{})
	limit := testenv.LimitRedisMemory(t, h.rdb, 16<<20) // 90% of it leaves room for three uploads more
	api, url := h.startAPIWithRedisLimit(limit, "UPLOAD_STORE=redis", "LOG_LEVEL=info")

	bus := testenv.ReadImage(t, "bus.jpg")
	// seen waits until the API has read Redis's memory since the moment
	// given, so that its next admission counts every upload stored before.
	seen := func(since time.Time) {
		testenv.Eventually(t, 10*time.Second, "the API never read Redis's memory again", func() bool {
			return metric(t, url, "yoloserve_redis_memory_read_timestamp_seconds") > float64(since.UnixNano())/1e9
		})
	}
	var accepted []string
	var refusal string
	testenv.Eventually(t, 60*time.Second, "uploads were never refused with Redis nearly full", func() bool {
		r := h.postRaw(url, bytes.NewReader(bus))
		at := time.Now()
		switch r.status {
		case http.StatusAccepted:
			accepted = append(accepted, r.body["task_id"].(string))
			seen(at)
			return false
		case http.StatusServiceUnavailable:
			refusal = string(r.raw)
			// The refusal counted the last uploads as twice their size
			// (Redis's copy in its query buffer) until Redis shows them.
			// The next reading logs that Redis is nearly full, or finds
			// room for more (by then the buffers are trimmed); the
			// reading after it has certainly logged.
			seen(at)
			seen(time.Now())
			return strings.Contains(api.Output(), "Redis is nearly full")
		}
		t.Fatalf("POST: %d %s", r.status, r.raw)
		return false
	})
	usedNow, _ := testenv.InfoField(t, h.rdb, "memory", "used_memory")
	if n, _ := strconv.ParseInt(usedNow, 10, 64); !strings.Contains(refusal, "nearly out of memory") || n >= limit {
		t.Fatalf("after %d uploads: %s with Redis at %s of %d bytes; want the API's refusal before Redis is full", len(accepted), refusal, usedNow, limit)
	}

	startReadyWorker(t, h.workerEnv(t, "UPLOAD_STORE=redis"))
	testenv.Eventually(t, 60*time.Second, "uploads were not taken again once the queue was empty", func() bool {
		return h.postRaw(url, bytes.NewReader(bus)).status == http.StatusAccepted
	})
	for _, id := range accepted {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s, accepted while Redis filled up: %s %s", id, ti.Status, ti.Error)
		}
	}
}

// TestRedisBurstKeepsRoom: a burst of uploads that arrives between two of
// the API's readings of Redis's memory, more than Redis has room for, is
// refused by the API past 90% of the limit, as uploads one at a time are:
// Redis itself refuses nothing, and every upload taken is detected. With
// two API replicas sharing the burst, each takes its share of the room.
func TestRedisBurstKeepsRoom(t *testing.T) {
	for _, replicas := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d replicas", replicas), func(t *testing.T) {
			h := newHarness(t, options{})
			limit := testenv.LimitRedisMemory(t, h.rdb, 40<<20)
			var urls []string
			for range replicas {
				_, url := h.startAPIWithRedisLimit(limit, "UPLOAD_STORE=redis", "MAX_INFLIGHT_UPLOADS=256")
				urls = append(urls, url)
			}
			for _, url := range urls {
				testenv.Eventually(t, 10*time.Second, "the replicas never counted each other", func() bool {
					return metric(t, url, "yoloserve_redis_memory_sharing_replicas") == float64(replicas)
				})
			}
			burstKeepsRoom(h, urls)
		})
	}
}

// burstKeepsRoom sends 160 uploads of bus.jpg at once, about twice the
// room of a Redis limited to 40 MB, spread over the API replicas at urls,
// and checks that only the API refused uploads and that every upload
// taken is then detected.
func burstKeepsRoom(h *harness, urls []string) {
	t := h.t
	t.Helper()
	bus := testenv.ReadImage(t, "bus.jpg")
	var sent []<-chan answer
	for i := range 160 {
		req, _ := http.NewRequest(http.MethodPost, urls[i%len(urls)]+"/predict", bytes.NewReader(bus))
		req.Header.Set("Content-Type", "image/jpeg")
		sent = append(sent, sendLater(req))
	}
	var accepted []string
	refused := map[string]int{}
	for _, answers := range sent {
		a := <-answers
		switch {
		case a.err != nil:
			t.Fatalf("POST: %v", a.err)
		case a.status == http.StatusAccepted:
			var ti detect.TaskInfo
			json.Unmarshal([]byte(a.body), &ti)
			accepted = append(accepted, ti.ID)
		default:
			refused[fmt.Sprintf("%d %s", a.status, a.body)]++
		}
	}
	t.Logf("%d uploads taken, refused: %v", len(accepted), refused)
	for r := range refused {
		if !strings.Contains(r, "nearly out of memory") {
			t.Errorf("refused otherwise than by the API's memory watch: %s", r)
		}
	}
	if len(refused) == 0 {
		t.Errorf("all %d uploads taken, past Redis's limit", len(accepted))
	}
	if oom, _ := testenv.InfoField(t, h.rdb, "errorstats", "errorstat_OOM"); oom != "" {
		t.Errorf("Redis refused commands over its memory limit: %s", oom)
	}

	startReadyWorker(t, h.workerEnv(t, "UPLOAD_STORE=redis"))
	for _, id := range accepted {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s, taken in the burst: %s %s", id, ti.Status, ti.Error)
		}
	}
}

// TestRedisDownAndBack: with Redis down the API answers 503 with
// Retry-After within a few seconds and both readiness checks fail; when it
// is back everything works again without a restart.
func TestRedisDownAndBack(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 1)
	workerHealth := httptest.NewServer(apihttp.HealthHandler(func(ctx context.Context) error { return h.rdb.Ping(ctx).Err() }, nil))
	defer workerHealth.Close()
	if ti := h.result(h.submit(testenv.ReadImage(t, "bus.jpg"), nil)); ti.Status != detect.StatusSuccess {
		t.Fatalf("before the outage: %+v", ti)
	}

	h.redis.Stop()
	start := time.Now()
	r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "")
	took := time.Since(start)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || took > 5*time.Second {
		t.Errorf("POST with Redis down: %d %s (Retry-After %q) after %v", r.status, r.raw, r.header.Get("Retry-After"), took)
	}
	if r := h.get("/readyz"); r.status != http.StatusServiceUnavailable {
		t.Errorf("API /readyz with Redis down: %d", r.status)
	}
	if resp, err := http.Get(workerHealth.URL + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("worker /readyz with Redis down: %v %v", resp, err)
	}
	if r := h.get("/result/00000000-0000-0000-0000-000000000000"); r.status != http.StatusServiceUnavailable {
		t.Errorf("GET /result with Redis down: %d", r.status)
	}
	wantRefusals(t, h.api.URL, map[string]float64{"redis": 2}) // the POST and the GET, not /readyz
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("refused upload kept: %v", left)
	}
	t.Logf("503 answered %v after the request with Redis down", took.Round(time.Millisecond))

	h.redis.Start()
	back := time.Now()
	var id string
	testenv.Eventually(t, 20*time.Second, "API did not accept again after Redis came back", func() bool {
		r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "")
		if r.status == http.StatusAccepted {
			id = r.body["task_id"].(string)
			return true
		}
		return false
	})
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Errorf("after the outage: %+v", ti)
	}
	t.Logf("after Redis restarted: accepting again and the task SUCCESS within %v", time.Since(back).Round(time.Millisecond))
}

// TestWaitAcrossRedisRestart: a client waiting on GET /result?wait=30 while
// Redis restarts (with its append-only file) gets its task's SUCCESS once
// Redis is back and a worker has run the task, not a 503 at the outage's
// start.
func TestWaitAcrossRedisRestart(t *testing.T) {
	h := newHarness(t, options{})
	h.redis.RestartDurable()
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil) // no worker yet

	h.redis.Stop()
	var failed atomic.Int64
	h.rdb.AddHook(failedCommands("hmget", &failed)) // the task's state, read
	answers := getLater(h.api.URL + "/result/" + id + "?wait=30")
	testenv.Eventually(t, 10*time.Second, "the waiting request read nothing while Redis was down", func() bool {
		return failed.Load() > 0
	})
	h.redis.StartDurable()
	h.startWorker(detector(t), 1)
	select {
	case a := <-answers:
		if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, `"status":"SUCCESS"`) {
			t.Errorf("the waiting request got %d %s (%v), want 200 and SUCCESS", a.status, a.body, a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting request got no answer within 30s")
	}
}

// TestResultWriteRidesOutRedisRestart: Redis restarts (with its
// append-only file) while a worker detects an image; the result, in hand
// before Redis is back, is written by that attempt once it is: the task
// reads SUCCESS, and the image was detected once, not again by a retry.
func TestResultWriteRidesOutRedisRestart(t *testing.T) {
	h := newHarness(t, options{})
	h.redis.RestartDurable()
	g := &gate{d: detector(t), entered: make(chan struct{}, 2), release: make(chan struct{})}
	h.startWorker(g, 1)
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	awaitEntered(t, g, 1)

	h.redis.Stop()
	var failed atomic.Int64
	h.rdb.AddHook(failedCommands("evalsha", &failed)) // the result's write script
	close(g.release)
	testenv.Eventually(t, 10*time.Second, "the worker did not try to write the result while Redis was down", func() bool {
		return failed.Load() > 0
	})
	h.redis.StartDurable()
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Fatalf("after the restart: %+v", ti)
	}
	if n := len(g.entered); n != 0 {
		t.Errorf("the image was detected %d more times, want once", n)
	}
}

// failedCommands returns a hook that counts in n the commands named name
// (lower case) that a go-redis client sent and that failed.
func failedCommands(name string, n *atomic.Int64) redis.Hook {
	return afterCommand(func(cmd redis.Cmder, err error) error {
		if err != nil && cmd.Name() == name {
			n.Add(1)
		}
		return err
	})
}
