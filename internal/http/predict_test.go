package http

import (
	"bytes"
	"io"
	"mime/multipart"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/detect"
)

// TestParseUploadFiles: a photo sent in another field than "image" (as
// "file", which many clients use) is answered with a 400 that names both
// fields, where one over 4 KB read "The form field "file" is too long.";
// beside an image, a file in another field is skipped as unknown fields
// are.
func TestParseUploadFiles(t *testing.T) {
	photo := bytes.Repeat([]byte{0xd8}, 100<<10) // over the 4 KB of a field
	type part struct{ field, filename, value string }
	for _, tc := range []struct {
		name       string
		parts      []part
		wantErr    string // in the message of an EINVALID error
		wantFields map[string]string
	}{
		{"file in field file", []part{{"file", "photo.jpg", string(photo)}, {"conf", "", "0.5"}},
			`No image: the file came in the multipart field "file"; send it in the field "image"`, nil},
		{"small file in field upload", []part{{"upload", "p.jpg", "tiny"}},
			`the file came in the multipart field "upload"`, nil},
		{"no file", []part{{"conf", "", "0.5"}}, `No image: send the file in the multipart field "image"`, nil},
		{"image and another file", []part{{"meta", "m.json", string(photo)}, {"image", "photo.jpg", string(photo)}, {"conf", "", "0.5"}},
			"", map[string]string{"conf": "0.5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body bytes.Buffer
			mw := multipart.NewWriter(&body)
			for _, p := range tc.parts {
				var w io.Writer
				var err error
				if p.filename != "" {
					w, err = mw.CreateFormFile(p.field, p.filename)
				} else {
					w, err = mw.CreateFormField(p.field)
				}
				if err != nil {
					t.Fatal(err)
				}
				w.Write([]byte(p.value))
			}
			mw.Close()
			var buf bytes.Buffer
			u, err := parseUpload(&body, mw.FormDataContentType(), int64(body.Len()), 1<<20, &buf)
			if tc.wantErr != "" {
				if detect.ErrorCode(err) != detect.EINVALID || !strings.Contains(detect.ErrorMessage(err), tc.wantErr) {
					t.Fatalf("got %v (%s), want EINVALID with %q", err, detect.ErrorCode(err), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(u.data, photo) {
				t.Errorf("the image read is %d bytes, want the %d of the photo", len(u.data), len(photo))
			}
			if diff := cmp.Diff(tc.wantFields, u.fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

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
