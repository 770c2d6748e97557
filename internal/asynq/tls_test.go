package asynq

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"yoloserve/internal/testenv"
)

// TestClientCertificateFollowsItsFiles: each new connection shows the
// server the client certificate the files hold now, so that one renewed
// on disk is used without a restart; a renewal that does not load (a key
// of another certificate, a file gone) leaves the one in use, and is
// logged once, not at every connection.
func TestClientCertificateFollowsItsFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	server := ca.Server(t, "server")
	ca.Client(t, "client", "first")
	var logs bytes.Buffer
	tf := TLSFiles{CA: ca.Path, Cert: filepath.Join(dir, "client.crt"), Key: filepath.Join(dir, "client.key"),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	c, err := tf.config(&tls.Config{ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	shown := func() string {
		t.Helper()
		return presented(t, c, &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAnyClientCert})
	}
	if got := shown(); got != "first" {
		t.Fatalf("the client showed %q, want the certificate read at start", got)
	}
	if logs.Len() != 0 {
		t.Errorf("logged with the files unchanged:\n%s", &logs)
	}

	ca.Renew(t, "client", "second")
	if got := shown(); got != "second" {
		t.Fatalf("after a renewal the client showed %q, want second", got)
	}
	if !strings.Contains(logs.String(), "Redis client certificate read again") || !strings.Contains(logs.String(), "CN=second") {
		t.Errorf("the renewal is not logged:\n%s", &logs)
	}

	for _, broken := range []struct {
		name  string
		spoil func()
		want  string
	}{
		{"a key of another certificate", func() {
			ca.Client(t, "other", "third")
			if err := os.Rename(filepath.Join(dir, "other.crt"), filepath.Join(dir, "client.crt")); err != nil {
				t.Fatal(err)
			}
		}, "private key does not match public key"},
		{"the key file gone", func() {
			if err := os.Remove(filepath.Join(dir, "client.key")); err != nil {
				t.Fatal(err)
			}
		}, "no such file or directory"},
	} {
		logs.Reset()
		broken.spoil()
		for range 2 {
			if got := shown(); got != "second" {
				t.Fatalf("with %s the client showed %q, want the certificate in use, second", broken.name, got)
			}
		}
		if n := strings.Count(logs.String(), "could not be read"); n != 1 || !strings.Contains(logs.String(), broken.want) {
			t.Errorf("with %s, two connections logged %d warnings, want one saying %q:\n%s", broken.name, n, broken.want, &logs)
		}
	}

	ca.Renew(t, "client", "fourth")
	if got := shown(); got != "fourth" {
		t.Errorf("after a good renewal the client showed %q, want fourth", got)
	}
}

// TestCAFollowsItsFile: each new connection trusts the CA the file holds
// now, so that a trust bundle updated on disk ahead of Redis's move to a
// new CA is trusted without a restart; a change that does not load (a
// half-written file) leaves the roots in use, logged once; and the
// server's certificate is checked as Go checks it, for the server's name
// and against those roots only.
func TestCAFollowsItsFile(t *testing.T) {
	dir := t.TempDir()
	first, next := testenv.NewCA(t, dir, "first"), testenv.NewCA(t, dir, "next")
	old := &tls.Config{Certificates: []tls.Certificate{first.Server(t, "old")}}
	renewed := &tls.Config{Certificates: []tls.Certificate{next.Server(t, "new")}}
	bundle := filepath.Join(dir, "bundle.pem")
	write := func(b []byte) {
		if err := os.WriteFile(bundle, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(testenv.Bundle(first))
	var logs bytes.Buffer
	tf := TLSFiles{CA: bundle, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	c, err := tf.config(&tls.Config{ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	refused := func(server *tls.Config, want string) {
		t.Helper()
		if _, err := handshake(t, c, server); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("handshake: %v, want %q", err, want)
		}
	}
	accepted := func(server *tls.Config, when string) {
		t.Helper()
		if _, err := handshake(t, c, server); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}

	accepted(old, "the server's certificate of the CA in the file")
	refused(renewed, "certificate signed by unknown authority")
	if logs.Len() != 0 {
		t.Errorf("logged with the file unchanged:\n%s", &logs)
	}

	write(testenv.Bundle(first, next)) // the bundle ahead of the move
	accepted(renewed, "the next CA added to the file")
	accepted(old, "the first CA still in the file")
	if n := strings.Count(logs.String(), "Redis CA read again"); n != 1 {
		t.Errorf("the change is logged %d times, want once:\n%s", n, &logs)
	}

	logs.Reset()
	write([]byte("-----BEGIN CERTIFICATE-----\nMIIB")) // half written
	accepted(renewed, "a half-written file, first connection")
	accepted(old, "a half-written file, second connection")
	if n := strings.Count(logs.String(), "could not be read"); n != 1 || !strings.Contains(logs.String(), "no PEM certificate") {
		t.Errorf("two connections with a half-written file logged %d warnings, want one saying there is no PEM certificate:\n%s", n, &logs)
	}

	write(testenv.Bundle(next)) // the move done, the first CA dropped
	accepted(renewed, "the next CA alone")
	refused(old, "certificate signed by unknown authority")

	// The name and the roots are still checked.
	if c, err = tf.config(&tls.Config{ServerName: "redis.internal"}); err != nil {
		t.Fatal(err)
	}
	refused(renewed, "wanted to match redis.internal")
	if c, err = tf.config(&tls.Config{}); err != nil {
		t.Fatal(err)
	}
	refused(renewed, "no server name")
}

// TestFilesFollowedThroughSecretVolume: the files of a Kubernetes Secret
// mounted whole are links through ..data to a folder of the version, and
// the kubelet updates them by swapping that link; the next connection
// uses the new version's CA and certificate.
func TestFilesFollowedThroughSecretVolume(t *testing.T) {
	certs, vol := t.TempDir(), t.TempDir()
	first, next := testenv.NewCA(t, certs, "first"), testenv.NewCA(t, certs, "next")
	server := next.Server(t, "server")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(certs, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// publish writes a version of the Secret and points ..data at it, as
	// the kubelet's atomic writer does.
	publish := func(version string, files map[string][]byte) {
		dir := filepath.Join(vol, version)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Symlink(filepath.Join("..data", name), filepath.Join(vol, name)) // exists after the first version
		}
		if err := os.Symlink(version, filepath.Join(vol, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	first.Client(t, "old", "old")
	publish("..v1", map[string][]byte{"ca.crt": testenv.Bundle(first), "tls.crt": read("old.crt"), "tls.key": read("old.key")})
	var logs bytes.Buffer
	tf := TLSFiles{CA: filepath.Join(vol, "ca.crt"), Cert: filepath.Join(vol, "tls.crt"), Key: filepath.Join(vol, "tls.key"),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	c, err := tf.config(&tls.Config{ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAnyClientCert}
	if _, err := handshake(t, c, srv); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("a server of the next CA before the update: %v, want it refused", err)
	}

	next.Client(t, "new", "new")
	publish("..v2", map[string][]byte{"ca.crt": testenv.Bundle(first, next), "tls.crt": read("new.crt"), "tls.key": read("new.key")})
	if err := os.RemoveAll(filepath.Join(vol, "..v1")); err != nil {
		t.Fatal(err)
	}
	if cn, err := handshake(t, c, srv); err != nil || cn != "new" {
		t.Errorf("after the update: showed %q, %v; want the new certificate, and the next CA trusted", cn, err)
	}
	for _, want := range []string{"Redis CA read again", "Redis client certificate read again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, &logs)
		}
	}
}

// TestTLSExpiry: the processes' /metrics say when the client certificate
// for Redis became valid and when it expires: from the start, then, once it is renewed on disk,
// the renewed one's date before any new connection (pooled connections
// can last for days, and a stale date would raise a false alert), and
// still the one in use when a changed file does not load.
func TestTLSExpiry(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	now := time.Now().Truncate(time.Second) // certificates keep whole seconds
	ca.Until = now.Add(40 * time.Minute)
	ca.Client(t, "client", "first")
	e := &TLSExpiry{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	if got := gathered(t, reg); len(got) != 0 {
		t.Errorf("before a client certificate: %v, want nothing", got)
	}
	tf := TLSFiles{Cert: filepath.Join(dir, "client.crt"), Key: filepath.Join(dir, "client.key"), Expiry: e,
		Logger: slog.New(slog.DiscardHandler)}
	if _, err := tf.config(&tls.Config{ServerName: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	from := float64(ca.Cert.NotBefore.Unix()) // the CA's, as its certificates'
	for _, step := range []struct {
		what  string
		do    func()
		until time.Time
	}{
		{"at start", func() {}, now.Add(40 * time.Minute)},
		{"renewed on disk", func() { ca.Until = now.Add(50 * time.Minute); ca.Renew(t, "client", "renewed") }, now.Add(50 * time.Minute)},
		{"a changed key that does not load", func() {
			if err := os.WriteFile(filepath.Join(dir, "client.key"), []byte("half"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, now.Add(50 * time.Minute)},
	} {
		step.do()
		want := map[string]float64{
			"yoloserve_redis_tls_client_not_before_timestamp_seconds": from,
			"yoloserve_redis_tls_client_not_after_timestamp_seconds":  float64(step.until.Unix()),
		}
		if diff := cmp.Diff(want, gathered(t, reg)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step.what, diff)
		}
	}
}

// TestServerCertificateExpiry: the processes' /metrics say when the
// certificate Redis showed became valid and when it expires, by the
// server's name: nothing before a connection, then what the latest
// handshake that verified it showed, whether the CA is REDIS_TLS_CA's or
// the system's; a certificate that is refused changes nothing.
func TestServerCertificateExpiry(t *testing.T) {
	dir := t.TempDir()
	ca, other := testenv.NewCA(t, dir, "ca"), testenv.NewCA(t, dir, "other")
	now := time.Now().Truncate(time.Second) // certificates keep whole seconds
	serving := func(c *testenv.CA, until time.Duration) *tls.Config {
		t.Helper()
		c.Until = now.Add(until)
		return &tls.Config{Certificates: []tls.Certificate{c.Server(t, "server")}}
	}
	from := float64(ca.Cert.NotBefore.Unix()) // the CA's, as its certificates'
	for _, tc := range []struct {
		trust string
		files TLSFiles
		base  *tls.Config
	}{
		{"REDIS_TLS_CA", TLSFiles{CA: ca.Path}, &tls.Config{ServerName: "127.0.0.1"}},
		{"the system's roots", TLSFiles{}, &tls.Config{ServerName: "127.0.0.1", RootCAs: ca.Pool()}},
	} {
		e := &TLSExpiry{}
		reg := prometheus.NewRegistry()
		reg.MustRegister(e)
		tc.files.Expiry, tc.files.Logger = e, slog.New(slog.DiscardHandler)
		c, err := tc.files.config(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		if got := gathered(t, reg); len(got) != 0 {
			t.Errorf("%s, before a connection: %v, want nothing", tc.trust, got)
		}
		for _, step := range []struct {
			what   string
			server *tls.Config
			ok     bool
			until  time.Time
		}{
			{"the first connection", serving(ca, 40*time.Minute), true, now.Add(40 * time.Minute)},
			{"a renewed certificate", serving(ca, 50*time.Minute), true, now.Add(50 * time.Minute)},
			{"a certificate of another CA", serving(other, 60*time.Minute), false, now.Add(50 * time.Minute)},
		} {
			if _, err := handshake(t, c, step.server); (err == nil) != step.ok {
				t.Fatalf("%s, %s: handshake %v, want success %v", tc.trust, step.what, err, step.ok)
			}
			want := map[string]float64{
				`yoloserve_redis_tls_server_not_before_timestamp_seconds{server="127.0.0.1"}`: from,
				`yoloserve_redis_tls_server_not_after_timestamp_seconds{server="127.0.0.1"}`:  float64(step.until.Unix()),
			}
			if diff := cmp.Diff(want, gathered(t, reg)); diff != "" {
				t.Errorf("%s, after %s (-want +got):\n%s", tc.trust, step.what, diff)
			}
		}
	}
}

// gathered returns the gauges reg gathers, by name and labels.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			out[name] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestDialerLogsHandshakeFailures: the Sentinel dialer logs a failed
// handshake with its reason, once for an address however often go-redis
// retries it, and again once it has succeeded in between: go-redis
// answers with its caller's deadline, not the handshake's error.
func TestDialerLogsHandshakeFailures(t *testing.T) {
	dir := t.TempDir()
	trusted, other := testenv.NewCA(t, dir, "trusted"), testenv.NewCA(t, dir, "other")
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{other.Server(t, "server")}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	var logs bytes.Buffer
	ca := filepath.Join(dir, "bundle.pem")
	trust := func(cas ...*testenv.CA) {
		if err := os.WriteFile(ca, testenv.Bundle(cas...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	trust(trusted)
	rt, err := TLSFiles{CA: ca, Logger: slog.New(slog.NewTextHandler(&logs, nil))}.load(&tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dial := rt.dialer(time.Second)
	try := func(want bool) {
		t.Helper()
		c, err := dial(context.Background(), "tcp", l.Addr().String())
		if (err == nil) != want {
			t.Fatalf("dial: %v, want success %v", err, want)
		}
		if c != nil {
			c.Close()
		}
	}
	const warning = "the TLS handshake with Redis failed"
	for range 3 {
		try(false)
	}
	if n := strings.Count(logs.String(), warning); n != 1 || !strings.Contains(logs.String(), "certificate signed by unknown authority") {
		t.Errorf("three failed handshakes logged %d warnings, want one with the reason:\n%s", n, &logs)
	}
	trust(trusted, other)
	try(true)
	trust(trusted)
	try(false)
	if n := strings.Count(logs.String(), warning); n != 2 {
		t.Errorf("a failure after a success: %d warnings in all, want 2:\n%s", n, &logs)
	}
}

// TestTLSFilesRefusedAtStart: files that cannot be loaded stop the start
// with the variables' names and the file's.
func TestTLSFilesRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	ca.Client(t, "a", "a")
	ca.Client(t, "b", "b")
	for _, tc := range []struct {
		tf   TLSFiles
		want string
	}{
		{TLSFiles{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "missing.key")}, "REDIS_TLS_CERT, REDIS_TLS_KEY: open " + filepath.Join(dir, "missing.key")},
		{TLSFiles{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "b.key")}, "REDIS_TLS_CERT, REDIS_TLS_KEY: " + filepath.Join(dir, "a.crt")},
		{TLSFiles{Cert: ca.Path + ".nope", Key: filepath.Join(dir, "a.key")}, "REDIS_TLS_CERT, REDIS_TLS_KEY: open " + ca.Path + ".nope"},
		{TLSFiles{CA: ca.Path + ".nope"}, "REDIS_TLS_CA: open " + ca.Path + ".nope"},
		{TLSFiles{CA: filepath.Join(dir, "a.key")}, "REDIS_TLS_CA: " + filepath.Join(dir, "a.key") + ": no PEM certificate"},
	} {
		if _, err := tc.tf.config(&tls.Config{}); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error starting %q", tc.tf, err, tc.want)
		}
	}
}

// presented makes one TLS connection with client to a server with
// server's config on a loopback port, and returns the common name of the
// certificate the client showed.
func presented(t *testing.T, client, server *tls.Config) string {
	t.Helper()
	cn, err := handshake(t, client, server)
	if err != nil {
		t.Fatal(err)
	}
	return cn
}

// handshake makes one TLS connection with client to a server with
// server's config on a loopback port. It returns the common name of the
// certificate the client showed (empty when none), and the client's
// handshake error.
func handshake(t *testing.T, client, server *tls.Config) (string, error) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- "handshake: " + err.Error()
			return
		}
		cn := ""
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			cn = certs[0].Subject.CommonName
		}
		got <- cn
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), client)
	if err != nil {
		<-got
		return "", err
	}
	defer c.Close()
	return <-got, nil
}
