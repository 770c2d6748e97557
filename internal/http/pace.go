package http

import (
	"io"
	"net/http"
	"time"

	"yoloserve/internal/detect"
)

// An upload holds one of MaxInflight slots and its share of
// MaxInflightBytes while its body arrives. A client that sends slowly, or
// stops sending without closing (a phone that lost its signal, or a
// slowloris), held them until the server's read timeout, two minutes: 64
// connections sending a byte a second kept every other upload out with
// 503. With MinUploadRate set, a body must keep its pace: no pause over
// UploadIdle, and from UploadGrace on, at least MinUploadRate bytes a
// second on average since its first. Past either, its read fails, the
// upload is answered 408 and its slot is free.

// readTimeout is the server's ReadTimeout: the longest a request, its
// body included, may take to arrive.
const readTimeout = 2 * time.Minute

// The pace's defaults: a body's first bytes may take UploadGrace, and
// no pause may last over UploadIdle.
const (
	defaultUploadGrace = 5 * time.Second
	defaultUploadIdle  = 10 * time.Second
)

// pacedBody is a request body whose reads fail once it falls behind its
// pace, by the connection's read deadline, which each read moves.
type pacedBody struct {
	body        io.ReadCloser
	rc          *http.ResponseController
	began, last time.Time // the first read, the last that brought bytes
	n           int64     // bytes read
	rate        float64   // bytes a second
	grace, idle time.Duration
	late        bool // a read failed at or past its deadline
}

// pace returns r's body, paced as s's Config says; once the body is read,
// release gives the connection back the server's read deadline.
func (s *Server) pace(w http.ResponseWriter, r *http.Request) *pacedBody {
	now := time.Now()
	return &pacedBody{body: r.Body, rc: http.NewResponseController(w), began: now, last: now,
		rate: float64(s.cfg.MinUploadRate), grace: s.cfg.UploadGrace, idle: s.cfg.UploadIdle}
}

// release gives the connection back the server's read deadline, so that
// a request waiting on ?wait is not cut off by the pace's. A late body's
// connection keeps its passed deadline: the server then closes it at
// once after the answer, where it would otherwise wait for the rest of
// the body to drain it.
func (p *pacedBody) release() {
	if !p.late {
		p.rc.SetReadDeadline(p.began.Add(readTimeout))
	}
}

// deadline is when the next bytes must have come: the last bytes' time
// and the pause allowed, or earlier, the time by which the bytes so far
// plus the grace keep the rate, and never past the server's read timeout.
func (p *pacedBody) deadline() time.Time {
	d := p.last.Add(p.idle)
	if byRate := p.began.Add(p.grace + time.Duration(float64(p.n)/p.rate*float64(time.Second))); byRate.Before(d) {
		d = byRate
	}
	if most := p.began.Add(readTimeout); most.Before(d) {
		d = most
	}
	return d
}

// Read reads from the body, first moving the connection's read deadline
// to the pace's. Where the connection has no deadline to move (an
// HTTP/2 stream of a server without it), the server's read timeout holds
// alone. It returns the body's errors; one at or past the deadline marks
// the body late.
func (p *pacedBody) Read(b []byte) (int, error) {
	d := p.deadline()
	if err := p.rc.SetReadDeadline(d); err != nil {
		return p.body.Read(b)
	}
	n, err := p.body.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.last = time.Now()
	}
	if err != nil && err != io.EOF && !time.Now().Before(d) {
		p.late = true
	}
	return n, err
}

// Close closes the body.
func (p *pacedBody) Close() error { return p.body.Close() }

// tooSlow is the error of a body that fell behind its pace.
func (p *pacedBody) tooSlow() error {
	return detect.Errorf(detect.ETIMEOUT, "The upload came too slowly: the API takes a body that keeps arriving, with no pause over %v and at least %d bytes a second after its first %v. Send it again over a faster link.",
		p.idle, int64(p.rate), p.grace)
}
