// Package detect holds the service's domain: detection parameters, results,
// task states and the typed errors every adapter maps to its own protocol.
// It imports nothing but the standard library.
package detect

import (
	"errors"
	"fmt"
)

// Error codes. Adapters map them to their protocol (the HTTP adapter to
// statuses); the message of an error with a code other than EINTERNAL is
// meant for the client and must not carry internal details.
const (
	EINVALID      = "invalid"      // a bad parameter or a missing field
	EUNAUTHORIZED = "unauthorized" // a missing or wrong API key
	ENOTFOUND     = "not_found"    // no such task, or its result expired
	ETOOLARGE     = "too_large"    // body or image over a limit
	EUNSUPPORTED  = "unsupported"  // not a JPEG or PNG, or undecodable
	ERATELIMIT    = "rate_limited" // too many requests from one client
	ETIMEOUT      = "timeout"      // a request body that came too slowly
	EUNAVAILABLE  = "unavailable"  // Redis down or the queue full
	EINTERNAL     = "internal"     // anything else: a bug or a fault
)

// Error is an error with a code and a message a person can act on.
type Error struct {
	Code    string
	Message string
	// Reason says, for an EUNAVAILABLE error, which limit or dependency
	// refused: one of the Reason constants, a fixed set that metrics can
	// count by, where the message may carry numbers. Empty otherwise.
	Reason string
}

// The reasons of the EUNAVAILABLE errors the API answers with.
const (
	ReasonUploadsInFlight     = "uploads_in_flight"      // MAX_INFLIGHT_UPLOADS bodies being read
	ReasonUploadBytesInFlight = "upload_bytes_in_flight" // MAX_INFLIGHT_BYTES of them
	ReasonQueueFull           = "queue_full"             // MAX_QUEUE tasks waiting
	ReasonRedisMemory         = "redis_memory"           // Redis nearly out of memory
	ReasonRedis               = "redis"                  // Redis does not answer, or refuses
	ReasonUploadStore         = "upload_store"           // the upload store cannot take the upload
)

// UnavailableReasons returns every Reason constant.
func UnavailableReasons() []string {
	return []string{ReasonUploadsInFlight, ReasonUploadBytesInFlight, ReasonQueueFull,
		ReasonRedisMemory, ReasonRedis, ReasonUploadStore}
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Unavailable returns an EUNAVAILABLE *Error with the reason, one of the
// Reason constants, and a formatted message.
func Unavailable(reason, format string, args ...any) *Error {
	return &Error{Code: EUNAVAILABLE, Message: fmt.Sprintf(format, args...), Reason: reason}
}

// ErrDeviceLost is in the chain of the error a detector returns once the
// device it runs on (a GPU) has stopped working for good: no image can
// run on it until its process starts again. A worker that meets it
// stops, and the task goes back to the queue as it was, for a worker
// that can run it.
var ErrDeviceLost = errors.New("the inference device stopped working")

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the first *Error in err's chain, and a
// generic sentence for any other error so that internals never leak.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}

// ErrorReason returns the reason of the first *Error in err's chain, and
// "" when it has none or err holds no *Error.
func ErrorReason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
