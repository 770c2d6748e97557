// Package http is the service's HTTP API: POST /predict, GET /result/{id},
// health and metrics, on chi.
package http

import (
	"encoding/json"
	"net/http"

	"yoloserve/internal/detect"
)

// codes maps the domain's error codes to HTTP statuses.
var codes = map[string]int{
	detect.EINVALID:      http.StatusBadRequest,
	detect.EUNAUTHORIZED: http.StatusUnauthorized,
	detect.ENOTFOUND:     http.StatusNotFound,
	detect.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	detect.EUNSUPPORTED:  http.StatusUnsupportedMediaType,
	detect.ERATELIMIT:    http.StatusTooManyRequests,
	detect.ETIMEOUT:      http.StatusRequestTimeout,
	detect.EUNAVAILABLE:  http.StatusServiceUnavailable,
	detect.EINTERNAL:     http.StatusInternalServerError,
}

// ErrorStatus returns the HTTP status for err's code.
func ErrorStatus(err error) int {
	if s, ok := codes[detect.ErrorCode(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error answers {"error": message} with the status of err's code. Internal
// errors are logged and answered with a generic message; unavailability is
// answered with Retry-After and logged through the server's refusals
// (refusals.go). A request whose client has gone is logged only at debug
// level: its Redis commands were cut short by its context, not by Redis.
func (s *Server) Error(w http.ResponseWriter, r *http.Request, err error) {
	code, status := detect.ErrorCode(err), ErrorStatus(err)
	switch code {
	case detect.EINTERNAL:
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "error", err)
	case detect.EUNAVAILABLE:
		if r.Context().Err() != nil {
			s.log.Debug("unavailable", "method", r.Method, "path", r.URL.Path, "error", err)
		} else {
			s.refused.note(r, err)
		}
		w.Header().Set("Retry-After", "5")
	case detect.ERATELIMIT:
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", "1")
		}
	}
	writeJSON(w, status, map[string]string{"error": detect.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
