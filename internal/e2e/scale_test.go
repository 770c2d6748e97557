package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/asynq"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/upload"
)

// TestSeparateProcessesNoSharedDisk runs the API and three workers as
// separate processes, each with its own UPLOAD_DIR and UPLOAD_STORE=redis:
// they share nothing but Redis. 200 tasks must all succeed.
func TestSeparateProcessesNoSharedDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four processes and 200 inferences")
	}
	h := newHarness(t, options{}) // for its Redis and client helpers
	dirs := make([]string, 4)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	apiEnv, apiURL := h.apiEnv(t, "UPLOAD_STORE=redis", "UPLOAD_DIR="+dirs[0], "MAX_QUEUE=100000")
	testenv.Start(t, "api", apiEnv...)
	for i := 1; i <= 3; i++ {
		env := h.workerEnv(t, "UPLOAD_STORE=redis", "WORKER_CONCURRENCY=1")
		env = append(env, "UPLOAD_DIR="+dirs[i]) // later entries win
		testenv.Start(t, "worker", env...)
	}
	h.api.URL = apiURL
	testenv.Eventually(t, 20*time.Second, "API process not ready", func() bool {
		resp, err := http.Get(h.api.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	images := [][]byte{testenv.ReadImage(t, "bus.jpg"), testenv.ReadImage(t, "zidane.jpg"), testenv.ReadImage(t, "person.png")}
	start := time.Now()
	ids := make([]string, 200)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ids[i] = h.submit(images[i%len(images)], nil)
		}()
	}
	wg.Wait()
	for _, id := range ids {
		ti := h.result(id)
		if ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s", id, ti.Status, ti.Error)
		}
	}
	t.Logf("API + 3 workers as processes, no shared disk: 200/200 SUCCESS in %v", time.Since(start).Round(100*time.Millisecond))
	// The worker processes announce their model: the API process lists it
	// once, served by the three, and refuses a class it lacks.
	if got := h.models(); len(got) != 1 || got[0].Name != "yolov8n" || len(got[0].Classes) != 80 || got[0].Workers != 3 {
		t.Errorf("GET /models: %+v, want yolov8n served by 3 workers", got)
	}
	if got := metric(t, apiURL, `yoloserve_queue_workers{queue="detect"}`); got != 3 {
		t.Errorf("API process's yoloserve_queue_workers: %v, want the 3 worker processes", got)
	}
	if r := h.post(images[0], "bus.jpg", map[string]string{"classes": "unicorn"}, ""); r.status != http.StatusBadRequest {
		t.Errorf("classes=unicorn: %d %s, want 400", r.status, r.raw)
	}
	for i, d := range dirs {
		if es, _ := os.ReadDir(d); len(es) != 0 {
			t.Errorf("process %d wrote to its UPLOAD_DIR: %v", i, es)
		}
	}
	if left := h.uploadsInRedis(); len(left) != 0 {
		t.Errorf("%d uploads left in Redis", len(left))
	}
}

// The passwords of a sentinelSet: its primary's and replica's, and its
// sentinels'.
const dataPassword, sentinelPassword = "data-pw", "sentinel-pw"

// sentinelSet is a Redis primary, a replica and three sentinels. The
// primary and replica ask for dataPassword, the sentinels for
// sentinelPassword.
type sentinelSet struct {
	primary, replica         *exec.Cmd
	primaryPort, replicaPort int
	sentinels                []string
	tls                      *tls.Config // the clients', when all five speak TLS only
}

