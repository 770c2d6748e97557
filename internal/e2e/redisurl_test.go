package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/testenv"
)

// The forms of REDIS_URL other than plain redis://, each run by the API
// and a worker as processes: a Unix socket with an ACL user, and TLS.

// TestProcessesOverRedisSocket runs the API and a worker as processes on
// a Redis that listens on a Unix socket only, as where the three share a
// host, and lets in only a named ACL user
// (REDIS_URL=unix://user:password@/path?db=2): an upload is detected, the
// worker's model is announced, and the task lives in the database the URL
// names. An API given a wrong password says at start what Redis answered,
// and its log never shows the password.
func TestProcessesOverRedisSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server, the API and a worker as processes")
	}
	h := newHarness(t, options{}) // for its upload folder and client helpers
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	startRedisProc(t, "redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir,
		"--user", "yolo", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off")
	rc := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, DB: 2, Username: "yolo", Password: "s3cret"})
	defer rc.Close()
	detectsOver(t, h, rc, "REDIS_URL=unix://yolo:s3cret@"+sock+"?db=2")
	refusedBy(t, h, "WRONGPASS", "n0tit", "REDIS_URL=unix://yolo:n0tit@"+sock+"?db=2")
}

// TestProcessesOverRedisTLS runs the API and a worker as processes on a
// Redis that speaks TLS only, with a certificate of a private CA, and asks
// clients for theirs, as Redis does by default once TLS is on
// (tls-auth-clients): with REDIS_URL=rediss://host:port/2 and the CA,
// certificate and key in REDIS_TLS_CA, REDIS_TLS_CERT and REDIS_TLS_KEY,
// an upload is detected over it. An API that does not trust the CA, or
// has no client certificate, says at start why Redis refuses it.
func TestProcessesOverRedisTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server, the API and a worker as processes")
	}
	h := newHarness(t, options{})
	dir := t.TempDir()
	ca, pool, client := writeTLSFiles(t, dir)
	port := strconv.Itoa(testenv.FreePort(t))
	startRedisProc(t, "redis-server", "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "redis.crt"), "--tls-key-file", filepath.Join(dir, "redis.key"),
		"--tls-ca-cert-file", ca, "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--dir", dir)
	addr := "127.0.0.1:" + port
	rc := redis.NewClient(&redis.Options{Addr: addr, DB: 2, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}}})
	defer rc.Close()
	url := "REDIS_URL=rediss://" + addr + "/2"
	certs := []string{"REDIS_TLS_CERT=" + filepath.Join(dir, "client.crt"), "REDIS_TLS_KEY=" + filepath.Join(dir, "client.key")}
	detectsOver(t, h, rc, append([]string{url, "REDIS_TLS_CA=" + ca}, certs...)...)
	refusedBy(t, h, "certificate signed by unknown authority", "", append([]string{url}, certs...)...)
	refusedBy(t, h, "certificate required", "", url, "REDIS_TLS_CA="+ca)
}

// detectsOver starts the API and a worker as processes with env (REDIS_URL
// and what it needs) on the Redis rc reaches, on the database the URL
// names, and checks that an upload is detected, that /models shows the
// worker and that the task's hash is in rc's database.
func detectsOver(t *testing.T, h *harness, rc *redis.Client, env ...string) {
	t.Helper()
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, "redis-server never answered", func() bool { return rc.Ping(ctx).Err() == nil })
	apiEnv, apiURL := h.apiEnv(t, env...) // later entries win
	testenv.Start(t, "api", apiEnv...)
	startReadyWorker(t, h.workerEnv(t, env...))
	h.api.URL = apiURL
	awaitReady(t, "API", apiURL)

	r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "?wait=60")
	if r.status != http.StatusOK {
		t.Fatalf("POST /predict?wait=60: %d %s", r.status, r.raw)
	}
	id := r.body["task_id"].(string)
	checkBusDetections(t, decodeResult(t, h.result(id)))
	if got := h.models(); len(got) != 1 || got[0].Name != "yolov8n" || got[0].Workers != 1 {
		t.Errorf("GET /models: %+v, want yolov8n served by the worker", got)
	}
	if n, err := rc.Exists(ctx, "asynq:{detect}:t:"+id).Result(); err != nil || n != 1 {
		t.Errorf("task %s in database %d: %d keys, %v; want its hash there", id, rc.Options().DB, n, err)
	}
}

// refusedBy starts an API process with env, which Redis refuses, and
// checks that its start warning carries why (want), that uploads are
// answered 503, and that its log never shows secret (when not empty).
func refusedBy(t *testing.T, h *harness, want, secret string, env ...string) {
	t.Helper()
	apiEnv, apiURL := h.apiEnv(t, env...)
	api := testenv.Start(t, "api", apiEnv...)
	testenv.Eventually(t, 10*time.Second, "the API never said why Redis refused it ("+want+")", func() bool {
		return strings.Contains(api.Output(), "Redis does not answer the API yet") && strings.Contains(api.Output(), want)
	})
	h.api.URL = apiURL
	if r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("POST /predict to an API Redis refuses: %d %s, want 503", r.status, r.raw)
	}
	if out := api.Output(); secret != "" && strings.Contains(out, secret) {
		t.Errorf("the API's log shows REDIS_URL's password:\n%s", out)
	}
}

// writeTLSFiles writes a private CA (ca.crt) and two certificates it
// signed into dir: Redis's, for 127.0.0.1 (redis.crt, redis.key), and a
// client's (client.crt, client.key). It returns the CA's path, a pool
// that trusts it and the client's certificate.
func writeTLSFiles(t *testing.T, dir string) (string, *x509.CertPool, tls.Certificate) {
	t.Helper()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "yoloserve test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, caKey := issue(t, dir, "ca", caTmpl, nil, nil)
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue(t, dir, "redis", &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caCert, caKey)
	issue(t, dir, "client", &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "yoloserve"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caCert, caKey)
	client, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return filepath.Join(dir, "ca.crt"), pool, client
}

// issue makes a key and the certificate tmpl for it, signed by parent's
// key (self-signed when parent is nil), and writes them to dir as
// name.crt and name.key. It returns the certificate and the key.
func issue(t *testing.T, dir, name string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		name + ".crt": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return der, key
}
