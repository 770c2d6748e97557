package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	hasynq "github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// workerEnv is the environment of a worker process on h's Redis and
// upload folder.
func (h *harness) workerEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	env := append([]string{"REDIS_URL=" + h.redis.URL, "UPLOAD_DIR=" + h.uploadDir}, workerProcessEnv(t)...)
	return append(env, extra...)
}

// workerProcessEnv is what a worker process needs besides Redis and its
// uploads: the model and ONNX Runtime by absolute path, a free health
// port, and two slots of one thread.
func workerProcessEnv(t *testing.T) []string {
	t.Helper()
	lib, err := onnx.FindLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	lib, _ = filepath.Abs(lib)
	model, _ := filepath.Abs(testenv.Model(t, "yolov8n.onnx"))
	return []string{
		"MODEL_PATH=" + model, "ORT_LIB=" + lib,
		fmt.Sprintf("WORKER_ADDR=127.0.0.1:%d", testenv.FreePort(t)), "WORKER_CONCURRENCY=2", "ORT_THREADS=1",
	}
}

func (h *harness) status(id string) string {
	s, _ := h.get("/result/" + id).body["status"].(string)
	return s
}

// awaitStarted waits until one of the tasks reads STARTED, and returns
// its id. Asking for several keeps a test from missing the state, as it
// would for a single task that ends before the first look.
func (h *harness) awaitStarted(ids []string) string {
	h.t.Helper()
	var started string
	testenv.Eventually(h.t, 30*time.Second, "no task was ever STARTED", func() bool {
		i := slices.IndexFunc(ids, func(id string) bool { return h.status(id) == "STARTED" })
		if i >= 0 {
			started = ids[i]
		}
		return i >= 0
	})
	return started
}

// TestWorkerKilledMidTask kills a worker process with SIGKILL while it
// runs tasks; another worker finishes every one of them, within 55 s of
// the kill. A task's lease ends up to 30 s after the kill, and a worker
// takes the task back 5 s later, looking every 5 s (lease.go); asynq's
// own recoverer, which waits until a minute after the lease's end, could
// not before 55 s.
func TestWorkerKilledMidTask(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 40 s: the tasks' leases")
	}
	h := newHarness(t, options{})
	a := testenv.Start(t, "worker", h.workerEnv(t)...)
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	}
	h.awaitStarted(ids)
	a.Kill()
	killed := time.Now()
	inFlight := 0
	for _, id := range ids {
		if h.status(id) == "STARTED" {
			inFlight++
		}
	}
	bEnv := h.workerEnv(t)
	b := testenv.Start(t, "worker", bEnv...)
	deadline := killed.Add(55 * time.Second)
	for _, id := range ids {
		for !detect.Status(h.status(id)).Done() {
			if time.Now().After(deadline) {
				t.Fatalf("task %s still %s 55s after the kill", id, h.status(id))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s", id, ti.Status, ti.Error)
		}
	}
	t.Logf("worker killed with %d tasks in flight; all %d tasks SUCCESS %.1fs after the kill", inFlight, len(ids), time.Since(killed).Seconds())
	if log := b.Output(); !strings.Contains(log, "took back tasks from a worker that stopped renewing their lease") {
		t.Errorf("the second worker did not say it took the tasks back:\n%s", log)
	}
	if n := metric(t, workerHealthURL(bEnv), `yoloserve_worker_recovered_tasks_total{outcome="retry"}`); n != float64(inFlight) {
		t.Errorf("the second worker counted %v tasks taken back, want the %d in flight", n, inFlight)
	}
	testenv.Eventually(t, 5*time.Second, "uploads left behind", func() bool { return len(h.uploadsLeft()) == 0 })
}

// TestLeaseLostOnLastAttempt: a worker cut off from Redis (a network
// partition) holds a task on its last attempt. Once the task's lease has
// ended, another worker fails it: the client waiting on it reads FAILURE
// at once, saying why, and its upload is deleted.
func TestLeaseLostOnLastAttempt(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: -1}})
	proxy := testenv.StartProxy(t, h.redis.Addr)
	cutOff := proxy.Client(t, 100*time.Millisecond)
	g := &gate{d: detector(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	w := asynq.NewServer(cutOff, asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: time.Millisecond}, g, h.uploads)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proxy.Heal()
		w.Shutdown()
	})
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	awaitEntered(t, g, 1)
	proxy.Cut()
	// The lease ends 30 s after its last renewal; end it now, 6 s ago.
	lease := redis.Z{Member: id, Score: float64(time.Now().Add(-6 * time.Second).Unix())}
	if err := h.rdb.ZAddXX(context.Background(), "asynq:{detect}:lease", lease).Err(); err != nil {
		t.Fatal(err)
	}
	answers := getLater(h.api.URL + "/result/" + id + "?wait=30")
	testenv.Eventually(t, 10*time.Second, "the request never waited", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_result_waits") == 1
	})
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1, LeaseCheckInterval: 50 * time.Millisecond})
	select {
	case a := <-answers:
		want := "The workers processing this image stopped before finishing, on every attempt; submit it again."
		if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, `"status":"FAILURE"`) || !strings.Contains(a.body, want) {
			t.Errorf("the waiting request got %d %s (%v), want FAILURE and %q", a.status, a.body, a.err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request got no answer within 10s")
	}
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("uploads left: %v", left)
	}
}

