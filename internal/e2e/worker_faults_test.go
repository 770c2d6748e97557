package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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
// The task is counted as lost, also when the reply to the result's first
// write is lost as well, so that the worker writes it again: the second
// write used to find the hash the first had made, and count nothing.
func TestResultKeptWhenRedisLosesTaskMidRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes int64 // of the result, that Redis ran
		hook   func(id string, writes *atomic.Int64) redis.Hook
	}{
		{"reply kept", 1, resultWrites},
		{"first reply lost", 2, firstResultReplyLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
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
			var writes atomic.Int64
			h.rdb.AddHook(tc.hook(id, &writes))
			close(g.release)

			var last response
			testenv.Eventually(t, 30*time.Second, "no result after Redis lost the running task", func() bool {
				last = h.get("/result/" + id)
				return last.status == http.StatusOK && last.body["status"] == "SUCCESS"
			})
			// The worker deletes the upload once it has written the
			// result and counted the task.
			testenv.Eventually(t, 30*time.Second, "the worker did not delete the upload", func() bool {
				return len(h.uploadsLeft()) == 0
			})
			var ti detect.TaskInfo
			if err := json.Unmarshal(last.raw, &ti); err != nil {
				t.Fatal(err)
			}
			res := decodeResult(t, ti)
			if len(res.Detections) == 0 || res.Image != uprightSize(t, img) {
				t.Errorf("result of the lost task: %d detections, image %+v", len(res.Detections), res.Image)
			}
			if n := writes.Load(); n != tc.writes {
				t.Errorf("Redis ran %d writes of the result, want %d", n, tc.writes)
			}
			key := "asynq:{detect}:t:" + id
			if left, err := h.rdb.TTL(ctx, key).Result(); err != nil || left <= 0 || left > ttl {
				t.Errorf("the lost task's result lives %v (%v), want up to %v", left, err, ttl)
			}
			if n := testutil.ToFloat64(srv.LostTasks()); n != 1 {
				t.Errorf("yoloserve_worker_lost_tasks_total: %v, want 1", n)
			}
		})
	}
}

// resultWrites returns a hook that counts in writes the writes of task
// id's result (the script that announces id on asynq.DoneChannel) that
// Redis ran.
func resultWrites(id string, writes *atomic.Int64) redis.Hook {
	return afterCommand(func(cmd redis.Cmder, err error) error {
		if err == nil && isResultWrite(cmd, id) {
			writes.Add(1)
		}
		return err
	})
}

// firstResultReplyLost returns a hook that counts as resultWrites does,
// and drops Redis' reply to the first of those writes.
func firstResultReplyLost(id string, writes *atomic.Int64) redis.Hook {
	return afterCommand(func(cmd redis.Cmder, err error) error {
		if err == nil && isResultWrite(cmd, id) && writes.Add(1) == 1 {
			err = errors.New("the reply was lost")
			cmd.SetErr(err)
		}
		return err
	})
}

