// Package e2e tests the service end to end, in process: the real API
// handler over HTTP, real asynq workers with the real detector and model,
// and a real redis-server.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"yoloserve/internal/asynq"
	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
	"yoloserve/internal/yolo"
)

var (
	detOnce sync.Once
	det     *yolo.Detector
	detErr  error
)

// detector opens the real detector on the shared model once for the
// package: two images at a time, as a worker on this machine would.
func detector(t *testing.T) *yolo.Detector {
	t.Helper()
	detOnce.Do(func() {
		var jpeg decode.JPEGDecoder
		if jpeg, detErr = imagelib.OpenJPEG(""); detErr != nil {
			return
		}
		var png decode.PNGDecoder
		if png, detErr = imagelib.OpenPNG(""); detErr != nil {
			return
		}
		det, detErr = yolo.Open(yolo.Config{
			ModelPath: testenv.Model(t, "yolov8n.onnx"), Concurrency: 2, Threads: 1,
			Decoder: &decode.Decoder{JPEG: jpeg, PNG: png},
		})
	})
	if detErr != nil {
		t.Fatal(detErr)
	}
	return det
}

func TestMain(m *testing.M) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	slog.SetDefault(log)
	asynq.RouteRedisLogs(log)
	code := m.Run()
	if err := testenv.RemoveBinaries(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// options tune a harness.
type options struct {
	api         apihttp.Config
	queue       asynq.QueueConfig
	diskReserve int64 // UPLOAD_DISK_RESERVE (default none)
	// noMarks: the API keeps no mark in its upload store, as one from
	// before marks; markInterval: how often it puts a new one, and the
	// harness's workers look for it (default 10 s).
	noMarks      bool
	markInterval time.Duration
}

type harness struct {
	t         *testing.T
	redis     *testenv.RedisServer
	rdb       redis.UniversalClient
	queue     *asynq.Queue
	uploads   *upload.Dir
	uploadDir string
	api       *apiServer
	// markInterval is the workers' ServerConfig.MarkInterval unless set.
	markInterval time.Duration
}

// apiServer is the real API server (with its timeouts) on a loopback port.
type apiServer struct {
	URL string
	srv *apihttp.Server
}

func newHarness(t *testing.T, o options) *harness {
	t.Helper()
	h := &harness{t: t, redis: testenv.StartRedis(t), uploadDir: t.TempDir(), markInterval: o.markInterval}
	var err error
	if h.rdb, err = asynq.NewClient(h.redis.URL, asynq.TLSFiles{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.rdb.Close() })
	if h.uploads, err = upload.NewDir(h.uploadDir, o.diskReserve); err != nil {
		t.Fatal(err)
	}
	switch {
	case o.queue.Retries == 0:
		o.queue.Retries = 2
	case o.queue.Retries < 0: // none: every attempt is the last
		o.queue.Retries = 0
	}
	h.queue = asynq.NewQueue(h.rdb, o.queue)
	t.Cleanup(func() { h.queue.Close() })
	h.serveAPI(o)
	return h
}

// serveAPI starts the real API server on h's queue and uploads.
// Like the API process, it checks classes against the models the workers
// announce, and keeps a mark in its upload store for the workers to find.
func (h *harness) serveAPI(o options) {
	t := h.t
	if !o.noMarks {
		marks := asynq.StartUploadMarks(h.rdb, asynq.UploadMarksConfig{Queue: o.queue.Queue, Interval: o.markInterval}, h.uploads)
		t.Cleanup(marks.Stop)
	}
	if o.api.Models == nil {
		o.api.Models = asynq.NewServedModels(h.rdb, o.queue.Queue)
	}
	srv := apihttp.NewServer(o.api, h.queue, h.uploads)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	h.api = &apiServer{URL: "http://" + l.Addr().String(), srv: srv}
}

// startWorker runs an asynq worker in process with d (the real detector
// unless a test wraps it), stopped when the test ends.
func (h *harness) startWorker(d asynq.Detector, concurrency int) *asynq.Server {
	h.t.Helper()
	return h.startWorkerConfig(d, asynq.ServerConfig{Concurrency: concurrency, ShutdownTimeout: 10 * time.Second})
}

// startWorkerConfig is startWorker with a whole configuration.
func (h *harness) startWorkerConfig(d asynq.Detector, cfg asynq.ServerConfig) *asynq.Server {
	h.t.Helper()
	return h.startWorkerOn(h.uploads, d, cfg)
}

// startWorkerOn is startWorkerConfig with the uploads read from up, which
// may not be the API's store.
func (h *harness) startWorkerOn(up asynq.Uploads, d asynq.Detector, cfg asynq.ServerConfig) *asynq.Server {
	h.t.Helper()
	if cfg.MarkInterval == 0 {
		cfg.MarkInterval = h.markInterval
	}
	srv := asynq.NewServer(h.rdb, cfg, d, up)
	if err := srv.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(srv.Shutdown)
	return srv
}

// multipartBody builds a multipart body with the file in field (when data
// is not nil) and the extra fields.
func multipartBody(t testing.TB, field, filename string, data []byte, fields map[string]string) (io.Reader, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	if data != nil {
		fw, err := mw.CreateFormFile(field, filename)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(data)
	}
	mw.Close()
	return &b, mw.FormDataContentType()
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (h *harness) do(req *http.Request) response {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		h.t.Fatalf("%s %s: status %d, body not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	return r
}

// post submits an image to /predict with form fields and a query string.
func (h *harness) post(data []byte, filename string, fields map[string]string, query string) response {
	h.t.Helper()
	body, ct := multipartBody(h.t, "image", filename, data, fields)
	req, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict"+query, body)
	req.Header.Set("Content-Type", ct)
	return h.do(req)
}

// postRaw posts body, the image itself (Content-Type image/jpeg), to
// /predict of the API at url: a body without Len goes chunked.
func (h *harness) postRaw(url string, body io.Reader) response {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/predict", body)
	req.Header.Set("Content-Type", "image/jpeg")
	return h.do(req)
}

// submit posts an image and returns the task id, failing unless accepted.
func (h *harness) submit(data []byte, fields map[string]string) string {
	h.t.Helper()
	r := h.post(data, "image.jpg", fields, "")
	if r.status != http.StatusAccepted {
		h.t.Fatalf("POST /predict: %d %s", r.status, r.raw)
	}
	return r.body["task_id"].(string)
}

func (h *harness) get(path string) response {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.api.URL+path, nil)
	return h.do(req)
}

// result waits (with ?wait) for a task to end and returns its answer.
func (h *harness) result(id string) detect.TaskInfo {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := h.get("/result/" + id + "?wait=20")
		if r.status != http.StatusOK {
			h.t.Fatalf("GET /result/%s: %d %s", id, r.status, r.raw)
		}
		var ti detect.TaskInfo
		if err := json.Unmarshal(r.raw, &ti); err != nil {
			h.t.Fatal(err)
		}
		if ti.Status.Done() {
			return ti
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("task %s still %s after 60s", id, ti.Status)
		}
	}
}

// decodeResult reads a SUCCESS result.
func decodeResult(t testing.TB, ti detect.TaskInfo) detect.Result {
	t.Helper()
	if ti.Status != detect.StatusSuccess {
		t.Fatalf("task %s: %s %s", ti.ID, ti.Status, ti.Error)
	}
	var r detect.Result
	if err := json.Unmarshal(ti.Result, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkBusDetections checks the classes, in order, of bus.jpg's
// detections with the default parameters.
func checkBusDetections(t testing.TB, r detect.Result) {
	t.Helper()
	var names []string
	for _, d := range r.Detections {
		names = append(names, d.Name)
	}
	if diff := cmp.Diff([]string{"person", "person", "person", "bus", "person"}, names); diff != "" {
		t.Errorf("bus.jpg's detections (-want +got):\n%s", diff)
	}
}

// uprightSize returns the size of an image as its result gives it.
func uprightSize(t testing.TB, data []byte) detect.Size {
	t.Helper()
	h, err := decode.Inspect(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	return h.Upright()
}

// models reads GET /models.
func (h *harness) models() []detect.ServedModel {
	h.t.Helper()
	r := h.get("/models")
	var body struct{ Models []detect.ServedModel }
	if err := json.Unmarshal(r.raw, &body); r.status != http.StatusOK || err != nil {
		h.t.Fatalf("GET /models: %d %s", r.status, r.raw)
	}
	return body.Models
}

// uploadsLeft lists the files in the upload folder, but for the API's
// marks and the folder of spare files, which hold no upload.
func (h *harness) uploadsLeft() []string {
	es, err := os.ReadDir(h.uploadDir)
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if upload.IsMarkFile(e.Name()) || e.Name() == upload.SpareFolder {
			continue
		}
		names = append(names, e.Name())
	}
	return names
}

// uploadsInRedis lists the upload keys in Redis that hold an upload,
// leaving out the empty values that discarded uploads leave in their
// place until they expire.
func (h *harness) uploadsInRedis() []string {
	h.t.Helper()
	ctx := context.Background()
	keys, err := h.rdb.Keys(ctx, "yoloserve:upload:*").Result()
	if err != nil {
		h.t.Fatal(err)
	}
	var held []string
	for _, k := range keys {
		if h.rdb.StrLen(ctx, k).Val() > 0 {
			held = append(held, k)
		}
	}
	return held
}

// gate wraps the real detector so a test can hold tasks in STARTED, or
// make the first attempts fail with a transient fault.
type gate struct {
	d       asynq.Detector
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	fails   int // attempts left to fail with a transient error
}

func (g *gate) Detect(ctx context.Context, data []byte, p detect.Params) (*detect.Result, error) {
	g.mu.Lock()
	fail := g.fails > 0
	if fail {
		g.fails--
	}
	g.mu.Unlock()
	if fail {
		return nil, io.ErrUnexpectedEOF // a fault of the service, not of the image
	}
	if g.entered != nil {
		// A held task lets go when its context ends (the worker's
		// shutdown time ran out), as the detector does while it waits.
		select {
		case g.entered <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.d.Detect(ctx, data, p)
}

// awaitEntered waits for n tasks to enter g, failing after 30 s.
func awaitEntered(t *testing.T, g *gate, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-g.entered:
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d tasks reached the detector", i, n)
		}
	}
}

// afterCommand is a go-redis hook: it is called with each command a
// client sends outside a pipeline, once Redis has answered it or the
// command has failed, and what it returns is the command's error.
type afterCommand func(cmd redis.Cmder, err error) error

func (f afterCommand) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f afterCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { return f(cmd, next(ctx, cmd)) }
}

func (f afterCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