// startReadyWorker starts a worker process with env and waits until its
// /readyz answers 200; it returns the process and its health server's URL.
func startReadyWorker(t *testing.T, env []string) (*testenv.Process, string) {
	t.Helper()
	w := testenv.Start(t, "worker", env...)
	health := workerHealthURL(env)
	awaitReady(t, "worker", health)
	return w, health
}

// workerHealthURL is the URL of the health server of a worker process with
// env, which sets WORKER_ADDR.
func workerHealthURL(env []string) string {
	return "http://" + strings.TrimPrefix(env[slices.IndexFunc(env, func(e string) bool { return strings.HasPrefix(e, "WORKER_ADDR=") })], "WORKER_ADDR=")
}

// apiEnv is the environment of an API process on h's Redis and upload
// folder, extra added (later entries win), and the URL it serves.
func (h *harness) apiEnv(t *testing.T, extra ...string) ([]string, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	return append([]string{"REDIS_URL=" + h.redis.URL, "UPLOAD_DIR=" + h.uploadDir, "API_ADDR=" + addr}, extra...), "http://" + addr
}

// awaitReady waits up to 30 s for name's /readyz at url to answer 200.
func awaitReady(t *testing.T, name, url string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, name+" /readyz never 200", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
}

// TestWorkerSIGTERMFinishesRunningTasks: a worker asked to stop finishes
// what it runs, then exits 0.
func TestWorkerSIGTERMFinishesRunningTasks(t *testing.T) {
	h := newHarness(t, options{})
	w, health := startReadyWorker(t, h.workerEnv(t))
	var ids []string
	for _, name := range []string{"bus.jpg", "zidane.jpg", "bus.jpg", "zidane.jpg"} {
		ids = append(ids, h.submit(testenv.ReadImage(t, name), nil))
	}
	running := h.awaitStarted(ids)
	if m := getText(t, health+"/metrics"); !strings.Contains(m, "yoloserve_worker_tasks_in_flight") ||
		!strings.Contains(m, "yoloserve_worker_solo_runs_total") || !strings.Contains(m, "yoloserve_worker_solo_crowded_total") ||
		!strings.Contains(m, "yoloserve_worker_solo_yielded_total") ||
		!strings.Contains(m, "go_goroutines") {
		t.Errorf("worker /metrics lacks the worker's metrics")
	}
	if r := getText(t, health+"/healthz"); !strings.Contains(r, "ok") {
		t.Errorf("worker /healthz: %s", r)
	}
	w.Signal(syscall.SIGTERM)
	if err := w.Wait(t, 30*time.Second); err != nil {
		t.Errorf("worker exit: %v\n%s", err, w.Output())
	}
	if s := h.status(running); s != "SUCCESS" {
		t.Errorf("the running task ended %s", s)
	}
}

// TestWorkerShutdownTimeoutLosesNothing: a worker whose SHUTDOWN_TIMEOUT
// runs out while it holds tasks (running, and one taken ahead) exits 0
// once their runs end, and another worker finishes every task, even with
// no retries, where each attempt is the last: the tasks asynq put back in
// the queue keep their uploads.
func TestWorkerShutdownTimeoutLosesNothing(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: -1}})
	ids := make([]string, 12)
	for i := range ids {
		ids[i] = h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	}
	w, _ := startReadyWorker(t, h.workerEnv(t, "SHUTDOWN_TIMEOUT=1ms"))
	h.awaitStarted(ids)
	w.Signal(syscall.SIGTERM)
	if err := w.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("worker exit: %v\n%s", err, w.Output())
	}
	if !strings.Contains(w.Output(), "Quitting worker") {
		t.Fatalf("no task was running when the shutdown time ran out:\n%s", w.Output())
	}
	if strings.Contains(w.Output(), "level=ERROR") {
		t.Errorf("the worker logged errors for tasks it put back:\n%s", w.Output())
	}
	startReadyWorker(t, h.workerEnv(t))
	for _, id := range ids {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s", id, ti.Status, ti.Error)
		}
	}
	testenv.Eventually(t, 5*time.Second, "uploads left behind", func() bool { return len(h.uploadsLeft()) == 0 })
}

