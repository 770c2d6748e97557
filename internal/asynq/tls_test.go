package asynq

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	ca.Server(t, "server")
	server, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
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

// TestClientCertificateRefusedAtStart: files that cannot be loaded stop
// the start with the variables' names.
func TestClientCertificateRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	ca.Client(t, "a", "a")
	ca.Client(t, "b", "b")
	for _, tf := range []TLSFiles{
		{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "missing.key")},
		{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "b.key")},
		{Cert: ca.Path + ".nope", Key: filepath.Join(dir, "a.key")},
	} {
		if _, err := tf.config(&tls.Config{}); err == nil || !strings.HasPrefix(err.Error(), "REDIS_TLS_CERT, REDIS_TLS_KEY: ") {
			t.Errorf("%+v: %v, want an error naming REDIS_TLS_CERT and REDIS_TLS_KEY", tf, err)
		}
	}
}

// presented makes one TLS connection with client to a server with
// server's config on a loopback port, and returns the common name of the
// certificate the client showed.
func presented(t *testing.T, client, server *tls.Config) string {
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
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return <-got
}
