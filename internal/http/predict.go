package http

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
)

const (
	maxFields     = 32   // form fields other than the image
	maxFieldBytes = 4096 // bytes of one such field
)

// predict checks an upload (size while streaming, content, dimensions,
// parameters) before storing anything, saves it under a name the server
// makes, enqueues a task and answers 202 with its id and Location.
func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	data, filename, fields, err := s.readUpload(w, r)
	if err != nil {
		Error(w, r, s.log, err)
		return
	}
	p, err := detect.ParseParams(func(name string) string {
		if v, ok := fields[name]; ok {
			return v
		}
		return r.URL.Query().Get(name)
	})
	if err != nil {
		Error(w, r, s.log, err)
		return
	}
	if _, err := decode.Inspect(data, s.cfg.MaxPixels); err != nil {
		Error(w, r, s.log, err)
		return
	}
	ref, err := s.uploads.Save(r.Context(), data)
	if err != nil {
		Error(w, r, s.log, err)
		return
	}
	id, err := s.queue.Enqueue(r.Context(), detect.Job{Upload: ref, Filename: filename, Params: p})
	if err != nil {
		if derr := s.uploads.Delete(context.WithoutCancel(r.Context()), ref); derr != nil {
			s.log.Warn("deleting an upload that was not enqueued", "error", derr)
		}
		Error(w, r, s.log, err)
		return
	}
	w.Header().Set("Location", "/result/"+id)
	writeJSON(w, http.StatusAccepted, detect.TaskInfo{ID: id, Status: detect.StatusPending})
}

// readUpload streams a multipart body: the image field into memory, up to
// MaxUploadBytes for the whole body, and the small fields into a map. It
// returns EINVALID for a body that is not multipart or has no image,
// ETOOLARGE past the limit.
func (s *Server) readUpload(w http.ResponseWriter, r *http.Request) (data []byte, filename string, fields map[string]string, err error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "multipart/form-data" {
		return nil, "", nil, detect.Errorf(detect.EINVALID, `POST /predict takes multipart/form-data with the image in the field "image".`)
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		return nil, "", nil, tooLarge(s.cfg.MaxUploadBytes)
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, "", nil, detect.Errorf(detect.EINVALID, "The multipart body is malformed: %s.", safeText(err.Error()))
	}
	fields = map[string]string{}
	found := false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", nil, bodyError(err, s.cfg.MaxUploadBytes)
		}
		name := part.FormName()
		switch {
		case name == "image":
			if found {
				return nil, "", nil, detect.Errorf(detect.EINVALID, `Send one image per request in the field "image".`)
			}
			found = true
			filename = safeText(part.FileName())
			var buf bytes.Buffer
			if r.ContentLength > 0 {
				buf.Grow(int(r.ContentLength))
			}
			if _, err := buf.ReadFrom(part); err != nil {
				return nil, "", nil, bodyError(err, s.cfg.MaxUploadBytes)
			}
			data = buf.Bytes()
		case len(fields) < maxFields:
			b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				return nil, "", nil, bodyError(err, s.cfg.MaxUploadBytes)
			}
			if len(b) > maxFieldBytes {
				return nil, "", nil, detect.Errorf(detect.EINVALID, "The form field %q is too long.", safeText(name))
			}
			fields[name] = string(b)
		default:
			return nil, "", nil, detect.Errorf(detect.EINVALID, "Too many form fields.")
		}
	}
	if !found {
		return nil, "", nil, detect.Errorf(detect.EINVALID, `No image: send the file in the multipart field "image" (curl -F image=@photo.jpg).`)
	}
	return data, filename, fields, nil
}

func tooLarge(limit int64) error {
	return detect.Errorf(detect.ETOOLARGE, "The upload is larger than the limit of %d bytes.", limit)
}

// bodyError classifies an error met while reading the body.
func bodyError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge(limit)
	}
	return detect.Errorf(detect.EINVALID, "The multipart body is malformed or was cut short.")
}

// safeText makes client text fit to log or store: valid UTF-8, no control
// characters, at most 255 bytes.
func safeText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	for len(s) > 255 {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// result answers a task's state, waiting up to ?wait=N seconds for it to
// end.
func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if !validID(id) {
		Error(w, r, s.log, detect.Errorf(detect.ENOTFOUND, "No task %s.", safeText(id)))
		return
	}
	var ti detect.TaskInfo
	var err error
	if v := r.URL.Query().Get("wait"); v != "" {
		d, perr := parseWait(v, s.cfg.MaxWait)
		if perr != nil {
			Error(w, r, s.log, perr)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		ti, err = s.queue.Wait(ctx, id)
	} else {
		ti, err = s.queue.Task(r.Context(), id)
	}
	if err != nil {
		Error(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, ti)
}

// validID accepts the ids Enqueue makes (UUIDs) and anything shaped like
// them, refusing what could not be one before Redis is asked.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
