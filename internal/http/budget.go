package http

import (
	"bytes"
	"net/http"
	"sync"
)

// bodyBudget counts the bytes of the upload bodies being read against a
// maximum, so that the API's memory stays bounded whatever their sizes.
type bodyBudget struct {
	max int64

	mu  sync.Mutex
	now int64
}

// take counts n more bytes and returns true, or returns false, counting
// nothing, when they would pass the maximum.
func (b *bodyBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.now+n > b.max {
		return false
	}
	b.now += n
	return true
}

// give returns n bytes that take counted.
func (b *bodyBudget) give(n int64) {
	b.mu.Lock()
	b.now -= n
	b.mu.Unlock()
}

// held returns the bytes counted now.
func (b *bodyBudget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now
}

// bodySize returns the bytes r's body will hold in memory while it is
// read: its Content-Length and the room readInto adds, twice
// MaxUploadBytes without one (a buffer grown by doubling up to the limit),
// and none for a body over the limit, which is refused unread.
func (s *Server) bodySize(r *http.Request) int64 {
	switch limit := s.cfg.MaxUploadBytes; {
	case r.ContentLength > limit:
		return 0
	case r.ContentLength >= 0:
		return r.ContentLength + bytes.MinRead
	default:
		return 2 * limit
	}
}