// TestResultKeptWhenWorkerStopsAsTaskEnds: a task whose worker's shutdown
// time runs out just as it ends (its result written, its upload being
// deleted) goes back to the queue as it succeeds. It still reads SUCCESS
// with its result while it waits there, and the next attempt, finding no
// upload, completes it with that result instead of failing it. A worker
// that dies between writing a result and asynq recording the end leaves
// the task in the same state.
func TestResultKeptWhenWorkerStopsAsTaskEnds(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: -1}})
	up := &stallingUploads{Dir: h.uploads, entered: make(chan struct{}), release: make(chan struct{})}
	a := asynq.NewServer(h.rdb, asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: time.Millisecond}, detector(t), up)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	select {
	case <-up.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the task never ended")
	}
	want := h.result(id)
	if want.Status != detect.StatusSuccess {
		t.Fatalf("task with its result written: %s %s", want.Status, want.Error)
	}
	stopped := make(chan struct{})
	go func() { a.Shutdown(); close(stopped) }()
	testenv.Eventually(t, 10*time.Second, "asynq never put the task back in the queue", func() bool {
		n, err := h.queue.Pending(context.Background())
		return err == nil && n == 1
	})
	if got := h.status(id); got != "SUCCESS" {
		t.Errorf("task put back in the queue with its result written: %s, want SUCCESS", got)
	}
	close(up.release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return once the handler had")
	}

	h.startWorker(detector(t), 1)
	inspector := hasynq.NewInspectorFromRedisClient(h.rdb)
	testenv.Eventually(t, 30*time.Second, "the next attempt never ended the task", func() bool {
		info, err := inspector.GetTaskInfo("detect", id)
		return err == nil && (info.State == hasynq.TaskStateCompleted || info.State == hasynq.TaskStateArchived)
	})
	if diff := cmp.Diff(want, h.result(id)); diff != "" {
		t.Errorf("result after the next attempt (-want +got):\n%s", diff)
	}
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("uploads left behind: %v", left)
	}
}

// TestResultKeptWhenRedisLosesTaskMidRun: Redis loses its data (as a
// restart without persistence, or a failover to a replica behind, does)
// while a worker runs a task. The worker's result still reaches the
// client, and expires as results do. It used to read 503 "The queue is
// unavailable" for good: the result was written into a hash with nothing
// else, which asynq's inspector could not read, and which never expired.
func TestResultKeptWhenRedisLosesTaskMidRun(t *testing.T) {
	h := newHarness(t, options{})
	g := &gate{d: detector(t), entered: make(chan struct{}), release: make(chan struct{})}
	const ttl = 10 * time.Minute
	srv := h.startWorkerConfig(g, asynq.ServerConfig{Concurrency: 1, ResultTTL: ttl})
	img := testenv.ReadImage(t, "bus.jpg")
	id := h.submit(img, nil)
	awaitEntered(t, g, 1)
	ctx := context.Background()
	if err := h.rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	close(g.release)

	var last response
	testenv.Eventually(t, 30*time.Second, "no result after Redis lost the running task", func() bool {
		last = h.get("/result/" + id)
		return last.status == http.StatusOK && last.body["status"] == "SUCCESS"
	})
	var ti detect.TaskInfo
	if err := json.Unmarshal(last.raw, &ti); err != nil {
		t.Fatal(err)
	}
	res := decodeResult(t, ti)
	if len(res.Detections) == 0 || res.Image != uprightSize(t, img) {
		t.Errorf("result of the lost task: %d detections, image %+v", len(res.Detections), res.Image)
	}
	key := "asynq:{detect}:t:" + id
	if left, err := h.rdb.TTL(ctx, key).Result(); err != nil || left <= 0 || left > ttl {
		t.Errorf("the lost task's result lives %v (%v), want up to %v", left, err, ttl)
	}
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("uploads left behind: %v", left)
	}
	if n := testutil.ToFloat64(srv.LostTasks()); n != 1 {
		t.Errorf("yoloserve_worker_lost_tasks_total: %v, want 1", n)
	}
}

// stallingUploads is the upload folder whose Delete, a handler's step
// after writing its result, waits until the test lets it go.
type stallingUploads struct {
	*upload.Dir
	entered, release chan struct{}
}

func (u *stallingUploads) Delete(ctx context.Context, ref string) error {
	u.entered <- struct{}{}
	<-u.release
	return u.Dir.Delete(ctx, ref)
}

// TestTaskPastItsDeadlineFails: a task still in the detector at its
// deadline (TASK_TIMEOUT) fails on its last attempt with a sentence that
// says so, and its upload is deleted.
func TestTaskPastItsDeadlineFails(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: -1, Timeout: time.Second}})
	g := &gate{d: detector(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	h.startWorker(g, 1)
	ti := h.result(h.submit(testenv.ReadImage(t, "bus.jpg"), nil))
	if ti.Status != detect.StatusFailure || !strings.Contains(ti.Error, "longer than the task timeout") {
		t.Errorf("task held past its deadline: %+v", ti)
	}
	testenv.Eventually(t, 5*time.Second, "upload left behind", func() bool { return len(h.uploadsLeft()) == 0 })
}

// TestTaskCancelledByOperator: a running task cancelled through asynq's
// tools (its inspector, its CLI, asynqmon) on its last attempt fails with
// a sentence that says so, not Go's "context canceled".
func TestTaskCancelledByOperator(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: -1}})
	g := &gate{d: detector(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	h.startWorker(g, 1)
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	awaitEntered(t, g, 1)
	if err := hasynq.NewInspectorFromRedisClient(h.rdb).CancelProcessing(id); err != nil {
		t.Fatal(err)
	}
	ti := h.result(id)
	if ti.Status != detect.StatusFailure || !strings.Contains(ti.Error, "cancelled") || strings.Contains(ti.Error, "context") {
		t.Errorf("cancelled task: %+v", ti)
	}
}

// TestAPIShutdownAnswersWaitingRequests: an API asked to stop answers a
// request waiting on ?wait at once with the task's state, so that the
// client can ask again elsewhere, and stops without waiting out the wait.
func TestAPIShutdownAnswersWaitingRequests(t *testing.T) {
	h := newHarness(t, options{})
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil) // no worker: it stays PENDING
	answers := getLater(h.api.URL + "/result/" + id + "?wait=60")
	testenv.Eventually(t, 10*time.Second, "the request never waited", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_result_waits") == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.api.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v (a waiting request held it)", err)
	}
	answeredPending(t, answers, 10*time.Second)
}

