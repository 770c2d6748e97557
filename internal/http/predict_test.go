package http

import (
	"bytes"
	"runtime"
	"testing"
)

// TestReadIntoAllocatesOnce: a body of known length is read into one
// allocation of about its size, raw or as a multipart part, where the
// buffer used to double (and be copied) to read the end of the body: 60
// MB allocated for a 20 MB upload, and 40 MB held.
func TestReadIntoAllocatesOnce(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race, bytes.Buffer's growth allocates its new slice twice")
	}
	const n = 20 << 20
	body := bytes.Repeat([]byte{0xff}, n)
	for _, tc := range []struct {
		name          string
		contentLength int64 // of the whole request
	}{
		{"raw", n},
		{"multipart part", n + 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			data, err := readInto(&buf, bytes.NewReader(body), tc.contentLength, 32<<20)
			runtime.ReadMemStats(&after)
			if err != nil || len(data) != n {
				t.Fatalf("read %d bytes, %v", len(data), err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > n+n/16 {
				t.Errorf("allocated %d bytes for a %d-byte body", got, n)
			}
			if buf.Cap() > n+n/16 {
				t.Errorf("the buffer holds %d bytes for a %d-byte body", buf.Cap(), n)
			}
		})
	}
}
