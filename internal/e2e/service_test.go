package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	hasynq "github.com/hibiken/asynq"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/testenv"
)

func TestPredictBusEndToEnd(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 2)
	r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "")
	if r.status != http.StatusAccepted || r.body["status"] != "PENDING" {
		t.Fatalf("POST /predict: %d %s", r.status, r.raw)
	}
	id := r.body["task_id"].(string)
	if loc := r.header.Get("Location"); loc != "/result/"+id {
		t.Errorf("Location %q, want /result/%s", loc, id)
	}
	res := decodeResult(t, h.result(id))
	checkBusDetections(t, res)
	if res.Model != "yolov8n" || res.Image != (detect.Size{Width: 810, Height: 1080}) || res.SpeedMS.Inference <= 0 {
		t.Errorf("result %+v", res)
	}
	testenv.Eventually(t, 5*time.Second, "the upload was not deleted", func() bool { return len(h.uploadsLeft()) == 0 })
	metrics := getText(t, h.api.URL+"/metrics")
	if !strings.Contains(metrics, `yoloserve_api_requests_total{code="202",route="/predict"} 1`) {
		t.Errorf("API /metrics does not count the upload:\n%s", metrics)
	}
}

// TestPredictRawBody: the image sent as the body itself, its parameters
// in the query, gets the same detections as the same image and
// parameters in a multipart form.
func TestPredictRawBody(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 2)
	bus := testenv.ReadImage(t, "bus.jpg")
	req, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict?conf=0.5&classes=person", bytes.NewReader(bus))
	req.Header.Set("Content-Type", "image/jpeg")
	r := h.do(req)
	if r.status != http.StatusAccepted || r.body["status"] != "PENDING" {
		t.Fatalf("POST /predict with a raw body: %d %s", r.status, r.raw)
	}
	raw := decodeResult(t, h.result(r.body["task_id"].(string)))
	form := decodeResult(t, h.result(h.submit(bus, map[string]string{"conf": "0.5", "classes": "person"})))
	if len(raw.Detections) == 0 {
		t.Fatal("no detections")
	}
	if diff := cmp.Diff(form.Detections, raw.Detections); diff != "" {
		t.Errorf("raw body against multipart (-form +raw):\n%s", diff)
	}
	for _, d := range raw.Detections {
		if d.Name != "person" || d.Confidence < 0.5 {
			t.Errorf("parameters from the query not applied: %+v", d)
		}
	}
}

// TestPredictWait: POST /predict?wait=N (or a wait field) answers with the
// task's result once it ends, 200 and the body GET /result gives, or with
// its state when N seconds pass first, 202. A waiting request holds no
// upload slot: with MAX_INFLIGHT_UPLOADS at 1, uploads are still taken.
func TestPredictWait(t *testing.T) {
	h := newHarness(t, options{api: apihttp.Config{MaxInflight: 1}})
	bus := testenv.ReadImage(t, "bus.jpg")

	start := time.Now() // no worker yet: the wait runs out
	r := h.post(bus, "bus.jpg", nil, "?wait=1")
	if r.status != http.StatusAccepted || r.body["status"] != "PENDING" || r.header.Get("Location") != fmt.Sprint("/result/", r.body["task_id"]) {
		t.Errorf("POST ?wait=1 with no worker: %d %s, Location %q; want 202, PENDING and the task's Location", r.status, r.raw, r.header.Get("Location"))
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("POST ?wait=1 answered after %v, before its wait ran out", d)
	}

	body, ct := multipartBody(t, "image", "bus.jpg", bus, map[string]string{"wait": "30", "conf": "0.5"})
	req, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict", body)
	req.Header.Set("Content-Type", ct)
	waited := sendLater(req)
	testenv.Eventually(t, 10*time.Second, "the upload never waited", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_result_waits") == 1
	})
	if r := h.post(testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90), "x.jpg", nil, ""); r.status != http.StatusAccepted {
		t.Errorf("an upload while another waits, with one upload slot: %d %s, want 202", r.status, r.raw)
	}
	h.startWorker(detector(t), 2)
	var a answer
	select {
	case a = <-waited:
	case <-time.After(60 * time.Second):
		t.Fatal("POST ?wait=30 got no answer")
	}
	var got detect.TaskInfo
	if a.err != nil || a.status != http.StatusOK || json.Unmarshal([]byte(a.body), &got) != nil || got.Status != detect.StatusSuccess {
		t.Fatalf("POST with wait=30 and a worker: %d %s (%v), want 200 and SUCCESS", a.status, a.body, a.err)
	}
	if loc := a.header.Get("Location"); loc != "/result/"+got.ID {
		t.Errorf("Location %q, want /result/%s", loc, got.ID)
	}
	res := decodeResult(t, got)
	if len(res.Detections) == 0 || res.Detections[len(res.Detections)-1].Confidence < 0.5 {
		t.Errorf("detections %+v, want some, all at conf 0.5 or more", res.Detections)
	}
	if diff := cmp.Diff(h.result(got.ID), got); diff != "" {
		t.Errorf("the POST's answer against GET /result's (-get +post):\n%s", diff)
	}
}

