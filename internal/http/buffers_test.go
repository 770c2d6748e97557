package http

import (
	"bytes"
	"testing"
)

// TestBufferPoolDropsLargeBuffers checks that the buffer of a large upload
// is not kept for reuse, so the API does not hold its memory, and that a
// buffer handed out is empty.
func TestBufferPoolDropsLargeBuffers(t *testing.T) {
	var p bufferPool
	big := p.get()
	big.Grow(maxPooledBytes + 1)
	big.WriteString("large upload")
	p.put(big)
	for i := 0; i < 100; i++ {
		b := p.get()
		if b == big {
			t.Fatal("a buffer larger than maxPooledBytes was reused")
		}
		if b.Len() != 0 {
			t.Fatalf("get returned a buffer holding %d bytes", b.Len())
		}
		b.WriteString("small upload")
		p.put(b)
	}
}

// TestParseUploadReusesBuffer checks that an image read into a used
// buffer is the image, whatever the buffer held before.
func TestParseUploadReusesBuffer(t *testing.T) {
	buf := bytes.NewBufferString("bytes of an earlier, longer upload")
	body := "--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\nimage\r\n--b--\r\n"
	u, err := parseUpload(bytes.NewBufferString(body), "multipart/form-data; boundary=b", int64(len(body)), 1<<20, buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(u.data) != "image" {
		t.Errorf("data %q, want %q", u.data, "image")
	}
}
