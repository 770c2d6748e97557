package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// TestWorkerThatCannotSeeUploads: a worker process whose upload folder is
// not the API's (UPLOAD_STORE=dir on another host, or another UPLOAD_DIR)
// finds none of the marks the API keeps there. It says so in its log, on
// /readyz and in its metrics, and takes no task: the task waits for a
// worker that sees the uploads, which runs it at its first attempt.
func TestWorkerThatCannotSeeUploads(t *testing.T) {
	h := newHarness(t, options{})
	env := h.workerEnv(t, "UPLOAD_DIR="+t.TempDir())
	w := testenv.Start(t, "worker", env...)
	health := workerHealthURL(env)
	const why = "not ready: this worker does not see the API's uploads (UPLOAD_STORE, UPLOAD_DIR)"
	var ready string
	testenv.Eventually(t, 30*time.Second, "the worker's /readyz never said it cannot see the uploads", func() bool {
		resp, err := http.Get(health + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ready = fmt.Sprintf("%d %s", resp.StatusCode, b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), why)
	})
	if m := getText(t, health+"/metrics"); !strings.Contains(m, "\nyoloserve_worker_uploads_unseen 1\n") {
		t.Errorf("worker metrics, want yoloserve_worker_uploads_unseen 1:\n%s", m)
	}
	if out := w.Output(); !strings.Contains(out, "this worker sees none of the uploads of the APIs on its queue, and takes no task until it does") ||
		!strings.Contains(out, "level=ERROR") {
		t.Errorf("worker log, want the error that it sees none of the API's uploads:\n%s", out)
	}

	id := h.submit(testenv.ReadImage(t, "bus.jpg"), nil)
	h.staysPending(id, 2*time.Second)
	h.startWorker(detector(t), 1)
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Errorf("task on a worker that sees the uploads: %s %s", ti.Status, ti.Error)
	}
	for _, outcome := range []string{"success", "failure", "retry"} {
		if n := metric(t, health, `yoloserve_worker_tasks_total{outcome="`+outcome+`"}`); n != 0 {
			t.Errorf("the worker that cannot see the uploads ran tasks: %v with outcome %s", n, outcome)
		}
	}
	if out := w.Output(); strings.Contains(out, "is missing") {
		t.Errorf("worker log, want no task of its own:\n%s", out)
	}
	t.Logf("/readyz: %s", ready)
}

// staysPending fails the test unless task id reads PENDING throughout d,
// beside workers that cannot see the uploads. What is checked is that
// nothing happens: a worker that took tasks would have taken it at once
// (an idle one is woken within a Redis round trip).
func (h *harness) staysPending(id string, d time.Duration) {
	h.t.Helper()
	for until := time.Now().Add(d); time.Now().Before(until); time.Sleep(50 * time.Millisecond) {
		if st := h.get("/result/" + id).body["status"]; st != string(detect.StatusPending) {
			h.t.Fatalf("task beside a worker that cannot see the uploads: %v, want PENDING", st)
		}
	}
}

