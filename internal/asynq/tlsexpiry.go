package asynq

import (
	"crypto/tls"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	clientNotBefore = prometheus.NewDesc("yoloserve_redis_tls_client_not_before_timestamp_seconds",
		"When the client certificate for Redis (REDIS_TLS_CERT) became valid, in Unix seconds: the one the next connection shows, "+
			"its files read at the scrape.",
		nil, nil)
	clientNotAfter = prometheus.NewDesc("yoloserve_redis_tls_client_not_after_timestamp_seconds",
		"When the client certificate for Redis (REDIS_TLS_CERT) expires, in Unix seconds: the one the next connection shows, "+
			"its files read at the scrape. Past it Redis refuses every new connection of this process.",
		nil, nil)
)

// TLSExpiry is a Prometheus collector of when the client certificate of
// the TLS connections to Redis became valid and when it expires
// (yoloserve_redis_tls_client_not_before_timestamp_seconds and
// yoloserve_redis_tls_client_not_after_timestamp_seconds), read from its
// files at each scrape as at each new connection: a renewal that did not
// happen, or a renewed file that does not load, shows as the end drawing
// near. It reports nothing without a client certificate. The zero
// value is ready; give it to TLSFiles.Expiry and register it.
type TLSExpiry struct {
	mu   sync.Mutex
	pair *followed[*tls.Certificate]
}

// follow makes e report pair. A nil e does nothing.
func (e *TLSExpiry) follow(pair *followed[*tls.Certificate]) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pair = pair
}

// Describe sends the collector's metric descriptions.
func (e *TLSExpiry) Describe(ch chan<- *prometheus.Desc) {
	ch <- clientNotBefore
	ch <- clientNotAfter
}

// Collect reads the client certificate's files and sends when the
// certificate in use became valid and when it expires.
func (e *TLSExpiry) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	pair := e.pair
	e.mu.Unlock()
	if pair == nil {
		return
	}
	leaf := pair.get().Leaf
	ch <- prometheus.MustNewConstMetric(clientNotBefore, prometheus.GaugeValue, float64(leaf.NotBefore.Unix()))
	ch <- prometheus.MustNewConstMetric(clientNotAfter, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
}