// answer is what a request sent in the background got.
type answer struct {
	status int
	header http.Header
	body   string
	err    error
}

// sendLater sends req in a goroutine of its own and sends what it got on
// the channel it returns.
func sendLater(req *http.Request) <-chan answer {
	answers := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answers <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answers <- answer{resp.StatusCode, resp.Header, string(b), err}
	}()
	return answers
}

// getLater is sendLater with a GET of url.
func getLater(url string) <-chan answer {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	return sendLater(req)
}

// answeredPending checks that a request waiting on a task that no worker
// runs gets 200 and the state PENDING within d: a stopping API's answer.
func answeredPending(t *testing.T, answers <-chan answer, d time.Duration) {
	t.Helper()
	select {
	case a := <-answers:
		if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, `"status":"PENDING"`) {
			t.Errorf("the waiting request got %d %s (%v), want 200 and the state PENDING", a.status, a.body, a.err)
		}
	case <-time.After(d):
		t.Errorf("the waiting request got no answer within %v", d)
	}
}

// TestAPISIGTERMFinishesUploads: an API process asked to stop (SIGTERM)
// closes its port, answers its waiting requests at once, and finishes
// reading the upload a slow client is still sending: that upload gets its
// 202, its task runs, and the process then exits cleanly.
func TestAPISIGTERMFinishesUploads(t *testing.T) {
	h := newHarness(t, options{})
	env, url := h.apiEnv(t, "SHUTDOWN_TIMEOUT=30s", "LOG_LEVEL=info")
	api := testenv.Start(t, "api", env...)
	awaitReady(t, "api", url)
	addr := strings.TrimPrefix(url, "http://")

	pending := h.submit(testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90), nil) // no worker yet
	waited := getLater(url + "/result/" + pending + "?wait=60")
	bus := testenv.ReadImage(t, "bus.jpg")
	conn := beginUpload(t, addr, bus)
	testenv.Eventually(t, 10*time.Second, "the API never held both the upload and the wait", func() bool {
		return metric(t, url, "yoloserve_api_uploads_reading") == 1 && metric(t, url, "yoloserve_api_result_waits") == 1
	})

	api.Signal(syscall.SIGTERM)
	answeredPending(t, waited, 5*time.Second)
	testenv.Eventually(t, 10*time.Second, "the stopping API still takes connections", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	conn.Write(bus[len(bus)/2:])
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the upload begun before SIGTERM got no answer: %v\n%s", err, api.Output())
	}
	var accepted struct {
		TaskID string `json:"task_id"`
	}
	json.NewDecoder(resp.Body).Decode(&accepted)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || accepted.TaskID == "" {
		t.Fatalf("the upload begun before SIGTERM got %d, want 202 with a task id", resp.StatusCode)
	}
	if err := api.Wait(t, 10*time.Second); err != nil {
		t.Errorf("the API did not exit cleanly once its upload was read: %v\n%s", err, api.Output())
	}
	if out := api.Output(); !strings.Contains(out, "shutting down") || strings.Contains(out, "level=ERROR") {
		t.Errorf("the API's log should say it is shutting down, with no error:\n%s", out)
	}

	testenv.Start(t, "worker", h.workerEnv(t)...)
	if ti := h.result(accepted.TaskID); ti.Status != detect.StatusSuccess || len(decodeResult(t, ti).Detections) == 0 {
		t.Errorf("the task of the upload read while stopping: %s %s, want SUCCESS with detections", ti.Status, ti.Error)
	}
}

// TestAPIShutdownTimeoutCutsUploads: an upload still being read when
// SHUTDOWN_TIMEOUT ends is cut off, and the API's last line says so and
// names the setting.
func TestAPIShutdownTimeoutCutsUploads(t *testing.T) {
	h := newHarness(t, options{})
	env, url := h.apiEnv(t, "SHUTDOWN_TIMEOUT=300ms")
	api := testenv.Start(t, "api", env...)
	awaitReady(t, "api", url)
	conn := beginUpload(t, strings.TrimPrefix(url, "http://"), testenv.ReadImage(t, "bus.jpg"))
	testenv.Eventually(t, 10*time.Second, "the API never began reading the upload", func() bool {
		return metric(t, url, "yoloserve_api_uploads_reading") == 1
	})
	api.Signal(syscall.SIGTERM)
	if err := api.Wait(t, 10*time.Second); err == nil {
		t.Error("the API exited cleanly, having cut off an upload")
	}
	if out := api.Output(); !strings.Contains(out, "1 of them uploads being read, and cut them off") || !strings.Contains(out, "SHUTDOWN_TIMEOUT is 300ms") {
		t.Errorf("the API's log should count the upload it cut off and name SHUTDOWN_TIMEOUT:\n%s", out)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("the cut-off upload's connection is still open (read %d bytes)", n)
	}
}