// TestDebugLogs: at LOG_LEVEL=debug the API logs every request (method,
// path, status, time, and the task's Location for an upload) and the
// worker every task's end (id, outcome, time); at info, neither.
func TestDebugLogs(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		t.Run(level.String(), func(t *testing.T) {
			var apiLogs, workerLogs testenv.SyncBuffer
			h := newHarness(t, options{api: apihttp.Config{Logger: slog.New(slog.NewTextHandler(&apiLogs, &slog.HandlerOptions{Level: level}))}})
			worker := h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1,
				Logger: slog.New(slog.NewTextHandler(&workerLogs, &slog.HandlerOptions{Level: level}))})
			id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
			if ti := h.result(id); ti.Status != detect.StatusSuccess {
				t.Fatalf("task: %+v", ti)
			}
			// The result is readable before the worker logs the task's
			// end; once the processes have stopped, their logs are
			// complete.
			worker.Shutdown()
			if err := h.api.srv.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			wantAPI := []string{
				`msg=request method=POST path=/predict status=202 ms=`,
				fmt.Sprintf(`location=/result/%s`, id),
				fmt.Sprintf(`msg=request method=GET path=/result/%s status=200 ms=`, id),
			}
			wantWorker := []string{fmt.Sprintf(`msg="task ended" task_id=%s outcome=success ms=`, id)}
			for _, c := range []struct {
				name string
				logs *testenv.SyncBuffer
				want []string
			}{{"API", &apiLogs, wantAPI}, {"worker", &workerLogs, wantWorker}} {
				for _, w := range c.want {
					if got := strings.Contains(c.logs.String(), w); got != (level == slog.LevelDebug) {
						t.Errorf("%s log at %v has %q: %v, want %v:\n%s", c.name, level, w, got, !got, c.logs.String())
					}
				}
			}
		})
	}
}

