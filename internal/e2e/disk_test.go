package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/testenv"
)

// mountSmallDisk mounts a tmpfs of size bytes on dir, unmounted when the
// test ends: a real file system that fills up. It skips the test where
// mounting is not permitted (not root, or no CAP_SYS_ADMIN).
func mountSmallDisk(t *testing.T, dir string, size int) {
	t.Helper()
	err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+strconv.Itoa(size)+",mode=0700")
	if err != nil {
		t.Skipf("mounting a %d-byte tmpfs for the upload folder: %v (needs root)", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
}

// postUntilRefused posts img until the API refuses it, at most n times,
// and returns the ids of the tasks accepted and the refusal (zero if none).
func (h *harness) postUntilRefused(img []byte, n int) (accepted []string, refused response) {
	h.t.Helper()
	for range n {
		r := h.post(img, "bus.jpg", nil, "")
		if r.status != http.StatusAccepted {
			return accepted, r
		}
		accepted = append(accepted, r.body["task_id"].(string))
	}
	return accepted, response{}
}

// TestFullUploadDisk: when the upload folder's disk is full, or would be
// left with less than UPLOAD_DISK_RESERVE free, an upload is answered 503
// with Retry-After and a sentence, the API logs why, nothing half-written
// stays on the disk, the uploads already accepted are processed, and once
// the workers have freed their room uploads are accepted again, without a
// restart.
func TestFullUploadDisk(t *testing.T) {
	img := testenv.ReadImage(t, "bus.jpg")
	for _, tc := range []struct {
		name     string
		reserve  int64
		accepted int    // uploads that fit in a disk of three and a half
		logged   string // what the API's log says
	}{
		{"full", 0, 3, "no space left on device"},
		{"reserve", int64(len(img)), 2, fmt.Sprintf("UPLOAD_DISK_RESERVE keeps %.1f MiB free; the upload has %.1f MiB", float64(len(img))/(1<<20), float64(len(img))/(1<<20))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.SyncBuffer
			// The mount hides the API's first mark: a worker finds the
			// API's uploads once a turn puts one on the small disk.
			h := newHarness(t, options{diskReserve: tc.reserve, markInterval: 100 * time.Millisecond,
				api: apihttp.Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}})
			mountSmallDisk(t, h.uploadDir, 7*len(img)/2)

			accepted, refused := h.postUntilRefused(img, 10)
			const sentence = "The upload could not be stored; try again shortly."
			if refused.status != http.StatusServiceUnavailable || refused.header.Get("Retry-After") == "" || refused.body["error"] != sentence {
				t.Fatalf("upload after %d accepted: %d %s (Retry-After %q), want 503 %q with Retry-After",
					len(accepted), refused.status, refused.raw, refused.header.Get("Retry-After"), sentence)
			}
			if len(accepted) != tc.accepted {
				t.Errorf("%d uploads accepted before the refusal, want %d", len(accepted), tc.accepted)
			}
			wantRefusals(t, h.api.URL, map[string]float64{"upload_store": 1})
			if out := logs.String(); !strings.Contains(out, tc.logged) {
				t.Errorf("API log, want %q:\n%s", tc.logged, out)
			}
			left := h.uploadsLeft()
			if len(left) != len(accepted) {
				t.Errorf("files in the upload folder %v, want the %d accepted uploads only", left, len(accepted))
			}
			for _, name := range left {
				if fi, err := os.Stat(filepath.Join(h.uploadDir, name)); err != nil || fi.Size() != int64(len(img)) {
					t.Errorf("upload %s: %v, %v; want %d bytes", name, fi, err, len(img))
				}
			}
			if r := h.get("/readyz"); r.status != http.StatusOK {
				t.Errorf("API /readyz with the upload disk full: %d %s, want 200 (Redis answers)", r.status, r.raw)
			}

			h.startWorker(detector(t), 2)
			for _, id := range accepted {
				if ti := h.result(id); ti.Status != detect.StatusSuccess {
					t.Errorf("task %s accepted before the refusal: %s %s", id, ti.Status, ti.Error)
				}
			}
			testenv.Eventually(t, 5*time.Second, "uploads of finished tasks left on the disk", func() bool { return len(h.uploadsLeft()) == 0 })
			for range 4 {
				if ti := h.result(h.submit(img, nil)); ti.Status != detect.StatusSuccess {
					t.Errorf("upload once the disk had room: %s %s", ti.Status, ti.Error)
				}
			}
		})
	}
}

