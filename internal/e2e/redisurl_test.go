package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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
// host, and lets in only a named ACL user (REDIS_URL=unix://user@/path?db=2
// with the password in REDIS_PASSWORD): an upload is detected, the
// worker's model is announced, and the task lives in the database the URL
// names, and neither log shows the password. An API given a wrong
// password (in the URL: unix://user:password@/path) says at start what
// Redis answered, and its log never shows the password.
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
	api, worker, _ := detectsOver(t, h, rc, "REDIS_URL=unix://yolo@"+sock+"?db=2", "REDIS_PASSWORD=s3cret")
	checkLogsHide(t, []*testenv.Process{api, worker}, "s3cret")
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
	ca, rc, env := startTLSRedis(t, dir)
	detectsOver(t, h, rc, env...)
	refusedBy(t, h, "certificate signed by unknown authority", "", slices.DeleteFunc(slices.Clone(env), func(e string) bool {
		return strings.HasPrefix(e, "REDIS_TLS_CA=")
	})...)
	refusedBy(t, h, "certificate required", "", env[0], "REDIS_TLS_CA="+ca.Path)
}

// TestRedisCertificatesRenewed: Redis moved to a new CA while the API
// and a worker run, as a rotation by cert-manager and trust-manager does
// it: their trust bundle (REDIS_TLS_CA) gains the new CA, their client
// certificate is renewed under it, and Redis takes a certificate of the
// new CA, trusts only the new CA for clients and drops every client. Both
// are back without a restart and an upload is detected, each logs that
// it read the bundle and the certificate again, and each one's /metrics
// says when the renewed certificate expires, and when Redis's new one
// does.
func TestRedisCertificatesRenewed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs redis-server, the API and a worker as processes")
	}
	h := newHarness(t, options{})
	dir := t.TempDir()
	ca, rc, env := startTLSRedis(t, dir)
	api, worker, workerURL := detectsOver(t, h, rc, append(slices.Clip(env), "LOG_LEVEL=info")...)
	// expiresAt checks both processes' gauges of the client certificate's
	// end and of the end of the certificate Redis showed.
	expiresAt := func(when string, client, server time.Time) {
		t.Helper()
		for _, url := range []string{h.api.URL, workerURL} {
			for notAfter, end := range map[string]time.Time{
				"yoloserve_redis_tls_client_not_after_timestamp_seconds":                     client,
				`yoloserve_redis_tls_server_not_after_timestamp_seconds{server="127.0.0.1"}`: server,
			} {
				if got, want := metric(t, url, notAfter), float64(end.Unix()); got != want {
					t.Errorf("%s/metrics %s: %s %v, want the certificate's end %v", url, when, notAfter, got, want)
				}
			}
		}
	}
	expiresAt("at start", ca.Cert.NotAfter, ca.Cert.NotAfter)

	ctx := context.Background()
	next := testenv.NewCA(t, dir, "next")
	next.Until = time.Now().Add(50 * time.Minute)                                  // before the first's end, an hour ahead
	if err := os.WriteFile(ca.Path, testenv.Bundle(ca, next), 0o600); err != nil { // REDIS_TLS_CA
		t.Fatal(err)
	}
	renewed := next.Renew(t, "client", "yoloserve renewed")
	next.Server(t, "redis-next")
	if err := rc.Do(ctx, "CONFIG", "SET", "tls-cert-file", filepath.Join(dir, "redis-next.crt"),
		"tls-key-file", filepath.Join(dir, "redis-next.key"), "tls-ca-cert-file", next.Path).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ClientKillByFilter(ctx, "TYPE", "normal").Err(); err != nil { // all but rc's own
		t.Fatal(err)
	}
	rc2 := redis.NewClient(&redis.Options{Addr: rc.Options().Addr, DB: 2, TLSConfig: &tls.Config{
		RootCAs: next.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{renewed}}})
	defer rc2.Close()
	if err := rc2.Ping(ctx).Err(); err != nil {
		t.Fatalf("a client of the new CA alone: %v", err)
	}

	awaitReady(t, "API", h.api.URL) // the worker's is the detection's
	r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "?wait=60")
	if r.status != http.StatusOK {
		t.Fatalf("POST /predict?wait=60 after the move: %d %s", r.status, r.raw)
	}
	checkBusDetections(t, decodeResult(t, h.result(r.body["task_id"].(string))))
	for name, p := range map[string]*testenv.Process{"API": api, "worker": worker} {
		out := p.Output()
		if !strings.Contains(out, "Redis client certificate read again") || !strings.Contains(out, "yoloserve renewed") {
			t.Errorf("the %s's log does not say it read the renewed certificate:\n%s", name, out)
		}
		if !strings.Contains(out, "Redis CA read again") {
			t.Errorf("the %s's log does not say it read the CA bundle again:\n%s", name, out)
		}
	}
	expiresAt("after the renewal and Redis's move", renewed.Leaf.NotAfter, next.Until)
}