// beginUpload opens a connection to the API at addr and sends a raw
// POST /predict of data, stopping halfway through the body, as a slow
// client does. The test sends the rest, or not.
func beginUpload(t *testing.T, addr string, data []byte) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", len(data))
	conn.Write(data[:len(data)/2])
	return conn
}

// TestWorkerRefusesBadModelOrLibrary: a missing or corrupt model or
// library stops the worker at start with a message naming the file, and
// a CUDA provider that cannot load with one saying how to fall back.
func TestWorkerRefusesBadModelOrLibrary(t *testing.T) {
	h := newHarness(t, options{})
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.onnx")
	os.WriteFile(corrupt, []byte("not a model"), 0o644)
	badLib := filepath.Join(dir, "libonnxruntime.so.1")
	os.WriteFile(badLib, []byte("not a library"), 0o644)
	for _, tc := range []struct{ name, env, want string }{
		{"missing model", "MODEL_PATH=" + filepath.Join(dir, "nope.onnx"), filepath.Join(dir, "nope.onnx")},
		{"corrupt model", "MODEL_PATH=" + corrupt, corrupt},
		{"missing library", "ORT_LIB=" + filepath.Join(dir, "nope.so"), filepath.Join(dir, "nope.so")},
		{"corrupt library", "ORT_LIB=" + badLib, badLib},
		{"no CUDA provider", "ORT_PROVIDER=cuda", "set ORT_FALLBACK_CPU=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := testenv.Start(t, "worker", append(h.workerEnv(t), tc.env)...)
			if err := w.Wait(t, 30*time.Second); err == nil {
				t.Fatal("worker started")
			}
			if out := w.Output(); !strings.Contains(out, tc.want) || strings.Contains(out, "goroutine ") {
				t.Errorf("output should say %q without a trace:\n%s", tc.want, out)
			}
		})
	}
}

// panicky panics on one parameter value, and detects otherwise.
type panicky struct {
	d interface {
		Detect(context.Context, []byte, detect.Params) (*detect.Result, error)
	}
}

func (p panicky) Detect(ctx context.Context, data []byte, params detect.Params) (*detect.Result, error) {
	if params.Conf == 0.123 {
		panic("injected fault")
	}
	return p.d.Detect(ctx, data, params)
}

func TestPanicFailsOnlyThatTask(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(panicky{detector(t)}, 2)
	bad := h.submit(testenv.ReadImage(t, "bus.jpg"), map[string]string{"conf": "0.123"})
	good := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	ti := h.result(bad)
	if ti.Status != detect.StatusFailure || !strings.Contains(ti.Error, "Internal error") || strings.Contains(ti.Error, "injected") {
		t.Errorf("panicking task: %+v", ti)
	}
	if ti := h.result(good); ti.Status != detect.StatusSuccess {
		t.Errorf("the other task: %+v", ti)
	}
	if ti := h.result(h.submit(testenv.ReadImage(t, "zidane.jpg"), nil)); ti.Status != detect.StatusSuccess {
		t.Errorf("a task after the panic: %+v", ti)
	}
}

// TestClientGoneIsNotAFault: an upload whose client gives up while Redis
// is slow is counted as the client's doing (499, as nginx logs it), not
// as a 503 of the service, so that alerts on 5xx answers mean the
// service's faults; its upload is deleted.
func TestClientGoneIsNotAFault(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	if err := h.rdb.Do(ctx, "CLIENT", "PAUSE", "5000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.rdb.Do(ctx, "CLIENT", "UNPAUSE") })
	body, ct := multipartBody(t, "image", "bus.jpg", testenv.ReadImage(t, "bus.jpg"), nil)
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodPost, h.api.URL+"/predict", body)
	req.Header.Set("Content-Type", ct)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("POST answered %d with Redis writes paused", resp.StatusCode)
	}
	testenv.Eventually(t, 5*time.Second, "the abandoned upload was never counted", func() bool {
		return strings.Contains(getText(t, h.api.URL+"/metrics"), `yoloserve_api_requests_total{code="499",route="/predict"} 1`)
	})
	if m := getText(t, h.api.URL+"/metrics"); strings.Contains(m, `code="503"`) {
		t.Errorf("an abandoned upload counted as 503:\n%s", m)
	}
	testenv.Eventually(t, 5*time.Second, "the abandoned upload was kept", func() bool { return len(h.uploadsLeft()) == 0 })
}

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
	h.durableRedis()
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil) // no worker yet

	h.redis.Stop()
	failed := &failedCommands{name: "hmget"} // the task's state, read
	h.rdb.AddHook(failed)
	answers := getLater(h.api.URL + "/result/" + id + "?wait=30")
	testenv.Eventually(t, 10*time.Second, "the waiting request read nothing while Redis was down", func() bool {
		return failed.n.Load() > 0
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
	h.durableRedis()
	g := &gate{d: detector(t), entered: make(chan struct{}, 2), release: make(chan struct{})}
	h.startWorker(g, 1)
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	awaitEntered(t, g, 1)

	h.redis.Stop()
	failed := &failedCommands{name: "evalsha"} // the result's write script
	h.rdb.AddHook(failed)
	close(g.release)
	testenv.Eventually(t, 10*time.Second, "the worker did not try to write the result while Redis was down", func() bool {
		return failed.n.Load() > 0
	})
	h.redis.StartDurable()
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Fatalf("after the restart: %+v", ti)
	}
	if n := len(g.entered); n != 0 {
		t.Errorf("the image was detected %d more times, want once", n)
	}
}