// TestRedisDiskFull: Redis's disk fills (Compose's Redis writes an
// append-only file, fsynced every second) and Redis refuses every write
// with MISCONF. The API answers 503 with Retry-After and keeps no upload,
// results stay readable and the API ready, a worker starting then does
// not fail, and once
// the disk has room again the tasks accepted before it filled end SUCCESS
// and uploads are taken again, without a restart. Redis's file then holds
// every accepted task: restarted from it, Redis still has their results.
func TestRedisDiskFull(t *testing.T) {
	h := newHarness(t, options{})
	if !h.redis.Restartable() {
		t.Skip("needs a Redis of its own (REDIS_URL is set)")
	}
	const size = 8 << 20
	h.redis.Stop()
	mountSmallDisk(t, h.redis.Dir(), size)
	everysec := []string{"--appendonly", "yes", "--appendfsync", "everysec"}
	h.redis.Start(everysec...)
	img := testenv.ReadImage(t, "bus.jpg")
	var accepted []string
	for range 2 {
		accepted = append(accepted, h.submit(img, nil))
	}

	// Leave Redis a few kilobytes: its next writes to its file fail.
	var st syscall.Statfs_t
	if err := syscall.Statfs(h.redis.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	ballast := filepath.Join(h.redis.Dir(), "ballast")
	if err := os.WriteFile(ballast, make([]byte, int64(st.Bavail)*st.Bsize-4096), 0o600); err != nil {
		t.Fatal(err)
	}
	// The kilobytes left take a few tasks.
	more, refused := h.postUntilRefused(img, 20)
	accepted = append(accepted, more...)
	if refused.status != http.StatusServiceUnavailable || refused.header.Get("Retry-After") == "" {
		t.Fatalf("upload with Redis's disk full, after %d accepted: %d %s, want 503 with Retry-After", len(accepted), refused.status, refused.raw)
	}
	if err := h.rdb.Set(t.Context(), "probe", "1", 0).Err(); err == nil || !strings.Contains(err.Error(), "MISCONF") {
		t.Fatalf("a write with Redis's disk full: %v, want MISCONF", err)
	}
	testenv.Eventually(t, 5*time.Second, "the refused upload was kept", func() bool { return len(h.uploadsLeft()) == len(accepted) })
	for _, id := range accepted {
		if r := h.get("/result/" + id); r.status != http.StatusOK || r.body["status"] != string(detect.StatusPending) {
			t.Errorf("GET /result/%s with Redis's disk full: %d %s, want 200 PENDING", id, r.status, r.raw)
		}
	}
	// Results are still served: the API stays ready, so that a load
	// balancer keeps it (Redis answers PING with MISCONF too).
	if r := h.get("/readyz"); r.status != http.StatusOK {
		t.Errorf("API /readyz with Redis's disk full: %d %s, want 200", r.status, r.raw)
	}
	// The worker answers its outage with one line, not asynq's errors; and
	// since Redis answers, even with MISCONF, it is not cut off from it.
	var log testenv.SyncBuffer
	reg := prometheus.NewRegistry()
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 2, ShutdownTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&log, nil)), Registerer: reg})
	testenv.Eventually(t, 10*time.Second, "the worker did not log that Redis fails its PING", func() bool {
		return strings.Contains(log.String(), "Redis fails the worker's PING") && strings.Contains(log.String(), "MISCONF")
	})
	health := httptest.NewServer(apihttp.HealthHandler(func(context.Context) error { return nil }, reg))
	defer health.Close()
	if up := metric(t, health.URL, "yoloserve_worker_redis_up"); up != 1 {
		t.Errorf("yoloserve_worker_redis_up %v with Redis answering MISCONF, want 1", up)
	}
	t.Logf("%d tasks accepted, 2 before the disk was full; then 503: %s", len(accepted), refused.raw)

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	for _, id := range accepted {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s accepted before the disk was full: %s %s", id, ti.Status, ti.Error)
		}
	}
	if ti := h.result(h.submit(img, nil)); ti.Status != detect.StatusSuccess {
		t.Errorf("upload once Redis's disk had room: %s %s", ti.Status, ti.Error)
	}
	testenv.Eventually(t, 5*time.Second, "uploads of finished tasks left", func() bool { return len(h.uploadsLeft()) == 0 })
	testenv.Eventually(t, 5*time.Second, "the worker did not log that Redis answers again", func() bool {
		return strings.Contains(log.String(), `msg="Redis answers again"`)
	})
	if n := strings.Count(log.String(), "level=ERROR"); n != 1 {
		t.Errorf("the worker logged %d errors, want the outage's one:\n%s", n, log.String())
	}

	// Once Redis has written what waited in its buffer, a kill (SIGKILL)
	// loses none of it.
	testenv.Eventually(t, 5*time.Second, "Redis's file never caught up", func() bool {
		v, _ := testenv.InfoField(t, h.rdb, "persistence", "aof_last_write_status")
		p, _ := testenv.InfoField(t, h.rdb, "persistence", "aof_pending_bio_fsync")
		return v == "ok" && p == "0"
	})
	h.redis.Stop()
	h.redis.Start(everysec...)
	for _, id := range accepted {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			t.Errorf("task %s after Redis restarted from its file: %s %s", id, ti.Status, ti.Error)
		}
	}
}
