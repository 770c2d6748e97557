package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	apihttp "yoloserve/internal/http"
	"yoloserve/internal/testenv"
)

// TestBadInput sends every kind of bad upload through the real API: each
// gets {"error": ...} with the right 4xx, no internals in the body, and
// nothing stored.
func TestBadInput(t *testing.T) {
	h := newHarness(t, options{api: apihttp.Config{MaxUploadBytes: 2 << 20}})
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	png := testenv.EncodePNG(t, testenv.Gradient(64, 48))
	random := make([]byte, 4096)
	rand.Read(random)
	multipartOf := func(field, filename string, data []byte, fields map[string]string) (io.Reader, string) {
		return multipartBody(t, field, filename, data, fields)
	}
	image := func(data []byte, filename string) req {
		b, ct := multipartOf("image", filename, data, nil)
		return req{b, ct, ""}
	}
	withFields := func(fields map[string]string) req {
		b, ct := multipartOf("image", "x.jpg", jpg, fields)
		return req{b, ct, ""}
	}
	for _, tc := range []struct {
		name   string
		req    req
		status int
	}{
		{"empty body", req{strings.NewReader(""), "multipart/form-data; boundary=x", ""}, 400},
		{"empty body no type", req{strings.NewReader(""), "", ""}, 400},
		{"random body", req{bytes.NewReader(random), "multipart/form-data; boundary=x", ""}, 400},
		{"non-multipart JSON", req{strings.NewReader(`{"image":"x"}`), "application/json", ""}, 400},
		{"urlencoded form", req{strings.NewReader("image=abc"), "application/x-www-form-urlencoded", ""}, 400},
		{"missing image field", withoutImage(t, map[string]string{"conf": "0.5"}), 400},
		{"misnamed image field", func() req { b, ct := multipartOf("file", "x.jpg", jpg, nil); return req{b, ct, ""} }(), 400},
		{"two images", twoImages(t, jpg), 400},
		{"empty file", image([]byte{}, "x.jpg"), 415},
		{"random bytes as jpg", image(random, "photo.jpg"), 415},
		{"text", image([]byte("just some text\n"), "notes.txt"), 415},
		{"html as png", image([]byte("<!DOCTYPE html><html><body>hi</body></html>"), "page.png"), 415},
		{"svg", image([]byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>`), "x.svg"), 415},
		{"gif", image([]byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"), "x.jpg"), 415},
		{"bmp", image(append([]byte("BM"), random[:100]...), "x.bmp"), 415},
		{"webp", image([]byte("RIFF\x24\x00\x00\x00WEBPVP8 "), "x.webp"), 415},
		{"pdf", image([]byte("%PDF-1.7\n%âãÏÓ\n"), "x.jpg"), 415},
		{"truncated jpeg", image(jpg[:len(jpg)/2], "x.jpg"), 415},
		{"truncated png", image(png[:len(png)-30], "x.png"), 415},
		{"jpeg header only", image(jpg[:20], "x.jpg"), 415},
		{"png 100000x100000", image(testenv.HugePNG(100000, 100000), "big.png"), 413},
		{"jpeg 65535x65535", image(testenv.HugeJPEG(t, 65535, 65535), "big.jpg"), 413},
		{"body over the limit", image(bytes.Repeat([]byte{0xff}, 3<<20), "big.jpg"), 413},
		{"conf out of range", withFields(map[string]string{"conf": "2"}), 400},
		{"conf not a number", withFields(map[string]string{"conf": "high"}), 400},
		{"iou negative", withFields(map[string]string{"iou": "-0.1"}), 400},
		{"max_det zero", withFields(map[string]string{"max_det": "0"}), 400},
		{"max_det huge", withFields(map[string]string{"max_det": "99999999999999999999"}), 400},
		{"agnostic not bool", withFields(map[string]string{"agnostic": "sometimes"}), 400},
		{"classes empty entry", withFields(map[string]string{"classes": "0,,1"}), 400},
		{"classes negative id", withFields(map[string]string{"classes": "-3"}), 400},
		{"bad query parameter", func() req { r := withFields(nil); r.query = "?iou=-1"; return r }(), 400},
		{"field too long", withFields(map[string]string{"conf": strings.Repeat("9", 5000)}), 400},
		{"raw empty body", req{strings.NewReader(""), "image/jpeg", ""}, 400},
		{"raw random bytes", req{bytes.NewReader(random), "application/octet-stream", ""}, 415},
		{"raw text as png", req{strings.NewReader("just some text\n"), "image/png", ""}, 415},
		{"raw truncated jpeg", req{bytes.NewReader(jpg[:len(jpg)/2]), "image/jpeg", ""}, 415},
		{"raw body over the limit", req{bytes.NewReader(bytes.Repeat([]byte{0xff}, 3<<20)), "image/jpeg", ""}, 413},
		{"raw body, bad query parameter", req{bytes.NewReader(jpg), "image/jpeg", "?conf=2"}, 400},
		{"wait negative", withFields(map[string]string{"wait": "-1"}), 400},
		{"wait over the limit", func() req { r := withFields(nil); r.query = "?wait=61"; return r }(), 400},
		{"wait not a number", req{bytes.NewReader(jpg), "image/jpeg", "?wait=soon"}, 400},
		{"raw body of another type", req{bytes.NewReader(jpg), "image/gif", ""}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hreq, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict"+tc.req.query, tc.req.body)
			if tc.req.contentType != "" {
				hreq.Header.Set("Content-Type", tc.req.contentType)
			}
			r := h.do(hreq)
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.raw)
			}
			checkErrorBody(t, r, h.uploadDir)
			if left := h.uploadsLeft(); len(left) != 0 {
				t.Errorf("stored %v", left)
			}
		})
	}
}

// req is a raw request to /predict.
type req struct {
	body        io.Reader
	contentType string
	query       string
}

func withoutImage(t *testing.T, fields map[string]string) req {
	b, ct := multipartBody(t, "", "", nil, fields)
	return req{b, ct, ""}
}

func twoImages(t *testing.T, jpg []byte) req {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i := 0; i < 2; i++ {
		fw, _ := mw.CreateFormFile("image", fmt.Sprintf("%d.jpg", i))
		fw.Write(jpg)
	}
	mw.Close()
	return req{&b, mw.FormDataContentType(), ""}
}

// checkErrorBody asserts a JSON {"error": sentence} without internals.
func checkErrorBody(t *testing.T, r response, uploadDir string) {
	t.Helper()
	msg, ok := r.body["error"].(string)
	if !ok || msg == "" || len(r.body) != 1 {
		t.Errorf("body %s is not {\"error\": ...}", r.raw)
	}
	for _, leak := range []string{uploadDir, "goroutine", ".go:", "/work/", "/tmp/", "panic"} {
		if strings.Contains(string(r.raw), leak) {
			t.Errorf("error body leaks %q: %s", leak, r.raw)
		}
	}
}

// TestHostileFileNames: the client's file name is data, never a path.
func TestHostileFileNames(t *testing.T) {
	h := newHarness(t, options{})
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(64, 48), 90)
	for _, name := range []string{"../../x.jpg", "/etc/passwd", strings.Repeat("a", 3000) + ".jpg", "bad\xff\xfeutf8.jpg", "..", "C:\\windows\\x.jpg"} {
		r := h.post(jpg, name, nil, "")
		if r.status != http.StatusAccepted {
			t.Errorf("%q: %d %s", name, r.status, r.raw)
		}
	}
	// Every upload sits in UPLOAD_DIR under a server-made name.
	for _, f := range h.uploadsLeft() {
		if !serverName.MatchString(f) {
			t.Errorf("upload stored as %q", f)
		}
	}
	if n := len(h.uploadsLeft()); n != 6 {
		t.Errorf("%d uploads stored, want 6", n)
	}
}

var serverName = regexp.MustCompile(`^[0-9a-f]{32}\.upload$`)

// TestConcurrentGarbage: 40 garbage uploads at once all get a 4xx.
func TestConcurrentGarbage(t *testing.T) {
	h := newHarness(t, options{api: apihttp.Config{MaxUploadBytes: 1 << 20}})
	var wg sync.WaitGroup
	statuses := make([]int, 40)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			garbage := make([]byte, 1000+i*50000)
			rand.Read(garbage)
			var body io.Reader
			ct := "multipart/form-data; boundary=zzz"
			switch i % 4 {
			case 0:
				body = bytes.NewReader(garbage)
			case 1:
				body, ct = multipartBody(t, "image", "x.jpg", garbage, nil)
			case 2:
				body, ct = multipartBody(t, "image", "x.png", append([]byte("\x89PNG\r\n\x1a\n"), garbage...), nil)
			default:
				body, ct = bytes.NewReader(garbage), "image/jpeg"
			}
			req, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict", body)
			req.Header.Set("Content-Type", ct)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s < 400 || s >= 500 {
			t.Errorf("garbage upload %d: status %d", i, s)
		}
	}
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("stored %v", left)
	}
	if r := h.get("/readyz"); r.status != 200 {
		t.Errorf("API not ready after the garbage: %s", r.raw)
	}
}

// countingReader produces n bytes of a multipart file part and counts how
// many the server actually read.
type countingReader struct {
	mu   sync.Mutex
	read int64
	src  io.Reader
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.src.Read(p)
	c.mu.Lock()
	c.read += int64(n)
	c.mu.Unlock()
	return n, err
}

// TestOversizeBodyRefusedWhileStreaming sends a 200 MiB body of unknown
// length to an API with a 2 MiB limit: it answers 413 having read little
// more than the limit, so memory cannot grow with the body. The client
// counts what it hands its socket, which includes what the two sockets'
// buffers take in before the server's close reaches it: up to the
// kernel's largest receive and send buffers, which a busy machine fills
// (32 and 4 MiB here, and 10 MiB sent in one run of the whole suite).
func TestOversizeBodyRefusedWhileStreaming(t *testing.T) {
	const limit = 2 << 20
	h := newHarness(t, options{api: apihttp.Config{MaxUploadBytes: limit}})
	head := "--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
	src := &countingReader{src: io.MultiReader(strings.NewReader(head), io.LimitReader(zeros{}, 200<<20))}
	req, _ := http.NewRequest(http.MethodPost, h.api.URL+"/predict", src)
	req.ContentLength = -1 // chunked: the server cannot refuse it from the header
	req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d %s", resp.StatusCode, body)
		}
	} // an error means the server closed the connection mid-body, also a refusal
	src.mu.Lock()
	read := src.read
	src.mu.Unlock()
	if buffers := socketBuffers(t); read > limit+buffers+(1<<20) {
		t.Errorf("the client sent %d MiB before the refusal; the limit is 2 MiB, and the sockets' buffers take %d MiB", read>>20, buffers>>20)
	}
	if left := h.uploadsLeft(); len(left) != 0 {
		t.Errorf("stored %v", left)
	}
}

// socketBuffers returns the most a TCP connection's receive and send
// buffers can hold together on this machine (tcp_rmem's and tcp_wmem's
// maxima), failing the test when the kernel does not say.
func socketBuffers(t *testing.T) int64 {
	t.Helper()
	var sum int64
	for _, f := range []string{"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/ipv4/tcp_wmem"} {
		b, err := os.ReadFile(f)
		fields := strings.Fields(string(b))
		if err != nil || len(fields) != 3 {
			t.Fatalf("%s: %q %v", f, b, err)
		}
		n, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += n
	}
	return sum
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