// TestWorkerTakesTasksOnceItSeesUploads: a worker held for want of the
// API's uploads takes tasks once its folder is the API's (a volume
// mounted late), without a restart.
func TestWorkerTakesTasksOnceItSeesUploads(t *testing.T) {
	h := newHarness(t, options{markInterval: 50 * time.Millisecond})
	link := filepath.Join(t.TempDir(), "uploads")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	store, err := upload.NewDir(link, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := h.startWorkerOn(store, detector(t), asynq.ServerConfig{Concurrency: 1, PollInterval: 100 * time.Millisecond, MarkInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if w.Ready() == nil {
		t.Fatal("a worker on another folder than the API's started ready")
	}
	id := h.submit(testenv.ReadImage(t, "zidane.jpg"), nil)
	h.staysPending(id, time.Second)
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(h.uploadDir, link); err != nil {
		t.Fatal(err)
	}
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Errorf("task once the worker sees the uploads: %s %s", ti.Status, ti.Error)
	}
	if err := w.Ready(); err != nil {
		t.Errorf("worker that sees the uploads: %v", err)
	}
}

// TestWorkerThatCannotSeeUploadsOfAnOldAPI: beside an API that keeps no
// marks (one from before them), a worker cannot tell whether it sees the
// uploads, and takes tasks. One whose upload it cannot find says so in its
// log, and its task fails with a sentence that says the service is at
// fault, not that the upload expired. Its attempts are retried, so that a
// worker that sees the uploads takes the task.
func TestWorkerThatCannotSeeUploadsOfAnOldAPI(t *testing.T) {
	h := newHarness(t, options{noMarks: true})
	elsewhere, err := upload.NewDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	blind := h.startWorkerOn(elsewhere, detector(t), asynq.ServerConfig{Concurrency: 1, PollInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err := blind.Ready(); err != nil {
		t.Errorf("worker beside an API that keeps no marks: %v, want it ready", err)
	}
	img := testenv.ReadImage(t, "bus.jpg")
	ti := h.result(h.submit(img, nil))
	const sentence = "The workers could not find the uploaded image that the API had stored: the service is misconfigured. Submit it again later."
	if ti.Status != detect.StatusFailure || ti.Error != sentence {
		t.Errorf("task of a worker that cannot see the uploads: %s %q, want FAILURE %q", ti.Status, ti.Error, sentence)
	}
	const said = "this worker does not see the API's uploads"
	if out := logs.String(); strings.Count(out, said) != 3 {
		t.Errorf("worker log, want %q once for each of the task's 3 attempts:\n%s", said, out)
	}

	id := h.submit(img, nil)
	testenv.Eventually(t, 10*time.Second, "the task's first attempt was not retried", func() bool {
		return h.get("/result/" + id).body["status"] == string(detect.StatusRetry)
	})
	blind.Shutdown()
	h.startWorker(detector(t), 1)
	if ti := h.result(id); ti.Status != detect.StatusSuccess {
		t.Errorf("task retried on a worker that sees the uploads: %s %s", ti.Status, ti.Error)
	}
}

// TestExpiredUploadFails: a task whose upload is gone after UPLOAD_MAX_AGE
// (or from an API that does not say when it stored it) fails at once with
// the sentence that says so; the worker logs no misconfiguration.
func TestExpiredUploadFails(t *testing.T) {
	h := newHarness(t, options{})
	var logs testenv.SyncBuffer
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1, UploadMaxAge: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	for _, stored := range []time.Time{time.Now().Add(-61 * time.Minute), {}} {
		id, err := h.queue.Enqueue(t.Context(), detect.Job{Upload: "0123456789abcdef0123456789abcdef.upload", StoredAt: stored})
		if err != nil {
			t.Fatal(err)
		}
		const sentence = "The uploaded image is gone (it expired before a worker took it); submit it again."
		if ti := h.result(id); ti.Status != detect.StatusFailure || ti.Error != sentence {
			t.Errorf("task whose upload was stored at %v and is gone: %s %q, want FAILURE %q", stored, ti.Status, ti.Error, sentence)
		}
	}
	if out := logs.String(); strings.Contains(out, "does not see the API's uploads") || strings.Count(out, `msg="task failed"`) != 2 || strings.Contains(out, "will be retried") {
		t.Errorf("worker log, want two failures at their first attempt and no misconfiguration:\n%s", out)
	}
}

// TestRemovedUploadFails: a task whose upload is gone well within
// UPLOAD_MAX_AGE, on a worker that sees the uploads of every API (it finds
// their marks), fails at its first attempt with a sentence that says the
// upload is gone: no worker would find it, and the deployment is not at
// fault. The worker logs a warning that says what removes uploads.
func TestRemovedUploadFails(t *testing.T) {
	h := newHarness(t, options{})
	var logs testenv.SyncBuffer
	w := h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err := w.Ready(); err != nil {
		t.Fatal(err)
	}
	id, err := h.queue.Enqueue(t.Context(), detect.Job{Upload: "0123456789abcdef0123456789abcdef.upload", StoredAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	const sentence = "The uploaded image is gone; submit it again."
	if ti := h.result(id); ti.Status != detect.StatusFailure || ti.Error != sentence {
		t.Errorf("task whose upload was removed: %s %q, want FAILURE %q", ti.Status, ti.Error, sentence)
	}
	if out := logs.String(); !strings.Contains(out, "though this worker sees the uploads of every API on its queue: it was removed") ||
		strings.Contains(out, "does not see the API's uploads") || strings.Contains(out, "will be retried") {
		t.Errorf("worker log, want the warning that the upload was removed, no misconfiguration and no retry:\n%s", out)
	}
}
