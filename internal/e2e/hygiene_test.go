package e2e

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestFailuresExpire: the janitor deletes FAILURE tasks past RESULT_TTL,
// as asynq's retention does for results.
func TestFailuresExpire(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 1)
	id := h.submit(brokenPNG(t), nil)
	if ti := h.result(id); ti.Status != detect.StatusFailure {
		t.Fatalf("%+v", ti)
	}
	if n, err := asynq.ExpireFailures(h.rdb, "detect", time.Hour); err != nil || n != 0 {
		t.Fatalf("a fresh failure was expired: %d %v", n, err)
	}
	if n, err := asynq.ExpireFailures(h.rdb, "detect", 0); err != nil || n != 1 {
		t.Fatalf("ExpireFailures: %d %v", n, err)
	}
	if r := h.get("/result/" + id); r.status != http.StatusNotFound {
		t.Errorf("expired failure: %d %s", r.status, r.raw)
	}
}

// TestProcessesExportRuntimeMetrics: the API and the worker processes
// both export Go's and the process's metrics (goroutines, heap, open
// files, resident memory) beside their own, so that a leak shows on a
// dashboard; the API the queue's depth and the free space of the upload
// folder's disk too.
func TestProcessesExportRuntimeMetrics(t *testing.T) {
	h := newHarness(t, options{})
	apiEnv, apiURL := h.apiEnv(t)
	testenv.Start(t, "api", apiEnv...)
	awaitReady(t, "api", apiURL)
	_, workerHealth := startReadyWorker(t, h.workerEnv(t))
	for name, url := range map[string]string{"api": apiURL, "worker": workerHealth} {
		metrics := getText(t, url+"/metrics")
		want := []string{"go_goroutines ", "go_memstats_heap_inuse_bytes ", "process_open_fds ", "process_resident_memory_bytes "}
		if name == "api" {
			want = append(want, `yoloserve_queue_tasks{queue="detect",state="pending"} 0`)
		}
		for _, m := range want {
			if !strings.Contains(metrics, "\n"+m) {
				t.Errorf("%s /metrics lacks %s", name, strings.TrimSpace(m))
			}
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(h.uploadDir, &st); err != nil {
		t.Fatal(err)
	}
	free := float64(st.Bavail) * float64(st.Bsize)
	if got := metric(t, apiURL, "yoloserve_api_upload_disk_free_bytes"); !(got >= free*0.95 && got <= free*1.05) { // NaN: absent
		t.Errorf("API yoloserve_api_upload_disk_free_bytes %v, want about %.0f (statfs of UPLOAD_DIR)", got, free)
	}
}

// TestWorkerThreadsRunAsBatch: every thread of a running worker, ONNX
// Runtime's among them, is under SCHED_BATCH, so that its wake-ups do not
// preempt an inference or the API on a shared machine (docs/performance.md,
// "What each choice bought"); the API's threads keep the normal policy.
func TestWorkerThreadsRunAsBatch(t *testing.T) {
	h := newHarness(t, options{})
	apiEnv, apiURL := h.apiEnv(t)
	api := testenv.Start(t, "api", apiEnv...)
	awaitReady(t, "api", apiURL)
	w, _ := startReadyWorker(t, h.workerEnv(t, "ORT_SOLO_THREADS=2", "LOG_LEVEL=info"))
	// The solo session's second thread is one of ONNX Runtime's own.
	for _, p := range []struct {
		name   string
		pid    int
		policy uint32
	}{{"worker", w.Pid(), unix.SCHED_BATCH}, {"api", api.Pid(), unix.SCHED_NORMAL}} {
		got := testenv.ThreadPolicies(t, p.pid)
		if len(got) < 2 {
			t.Fatalf("%s: %d threads read", p.name, len(got))
		}
		for tid, policy := range got {
			if policy != p.policy {
				t.Errorf("%s thread %d: policy %d, want %d", p.name, tid, policy, p.policy)
			}
		}
	}
	testenv.Eventually(t, 5*time.Second, `the worker never logged "worker running" with sched=batch`, func() bool {
		return strings.Contains(w.Output(), "sched=batch")
	})
}

// TestAlertsAndDashboard: every rule of deploy/prometheus/alerts.yml
// parses as PromQL, says how severe it is and what happened, and names
// only metrics that the API and worker processes export (those of the
// TLS certificates, on processes over a TLS Redis), as does every query
// of the Grafana dashboard deploy/grafana/yoloserve.json: a misspelt
// metric would make an alert that never fires, or an empty graph.
func TestAlertsAndDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For    string
				Labels, Annotations map[string]string
			}
		}
	}
	if err := yaml.UnmarshalStrict(b, &file); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "yoloserve.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dashboard); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, options{})
	// The limit's gauge is exported only under a limit.
	if err := h.rdb.ConfigSet(context.Background(), "maxmemory", "1gb").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.rdb.ConfigSet(context.Background(), "maxmemory", "0") })
	apiEnv, apiURL := h.apiEnv(t)
	testenv.Start(t, "api", apiEnv...)
	awaitReady(t, "api", apiURL)
	_, workerHealth := startReadyWorker(t, h.workerEnv(t))
	getText(t, apiURL+"/models") // a request, counted
	var exported strings.Builder
	testenv.Eventually(t, 10*time.Second, "the API never read Redis's memory", func() bool {
		return !math.IsNaN(metric(t, apiURL, "yoloserve_redis_memory_limit_bytes"))
	})
	// The batch counters, on a batching worker.
	dynamic, _ := filepath.Abs(testenv.Model(t, "yolov8n-dynamic.onnx"))
	_, batchingWorker := startReadyWorker(t, h.workerEnv(t, "MODEL_PATH="+dynamic, "BATCH_MAX=2"))
	for _, url := range []string{apiURL, workerHealth, batchingWorker} {
		exported.WriteString(getText(t, url+"/metrics"))
	}
	// The TLS certificates' gauges, on processes over a TLS Redis.
	_, rc, env := startTLSRedis(t, t.TempDir())
	_, _, tlsWorker := detectsOver(t, h, rc, env...)
	for _, url := range []string{h.api.URL, tlsWorker} {
		exported.WriteString(getText(t, url+"/metrics"))
	}

	rules := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			rules++
			checkQuery(t, r.Alert, r.Expr, exported.String())
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if r.Alert == "" || !slices.Contains([]string{"warning", "critical"}, r.Labels["severity"]) || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %+v: want a name, a severity (warning or critical), a summary and a description", r)
			}
		}
	}
	if rules == 0 {
		t.Error("no rules")
	}

	// The dashboard's layout and schema: deploy's TestGrafanaDashboard.
	// Grafana gives rate() a range that fits the graph's step.
	queries := 0
	for _, p := range dashboard.Panels {
		for _, q := range p.Targets {
			queries++
			checkQuery(t, p.Title, strings.ReplaceAll(q.Expr, "$__rate_interval", "1m"), exported.String())
		}
	}
	if queries == 0 {
		t.Error("no queries in the dashboard")
	}
}