// failedCommands counts the commands of one name (lower case) that a
// go-redis client sent and that failed.
type failedCommands struct {
	name string
	n    atomic.Int64
}

func (f *failedCommands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failedCommands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && cmd.Name() == f.name {
			f.n.Add(1)
		}
		return err
	}
}

func (f *failedCommands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// redisDiesAtEnqueue is the real queue, but Redis is killed as a task is
// about to be enqueued: its upload, stored in Redis just before, is there
// again once Redis has restarted from its append-only file.
type redisDiesAtEnqueue struct {
	*asynq.Queue
	redis *testenv.RedisServer
}

func (q redisDiesAtEnqueue) Enqueue(ctx context.Context, job detect.Job) (string, error) {
	q.redis.Stop()
	return q.Queue.Enqueue(ctx, job)
}

// TestUploadNotEnqueuedIsDropped: with uploads stored in Redis, Redis dies
// between an upload's store and its task's enqueue. The client gets 503,
// and the upload, which Redis could not delete then, is deleted once Redis
// is back, not left for UPLOAD_MAX_AGE.
func TestUploadNotEnqueuedIsDropped(t *testing.T) {
	h := newHarness(t, options{})
	h.durableRedis()
	srv := apihttp.NewServer(apihttp.Config{}, redisDiesAtEnqueue{h.queue, h.redis}, upload.NewRedis(h.rdb, time.Hour))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	postRefused(t, ts.URL, "with Redis dying")
	h.redis.StartDurable()
	testenv.Eventually(t, 30*time.Second, "the upload that was not enqueued is still in Redis", func() bool {
		return len(h.uploadsInRedis()) == 0
	})
}

// postUnanswered starts an API on h's queue whose uploads go to Redis
// through a proxy that holds bytes, and posts an image while the proxy is
// cut: the store's command reaches Redis once the cut heals, its answer
// never the API, and the client gets 503. It returns the API and the
// proxy, still cut; the test heals it.
func postUnanswered(t *testing.T, h *harness) (*apihttp.Server, *testenv.Proxy) {
	t.Helper()
	proxy := testenv.StartProxy(t, h.redis.Addr)
	through := proxy.Client(t, 200*time.Millisecond)
	// A connection made before the cut: the store's command is sent on
	// it, not held with a new connection's handshake.
	if err := through.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	srv := apihttp.NewServer(apihttp.Config{}, h.queue, upload.NewRedis(through, time.Hour))
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	proxy.Cut()
	postRefused(t, ts.URL, "with the store's answer held")
	return srv, proxy
}

// postRefused posts bus.jpg to the API at url, and fails the test unless
// it is answered 503; when says in what circumstance.
func postRefused(t *testing.T, url, when string) {
	t.Helper()
	body, ct := multipartBody(t, "image", "bus.jpg", testenv.ReadImage(t, "bus.jpg"), nil)
	resp, err := http.Post(url+"/predict", ct, body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST %s: %d, want 503", when, resp.StatusCode)
	}
}

// TestUploadStoredUnansweredIsDropped: with uploads stored in Redis, the
// API's store command reaches Redis but its answer does not reach the API
// (a partition that holds the bytes, as a Redis killed between its
// append-only file and its reply does). The client gets 503, and the
// upload Redis took meanwhile is deleted, not left for UPLOAD_MAX_AGE.
func TestUploadStoredUnansweredIsDropped(t *testing.T) {
	h := newHarness(t, options{})
	sets := func() int { return testenv.CommandCalls(t, h.rdb, "set") }
	before := sets()
	srv, proxy := postUnanswered(t, h)
	defer srv.Shutdown(context.Background())
	proxy.Heal()
	testenv.Eventually(t, 30*time.Second, "the upload Redis took unanswered is still there", func() bool {
		return len(h.uploadsInRedis()) == 0 && sets() > before
	})
}

// TestShutdownFinishesDrops: an API stopped (SIGTERM) while the delete
// of an upload Redis took unanswered still waits for Redis goes on
// deleting it through its shutdown, so that it is gone once Redis answers,
// before the shutdown ends.
func TestShutdownFinishesDrops(t *testing.T) {
	h := newHarness(t, options{})
	srv, proxy := postUnanswered(t, h)
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(ctx)
	}()
	proxy.Heal()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if left := h.uploadsInRedis(); len(left) != 0 {
		t.Errorf("uploads left once the shutdown ended: %v", left)
	}
}

// TestBackPressure: past MAX_QUEUE waiting tasks, 503 with Retry-After.
func TestBackPressure(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{MaxQueue: 3}})
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	for i := 0; i < 3; i++ {
		h.submit(jpg, nil)
	}
	r := h.post(jpg, "x.jpg", nil, "")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || !strings.Contains(r.body["error"].(string), "full") {
		t.Errorf("4th task: %d %s", r.status, r.raw)
	}
	if n := len(h.uploadsLeft()); n != 3 {
		t.Errorf("%d uploads stored, want the 3 accepted", n)
	}
	// A worker drains the queue; submissions are accepted again.
	h.startWorker(detector(t), 2)
	testenv.Eventually(t, 30*time.Second, "queue never drained", func() bool {
		return h.post(jpg, "x.jpg", nil, "").status == http.StatusAccepted
	})
}

