package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	apihttp "yoloserve/internal/http"
	"yoloserve/internal/testenv"
)

// TestBackPressure: past MAX_QUEUE waiting tasks, 503 with Retry-After,
// counted as queue_full.
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
	wantRefusals(t, h.api.URL, map[string]float64{"queue_full": 1})
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
// read, another upload gets 503 with Retry-After instead of more memory,
// counted as uploads_in_flight.
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
	wantRefusals(t, h.api.URL, map[string]float64{"uploads_in_flight": 1})
	slow.Close()
	testenv.Eventually(t, 10*time.Second, "uploads not accepted after the slow one ended", func() bool {
		return h.post(jpg, "x.jpg", nil, "").status == http.StatusAccepted
	})
}

// TestInflightBytesBounded: while a slow upload holds most of
// MAX_INFLIGHT_BYTES, an upload whose Content-Length would pass it, or
// one without a length (counted at twice MAX_UPLOAD_BYTES), gets 503 with
// Retry-After (counted as upload_bytes_in_flight), and one that fits is
// taken; once the slow one ends, the large one is taken too.
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
	wantRefusals(t, h.api.URL, map[string]float64{"upload_bytes_in_flight": 2})
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

// wantRefusals checks yoloserve_api_refusals_total on the /metrics page at
// url: want's counts for their reasons, and 0 for every other reason.
func wantRefusals(t *testing.T, url string, want map[string]float64) {
	t.Helper()
	got := map[string]float64{}
	all := map[string]float64{}
	for _, reason := range append(detect.UnavailableReasons(), "other") {
		all[reason] = want[reason]
		got[reason] = metric(t, url, `yoloserve_api_refusals_total{reason="`+reason+`"}`)
	}
	if diff := cmp.Diff(all, got); diff != "" {
		t.Errorf("refusals by reason (-want +got):\n%s", diff)
	}
}

// slowDisk is the real upload folder behind a disk that takes delay to
// write each upload, as a disk stall does.
type slowDisk struct {
	apihttp.Uploads
	delay time.Duration
}

func (d slowDisk) Save(ctx context.Context, data []byte) (string, error) {
	time.Sleep(d.delay)
	return d.Uploads.Save(ctx, data)
}

// TestUploadStepsTimed: an upload's write to the store and its task's
// enqueue are timed in yoloserve_api_upload_step_seconds, so that a slow
// disk shows as the store's step: with every write held 150 ms, the
// uploads' store steps fall past the 128 ms bucket and their enqueues
// under it, and the enqueue of an upload refused for a full queue is
// timed too.
func TestUploadStepsTimed(t *testing.T) {
	h := newHarness(t, options{queue: asynq.QueueConfig{MaxQueue: 2}})
	srv := apihttp.NewServer(apihttp.Config{}, h.queue, slowDisk{h.uploads, 150 * time.Millisecond})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Shutdown(context.Background())
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	for range 2 {
		if r := h.postRaw(ts.URL, bytes.NewReader(jpg)); r.status != http.StatusAccepted {
			t.Fatalf("POST: %d %s, want 202", r.status, r.raw)
		}
	}
	if r := h.postRaw(ts.URL, bytes.NewReader(jpg)); r.status != http.StatusServiceUnavailable {
		t.Fatalf("POST with the queue full: %d %s, want 503", r.status, r.raw)
	}
	const name = "yoloserve_api_upload_step_seconds"
	got := map[string]float64{}
	for _, step := range []string{"store", "enqueue"} {
		got[step+" count"] = metric(t, ts.URL, name+`_count{step="`+step+`"}`)
		got[step+" within 128 ms"] = metric(t, ts.URL, name+`_bucket{step="`+step+`",le="0.128"}`)
	}
	want := map[string]float64{"store count": 3, "store within 128 ms": 0, "enqueue count": 3, "enqueue within 128 ms": 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

// TestSlowUploadsAreCutOff: with MinUploadRate, an upload whose body
// trickles, and one whose client stops sending halfway without closing
// (a phone that lost its signal), hold their slots only until they fall
// behind the pace: each is then answered 408 with the reason, its slot
// is free and other uploads are taken again. An upload slower than a
// fast client but above the minimum is taken, though it lasts well past
// the grace.
func TestSlowUploadsAreCutOff(t *testing.T) {
	const grace, idle = 300 * time.Millisecond, 600 * time.Millisecond
	h := newHarness(t, options{api: apihttp.Config{MaxInflight: 2, MinUploadRate: 64 << 10, UploadGrace: grace, UploadIdle: idle}})
	jpg := testenv.ReadImage(t, "bus.jpg")
	addr := strings.TrimPrefix(h.api.URL, "http://")

	// The trickle sends a byte every 50 ms until its connection ends.
	trickle := openUpload(t, addr, len(jpg))
	go func() {
		for i := 0; ; i++ {
			if _, err := trickle.Write(jpg[i : i+1]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	stalled := beginUpload(t, addr, jpg) // half the body, then nothing
	testenv.Eventually(t, 10*time.Second, "the slow uploads never took both slots", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_uploads_reading") == 2
	})
	if r := h.post(jpg, "bus.jpg", nil, ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("an upload beside the two slow ones: %d %s, want 503", r.status, r.raw)
	}
	for name, conn := range map[string]net.Conn{"the trickle": trickle, "the stalled upload": stalled} {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s: no answer within 10 s: %v", name, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), "The upload came too slowly") {
			t.Errorf("%s: %d %s, want 408 saying the upload came too slowly", name, resp.StatusCode, body)
		}
	}
	testenv.Eventually(t, 10*time.Second, "the slow uploads' slots were never freed", func() bool {
		return metric(t, h.api.URL, "yoloserve_api_uploads_reading") == 0
	})
	if r := h.post(jpg, "bus.jpg", nil, ""); r.status != http.StatusAccepted {
		t.Errorf("an upload once the slow ones were cut off: %d %s, want 202", r.status, r.raw)
	}

	// 32 KB every 100 ms, five times the minimum: taken.
	began := time.Now()
	r := h.postRaw(h.api.URL, &pacedReader{data: jpg, chunk: 32 << 10, every: 100 * time.Millisecond})
	if r.status != http.StatusAccepted {
		t.Errorf("an upload at five times the minimum rate, %v long: %d %s, want 202", time.Since(began), r.status, r.raw)
	}
	if took := time.Since(began); took < 3*grace {
		t.Errorf("the paced upload took %v, want over %v: it does not test a body that lasts past the grace", took, 3*grace)
	}
}

// pacedReader gives data a chunk at a time, every interval.
type pacedReader struct {
	data  []byte
	chunk int
	every time.Duration
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(p.every)
	n := copy(b[:min(len(b), p.chunk)], p.data)
	p.data = p.data[n:]
	return n, nil
}
