package asynq

import (
	"crypto/tls"
	"crypto/x509"
	"maps"
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
	serverNotBefore = prometheus.NewDesc("yoloserve_redis_tls_server_not_before_timestamp_seconds",
		"When the certificate Redis (or a sentinel) showed at this process's latest TLS connection to server became valid, in Unix seconds.",
		[]string{"server"}, nil)
	serverNotAfter = prometheus.NewDesc("yoloserve_redis_tls_server_not_after_timestamp_seconds",
		"When the certificate Redis (or a sentinel) showed at this process's latest TLS connection to server expires, in Unix seconds. "+
			"Past it every new connection to server fails its handshake.",
		[]string{"server"}, nil)
)

// TLSExpiry is a Prometheus collector of when the certificates of the TLS
// connections to Redis became valid and when they expire:
//
//   - the client certificate's
//     (yoloserve_redis_tls_client_not_before_timestamp_seconds and
//     yoloserve_redis_tls_client_not_after_timestamp_seconds), read from
//     its files at each scrape as at each new connection: a renewal that
//     did not happen, or a renewed file that does not load, shows as the
//     end drawing near. Nothing without a client certificate.
//   - the servers' (yoloserve_redis_tls_server_not_before_timestamp_seconds
//     and yoloserve_redis_tls_server_not_after_timestamp_seconds, by the
//     server's host name): the certificate each showed at the latest
//     handshake that verified it. Redis reads its certificate at start and
//     at CONFIG SET, and a process sees a renewed one at its next
//     connection. Nothing before a verified TLS connection.
//
// The zero value is ready; give it to TLSFiles.Expiry and register it.
type TLSExpiry struct {
	mu      sync.Mutex
	pair    *followed[*tls.Certificate]
	servers map[string]validity // by host name
}

// validity is when a certificate became valid and when it expires, in
// Unix seconds.
type validity struct{ notBefore, notAfter float64 }

// validityOf returns c's validity.
func validityOf(c *x509.Certificate) validity {
	return validity{float64(c.NotBefore.Unix()), float64(c.NotAfter.Unix())}
}

// saw records leaf, the certificate server showed at a handshake that
// verified it. A nil e does nothing.
func (e *TLSExpiry) saw(server string, leaf *x509.Certificate) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.servers == nil {
		e.servers = map[string]validity{}
	}
	e.servers[server] = validityOf(leaf)
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
	ch <- serverNotBefore
	ch <- serverNotAfter
}

// Collect reads the client certificate's files and sends when the
// certificate in use became valid and when it expires, then the same for
// the certificate each server showed last.
func (e *TLSExpiry) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	pair := e.pair
	servers := maps.Clone(e.servers)
	e.mu.Unlock()
	if pair != nil {
		v := validityOf(pair.get().Leaf)
		ch <- prometheus.MustNewConstMetric(clientNotBefore, prometheus.GaugeValue, v.notBefore)
		ch <- prometheus.MustNewConstMetric(clientNotAfter, prometheus.GaugeValue, v.notAfter)
	}
	for name, v := range servers {
		ch <- prometheus.MustNewConstMetric(serverNotBefore, prometheus.GaugeValue, v.notBefore, name)
		ch <- prometheus.MustNewConstMetric(serverNotAfter, prometheus.GaugeValue, v.notAfter, name)
	}
}
