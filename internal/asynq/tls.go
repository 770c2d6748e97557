package asynq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// TLSFiles are the PEM files of a rediss:// connection, each optional: a
// CA to trust beside the system's (CA), and the client's certificate and
// key (Cert, Key), for a Redis that asks clients for one.
//
// Each is read at start and again at each new connection to Redis: a
// client certificate renewed on disk (by cert-manager, a rotated secret, a
// cron job) is used from then on without a restart, so that a connection
// made after the old certificate expired is not refused; a CA file that
// changes (a trust bundle that adds the next CA before Redis's
// certificate moves to it) is trusted from the next connection on. A
// changed file that does not load (a half-written file, a key of another
// certificate) leaves the one in use in place until the files change
// again.
type TLSFiles struct {
	CA, Cert, Key string

	// Logger says when a file is read again, and when a changed one cannot
	// be. Nil means slog.Default().
	Logger *slog.Logger

	// Expiry, when not nil, reports when the client certificate expires,
	// and when the certificate each server showed does.
	Expiry *TLSExpiry
}

// config returns base (asynq's, which names the server) with the files
// loaded into it. It returns load's errors.
func (f TLSFiles) config(base *tls.Config) (*tls.Config, error) {
	t, err := f.load(base)
	if err != nil {
		return nil, err
	}
	return t.forServer(base.ServerName), nil
}

// load reads the files. It returns an error naming the variable whose
// file cannot be read or holds no certificate.
func (f TLSFiles) load(base *tls.Config) (*redisTLS, error) {
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &redisTLS{base: base, log: log, expiry: f.Expiry}
	if f.CA != "" {
		t.roots = &followed[*x509.CertPool]{what: "Redis CA", paths: []string{f.CA}, load: loadRoots, describe: describeRoots, log: log}
		if err := t.roots.read(); err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CA: %w", err)
		}
	}
	if f.Cert != "" || f.Key != "" {
		t.pair = &followed[*tls.Certificate]{what: "Redis client certificate", paths: []string{f.Cert, f.Key}, load: loadPair, describe: describePair, log: log}
		if err := t.pair.read(); err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CERT, REDIS_TLS_KEY: %w", err)
		}
		f.Expiry.follow(t.pair)
	}
	return t, nil
}

// redisTLS is the TLS of the connections to Redis (and its sentinels):
// base, with the roots and the client certificate its files hold, each
// nil when not given.
type redisTLS struct {
	base  *tls.Config
	roots *followed[*x509.CertPool]
	pair  *followed[*tls.Certificate]

	expiry *TLSExpiry // nil when none is asked for
	log    *slog.Logger
	mu     sync.Mutex
	failed map[string]string // by address, the handshake error last logged (dialer)
}

// forServer returns the TLS config of a connection to the server named
// name (a host name or an address).
func (t *redisTLS) forServer(name string) *tls.Config {
	c := t.base.Clone()
	c.ServerName = name
	if t.roots != nil {
		// Go verifies against RootCAs, which a handshake cannot change: the
		// check below is Go's own (chain, name, key usage, validity), made
		// against the roots the file holds now.
		c.InsecureSkipVerify = true
		c.VerifyConnection = verifyAgainst(t.roots, name)
	}
	if t.pair != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.pair.get(), nil }
	}
	if t.expiry != nil {
		// Called once the chain is verified: by Go's check, which runs
		// before, or by the roots' check, which runs first here.
		verify := c.VerifyConnection
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			if len(cs.PeerCertificates) > 0 {
				t.expiry.saw(name, cs.PeerCertificates[0])
			}
			return nil
		}
	}
	return c
}

// dialer returns a go-redis dialer that speaks TLS to each address under
// the address's own host: a sentinel hands out the primary's address,
// which changes at a failover, and its certificate is checked for it. A
// dial gives up after timeout. It returns the dial's or the handshake's
// error.
//
// A failed handshake is logged, once for each address until it changes or
// succeeds: go-redis retries a sentinel until the caller's deadline, and
// answers with that deadline's error, not the handshake's.
func (t *redisTLS) dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: timeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		raw, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, t.forServer(host))
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err = conn.HandshakeContext(hctx)
		if hctx.Err() == nil {
			t.handshook(addr, err)
		}
		if err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}
}

