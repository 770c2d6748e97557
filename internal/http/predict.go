package http

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"time"

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
// makes, enqueues a task and answers 202 with its id and Location. With
// ?wait=N it then holds the answer until the task ends (200 with the
// task's state, as GET /result gives it) or N seconds pass (202 with the
// state then).
func (s *Server) predict(w http.ResponseWriter, r *http.Request) {
	ti, wait, err := s.accept(w, r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	w.Header().Set("Location", "/result/"+ti.ID)
	if wait > 0 {
		// The body may have taken most of the server's write timeout
		// (counted from the request's headers) to arrive.
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + writeSlack))
		got, err := s.wait(r.Context(), ti.ID, wait)
		if err != nil {
			// The task is queued: its state is for the client to ask
			// again.
			s.log.Warn("waiting for an accepted task", "task_id", ti.ID, "error", err)
		} else {
			ti = got
		}
	}
	status := http.StatusAccepted
	if ti.Status.Done() {
		status = http.StatusOK
	}
	writeJSON(w, status, ti)
}

// accept reads and checks an upload, stores it and enqueues its task,
// holding one of the server's upload slots, the body's bytes and a buffer
// only until then. It returns the task, pending, and the wait the request
// asks for; its errors are those to answer the client with.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (detect.TaskInfo, time.Duration, error) {
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		return detect.TaskInfo{}, 0, errTooManyUploads
	}
	need := s.bodySize(r)
	var stored int64 // the bytes the store holds, for the Room
	if s.cfg.Room != nil {
		// The most the store may be given: the body's buffer may grow to
		// twice the limit, the image not past it.
		most := min(need, s.cfg.MaxUploadBytes)
		if err := s.cfg.Room.Admit(most); err != nil {
			return detect.TaskInfo{}, 0, err
		}
		defer func() { s.cfg.Room.Done(most, stored) }()
	}
	if !s.bodies.take(need) {
		return detect.TaskInfo{}, 0, errTooManyBytes
	}
	defer s.bodies.give(need)
	// The upload's bytes live in buf, which goes back to the pool when
	// accept returns: nothing below keeps them past Save.
	buf := s.buffers.get()
	defer s.buffers.put(buf)
	u, err := s.readUpload(w, r, buf)
	if err != nil {
		return detect.TaskInfo{}, 0, err
	}
	param := func(name string) string {
		if v, ok := u.fields[name]; ok {
			return v
		}
		return r.URL.Query().Get(name)
	}
	p, err := detect.ParseParams(param)
	if err != nil {
		return detect.TaskInfo{}, 0, err
	}
	if err := s.checkClasses(r.Context(), p.Classes); err != nil {
		return detect.TaskInfo{}, 0, err
	}
	var wait time.Duration
	if v := param("wait"); v != "" {
		if wait, err = parseWait(v, s.cfg.MaxWait); err != nil {
			return detect.TaskInfo{}, 0, err
		}
	}
	if _, err := decode.Inspect(u.data, s.cfg.MaxPixels); err != nil {
		return detect.TaskInfo{}, 0, err
	}
	began := time.Now()
	ref, err := s.uploads.Save(r.Context(), u.data)
	s.metrics.store.Observe(time.Since(began).Seconds())
	if err != nil {
		if ref != "" {
			s.dropUpload(context.WithoutCancel(r.Context()), ref)
		}
		return detect.TaskInfo{}, 0, err
	}
	stored = int64(len(u.data))
	began = time.Now()
	id, err := s.queue.Enqueue(r.Context(), detect.Job{Upload: ref, Filename: u.filename, Params: p, StoredAt: began})
	s.metrics.enqueue.Observe(time.Since(began).Seconds())
	if err != nil {
		if s.dropUpload(context.WithoutCancel(r.Context()), ref) {
			stored = 0
		}
		return detect.TaskInfo{}, 0, err
	}
	return detect.TaskInfo{ID: id, Status: detect.StatusPending}, wait, nil
}