func TestAPIKeys(t *testing.T) {
	h := newHarness(t, options{api: apihttp.Config{APIKeys: []string{"s3cret", "other"}}})
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	send := func(auth string) int {
		body, ct := multipartBody(t, "image", "x.jpg", jpg, nil)
		req, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict", body)
		req.Header.Set("Content-Type", ct)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return h.do(req).status
	}
	for auth, want := range map[string]int{"": 401, "Bearer wrong": 401, "Bearer s3cre": 401, "Basic s3cret": 401, "Bearer s3cret": 202, "bearer other": 202} {
		if got := send(auth); got != want {
			t.Errorf("Authorization %q: %d, want %d", auth, got, want)
		}
	}
	if r := h.get("/result/abc"); r.status != 401 {
		t.Errorf("GET /result without a key: %d", r.status)
	}
	for _, p := range []string{"/healthz", "/readyz", "/openapi.json"} {
		if r := h.get(p); r.status != 200 {
			t.Errorf("%s must stay open: %d", p, r.status)
		}
	}
}

// TestCORS: with CORS_ORIGINS set, a page of an allowed origin may call the
// API from a browser: its preflight is answered without a key (browsers
// send none), and the answers let it read the Location header. Another
// origin, or a server without CORS_ORIGINS, gets no CORS header, so that
// browsers keep its pages out.
func TestCORS(t *testing.T) {
	const origin = "https://app.example"
	allowed := newHarness(t, options{api: apihttp.Config{APIKeys: []string{"k"}, CORSOrigins: []string{origin}}})
	plain := newHarness(t, options{})
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	send := func(h *harness, method, from string, header map[string]string) *http.Response {
		var body io.Reader
		if method == http.MethodPost {
			body = bytes.NewReader(jpg)
		}
		req, _ := http.NewRequest(method, h.api.URL+"/predict", body)
		req.Header.Set("Origin", from)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	preflight := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
	post := map[string]string{"Authorization": "Bearer k", "Content-Type": "image/jpeg"}

	r := send(allowed, http.MethodOptions, origin, preflight)
	if r.StatusCode >= 300 || r.Header.Get("Access-Control-Allow-Origin") != origin ||
		!strings.Contains(strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Errorf("preflight from %s: %d %v", origin, r.StatusCode, r.Header)
	}
	r = send(allowed, http.MethodPost, origin, post)
	if r.StatusCode != http.StatusAccepted || r.Header.Get("Access-Control-Allow-Origin") != origin ||
		!strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "Location") {
		t.Errorf("POST from %s: %d %v", origin, r.StatusCode, r.Header)
	}
	for name, r := range map[string]*http.Response{
		"preflight from another origin":    send(allowed, http.MethodOptions, "https://other.example", preflight),
		"POST from another origin":         send(allowed, http.MethodPost, "https://other.example", post),
		"POST to a server without CORS":    send(plain, http.MethodPost, origin, post),
		"preflight to a server without it": send(plain, http.MethodOptions, origin, preflight),
	} {
		if v := r.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want none", name, v)
		}
	}
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, options{api: apihttp.Config{RateLimit: 1, RateBurst: 3}})
	codes := map[int]int{}
	var retryAfter string
	for i := 0; i < 6; i++ {
		r := h.get("/result/00000000-0000-0000-0000-000000000000")
		codes[r.status]++
		if r.status == http.StatusTooManyRequests {
			retryAfter = r.header.Get("Retry-After")
		}
	}
	if codes[404] < 3 || codes[429] < 2 || retryAfter == "" {
		t.Errorf("statuses %v, Retry-After %q; want the burst of 3 then 429s", codes, retryAfter)
	}
}

// TestSlowClient: a client that never finishes its headers is cut off.
func TestSlowClient(t *testing.T) {
	h := newHarness(t, options{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.api.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /predict HTTP/1.1\r\nHost: x\r\n") // and nothing more
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var closed atomic.Bool
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			closed.Store(true)
			break
		}
	}
	if d := time.Since(start); !closed.Load() || d > 15*time.Second {
		t.Errorf("slow client held the connection %v", d)
	}
}

func TestUploadFolderNeverServed(t *testing.T) {
	h := newHarness(t, options{})
	h.submit(testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90), nil)
	name := h.uploadsLeft()[0]
	for _, p := range []string{"/uploads/" + name, "/" + name, "/result/../uploads/" + name, "/static/" + name} {
		if r := h.get(p); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d", p, r.status)
		}
	}
}

