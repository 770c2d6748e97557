package http

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"yoloserve/internal/detect"
)

// Healthz answers 200 while the process runs.
func Healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Readyz answers 200 when ready returns nil within two seconds, else 503
// with the reason: the message of an EUNAVAILABLE *detect.Error, or a
// sentence that names what else it checks.
func Readyz(ready func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			msg := "not ready: Redis unreachable or the model not loaded"
			if detect.ErrorCode(err) == detect.EUNAVAILABLE {
				msg = detect.ErrorMessage(err)
			}
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": msg})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// HealthHandler serves /healthz, /readyz and /metrics: the worker's
// endpoints on WORKER_ADDR.
func HealthHandler(ready func(context.Context) error, g prometheus.Gatherer) http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", Healthz)
	r.Get("/readyz", Readyz(ready))
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return r
}

// Probe GETs http://127.0.0.1:PORT/healthz for a listen address such as
// ":5000", for container health checks in images without curl. It returns
// an error unless the answer is 200 within three seconds.
func Probe(listenAddr string) error {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return err
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}