// handshook logs err, the outcome of a handshake with addr, when it is an
// error other than the one last logged for addr.
func (t *redisTLS) handshook(addr string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		delete(t.failed, addr)
		return
	}
	if t.failed[addr] == err.Error() {
		return
	}
	if t.failed == nil {
		t.failed = map[string]string{}
	}
	t.failed[addr] = err.Error()
	t.log.Warn("the TLS handshake with Redis failed", "addr", addr, "error", err)
}

// verifyAgainst returns a tls.Config.VerifyConnection that verifies the
// server's chain for serverName against the roots roots holds at each
// handshake. It returns Go's error for a chain it would refuse.
func verifyAgainst(roots *followed[*x509.CertPool], serverName string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		switch {
		case serverName == "": // tls.Client refuses an empty name too; Verify would skip the check
			return errors.New("tls: no server name to verify Redis's certificate against")
		case len(cs.PeerCertificates) == 0:
			return errors.New("tls: the server sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots.get(), DNSName: serverName, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return fmt.Errorf("tls: failed to verify certificate: %w", err)
		}
		return nil
	}
}

// loadRoots returns the system's roots with the certificates of pems[0]
// added. It returns an error when the file holds none.
func loadRoots(pems [][]byte) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pems[0]) {
		return nil, errors.New("no PEM certificate")
	}
	return pool, nil
}

// describeRoots names nothing: a pool does not list its certificates.
func describeRoots(*x509.CertPool) []any { return nil }

// loadPair returns the client certificate of pems[0] with the key of
// pems[1], its leaf parsed. It returns tls.X509KeyPair's error.
func loadPair(pems [][]byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(pems[0], pems[1])
	if err == nil && pair.Leaf == nil { // GODEBUG=x509keypairleaf=0
		pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	}
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// describePair names the certificate in a log line.
func describePair(c *tls.Certificate) []any {
	return []any{"subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter}
}

// followed is what a set of files holds (a CA's roots, a client's
// certificate and key), read again at each get.
type followed[T any] struct {
	what     string // in log lines: "Redis CA"
	paths    []string
	load     func(pems [][]byte) (T, error)
	describe func(T) []any // log attributes of what was loaded
	log      *slog.Logger

	mu   sync.Mutex
	cur  T      // in use
	seen string // the files' contents, or the error reading them, last looked at
}

// read reads the files and, when they changed since the last look, loads
// them in place of what is in use. It returns the error reading or
// loading changed files, which names them; what is in use stays then.
func (f *followed[T]) read() error {
	pems := make([][]byte, len(f.paths))
	var b strings.Builder
	var err error
	for i, p := range f.paths {
		if pems[i], err = os.ReadFile(p); err != nil {
			break
		}
		b.Write(pems[i])
		b.WriteByte(0)
	}
	seen := b.String()
	if err != nil {
		seen = err.Error()
	}
	if seen == f.seen {
		return nil
	}
	f.seen = seen
	if err != nil {
		return err
	}
	v, err := f.load(pems)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(f.paths, ", "), err)
	}
	f.cur = v
	return nil
}

// get returns what is in use, the files read again first. Changed files
// that do not load are logged once, and what was in use stays; new
// contents that load are logged too.
func (f *followed[T]) get() T {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := f.seen
	if err := f.read(); err != nil {
		f.log.Warn("a changed "+f.what+" could not be read; the one read before stays in use",
			append([]any{"error", err}, f.describe(f.cur)...)...)
	} else if f.seen != seen {
		f.log.Info(f.what+" read again", append([]any{"files", strings.Join(f.paths, ", ")}, f.describe(f.cur)...)...)
	}
	return f.cur
}