// Backoff of the background deletes of dropUpload: about a minute in all.
const (
	dropRetryFirst = 250 * time.Millisecond
	dropRetryMax   = 16 * time.Second
	dropRetryFor   = time.Minute
)

// dropUpload deletes an upload whose task was not enqueued (or that was
// stored while its store reported an error), and says whether it is gone.
// The store may fail as the enqueue did: with uploads in Redis, a Redis
// that restarts refuses both, then answers "loading" for a moment, and the
// upload is there again once it has loaded. So a delete that fails is
// tried again in the background, backing off, for about a minute or until
// the server's Shutdown returns; an upload left after that goes at
// UPLOAD_MAX_AGE (the folder's sweeper, or the key's expiry).
func (s *Server) dropUpload(ctx context.Context, ref string) bool {
	err := s.uploads.Discard(ctx, ref)
	if err == nil {
		return true
	}
	s.log.Warn("deleting an upload that was not enqueued; trying again in the background", "error", err)
	s.drops.Add(1)
	go func() {
		defer s.drops.Done()
		var err error
		wait := dropRetryFirst
		for end := time.Now().Add(dropRetryFor); time.Now().Before(end); wait = min(2*wait, dropRetryMax) {
			select {
			case <-s.dropping.Done():
				return
			case <-time.After(wait):
			}
			if err = s.uploads.Discard(s.dropping, ref); err == nil {
				s.log.Info("deleted an upload that was not enqueued")
				return
			}
		}
		s.log.Warn("an upload that was not enqueued is left until UPLOAD_MAX_AGE", "error", err)
	}()
	return false
}

// errTooManyUploads refuses an upload past MAX_INFLIGHT_UPLOADS, and
// errTooManyBytes one past MAX_INFLIGHT_BYTES; the client reads the same.
var (
	errTooManyUploads = detect.Unavailable(detect.ReasonUploadsInFlight, "Too many uploads in progress; try again shortly.")
	errTooManyBytes   = detect.Unavailable(detect.ReasonUploadBytesInFlight, "Too many uploads in progress; try again shortly.")
)

// upload is what a /predict body carries.
type upload struct {
	data     []byte
	filename string            // the client's name for the file, sanitised
	fields   map[string]string // the other form fields
}

// readUpload checks the request's framing and streams its body, at most
// MaxUploadBytes, through parseUpload, the image into buf, at the pace
// MinUploadRate asks (pace.go). It returns parseUpload's errors, or
// ETIMEOUT for a body that fell behind its pace.
func (s *Server) readUpload(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) (upload, error) {
	if r.ContentLength > s.cfg.MaxUploadBytes {
		return upload{}, tooLarge(s.cfg.MaxUploadBytes)
	}
	var paced *pacedBody // nil without a pace to keep
	raw := r.Body
	if s.cfg.MinUploadRate > 0 {
		paced = s.pace(w, r)
		defer paced.release()
		raw = paced
	}
	body := s.readers.get(http.MaxBytesReader(w, raw, s.cfg.MaxUploadBytes))
	defer s.readers.put(body)
	u, err := parseUpload(body, r.Header.Get("Content-Type"), r.ContentLength, s.cfg.MaxUploadBytes, buf)
	if err != nil && paced != nil && paced.late {
		return u, paced.tooSlow()
	}
	return u, err
}

// rawTypes are the content types of a body that is the image itself.
var rawTypes = map[string]bool{"image/jpeg": true, "image/png": true, "application/octet-stream": true}

