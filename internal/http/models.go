package http

import (
	"context"
	"net/http"
	"time"

	"yoloserve/internal/detect"
)

// How old a reading of the workers' models may be when a request's
// classes are checked against it (a class it lacks is read again before
// it is refused), and when GET /models lists it.
const (
	modelsMaxAge     = 5 * time.Second
	modelsListMaxAge = time.Second
)

// models answers GET /models: {"models": [...]}, the models the workers
// serve, each with its class names by id, its input size and how many
// workers serve it; an empty list when no worker has said what it serves.
func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	models, err := s.cfg.Models.Models(r.Context(), modelsListMaxAge)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Models []detect.ServedModel `json:"models"`
	}{models})
}

// checkClasses returns an EINVALID *Error when no model the workers serve
// has every one of classes, so that the request is refused (400) where
// the worker would fail its task. Before it refuses, it reads the models
// again, so that a worker started with another model since the last
// reading counts. It returns nil when the models cannot be read or no
// worker has said what it serves: the worker checks then.
func (s *Server) checkClasses(ctx context.Context, classes []string) error {
	if len(classes) == 0 || s.cfg.Models == nil {
		return nil
	}
	models, err := s.cfg.Models.Models(ctx, modelsMaxAge)
	if err != nil || detect.CheckClasses(classes, models) == nil {
		return nil
	}
	if models, err = s.cfg.Models.Models(ctx, 0); err != nil {
		return nil
	}
	return detect.CheckClasses(classes, models)
}