// getText GETs a URL and returns the body, failing unless 200.
func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestParityThroughService sends every shared image and bus.jpg's
// parameter variants through the API and compares with the reference.
func TestParityThroughService(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 2)
	ref := testenv.LoadReference(t).Models["yolov8n.onnx"]
	type job struct {
		img, variant string
		id           string
	}
	var jobs []job
	for img, want := range ref {
		for vname, v := range want.Variants {
			if img != "bus.jpg" && img != "zidane.jpg" && vname != "default" {
				continue
			}
			fields := map[string]string{}
			for k, val := range v.Params {
				switch val := val.(type) {
				case []any:
					var ids []string
					for _, c := range val {
						ids = append(ids, fmt.Sprint(c))
					}
					fields[k] = strings.Join(ids, ",")
				default:
					fields[k] = fmt.Sprint(val)
				}
			}
			jobs = append(jobs, job{img: img, variant: vname, id: h.submit(testenv.ReadImage(t, img), fields)})
		}
	}
	matched, counted := 0, 0
	for _, j := range jobs {
		res := decodeResult(t, h.result(j.id))
		v := ref[j.img].Variants[j.variant]
		conf := detect.DefaultConf
		if c, ok := v.Params["conf"].(float64); ok {
			conf = c
		}
		tol := testenv.JPEGTolerance
		if strings.HasSuffix(j.img, ".png") {
			tol = testenv.PNGTolerance
		}
		var got []testenv.Detection
		for _, d := range res.Detections {
			got = append(got, testenv.Detection{Class: d.Class, Confidence: d.Confidence, Box: [4]float64{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}})
		}
		if m, ok := v.Params["max_det"].(float64); ok && len(got) > int(m) {
			t.Errorf("%s %s: %d detections, max_det %v", j.img, j.variant, len(got), m)
		}
		p := testenv.Compare(v.Detections, got, conf, tol)
		for _, pr := range p.Problems {
			t.Errorf("%s %s: %s", j.img, j.variant, pr)
		}
		matched += p.Matched
		counted += p.Counted
	}
	t.Logf("parity through the service: %d tasks, matched %d/%d", len(jobs), matched, counted)
}

func TestPNGUploadedAsJPG(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 1)
	r := h.post(testenv.ReadImage(t, "person.png"), "holiday.jpg", nil, "")
	if r.status != http.StatusAccepted {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	res := decodeResult(t, h.result(r.body["task_id"].(string)))
	if len(res.Detections) == 0 || res.Detections[0].Name != "person" {
		t.Errorf("detections %+v", res.Detections)
	}
}

// TestParametersReachDetector checks form fields and query parameters.
func TestParametersReachDetector(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 2)
	bus := testenv.ReadImage(t, "bus.jpg")
	for _, tc := range []struct {
		name   string
		fields map[string]string
		query  string
		check  func(detect.Result) string
	}{
		{"max_det as field", map[string]string{"max_det": "2"}, "", func(r detect.Result) string {
			return cond(len(r.Detections) == 2, "want 2 detections, got %d", len(r.Detections))
		}},
		{"classes by name in query", nil, "?classes=bus", func(r detect.Result) string {
			return cond(len(r.Detections) == 1 && r.Detections[0].Name == "bus", "want only the bus, got %+v", r.Detections)
		}},
		{"conf", map[string]string{"conf": "0.85"}, "", func(r detect.Result) string {
			return cond(len(r.Detections) == 3, "want the 3 detections above 0.85, got %d", len(r.Detections))
		}},
		{"agnostic", map[string]string{"agnostic": "true", "iou": "0.1"}, "", func(r detect.Result) string {
			return cond(len(r.Detections) < 5, "agnostic NMS at iou 0.1 should merge overlapping boxes, got %d", len(r.Detections))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.post(bus, "bus.jpg", tc.fields, tc.query)
			if r.status != http.StatusAccepted {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			if msg := tc.check(decodeResult(t, h.result(r.body["task_id"].(string)))); msg != "" {
				t.Error(msg)
			}
		})
	}
	// A class name the model does not know, with a worker that has not
	// said what model it serves, ends as FAILURE with a sentence.
	ti := h.result(h.submit(bus, map[string]string{"classes": "unicorn"}))
	if ti.Status != detect.StatusFailure || !strings.Contains(ti.Error, "unicorn") {
		t.Errorf("unknown class: %+v", ti)
	}
}