// TestInflightUploadsBounded: while MAX_INFLIGHT_UPLOADS bodies are being
// read, another upload gets 503 with Retry-After instead of more memory.
func TestInflightUploadsBounded(t *testing.T) {
	h := newHarness(t, options{api: apihttp.Config{MaxInflight: 1}})
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	// The slow upload, on a connection of its own, holds the only slot
	// from its first bytes.
	slow := beginUpload(t, strings.TrimPrefix(h.api.URL, "http://"), jpg)
	testenv.Eventually(t, 10*time.Second, "the slow upload never took the slot", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_uploads_reading") == 1
	})
	if r := h.post(jpg, "x.jpg", nil, ""); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("an upload beside the slow one: %d %s, want 503 with Retry-After", r.status, r.raw)
	}
	slow.Close()
	testenv.Eventually(t, 10*time.Second, "uploads not accepted after the slow one ended", func() bool {
		return h.post(jpg, "x.jpg", nil, "").status == http.StatusAccepted
	})
}

// TestInflightBytesBounded: while a slow upload holds most of
// MAX_INFLIGHT_BYTES, an upload whose Content-Length would pass it, or
// one without a length (counted at twice MAX_UPLOAD_BYTES), gets 503 with
// Retry-After, and one that fits is taken; once the slow one ends, the
// large one is taken too.
func TestInflightBytesBounded(t *testing.T) {
	const limit = 3 << 20
	h := newHarness(t, options{api: apihttp.Config{MaxUploadBytes: limit, MaxInflightBytes: 2 * limit}})
	large := bytes.Repeat([]byte{0xff}, limit)
	slow := beginUpload(t, strings.TrimPrefix(h.api.URL, "http://"), large)
	testenv.Eventually(t, 10*time.Second, "the slow upload was never counted", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_upload_bytes_reading") == float64(len(large)+bytes.MinRead)
	})
	for name, body := range map[string]io.Reader{
		"a large upload":     bytes.NewReader(large),
		"one without length": io.MultiReader(bytes.NewReader(large[:10])), // no Len: sent chunked
	} {
		if r := h.postRaw(h.api.URL, body); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s beside the slow one: %d %s, want 503 with Retry-After", name, r.status, r.raw)
		}
	}
	if r := h.post(testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90), "x.jpg", nil, ""); r.status != http.StatusAccepted {
		t.Errorf("a small upload beside the slow one: %d %s, want 202", r.status, r.raw)
	}
	slow.Close()
	testenv.Eventually(t, 10*time.Second, "the slow upload's bytes were never given back", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_upload_bytes_reading") == 0
	})
	if r := h.postRaw(h.api.URL, bytes.NewReader(large)); r.status == http.StatusServiceUnavailable {
		t.Errorf("a large upload alone: %d %s", r.status, r.raw)
	}
}

// metric returns the value of the metric without labels called name on
// the /metrics page at url, or NaN when there is none (no condition on it
// holds then).
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(getText(t, url+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return math.NaN()
}

// TestWorkerWithoutImageLibraries: a worker whose libjpeg-turbo and libpng
// cannot be loaded says so at start, naming the files, and decodes with
// Go's decoders instead: JPEGs are still detected, and a PNG gives the
// detections libpng gives, since both decoders give the same pixels.
func TestWorkerWithoutImageLibraries(t *testing.T) {
	h := newHarness(t, options{})
	dir := t.TempDir()
	noJPEG, noPNG := filepath.Join(dir, "libturbojpeg.so.0"), filepath.Join(dir, "libpng16.so.16")
	w := testenv.Start(t, "worker", h.workerEnv(t, "TURBOJPEG_LIB="+noJPEG, "LIBPNG_LIB="+noPNG)...)
	png := testenv.ReadImage(t, "person.png")
	jpg := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	pngID := h.submit(png, nil)
	if r := decodeResult(t, h.result(jpg)); len(r.Detections) == 0 {
		t.Errorf("bus.jpg with Go's JPEG decoder: no detections")
	}
	got := decodeResult(t, h.result(pngID))
	want, err := detector(t).Detect(context.Background(), png, detect.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Detections, got.Detections); diff != "" {
		t.Errorf("person.png with Go's decoder against libpng (-want +got):\n%s", diff)
	}
	out := w.Output()
	for _, want := range []string{"libjpeg-turbo not available", noJPEG, "libpng not available", noPNG} {
		if !strings.Contains(out, want) {
			t.Errorf("the worker's log does not say %q:\n%s", want, out)
		}
	}
}

// TestProcessesRefuseABusyAddress: an API or worker whose address is
// taken stops at once, saying so and which setting to change, and never
// claims to be listening.
func TestProcessesRefuseABusyAddress(t *testing.T) {
	h := newHarness(t, options{})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	apiEnv, _ := h.apiEnv(t)
	for _, tc := range []struct {
		name, setting, claim string
		env                  []string
	}{
		{"api", "API_ADDR", "api listening", apiEnv},
		{"worker", "WORKER_ADDR", "worker running", h.workerEnv(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testenv.Start(t, tc.name, append(tc.env, tc.setting+"="+busy.Addr().String(), "LOG_LEVEL=info")...)
			if err := p.Wait(t, 30*time.Second); err == nil {
				t.Fatal("started on a busy address")
			}
			out := p.Output()
			if !strings.Contains(out, "address already in use") || !strings.Contains(out, "set "+tc.setting) || strings.Contains(out, tc.claim) {
				t.Errorf("output should name the busy address and %s, and not say %q:\n%s", tc.setting, tc.claim, out)
			}
		})
	}
}