// checkQuery checks that expr, the query of what, parses as PromQL and
// names only metrics in exported, the processes' /metrics text.
func checkQuery(t *testing.T, what, expr, exported string) {
	t.Helper()
	e, err := metricsql.Parse(expr)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	metricsql.VisitAll(e, func(e metricsql.Expr) {
		me, ok := e.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label == "__name__" && !strings.Contains(exported, "\n"+lf.Value+"{") && !strings.Contains(exported, "\n"+lf.Value+" ") {
					t.Errorf("%s: no process exports %s", what, lf.Value)
				}
			}
		}
	})
}

// usedMemory reads Redis's used_memory.
func usedMemory(t *testing.T, h *harness) int64 {
	v, ok := testenv.InfoField(t, h.rdb, "memory", "used_memory")
	if !ok {
		t.Fatal("no used_memory")
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// TestSoak runs YOLOSERVE_SOAK tasks (make soak: 10000) through the API
// and a worker, then checks that UPLOAD_DIR is empty and that Redis memory
// returns to where it started once results expire.
func TestSoak(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("YOLOSERVE_SOAK"))
	if n <= 0 {
		t.Skip("set YOLOSERVE_SOAK=N (make soak) to run N tasks")
	}
	ttl := 5 * time.Second
	h := newHarness(t, options{queue: asynq.QueueConfig{ResultTTL: ttl, MaxQueue: n + 1}})
	h.startWorker(detector(t), 2)
	images := [][]byte{testenv.ReadImage(t, "bus.jpg"), testenv.ReadImage(t, "zidane.jpg"), brokenPNG(t)}
	// Warm up: the first tasks load asynq's Lua scripts and create its
	// counters, memory that stays; measure from after their expiry.
	for _, img := range images {
		h.result(h.submit(img, nil))
	}
	testenv.Eventually(t, 30*time.Second, "warm-up results did not expire", func() bool {
		asynq.ExpireFailures(h.rdb, "detect", ttl)
		n, _ := h.rdb.Exists(context.Background(), "asynq:{detect}:completed", "asynq:{detect}:archived").Result()
		return n == 0
	})
	time.Sleep(ttl)
	before := usedMemory(t, h)
	keysBefore := h.rdb.DBSize(context.Background()).Val()
	start := time.Now()
	ids := make(chan string, 64)
	var wg sync.WaitGroup
	var failures, successes int
	var mu sync.Mutex
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				ti := h.result(id)
				mu.Lock()
				if ti.Status == detect.StatusSuccess {
					successes++
				} else {
					failures++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		ids <- h.submit(images[i%len(images)], nil)
	}
	close(ids)
	wg.Wait()
	took := time.Since(start)
	peak := usedMemory(t, h)
	testenv.Eventually(t, 10*time.Second, "uploads left after the soak", func() bool { return len(h.uploadsLeft()) == 0 })
	// Results expire after RESULT_TTL (asynq's janitor runs every 8s);
	// failures after the service's janitor.
	var after int64
	defer func() {
		if t.Failed() {
			keys, _ := h.rdb.Keys(context.Background(), "*").Result()
			t.Logf("before %d, after %d; keys: %v", before, after, keys)
		}
	}()
	testenv.Eventually(t, 60*time.Second, "Redis memory did not come back", func() bool {
		asynq.ExpireFailures(h.rdb, "detect", ttl)
		after = usedMemory(t, h)
		return after <= before+1<<20 && h.rdb.DBSize(context.Background()).Val() == keysBefore
	})
	wantFail := n / len(images)
	if failures != wantFail || successes != n-wantFail {
		t.Errorf("%d SUCCESS, %d FAILURE; want %d and %d", successes, failures, n-wantFail, wantFail)
	}
	t.Logf("soak: %d tasks in %v (%.1f/s): %d SUCCESS, %d FAILURE (undecodable on purpose), 0 lost; uploads left 0; Redis keys %d before and after; used_memory %d KiB before, %d KiB at the end of the run, %d KiB after expiry",
		n, took.Round(time.Second), float64(n)/took.Seconds(), successes, failures, keysBefore, before>>10, peak>>10, after>>10)
}

// TestWorkerKeepsTelemetryOff: a worker that loads ONNX Runtime and
// detects an image leaves nothing in its home folder or its TMPDIR. The
// library the build fetches (1.31, as 1.30) has its own telemetry on for
// Linux: a process that loads it looks up Microsoft's collector to send
// usage events, and keeps a device ID and an event cache under
// ~/.cache/Microsoft/DeveloperTools/.onnxruntime and a .ses in TMPDIR (1.30
// a mat-debug-PID.log too); the worker turns it off unless
// ORT_TELEMETRY=true.
func TestWorkerKeepsTelemetryOff(t *testing.T) {
	h := newHarness(t, options{})
	home, tmp := t.TempDir(), t.TempDir()
	w, _ := startReadyWorker(t, h.workerEnv(t, "HOME="+home, "TMPDIR="+tmp))
	checkBusDetections(t, decodeResult(t, h.result(h.submit(testenv.ReadImage(t, "bus.jpg"), nil))))
	w.Signal(syscall.SIGTERM)
	if err := w.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("the worker's exit: %v", err)
	}
	for _, dir := range []string{home, tmp} {
		var left []string
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			if p != dir {
				left = append(left, strings.TrimPrefix(p, dir+"/"))
			}
			return err
		})
		if len(left) > 0 {
			t.Errorf("the worker left in %s: %v, want nothing (ONNX Runtime's telemetry)", dir, left)
		}
	}
}