// TestClassesCheckedAtUpload: a worker announces its model; the API lists
// it (GET /models) and refuses a class it lacks with 400 at upload,
// nothing stored or queued, where the task would end as FAILURE. A worker
// started since with another model counts at once.
func TestClassesCheckedAtUpload(t *testing.T) {
	h := newHarness(t, options{})
	bus := testenv.ReadImage(t, "bus.jpg")
	model := detector(t).Model().Describe()
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: 10 * time.Second, Model: model})

	got := h.models()
	if len(got) != 1 || got[0].Name != "yolov8n" || len(got[0].Classes) != 80 || got[0].Classes[5] != "bus" ||
		got[0].Input != (detect.Size{Width: 640, Height: 640}) {
		t.Fatalf("GET /models: %+v", got)
	}
	for _, tc := range []struct{ classes, want string }{
		{"unicorn", `The model has no class named "unicorn". GET /models lists its classes.`},
		{"bus,80", "Class id 80 is out of range; the model has classes 0 to 79. GET /models lists its classes."},
	} {
		r := h.post(bus, "bus.jpg", map[string]string{"classes": tc.classes}, "")
		if r.status != http.StatusBadRequest || r.body["error"] != tc.want {
			t.Errorf("classes=%s: %d %s, want 400 %q", tc.classes, r.status, r.raw, tc.want)
		}
	}
	if n, err := h.queue.Pending(context.Background()); err != nil || n != 0 {
		t.Errorf("%d tasks queued (%v), want none", n, err)
	}
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("uploads stored: %v", left)
	}
	res := decodeResult(t, h.result(h.submit(bus, map[string]string{"classes": "BUS"})))
	if len(res.Detections) != 1 || res.Detections[0].Name != "bus" {
		t.Errorf("classes=BUS: %+v", res.Detections)
	}

	// Another model's worker starts: its class is taken before the API's
	// last reading of the models is old.
	ships := detect.Model{Name: "ships", Classes: []string{"ship"}, Input: model.Input}
	shipsWorker := h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: 10 * time.Second, Model: ships})
	if r := h.post(bus, "bus.jpg", map[string]string{"classes": "ship"}, ""); r.status != http.StatusAccepted {
		t.Errorf("classes=ship with a ships worker: %d %s", r.status, r.raw)
	}
	if diff := cmp.Diff([]detect.ServedModel{{Model: ships, Workers: 1}, {Model: model, Workers: 1}}, h.models()); diff != "" {
		t.Errorf("GET /models (-want +got):\n%s", diff)
	}

	// The ships worker stops: its model leaves the list at once (GET
	// /models reads Redis at most a second ago), and its class is refused
	// once the API's reading for class checks is renewed (5 s).
	shipsWorker.Shutdown()
	testenv.Eventually(t, 3*time.Second, "a stopped worker's model still listed", func() bool { return len(h.models()) == 1 })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		r := h.post(bus, "bus.jpg", map[string]string{"classes": "ship"}, "")
		if r.status == http.StatusBadRequest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("classes=ship 10 s after the ships worker stopped: %d %s, want 400", r.status, r.raw)
		}
	}
}

func cond(ok bool, format string, args ...any) string {
	if ok {
		return ""
	}
	return fmt.Sprintf(format, args...)
}

