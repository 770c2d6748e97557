package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"yoloserve/internal/detect"
)

// system is redis-server, bin/api and bin/worker as real processes.
type system struct {
	cfg     *Config
	dir     string
	redis   string
	api     string
	metrics string // the worker's /metrics
	procs   []*exec.Cmd
	worker  *exec.Cmd
	client  *http.Client
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *system) start(name string, args []string, env ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_LEVEL=error"}, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.procs = append(s.procs, cmd)
	return cmd, nil
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v", url, timeout)
}

// newSystem starts Redis and the API (no worker yet).
func newSystem(cfg *Config) (*system, error) {
	dir, err := os.MkdirTemp("", "yoloserve-bench-")
	if err != nil {
		return nil, err
	}
	s := &system{cfg: cfg, dir: dir, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	rport := freePort()
	if _, err := s.start("redis-server", []string{"--port", strconv.Itoa(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}); err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	s.redis = fmt.Sprintf("redis://127.0.0.1:%d/0", rport)
	aport := freePort()
	s.api = fmt.Sprintf("http://127.0.0.1:%d", aport)
	if _, err := s.start(filepath.Join(cfg.BinDir, "api"), nil, s.env(fmt.Sprintf("API_ADDR=127.0.0.1:%d", aport), "MAX_QUEUE=1000000")...); err != nil {
		return nil, err
	}
	if err := waitHTTP(s.api+"/readyz", 10*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *system) env(extra ...string) []string {
	return append([]string{"REDIS_URL=" + s.redis, "UPLOAD_DIR=" + filepath.Join(s.dir, "uploads"),
		"MODEL_PATH=" + s.cfg.Model, "ORT_LIB=" + s.cfg.Library, "RESULT_TTL=60s"}, extra...)
}

func (s *system) startWorker(concurrency, threads, sessions int) error {
	port := freePort()
	s.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	w, err := s.start(filepath.Join(s.cfg.BinDir, "worker"), nil, s.env(
		fmt.Sprintf("WORKER_ADDR=127.0.0.1:%d", port), fmt.Sprintf("WORKER_CONCURRENCY=%d", concurrency),
		fmt.Sprintf("ORT_THREADS=%d", threads), fmt.Sprintf("ORT_SESSIONS=%d", sessions))...)
	if err != nil {
		return err
	}
	s.worker = w
	return waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/readyz", port), 30*time.Second)
}

func (s *system) stopWorker() {
	if s.worker != nil {
		s.worker.Process.Signal(os.Interrupt)
		s.worker.Wait()
		s.worker = nil
	}
}

func (s *system) stop() {
	for _, p := range s.procs {
		p.Process.Kill()
		p.Wait()
	}
	os.RemoveAll(s.dir)
}

// body is a ready multipart upload.
type body struct {
	data []byte
	ct   string
}

func newBody(image []byte) body {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, _ := mw.CreateFormFile("image", "image.jpg")
	fw.Write(image)
	mw.Close()
	return body{b.Bytes(), mw.FormDataContentType()}
}

func (s *system) submit(b body) (string, error) {
	resp, err := s.client.Post(s.api+"/predict", b.ct, bytes.NewReader(b.data))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct {
		ID    string `json:"task_id"`
		Error string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST /predict: %d %s", resp.StatusCode, r.Error)
	}
	return r.ID, nil
}

func (s *system) await(id string) error {
	_, err := s.awaitResult(id)
	return err
}

// awaitResult waits for a task and returns its result's stage times.
func (s *system) awaitResult(id string) (detect.Speed, error) {
	for i := 0; i < 10; i++ {
		resp, err := s.client.Get(s.api + "/result/" + id + "?wait=30")
		if err != nil {
			return detect.Speed{}, err
		}
		var r struct {
			Status string        `json:"status"`
			Error  string        `json:"error"`
			Result detect.Result `json:"result"`
		}
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		switch r.Status {
		case "SUCCESS":
			return r.Result.SpeedMS, nil
		case "FAILURE":
			return detect.Speed{}, errors.New(r.Error)
		}
	}
	return detect.Speed{}, fmt.Errorf("task %s did not finish", id)
}

// roundTrip submits an image and waits for its result; it returns the
// time from POST to the result being readable.
func (s *system) roundTrip(b body) (time.Duration, error) {
	t := time.Now()
	id, err := s.submit(b)
	if err == nil {
		err = s.await(id)
	}
	return time.Since(t), err
}

// closedLoop runs clients that each call do back to back for d, and
// returns the sorted latencies of the calls that succeeded, the number
// that failed and the wall time.
func closedLoop(clients int, d time.Duration, do func(client, i int) (time.Duration, error)) (lat []float64, errs int, wall time.Duration) {
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; ctx.Err() == nil; i++ {
				rt, err := do(c, i)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					lat = append(lat, ms(rt))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Float64s(lat)
	return lat, errs, time.Since(start)
}

// load runs clients in closed loops of round trips for d and measures
// throughput and latency.
func (s *system) load(bodies []body, clients int, d time.Duration) LoadLevel {
	lat, errs, wall := closedLoop(clients, d, func(_, i int) (time.Duration, error) {
		return s.roundTrip(bodies[i%len(bodies)])
	})
	return LoadLevel{Clients: clients, ImagesPerS: float64(len(lat)) / wall.Seconds(),
		P50MS: percentile(lat, 50), P95MS: percentile(lat, 95), P99MS: percentile(lat, 99), Errors: errs}
}

// metric reads a counter or sum from the worker's /metrics.
func (s *system) metric(name string) (float64, error) {
	resp, err := http.Get(s.metrics)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// peakRSS reads VmHWM of the worker process, in MiB.
func (s *system) peakRSS() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.worker.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// measureWorker runs one worker configuration: sequential round trips for
// service time and idle latency, then closed-loop loads.
func (s *system) measureWorker(bodies []body, concurrency, threads, sessions int, loads []int) (WorkerRun, error) {
	if err := s.startWorker(concurrency, threads, sessions); err != nil {
		return WorkerRun{}, err
	}
	defer s.stopWorker()
	run := WorkerRun{Concurrency: concurrency, Threads: threads, Sessions: sessions}
	for i := 0; i < 3; i++ { // warm up
		s.roundTrip(bodies[0])
	}
	// One task at a time: the worker's service-time sum grows by exactly
	// that task's time, so each task's service time is known; medians
	// resist the outliers of a shared machine.
	var idle, service []float64
	const n = 25
	for i := 0; i < n; i++ {
		before, err := s.metric("yoloserve_worker_task_seconds_sum")
		if err != nil {
			return run, err
		}
		t := time.Now()
		id, err := s.submit(bodies[0])
		if err != nil {
			return run, err
		}
		sp, err := s.awaitResult(id)
		if err != nil {
			return run, err
		}
		idle = append(idle, ms(time.Since(t)))
		after, err := s.metric("yoloserve_worker_task_seconds_sum")
		if err != nil {
			return run, err
		}
		service = append(service, (after-before)*1000)
		run.Speed.Decode += sp.Decode / n
		run.Speed.Preprocess += sp.Preprocess / n
		run.Speed.Inference += sp.Inference / n
		run.Speed.Postprocess += sp.Postprocess / n
	}
	run.ServiceMS = median(service)
	run.IdleLatencyMS = median(idle)
	for _, c := range loads {
		lv := s.load(bodies, c, s.cfg.Load)
		run.Loads = append(run.Loads, lv)
		s.cfg.printf("  worker %dx%d threads/%d session(s), %2d clients: %6.1f img/s  p50 %6.1f  p95 %6.1f  p99 %6.1f ms  errors %d\n",
			concurrency, threads, sessions, c, lv.ImagesPerS, lv.P50MS, lv.P95MS, lv.P99MS, lv.Errors)
	}
	run.PeakRSSMiB = s.peakRSS()
	return run, nil
}

// measureUpload posts a ~100 KB JPEG from many clients with no worker and
// counts accepted uploads per second.
func (s *system) measureUpload(image []byte, clients int, d time.Duration) UploadResult {
	b := newBody(image)
	lat, errs, wall := closedLoop(clients, d, func(_, _ int) (time.Duration, error) {
		t := time.Now()
		resp, err := s.client.Post(s.api+"/predict", b.ct, bytes.NewReader(b.data))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(t), nil
	})
	return UploadResult{Bytes: len(image), Clients: clients, AcceptedPS: float64(len(lat)) / wall.Seconds(),
		P50MS: percentile(lat, 50), P99MS: percentile(lat, 99), Errors: errs}
}
