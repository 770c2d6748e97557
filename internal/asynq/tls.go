package asynq

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// TLSFiles are the PEM files of a rediss:// connection, each optional: a
// CA to trust beside the system's (CA), and the client's certificate and
// key (Cert, Key), for a Redis that asks clients for one.
//
// The CA is read once. The certificate and key are read at start and
// again at each new connection to Redis: a pair renewed on disk (by
// cert-manager, a rotated secret, a cron job) is used from then on
// without a restart, so that a connection made after the old
// certificate expired is not refused. A changed pair that does not load
// (a half-written file, a key of another certificate) leaves the one in
// use in place until the files change again.
type TLSFiles struct {
	CA, Cert, Key string

	// Logger says when the certificate is read again, and when a changed
	// one cannot be. Nil means slog.Default().
	Logger *slog.Logger
}

// config returns base (asynq's, which names the server) with the files
// loaded into it. It returns an error naming the variable whose file
// cannot be read or holds no certificate.
func (f TLSFiles) config(base *tls.Config) (*tls.Config, error) {
	c := base.Clone()
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CA: %w", err)
		}
		if c.RootCAs, err = x509.SystemCertPool(); err != nil {
			c.RootCAs = x509.NewCertPool()
		}
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("REDIS_TLS_CA: no PEM certificate in %s", f.CA)
		}
	}
	if f.Cert != "" || f.Key != "" {
		log := f.Logger
		if log == nil {
			log = slog.Default()
		}
		cc := &clientCert{cert: f.Cert, key: f.Key, log: log}
		if err := cc.read(); err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CERT, REDIS_TLS_KEY: %w", err)
		}
		c.GetClientCertificate = cc.get
	}
	return c, nil
}

// clientCert is a client certificate that follows its files (TLSFiles).
type clientCert struct {
	cert, key string
	log       *slog.Logger

	mu   sync.Mutex
	pair *tls.Certificate // in use
	seen string           // the files' contents, or the error reading them, last looked at
}

// read reads the files and, when they changed since the last look, loads
// the pair in place of the one in use. It returns the error reading or
// loading a changed pair; the pair in use stays then.
func (c *clientCert) read() error {
	certPEM, err := os.ReadFile(c.cert)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = os.ReadFile(c.key)
	}
	seen := string(certPEM) + "\x00" + string(keyPEM)
	if err != nil {
		seen = err.Error()
	}
	if seen == c.seen {
		return nil
	}
	c.seen = seen
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil && pair.Leaf == nil { // GODEBUG=x509keypairleaf=0
		pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	}
	if err != nil {
		return err
	}
	c.pair = &pair
	return nil
}

// get is the connection's tls.Config.GetClientCertificate: the pair in
// use, read again first. A changed pair that does not load is logged once,
// and the connection goes on with the pair in use; it never returns an
// error.
func (c *clientCert) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pair
	if err := c.read(); err != nil {
		c.log.Warn("a changed Redis client certificate could not be read; the one read before stays in use",
			"cert", c.cert, "key", c.key, "not_after", old.Leaf.NotAfter, "error", err)
	} else if c.pair != old {
		c.log.Info("Redis client certificate read again", "cert", c.cert, "subject", c.pair.Leaf.Subject.String(),
			"not_after", c.pair.Leaf.NotAfter)
	}
	return c.pair, nil
}