// TestStates walks a task through every state a client can see.
func TestStates(t *testing.T) {
	h := newHarness(t, options{})
	bus := testenv.ReadImage(t, "bus.jpg")

	// PENDING: no worker yet.
	id := h.submit(bus, nil)
	if r := h.get("/result/" + id); r.body["status"] != "PENDING" {
		t.Fatalf("before any worker: %s", r.raw)
	}
	// ?wait on a task that does not end returns its state after N seconds.
	start := time.Now()
	if r := h.get("/result/" + id + "?wait=1"); r.body["status"] != "PENDING" || time.Since(start) < time.Second {
		t.Errorf("wait=1 on a pending task: %s after %v", r.raw, time.Since(start))
	}

	// STARTED, then SUCCESS: a worker holds the task until released.
	g := &gate{d: detector(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
	h.startWorker(g, 1)
	awaitEntered(t, g, 1)
	if r := h.get("/result/" + id); r.body["status"] != "STARTED" {
		t.Errorf("while running: %s", r.raw)
	}
	// ?wait returns as soon as the task ends, long before its limit.
	done := make(chan response)
	go func() { done <- h.get("/result/" + id + "?wait=30") }()
	time.Sleep(100 * time.Millisecond)
	released := time.Now()
	close(g.release)
	r := <-done
	if r.body["status"] != "SUCCESS" || r.body["result"] == nil {
		t.Errorf("after release: %s", r.raw)
	}
	if d := time.Since(released); d > 2*time.Second {
		t.Errorf("?wait answered %v after the task ended", d)
	}
	g.entered = nil

	// RETRY: a transient fault, then SUCCESS on the next attempt.
	g.mu.Lock()
	g.fails = 1
	g.mu.Unlock()
	id = h.submit(bus, nil)
	testenv.Eventually(t, 20*time.Second, "task never reached RETRY", func() bool {
		return h.get("/result/" + id).body["status"] == "RETRY"
	})
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Errorf("after the retry: %+v", ti)
	}

	// FAILURE: an image that passes the API's checks but cannot decode
	// (a PNG whose compressed data is garbage) fails at once with a
	// sentence, without retries.
	broken := brokenPNG(t)
	id = h.submit(broken, nil)
	ti := h.result(id)
	if ti.Status != detect.StatusFailure || !strings.Contains(ti.Error, "could not be decoded") || strings.Contains(ti.Error, "skip retry") {
		t.Errorf("undecodable image: %+v", ti)
	}
	info, err := retried(h, id)
	if err != nil || info != 0 {
		t.Errorf("undecodable image was retried %d times (%v)", info, err)
	}

	// 404: an id that never existed, and one that is not an id at all.
	for _, bad := range []string{"00000000-0000-0000-0000-000000000000", "not..an..id", strings.Repeat("a", 100)} {
		if r := h.get("/result/" + bad); r.status != http.StatusNotFound || r.body["error"] == nil {
			t.Errorf("GET /result/%s: %d %s", bad, r.status, r.raw)
		}
	}
	testenv.Eventually(t, 5*time.Second, "uploads left behind", func() bool { return len(h.uploadsLeft()) == 0 })
}

// brokenPNG is a PNG with a valid structure and a corrupt IDAT stream.
func brokenPNG(t *testing.T) []byte {
	good := testenv.EncodePNG(t, testenv.Gradient(64, 64))
	out := append([]byte{}, good[:33]...)
	out = append(out, testenv.PNGChunk("IDAT", []byte("\x78\x9cthis is not deflate data at all"))...)
	return append(out, testenv.PNGChunk("IEND", nil)...)
}

// retried returns how many times asynq retried a task.
func retried(h *harness, id string) (int, error) {
	info, err := hasynq.NewInspectorFromRedisClient(h.rdb).GetTaskInfo("detect", id)
	if err != nil {
		return -1, err
	}
	return info.Retried, nil
}

func TestResultsExpire(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{ResultTTL: 2 * time.Second}})
	h.startWorker(detector(t), 1)
	id := h.submit(testenv.ReadImage(t, "zidane.jpg"), nil)
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Fatalf("%+v", ti)
	}
	testenv.Eventually(t, 20*time.Second, "result still readable after RESULT_TTL", func() bool {
		return h.get("/result/"+id).status == http.StatusNotFound
	})
}

func TestFiftyConcurrentSubmissions(t *testing.T) {
	h := newHarness(t, options{})
	h.startWorker(detector(t), 2)
	// Photos of five different sizes, so that a result computed on
	// another request's bytes (the API reuses its upload buffers) shows.
	var images [][]byte
	for _, name := range []string{"bus.jpg", "zidane.jpg", "dog.jpg", "horses.jpg", "person.jpg"} {
		images = append(images, testenv.ReadImage(t, name))
	}
	ids := make([]string, 50)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = h.submit(images[i%len(images)], nil)
		}()
	}
	wg.Wait()
	for i, id := range ids {
		ti := h.result(id)
		if ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s", id, ti.Status, ti.Error)
			continue
		}
		if got, want := decodeResult(t, ti).Image, uprightSize(t, images[i%len(images)]); got != want {
			t.Errorf("task %s: result for a %v image, the upload was %v", id, got, want)
		}
	}
	testenv.Eventually(t, 5*time.Second, "uploads left behind", func() bool { return len(h.uploadsLeft()) == 0 })
}

