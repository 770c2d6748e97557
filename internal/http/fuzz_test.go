package http

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"testing"
	"time"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
)

// FuzzUpload feeds arbitrary bodies and content types to the upload checks
// the API runs before storing anything (multipart parsing or a raw body,
// with their limits, then the image header check): they must answer with
// a typed client error or accept, never panic or report an internal error.
func FuzzUpload(f *testing.F) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("conf", "0.5")
	mw.WriteField("wait", "2.5")
	fw, _ := mw.CreateFormFile("image", "x.png")
	fw.Write([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"))
	mw.Close()
	f.Add(b.Bytes(), mw.FormDataContentType())
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"../../x\"\r\n\r\n\xff\xd8\xff\xe0\r\n--x--\r\n"), "multipart/form-data; boundary=x")
	f.Add([]byte("--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n\r\n\xff\xd8\xff\xe0\r\n--x--\r\n"), "multipart/form-data; boundary=x")
	f.Add([]byte("hello"), "text/plain")
	f.Add([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00"), "image/jpeg")
	f.Add([]byte{}, "application/octet-stream")
	f.Add([]byte{}, "multipart/form-data; boundary=")
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := http.MaxBytesReader(nil, io.NopCloser(bytes.NewReader(body)), limit)
		u, err := parseUpload(r, contentType, int64(len(body)), limit, new(bytes.Buffer))
		if err == nil {
			_, err = decode.Inspect(u.data, 1_000_000)
		}
		if err == nil {
			_, err = detect.ParseParams(func(k string) string { return u.fields[k] })
		}
		if v, ok := u.fields["wait"]; ok && err == nil {
			_, err = parseWait(v, time.Minute)
		}
		if code := detect.ErrorCode(err); code == detect.EINTERNAL {
			t.Fatalf("internal error for client input: %v", err)
		}
		if ErrorStatus(err) >= 500 && err != nil {
			t.Fatalf("status %d for client input: %v", ErrorStatus(err), err)
		}
	})
}