// isResultWrite reports whether cmd runs the script that writes task
// id's result and announces it on asynq.DoneChannel, by hash or (after
// NOSCRIPT, on a Redis that had not loaded it) whole.
func isResultWrite(cmd redis.Cmder, id string) bool {
	args := cmd.Args()
	script := cmd.Name() == "evalsha" || cmd.Name() == "eval"
	return script && len(args) >= 2 && args[len(args)-1] == id && args[len(args)-2] == asynq.DoneChannel
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

// TestWorkerWithoutImageLibraries: a worker whose libjpeg-turbo, libpng
// and libdeflate cannot be loaded says so at start, naming the files, and
// decodes with Go's decoders instead: JPEGs are still detected, and a PNG
// gives the detections libpng gives, since both decoders give the same
// pixels.
func TestWorkerWithoutImageLibraries(t *testing.T) {
	h := newHarness(t, options{})
	dir := t.TempDir()
	noJPEG, noPNG, noDeflate := filepath.Join(dir, "libturbojpeg.so.0"), filepath.Join(dir, "libpng16.so.16"), filepath.Join(dir, "libdeflate.so.0")
	w := testenv.Start(t, "worker", h.workerEnv(t, "TURBOJPEG_LIB="+noJPEG, "LIBPNG_LIB="+noPNG, "LIBDEFLATE_LIB="+noDeflate)...)
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
	for _, want := range []string{"libjpeg-turbo not available", noJPEG, "libpng not available", noPNG, "libdeflate not available", noDeflate} {
		if !strings.Contains(out, want) {
			t.Errorf("the worker's log does not say %q:\n%s", want, out)
		}
	}
}

// lostDevice is a detector whose GPU has stopped working: every image
// fails with detect.ErrDeviceLost, as the real detector's do once a run
// and its probe have failed (yolo.TestLostDevice).
type lostDevice struct{ calls atomic.Int64 }

func (l *lostDevice) Detect(ctx context.Context, data []byte, p detect.Params) (*detect.Result, error) {
	l.calls.Add(1)
	return nil, fmt.Errorf("%w: injected (CUDA failure 700)", detect.ErrDeviceLost)
}

// TestLostDeviceHandsTasksBack: a worker whose GPU stopped working gives
// its tasks back to the queue at once, their attempts untouched: while it
// still runs (taking no new task, as cmd/worker has it once the GPU is
// lost), a working worker finishes every one, none of them retried.
func TestLostDeviceHandsTasksBack(t *testing.T) {
	h := newHarness(t, options{})
	lost := &lostDevice{}
	srv := h.startWorkerConfig(lost, asynq.ServerConfig{Concurrency: 2, ShutdownTimeout: time.Minute})
	img := testenv.ReadImage(t, "bus.jpg")
	ids := []string{h.submit(img, nil), h.submit(img, nil)}
	testenv.Eventually(t, 10*time.Second, "the tasks never reached the lost device", func() bool { return lost.calls.Load() >= 2 })
	srv.Stop()
	h.startWorker(detector(t), 2)
	for _, id := range ids {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s, want SUCCESS from the working worker while the lost one still runs", id, ti.Status, ti.Error)
		}
		if n, err := retried(h, id); err != nil || n != 0 {
			t.Errorf("task %s was retried %d times (%v), want 0: a lost device spends no attempt", id, n, err)
		}
	}
}

// TestLostDeviceHandBacksAreCounted: a task that worker after worker
// finds with its device stopped (an image that breaks the GPU itself) is
// given back three times, and from then on each such attempt counts: it
// fails, saying so, instead of going round for ever.
func TestLostDeviceHandBacksAreCounted(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: 1}})
	lost := &lostDevice{}
	h.startWorkerConfig(lost, asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: time.Second})
	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	ti := h.result(id)
	if ti.Status != detect.StatusFailure || !strings.Contains(ti.Error, "GPU stopped working each time") {
		t.Errorf("task %s: %s %q, want FAILURE saying the GPU stopped working each time", id, ti.Status, ti.Error)
	}
	if n := lost.calls.Load(); n != 3+2 {
		t.Errorf("the task ran %d times, want 5: three hand-backs, then its two attempts", n)
	}
}

// TestLostDeviceHoldsLastAttempts: a worker whose GPU stopped working
// holds the tasks on their last attempt, which asynq would end as failed
// whatever the error, until its shutdown puts them back in the queue with
// their attempts untouched: with no retries allowed, a working worker
// started after it finishes every one.
func TestLostDeviceHoldsLastAttempts(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{Retries: -1}})
	lost := &lostDevice{}
	srv := h.startWorkerConfig(lost, asynq.ServerConfig{Concurrency: 2, ShutdownTimeout: time.Second})
	img := testenv.ReadImage(t, "bus.jpg")
	ids := []string{h.submit(img, nil), h.submit(img, nil)}
	testenv.Eventually(t, 10*time.Second, "the tasks never reached the lost device", func() bool { return lost.calls.Load() == 2 })
	srv.Shutdown()
	for _, id := range ids {
		var ti detect.TaskInfo
		if r := h.get("/result/" + id); r.status != http.StatusOK || json.Unmarshal(r.raw, &ti) != nil || ti.Status.Done() {
			t.Fatalf("task %s after the lost worker stopped: %d %s, want it waiting for a worker", id, r.status, r.raw)
		}
	}
	h.startWorker(detector(t), 2)
	for _, id := range ids {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s, want SUCCESS from the working worker", id, ti.Status, ti.Error)
		}
	}
	if n := lost.calls.Load(); n != 2 {
		t.Errorf("the lost device was given %d images, want the 2 it held", n)
	}
}