// TestWorkerLogsRetryAndFailure: an attempt that will be retried is logged
// as such, not as the task's failure, and a task that fails for good is
// logged with the sentence its client reads.
func TestWorkerLogsRetryAndFailure(t *testing.T) {
	h := newHarness(t, options{})
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g := &gate{d: detector(t), fails: 1}
	h.startWorkerConfig(g, asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: 10 * time.Second, Logger: log})

	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Fatalf("after the retry: %+v", ti)
	}
	retried := fmt.Sprintf(`msg="task attempt failed; it will be retried" task_id=%s attempt=1 attempts=3`, id)
	if out := logs.String(); !strings.Contains(out, retried) || strings.Contains(out, `msg="task failed"`) {
		t.Errorf("logs of a task retried once, want %q and no failure:\n%s", retried, out)
	}

	id = h.submit(brokenPNG(t), nil)
	ti := h.result(id)
	if ti.Status != detect.StatusFailure {
		t.Fatalf("a PNG that cannot decode: %+v", ti)
	}
	failed := fmt.Sprintf(`msg="task failed" task_id=%s error="%s`, id, ti.Error)
	if out := logs.String(); !strings.Contains(out, failed) {
		t.Errorf("logs of a failed task, want %q:\n%s", failed, out)
	}
}

// heldDeletes is an upload store whose deletes begin by sending their
// upload on deleting, then wait for release to close.
type heldDeletes struct {
	asynq.Uploads
	deleting chan string
	release  chan struct{}
}

func (u heldDeletes) Delete(ctx context.Context, ref string) error {
	u.deleting <- ref
	<-u.release
	return u.Uploads.Delete(ctx, ref)
}

// TestResultAnnouncedBeforeUploadDeleted: a worker announces a task's end
// as it writes the result, so that waiting clients are answered without
// waiting for the worker to delete the upload. With the delete held, the
// result is readable and announced, and the upload is still there; once
// the delete goes on, the upload is gone.
func TestResultAnnouncedBeforeUploadDeleted(t *testing.T) {
	h := newHarness(t, options{})
	sub := h.rdb.Subscribe(context.Background(), asynq.DoneChannel)
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(context.Background()); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	up := heldDeletes{Uploads: h.uploads, deleting: make(chan string, 1), release: make(chan struct{})}
	h.startWorkerOn(up, detector(t), asynq.ServerConfig{Concurrency: 1, ShutdownTimeout: 10 * time.Second})
	release := sync.OnceFunc(func() { close(up.release) })
	t.Cleanup(release) // before the worker's shutdown, which waits for the delete

	r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "")
	id, _ := r.body["task_id"].(string)
	if r.status != http.StatusAccepted || id == "" {
		t.Fatalf("POST: %d %s", r.status, r.raw)
	}
	select {
	case <-up.deleting:
	case <-time.After(60 * time.Second):
		t.Fatal("the worker did not delete the upload within 60 s")
	}
	select {
	case m := <-sub.Channel():
		if m.Payload != id {
			t.Errorf("announced %q, want the task %q", m.Payload, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task's end was not announced while its upload's delete was held")
	}
	if got := h.result(id); got.Status != detect.StatusSuccess {
		t.Errorf("GET /result while the upload's delete is held: %+v, want SUCCESS", got)
	}
	if left := h.uploadsLeft(); len(left) != 1 {
		t.Errorf("uploads while the delete is held: %v, want the task's", left)
	}
	release()
	testenv.Eventually(t, 5*time.Second, "the upload left after its delete went on", func() bool { return len(h.uploadsLeft()) == 0 })
}