// parseUpload reads a /predict body into buf, emptied first, which the
// upload's data then shares: a multipart body's image field, its small
// fields into a map, files in other fields skipped; or a body that is the
// image itself (rawTypes), whose parameters come in the query. body must
// stop at limit with an *http.MaxBytesError. It returns EINVALID for a
// body of another type, a malformed one or one without an image, and
// ETOOLARGE past the limit.
func parseUpload(body io.Reader, contentType string, contentLength, limit int64, buf *bytes.Buffer) (upload, error) {
	var u upload
	ct, params, _ := mime.ParseMediaType(contentType)
	if rawTypes[ct] {
		return readRaw(body, contentLength, limit, buf)
	}
	if ct != "multipart/form-data" || params["boundary"] == "" {
		return u, detect.Errorf(detect.EINVALID, `POST /predict takes multipart/form-data with the image in the field "image", or the image itself as the body with Content-Type image/jpeg, image/png or application/octet-stream.`)
	}
	mr := multipart.NewReader(body, params["boundary"])
	u.fields = map[string]string{}
	found := false
	stray := "" // the first field other than "image" that carried a file
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return u, bodyError(err, limit)
		}
		name := part.FormName()
		switch {
		case name == "image":
			if found {
				return u, detect.Errorf(detect.EINVALID, `Send one image per request in the field "image".`)
			}
			found = true
			u.filename = detect.Sanitize(part.FileName(), 255)
			if u.data, err = readInto(buf, part, contentLength, limit); err != nil {
				return u, err
			}
		case part.FileName() != "":
			// A file in another field ("file", as many clients name it)
			// is skipped as unknown fields are; if no image comes, the
			// answer names where the file was.
			if _, err := io.Copy(io.Discard, part); err != nil {
				return u, bodyError(err, limit)
			}
			if stray == "" {
				stray = detect.Sanitize(name, 40)
			}
		case len(u.fields) < maxFields:
			b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				return u, bodyError(err, limit)
			}
			if len(b) > maxFieldBytes {
				return u, detect.Errorf(detect.EINVALID, "The form field %q is too long.", detect.Sanitize(name, 40))
			}
			u.fields[name] = string(b)
		default:
			return u, detect.Errorf(detect.EINVALID, "Too many form fields.")
		}
	}
	switch {
	case !found && stray != "":
		return u, detect.Errorf(detect.EINVALID, `No image: the file came in the multipart field %q; send it in the field "image" (curl -F image=@photo.jpg).`, stray)
	case !found:
		return u, detect.Errorf(detect.EINVALID, `No image: send the file in the multipart field "image" (curl -F image=@photo.jpg).`)
	}
	return u, nil
}

// readRaw reads a body that is the image itself.
func readRaw(body io.Reader, contentLength, limit int64, buf *bytes.Buffer) (upload, error) {
	data, err := readInto(buf, body, contentLength, limit)
	if err != nil {
		return upload{}, err
	}
	if len(data) == 0 {
		return upload{}, detect.Errorf(detect.EINVALID, "No image: the body is empty (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg').")
	}
	return upload{data: data}, nil
}

// readInto reads r into buf, emptied first and grown to the request's
// length when it is known and within limit, and returns buf's bytes. The
// room grown includes bytes.MinRead past the length: ReadFrom needs that
// much free to read the end of the body, and would otherwise double the
// buffer, and copy it, once the last byte is in.
func readInto(buf *bytes.Buffer, r io.Reader, contentLength, limit int64) ([]byte, error) {
	buf.Reset()
	if contentLength > 0 && contentLength <= limit {
		buf.Grow(int(contentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, bodyError(err, limit)
	}
	return buf.Bytes(), nil
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

// result answers a task's state, waiting up to ?wait=N seconds for it to
// end, or until the server begins to shut down.
func (s *Server) result(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if !validID(id) {
		s.Error(w, r, detect.Errorf(detect.ENOTFOUND, "No task %s.", detect.Sanitize(id, 64)))
		return
	}
	var ti detect.TaskInfo
	var err error
	if v := r.URL.Query().Get("wait"); v != "" {
		d, perr := parseWait(v, s.cfg.MaxWait)
		if perr != nil {
			s.Error(w, r, perr)
			return
		}
		ti, err = s.wait(r.Context(), id, d)
	} else {
		ti, err = s.queue.Task(r.Context(), id)
	}
	if err != nil {
		s.Error(w, r, err)
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