func startRedisProc(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = testenv.DieWithTest()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v (apt-get install redis-server redis-sentinel)", name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// startSentinels starts a sentinelSet. With ca, all five speak TLS only,
// with certificates of ca for 127.0.0.1, ask their clients for one of ca
// (each other too), and the set's tls is a client's config with one.
func startSentinels(t *testing.T, ca *testenv.CA) *sentinelSet {
	t.Helper()
	if _, err := exec.LookPath("redis-sentinel"); err != nil {
		t.Fatal("the failover test needs redis-sentinel (apt-get install redis-sentinel)")
	}
	dir := t.TempDir()
	s := &sentinelSet{primaryPort: testenv.FreePort(t), replicaPort: testenv.FreePort(t)}
	listen := func(port int) string { return fmt.Sprintf("port %d\n", port) }
	if ca != nil {
		ca.Server(t, "redis")
		client := ca.Client(t, "peer", "redis peer")
		s.tls = &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{client}}
		certs := filepath.Dir(ca.Path)
		listen = func(port int) string {
			return fmt.Sprintf("port 0\ntls-port %d\ntls-replication yes\ntls-ca-cert-file %s\n", port, ca.Path) +
				fmt.Sprintf("tls-cert-file %s\ntls-key-file %s\n", filepath.Join(certs, "redis.crt"), filepath.Join(certs, "redis.key")) +
				fmt.Sprintf("tls-client-cert-file %s\ntls-client-key-file %s\n", filepath.Join(certs, "peer.crt"), filepath.Join(certs, "peer.key"))
		}
	}
	start := func(name, conf string) *exec.Cmd {
		file := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, "sentinel") {
			return startRedisProc(t, "redis-sentinel", file)
		}
		return startRedisProc(t, "redis-server", file)
	}
	data := fmt.Sprintf("bind 127.0.0.1\nsave \"\"\ndir %s\nrequirepass %s\nmasterauth %s\n", dir, dataPassword, dataPassword)
	s.primary = start("primary", listen(s.primaryPort)+data)
	s.replica = start("replica", listen(s.replicaPort)+data+fmt.Sprintf("replicaof 127.0.0.1 %d\n", s.primaryPort))
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.replicaPort), Password: dataPassword, TLSConfig: s.tls})
	defer rc.Close()
	testenv.Eventually(t, 20*time.Second, "replica never synced", func() bool {
		info, _ := rc.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	for i := 0; i < 3; i++ {
		port := testenv.FreePort(t)
		start(fmt.Sprintf("sentinel-%d", i), listen(port)+fmt.Sprintf(`bind 127.0.0.1
requirepass %s
sentinel monitor mymaster 127.0.0.1 %d 2
sentinel auth-pass mymaster %s
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
sentinel parallel-syncs mymaster 1
`, sentinelPassword, s.primaryPort, dataPassword))
		s.sentinels = append(s.sentinels, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for _, addr := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, Password: sentinelPassword, TLSConfig: s.tls})
		testenv.Eventually(t, 20*time.Second, "sentinel never saw the replica", func() bool {
			reps, err := sc.Replicas(context.Background(), "mymaster").Result()
			return err == nil && len(reps) == 1
		})
		sc.Close()
	}
	return s
}

// TestSentinelFailover kills the Redis primary under load: Sentinel
// promotes the replica, the API answers 503 for a short window, and every
// task it accepted ends SUCCESS. Sentinels and Redis ask for passwords,
// which the URL gives as go-redis reads them: the sentinels' before the
// hosts, the primary's in the query.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts five Redis processes and waits for a failover")
	}
	s := startSentinels(t, nil)
	url := "redis-sentinel://:" + sentinelPassword + "@" + strings.Join(s.sentinels, ",") + "/mymaster/0?password=" + dataPassword
	rdb, err := asynq.NewClient(url, asynq.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() }) // after the worker and API stop
	h := &harness{t: t, rdb: rdb, uploadDir: t.TempDir()}
	if h.uploads, err = upload.NewDir(h.uploadDir, 0); err != nil {
		t.Fatal(err)
	}
	h.queue = asynq.NewQueue(rdb, asynq.QueueConfig{ReplicaAcks: 1, Retries: 3})
	t.Cleanup(func() { h.queue.Close() })
	h.serveAPI(options{})
	h.startWorker(detector(t), 2)

	jpg := testenv.ReadImage(t, "zidane.jpg")
	var accepted []string
	var first503, last503 time.Time
	n503 := 0
	start := time.Now()
	killed := false
	var killedAt, lastAccept time.Time
	var gap time.Duration // longest time without an accepted task
	afterKill := 0        // tasks accepted after the kill
	for time.Since(start) < 15*time.Second {
		if !killed && time.Since(start) > 3*time.Second {
			s.primary.Process.Kill()
			killed, killedAt = true, time.Now()
		}
		r := h.post(jpg, "x.jpg", nil, "")
		switch r.status {
		case http.StatusAccepted:
			accepted = append(accepted, r.body["task_id"].(string))
			if killed {
				afterKill++
			}
			if !lastAccept.IsZero() {
				gap = max(gap, time.Since(lastAccept))
			}
			lastAccept = time.Now()
		case http.StatusServiceUnavailable:
			if n503 == 0 {
				first503 = time.Now()
			}
			last503 = time.Now()
			n503++
		default:
			t.Errorf("during failover: %d %s", r.status, r.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if afterKill == 0 || afterKill == len(accepted) {
		t.Fatalf("tasks accepted before the kill: %d, after it: %d; want some of each (%d answers 503)", len(accepted)-afterKill, afterKill, n503)
	}
	gap = max(gap, time.Since(lastAccept))
	lost := 0
	for _, id := range accepted {
		if ti := h.result(id); ti.Status != detect.StatusSuccess {
			lost++
			t.Errorf("accepted task %s ended %s %s", id, ti.Status, ti.Error)
		}
	}
	if gap > 10*time.Second {
		t.Errorf("no task accepted for %v", gap)
	}
	t.Logf("failover: primary killed %.1fs into the load; %d tasks accepted, %d lost; %d answers 503 (from %v to %v after the kill); longest time without an accepted task %v",
		killedAt.Sub(start).Seconds(), len(accepted), lost, n503, first503.Sub(killedAt).Round(10*time.Millisecond), last503.Sub(killedAt).Round(10*time.Millisecond), gap.Round(10*time.Millisecond))
}