// TestProcessesOverSentinelTLS runs the API and a worker as processes on
// a Sentinel set whose sentinels, primary and replica speak TLS only and
// ask clients for a certificate
// (REDIS_URL=rediss-sentinel://hosts/master/db with the REDIS_TLS_
// files): an upload is detected; once the primary is killed and Sentinel
// has promoted the replica, at another address, both are back over TLS to
// it and an upload is detected again. The passwords come from
// REDIS_SENTINEL_PASSWORD and REDIS_PASSWORD, and no log shows them. An
// API that trusts another CA, or gives the sentinels a wrong password,
// says at start why the sentinels refuse it.
func TestProcessesOverSentinelTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five Redis processes, the API and a worker, and waits for a failover")
	}
	h := newHarness(t, options{})
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	s := startSentinels(t, ca)
	ca.Client(t, "client", "yoloserve")
	rc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: s.sentinels, SentinelPassword: sentinelPassword,
		Password: dataPassword, DB: 2, TLSConfig: s.tls})
	defer rc.Close()
	env := []string{"REDIS_URL=rediss-sentinel://" + strings.Join(s.sentinels, ",") + "/mymaster/2",
		"REDIS_SENTINEL_PASSWORD=" + sentinelPassword, "REDIS_PASSWORD=" + dataPassword,
		"REDIS_TLS_CA=" + ca.Path, "REDIS_TLS_CERT=" + filepath.Join(dir, "client.crt"), "REDIS_TLS_KEY=" + filepath.Join(dir, "client.key")}
	api, worker, _ := detectsOver(t, h, rc, env...)
	checkLogsHide(t, []*testenv.Process{api, worker}, sentinelPassword, dataPassword)

	s.primary.Process.Kill()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.sentinels[0], Password: sentinelPassword, TLSConfig: s.tls})
	defer sc.Close()
	promoted := "127.0.0.1:" + strconv.Itoa(s.replicaPort)
	testenv.Eventually(t, 30*time.Second, "Sentinel never promoted the replica", func() bool {
		addr, err := sc.GetMasterAddrByName(context.Background(), "mymaster").Result()
		return err == nil && strings.Join(addr, ":") == promoted
	})
	awaitReady(t, "API", h.api.URL)
	r := h.post(testenv.ReadImage(t, "bus.jpg"), "bus.jpg", nil, "?wait=60")
	if r.status != http.StatusOK {
		t.Fatalf("POST /predict?wait=60 after the failover: %d %s", r.status, r.raw)
	}
	checkBusDetections(t, decodeResult(t, h.result(r.body["task_id"].(string))))

	other := testenv.NewCA(t, dir, "other")
	refusedBy(t, h, "certificate signed by unknown authority", dataPassword, append(slices.Clip(env), "REDIS_TLS_CA="+other.Path)...)
	refusedBy(t, h, "WRONGPASS", "n0tit", append(slices.Clip(env), "REDIS_SENTINEL_PASSWORD=n0tit")...)
}

// checkLogsHide checks that no log of procs shows any of the secrets
// (passwords given to them).
func checkLogsHide(t *testing.T, procs []*testenv.Process, secrets ...string) {
	t.Helper()
	for _, p := range procs {
		out := p.Output()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("a log shows the password %q:\n%s", s, out)
			}
		}
	}
}

// startTLSRedis starts a redis-server that speaks TLS only, with a
// certificate of a CA it makes in dir, and that asks clients for a
// certificate of that CA. It returns the CA, a client of database 2, and
// the environment for the API and a worker (REDIS_URL first, then
// REDIS_TLS_CA, REDIS_TLS_CERT and REDIS_TLS_KEY, the client's files
// dir/client.crt and dir/client.key).
func startTLSRedis(t *testing.T, dir string) (*testenv.CA, *redis.Client, []string) {
	t.Helper()
	ca := testenv.NewCA(t, dir, "ca")
	ca.Server(t, "redis")
	client := ca.Client(t, "client", "yoloserve")
	port := strconv.Itoa(testenv.FreePort(t))
	startRedisProc(t, "redis-server", "--port", "0", "--tls-port", port, "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "redis.crt"), "--tls-key-file", filepath.Join(dir, "redis.key"),
		"--tls-ca-cert-file", ca.Path, "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--dir", dir)
	addr := "127.0.0.1:" + port
	rc := redis.NewClient(&redis.Options{Addr: addr, DB: 2, TLSConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}}})
	t.Cleanup(func() { rc.Close() })
	return ca, rc, []string{"REDIS_URL=rediss://" + addr + "/2", "REDIS_TLS_CA=" + ca.Path,
		"REDIS_TLS_CERT=" + filepath.Join(dir, "client.crt"), "REDIS_TLS_KEY=" + filepath.Join(dir, "client.key")}
}

// detectsOver starts the API and a worker as processes with env (REDIS_URL
// and what it needs) on the Redis rc reaches, on the database the URL
// names, and checks that an upload is detected, that /models shows the
// worker and that the task's hash is in rc's database. It returns the API
// and the worker, which run until the test ends, and the worker's health
// URL; h.api.URL is the API's from then on.
func detectsOver(t *testing.T, h *harness, rc *redis.Client, env ...string) (api, worker *testenv.Process, workerURL string) {
	t.Helper()
	ctx := context.Background()
	testenv.Eventually(t, 10*time.Second, "redis-server never answered", func() bool { return rc.Ping(ctx).Err() == nil })
	apiEnv, apiURL := h.apiEnv(t, env...) // later entries win
	api = testenv.Start(t, "api", apiEnv...)
	worker, workerURL = startReadyWorker(t, h.workerEnv(t, env...))
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
	return api, worker, workerURL
}

// refusedBy starts an API process with env, which Redis refuses, and
// checks that its start warning carries why (want), that uploads are
// answered 503, and that its log never shows secret (when not empty).
func refusedBy(t *testing.T, h *harness, want, secret string, env ...string) {
	t.Helper()
	apiEnv, apiURL := h.apiEnv(t, env...)
	api := testenv.Start(t, "api", apiEnv...)
	testenv.Eventually(t, 20*time.Second, "the API never said why Redis refused it ("+want+")", func() bool {
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
