package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

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
	conn := openUpload(t, addr, len(data))
	conn.Write(data[:len(data)/2])
	return conn
}

// openUpload opens a connection to the API at addr and sends the headers
// of a raw POST /predict whose JPEG body is length bytes long, and none
// of the body. The connection closes when the test ends.
func openUpload(t *testing.T, addr string, length int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", length)
	return conn
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
	h.redis.RestartDurable()
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
