package e2e

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// TestWorkerThatCannotSeeUploads: a worker whose uploads are not the API's
// (UPLOAD_STORE=dir on another host, or another folder) says so in its
// log, and its tasks fail with a sentence that says the service is at
// fault, not that the upload expired. Its attempts are retried, so that a
// worker that sees the uploads takes the task.
func TestWorkerThatCannotSeeUploads(t *testing.T) {
	h := newHarness(t, options{})
	elsewhere, err := upload.NewDir(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	blind := asynq.NewServer(h.rdb, asynq.ServerConfig{Concurrency: 1, PollInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}, detector(t), elsewhere)
	if err := blind.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(blind.Shutdown)
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
