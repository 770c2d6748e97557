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
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"yoloserve/internal/detect"
	"yoloserve/internal/yolo"
)

// system is redis-server, bin/api and bin/worker as real processes.
type system struct {
	cfg        *Config
	dir        string
	redis      string
	rdb        *redis.Client
	api        string
	metricsURL string // the worker's /metrics
	procs      []*exec.Cmd
	sent       atomic.Int64 // tasks accepted since the worker started
	redisP     *exec.Cmd
	apiP       *exec.Cmd
	worker     *exec.Cmd
	client     *http.Client
	logs       map[string]*os.File // by process name, when Config.LogDir is set
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs a program in the system's folder. With Config.LogDir set,
// its output goes, at warn level, to NAME.log there (NAME the program's
// base name; redis-server's is redis.log), appended to what the program
// wrote before in this run; otherwise it logs only errors, to stderr.
func (s *system) start(name string, args []string, env ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	level := "error"
	cmd.Stderr = os.Stderr
	if s.cfg.LogDir != "" {
		f, err := s.log(strings.TrimSuffix(filepath.Base(name), "-server"))
		if err != nil {
			return nil, err
		}
		level = "warn"
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_LEVEL=" + level}, env...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.procs = append(s.procs, cmd)
	return cmd, nil
}

// log returns the file NAME.log in Config.LogDir, created afresh by its
// first call in this system and appended to after; it returns an error
// when it cannot be created.
func (s *system) log(name string) (*os.File, error) {
	if f := s.logs[name]; f != nil {
		return f, nil
	}
	if err := os.MkdirAll(s.cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench logs: %w", err)
	}
	f, err := os.Create(filepath.Join(s.cfg.LogDir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("bench logs: %w", err)
	}
	if s.logs == nil {
		s.logs = map[string]*os.File{}
	}
	s.logs[name] = f
	return f, nil
}

// logPaths returns the paths of the log files the system wrote, sorted.
func (s *system) logPaths() []string {
	var paths []string
	for _, f := range s.logs {
		paths = append(paths, f.Name())
	}
	slices.Sort(paths)
	return paths
}

// waitReady polls url until it answers 200, and returns nil then; or an
// error at once when p, the process behind it, has ended, or after
// timeout.
func waitReady(url string, timeout time.Duration, p *exec.Cmd) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if exited(p.Process.Pid) {
			return fmt.Errorf("%s stopped at start (its log says why)", filepath.Base(p.Path))
		}
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
	if s.redisP, err = s.start("redis-server", []string{"--port", strconv.Itoa(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"}); err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	s.redis = fmt.Sprintf("redis://127.0.0.1:%d/0", rport)
	s.rdb = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", rport)})
	aport := freePort()
	s.api = fmt.Sprintf("http://127.0.0.1:%d", aport)
	if s.apiP, err = s.start(filepath.Join(cfg.BinDir, "api"), nil, s.env(fmt.Sprintf("API_ADDR=127.0.0.1:%d", aport), "MAX_QUEUE=1000000")...); err != nil {
		return nil, err
	}
	if err := waitReady(s.api+"/readyz", 10*time.Second, s.apiP); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *system) env(extra ...string) []string {
	return append([]string{"REDIS_URL=" + s.redis, "UPLOAD_DIR=" + filepath.Join(s.dir, "uploads"),
		"MODEL_PATH=" + s.cfg.Model, "ORT_LIB=" + s.cfg.Library, "RESULT_TTL=60s"}, extra...)
}

func (s *system) startWorker(wc WorkerConfig) error {
	return s.startWorkerEnv(fmt.Sprintf("WORKER_CONCURRENCY=%d", wc.Concurrency),
		fmt.Sprintf("ORT_THREADS=%d", wc.Threads), fmt.Sprintf("ORT_SESSIONS=%d", wc.Sessions),
		fmt.Sprintf("ORT_SOLO_THREADS=%d", wc.Solo))
}

// startWorkerEnv starts bin/worker with env added to the system's and
// waits until it is ready; it returns an error when it does not start or
// is not ready within a minute (a GPU's first session takes seconds).
func (s *system) startWorkerEnv(env ...string) error {
	port := freePort()
	s.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	w, err := s.start(filepath.Join(s.cfg.BinDir, "worker"), nil, s.env(
		append([]string{fmt.Sprintf("WORKER_ADDR=127.0.0.1:%d", port)}, env...)...)...)
	if err != nil {
		return err
	}
	s.worker = w
	s.sent.Store(0)
	return waitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", port), time.Minute, w)
}

// exited reports whether the child pid has ended (a zombie not yet
// waited for).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) == 0 || f[0] == "Z"
}

func (s *system) stopWorker() {
	if s.worker != nil {
		s.worker.Process.Signal(os.Interrupt)
		s.worker.Wait()
		s.worker = nil
	}
}

func (s *system) stop() {
	s.rdb.Close()
	for _, p := range s.procs {
		p.Process.Kill()
		p.Wait()
	}
	for _, f := range s.logs {
		f.Close()
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

// submit posts one body to /predict and returns the task's id, or an error
// unless it was accepted. It reads the answer to its end, so that the
// connection is reused.
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
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST /predict: %d %s", resp.StatusCode, r.Error)
	}
	s.sent.Add(1)
	return r.ID, nil
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
		io.Copy(io.Discard, resp.Body)
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
// time from POST to the result being readable and the result's stage
// times.
func (s *system) roundTrip(b body) (time.Duration, detect.Speed, error) {
	t := time.Now()
	id, err := s.submit(b)
	if err != nil {
		return time.Since(t), detect.Speed{}, err
	}
	sp, err := s.awaitResult(id)
	return time.Since(t), sp, err
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

// window is one closed-loop load: the latencies of the calls that
// succeeded (sorted), the failures, the wall time, the CPU time each
// process used (as cpu orders them) and the machine's.
type window struct {
	lat     []float64
	errs    int
	wall    time.Duration
	cpu     [4]time.Duration
	machine machineTimes
	speed   detect.Speed // stage times summed over the images
	solo    float64      // images that ran on the solo session
}

// window runs clients in closed loops of round trips for d.
func (s *system) window(bodies []body, clients int, d time.Duration) window {
	var mu sync.Mutex
	var sum detect.Speed
	before, machine := s.cpu(), readMachineTimes()
	solo, _ := s.solo()
	lat, errs, wall := closedLoop(clients, d, func(_, i int) (time.Duration, error) {
		rt, sp, err := s.roundTrip(bodies[i%len(bodies)])
		mu.Lock()
		addSpeed(&sum, sp, 1)
		mu.Unlock()
		return rt, err
	})
	after := s.cpu()
	soloAfter, _ := s.solo()
	w := window{lat: lat, errs: errs, wall: wall, machine: readMachineTimes().since(machine), speed: sum, solo: soloAfter - solo}
	for i := range w.cpu {
		w.cpu[i] = after[i] - before[i]
	}
	return w
}

// level pools windows run with the same number of clients into one
// figure: throughput over their summed wall time, percentiles over all
// their calls, CPU per finished image.
func level(clients int, ws ...window) LoadLevel {
	var all window
	for _, w := range ws {
		all.lat = append(all.lat, w.lat...)
		all.errs += w.errs
		all.wall += w.wall
		addSpeed(&all.speed, w.speed, 1)
		all.solo += w.solo
		for i := range all.cpu {
			all.cpu[i] += w.cpu[i]
		}
		for i := range all.machine {
			all.machine[i] += w.machine[i]
		}
	}
	sort.Float64s(all.lat)
	lv := LoadLevel{Clients: clients, ImagesPerS: float64(len(all.lat)) / all.wall.Seconds(),
		P50MS: percentile(all.lat, 50), P95MS: percentile(all.lat, 95), P99MS: percentile(all.lat, 99), Errors: all.errs,
		Machine: all.machine.share()}
	if n := len(all.lat); n > 0 {
		lv.MaxMS = all.lat[n-1]
	}
	if n := float64(len(all.lat)); n > 0 {
		lv.CPUPerImage = CPUShare{Worker: ms(all.cpu[0]) / n, API: ms(all.cpu[1]) / n, Redis: ms(all.cpu[2]) / n, Client: ms(all.cpu[3]) / n}
		addSpeed(&lv.Speed, all.speed, 1/n)
		lv.SoloShare = all.solo / n
	}
	return lv
}

// medianSpeed returns each stage's median over speeds: like the service
// time's, unmoved by a pair or two that a slow moment caught.
func medianSpeed(speeds []detect.Speed) detect.Speed {
	var dec, pre, inf, post []float64
	for _, sp := range speeds {
		dec, pre = append(dec, sp.Decode), append(pre, sp.Preprocess)
		inf, post = append(inf, sp.Inference), append(post, sp.Postprocess)
	}
	return detect.Speed{Decode: median(dec), Preprocess: median(pre), Inference: median(inf), Postprocess: median(post)}
}

// addSpeed adds k times sp's stage times to dst.
func addSpeed(dst *detect.Speed, sp detect.Speed, k float64) {
	dst.Decode += k * sp.Decode
	dst.Preprocess += k * sp.Preprocess
	dst.Inference += k * sp.Inference
	dst.Postprocess += k * sp.Postprocess
}

// pause stops the worker process (SIGSTOP) so that a bare session runs
// alone, without the worker's polling; resume lets it go on. A client
// reads a result before the worker has marked its task complete, so pause
// first waits for the queue's active list to empty: a worker frozen in
// that call would time out on it and retry a move already made.
func (s *system) pause() {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if n, err := s.rdb.LLen(context.Background(), "asynq:{detect}:active").Result(); err != nil || n == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	s.worker.Process.Signal(syscall.SIGSTOP)
}

func (s *system) resume() { s.worker.Process.Signal(syscall.SIGCONT) }

// cpu returns the CPU time used so far by the worker, the API, Redis and
// this process (the load generator), in that order.
func (s *system) cpu() [4]time.Duration {
	var t [4]time.Duration
	for i, p := range []*exec.Cmd{s.worker, s.apiP, s.redisP} {
		if p != nil {
			t[i] = procCPU(p.Process.Pid)
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t[3] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return t
}

// metrics reads the named samples from the worker's /metrics. It returns
// an error when one is missing.
func (s *system) metrics(names ...string) ([]float64, error) {
	return readMetrics(s.metricsURL, names...)
}

// apiReading is one reading of the API's counters that an intake
// window's figures are the growth of: its refusals by reason
// (yoloserve_api_refusals_total), and by step the uploads whose step took
// over slowStep (yoloserve_api_upload_step_seconds), each keyed by its
// label.
type apiReading struct {
	refused, slow map[string]float64
}

// slowStep is where an upload's step counts as slow in the intake windows,
// a bucket boundary of yoloserve_api_upload_step_seconds: one such step
// takes most of the 50 ms the p99 target gives an upload.
const slowStep = 32 * time.Millisecond

// uploadSteps are the steps of yoloserve_api_upload_step_seconds.
var uploadSteps = []string{"store", "enqueue"}

// readAPI reads the API's counters; it returns nil when the API does not
// answer or lacks one.
func (s *system) readAPI() *apiReading {
	reasons := append(detect.UnavailableReasons(), "other")
	var names []string
	for _, r := range reasons {
		names = append(names, `yoloserve_api_refusals_total{reason="`+r+`"}`)
	}
	const steps = "yoloserve_api_upload_step_seconds"
	le := strconv.FormatFloat(slowStep.Seconds(), 'g', -1, 64) // as the page writes it: 0.032
	for _, st := range uploadSteps {
		names = append(names, steps+`_count{step="`+st+`"}`, steps+`_bucket{step="`+st+`",le="`+le+`"}`)
	}
	v, err := readMetrics(s.api+"/metrics", names...)
	if err != nil {
		return nil
	}
	a := &apiReading{refused: map[string]float64{}, slow: map[string]float64{}}
	for i, r := range reasons {
		a.refused[r] = v[i]
	}
	v = v[len(reasons):]
	for i, st := range uploadSteps {
		a.slow[st] = v[2*i] - v[2*i+1]
	}
	return a
}

// between sets a window's refusals and slow steps from the readings
// before and after it, leaving them nil when either failed.
func between(before, after *apiReading) (refused, slow map[string]int) {
	if before == nil || after == nil {
		return nil, nil
	}
	return grown(before.refused, after.refused), grown(before.slow, after.slow)
}

// grown returns how much each count grew from before to after, leaving
// out those that did not.
func grown(before, after map[string]float64) map[string]int {
	d := map[string]int{}
	for k, n := range after {
		if g := int(n - before[k]); g > 0 {
			d[k] = g
		}
	}
	return d
}

// readMetrics reads the named samples, each a name with its labels as the
// page writes them, from the Prometheus text page at url. It returns an
// error when one is missing.
func readMetrics(url string, names ...string) ([]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	vals := make([]float64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if i := slices.Index(names, f[0]); i >= 0 {
			if vals[i], err = strconv.ParseFloat(f[1], 64); err != nil {
				return nil, err
			}
			found[i] = true
		}
	}
	if i := slices.Index(found, false); i >= 0 {
		return nil, fmt.Errorf("%s lacks %s", url, names[i])
	}
	return vals, sc.Err()
}

// taskSeconds reads the worker's service-time histogram: the sum of the
// task times and their count.
func (s *system) taskSeconds() (sum, count float64, err error) {
	v, err := s.metrics("yoloserve_worker_task_seconds_sum", "yoloserve_worker_task_seconds_count")
	if err != nil {
		return 0, 0, err
	}
	return v[0], v[1], nil
}

// solo reads how many images ran on the worker's solo session, and how
// many of those runs found the cores taken (crowded: the solo session then
// rests, and lone images run on their slots' sessions); zeros when the
// worker does not answer.
func (s *system) solo() (runs, crowded float64) {
	v, err := s.metrics("yoloserve_worker_solo_runs_total", "yoloserve_worker_solo_crowded_total")
	if err != nil {
		return 0, 0
	}
	return v[0], v[1]
}

// serviceTime runs one task and returns the worker's service time for it
// and the time from POST until its result was readable. The worker
// records a task's time just after its result becomes readable, so it
// waits for the worker to have recorded every task sent, before and after.
func (s *system) serviceTime(b body) (service, idle float64, sp detect.Speed, err error) {
	sum0, err := s.recorded()
	if err != nil {
		return 0, 0, sp, err
	}
	rt, sp, err := s.roundTrip(b)
	if err != nil {
		return 0, 0, sp, err
	}
	sum, err := s.recorded()
	return (sum - sum0) * 1000, ms(rt), sp, err
}

// recorded waits until the worker has recorded the time of every task
// sent to it and returns their sum, in seconds.
func (s *system) recorded() (float64, error) {
	want := float64(s.sent.Load())
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		sum, n, err := s.taskSeconds()
		if err != nil || n == want {
			return sum, err
		}
		if n > want || time.Now().After(deadline) {
			return 0, fmt.Errorf("the worker recorded %v tasks where %v were sent", n, want)
		}
	}
}

// lonePairCount is how many pairs lonePairs runs.
const lonePairCount = 20

// lonePairs runs lonePairCount tasks of b one at a time, each after a
// bare run of one with the worker paused, and each warmed as the bare run
// is: the bare session runs twice and the second run counts; the worker
// runs two tasks and the second counts. The worker's service-time sum
// grows by exactly that task's time. It returns an error when a task
// fails, and ctx's error at the next pair once ctx ends.
func (s *system) lonePairs(ctx context.Context, one *bare, b body) ([]Pair, error) {
	pairs := make([]Pair, 0, lonePairCount)
	for range lonePairCount {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s.pause()
		one.once()
		bare := one.once()
		s.resume()
		if _, _, err := s.roundTrip(b); err != nil {
			return nil, err
		}
		st, rt, sp, err := s.serviceTime(b)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, Pair{BareMS: bare, ServiceMS: st, IdleMS: rt, Speed: sp})
	}
	return pairs, nil
}

// measureWorker runs one worker configuration against the floor, each
// figure paired with a bare measurement taken just before it while the
// worker is paused: the machine drifts, and a pair shares its conditions.
// First one task at a time, each after runs of a bare session with the
// threads a lone task runs on (service time, idle latency); then 1 and 4
// clients; then rounds of a bare throughput window (one 1-thread session
// for each of ncpu cores, the best the machine gives) and a 16-client
// window of the same length.
//
// It returns ctx's error at the next pair or window once ctx ends.
func (s *system) measureWorker(ctx context.Context, bodies []body, wc WorkerConfig, ncpu int) (WorkerRun, error) {
	run := WorkerRun{Concurrency: wc.Concurrency, Threads: wc.Threads, Sessions: wc.Sessions,
		SoloThreads: yolo.SoloThreads(wc.Concurrency, wc.Threads, wc.Solo)}
	// The bare sessions' threads stop spinning when a run returns: left
	// spinning, they would take the cores from the tasks that follow.
	one, err := newBare(s.cfg.Model, spinInRun.options("cpu", run.loneThreads()), 1, 1)
	if err != nil {
		return run, err
	}
	defer one.close()
	best, err := newBare(s.cfg.Model, spinInRun.options("cpu", 1), ncpu, 1)
	if err != nil {
		return run, err
	}
	defer best.close()
	if err := s.startWorker(wc); err != nil {
		return run, err
	}
	defer s.stopWorker()
	for range 3 { // warm up
		s.roundTrip(bodies[0])
	}
	solo, crowded := s.solo()
	pairs, err := s.lonePairs(ctx, one, bodies[0])
	if err != nil {
		return run, err
	}
	run.summarize(pairs)
	soloAfter, crowdedAfter := s.solo()
	run.LoneSoloShare = (soloAfter - solo) / (2 * lonePairCount)
	run.LoneCrowded = int64(crowdedAfter - crowded)
	report := func(lv LoadLevel) {
		u := lv.CPUPerImage
		sp := lv.Speed
		m := lv.Machine
		s.cfg.printf("  worker %s, %2d clients: %6.1f img/s  p50 %6.1f  p95 %6.1f  p99 %6.1f ms  errors %d  CPU ms/img: worker %.1f api %.1f redis %.1f client %.1f  stages ms: decode %.1f letterbox %.1f inference %.1f nms %.1f  solo %.0f%%  machine: idle %.1f%% softirq %.1f%% steal %.1f%%\n",
			run.name(), lv.Clients, lv.ImagesPerS, lv.P50MS, lv.P95MS, lv.P99MS, lv.Errors, u.Worker, u.API, u.Redis, u.Client, sp.Decode, sp.Preprocess, sp.Inference, sp.Postprocess, 100*lv.SoloShare, 100*m.Idle, 100*m.SoftIRQ, 100*m.Steal)
	}
	for _, c := range []int{1, 4} {
		if err := ctx.Err(); err != nil {
			return run, err
		}
		lv := level(c, s.window(bodies, c, s.cfg.Load))
		run.Loads = append(run.Loads, lv)
		report(lv)
	}
	var ws []window
	var ratios, barePS []float64
	for range s.cfg.Rounds {
		if err := ctx.Err(); err != nil {
			return run, err
		}
		s.pause()
		b := best.run(0, s.cfg.Load)
		s.resume()
		if err := ctx.Err(); err != nil {
			return run, err
		}
		w := s.window(bodies, 16, s.cfg.Load)
		ws = append(ws, w)
		r := Round{BarePS: b.ImagesPerS, ServicePS: float64(len(w.lat)) / w.wall.Seconds()}
		run.Rounds = append(run.Rounds, r)
		ratios, barePS = append(ratios, r.ServicePS/r.BarePS), append(barePS, r.BarePS)
		s.cfg.printf("  round: bare %s %.1f img/s, then 16 clients %.1f img/s: %.3f\n", best.name, r.BarePS, r.ServicePS, r.ServicePS/r.BarePS)
	}
	lv := level(16, ws...)
	run.Loads = append(run.Loads, lv)
	report(lv)
	run.ThroughputRatio = median(ratios)
	run.BareBestPS = median(barePS)
	if run.CeilingRatio = ceiling(ncpu, run.BareBestPS, lv.CPUPerImage); run.CeilingRatio > 0 {
		s.cfg.printf("  with every core busy, these costs allow %.3f of the floor (bare sessions: %.1f ms of a core an image)\n",
			run.CeilingRatio, coreMSPerImage(ncpu, run.BareBestPS))
	}
	run.PeakRSSMiB = peakRSS(s.worker.Process.Pid)
	return run, nil
}

// measureUpload measures the API's intake of a ~100 KB JPEG with no worker
// running: its capacity (clients posting back to back) and its latency at
// a fixed rate (an upload due every 1/rate s whatever the answers, timed
// from when it was due, so that a stall counts in full).
func (s *system) measureUpload(image []byte, clients int, rate float64, d time.Duration) UploadResult {
	b := newBody(image)
	before := s.readAPI()
	lat, errs, wall := closedLoop(clients, d, func(_, _ int) (time.Duration, error) {
		t := time.Now()
		_, err := s.submit(b)
		return time.Since(t), err
	})
	res := UploadResult{Bytes: len(image), Clients: clients, AcceptedPS: float64(len(lat)) / wall.Seconds(),
		P50MS: percentile(lat, 50), P99MS: percentile(lat, 99), Errors: errs, Rate: rate}
	mid := s.readAPI() // after the first window, before the second
	res.Refused, res.Slow = between(before, mid)
	var mu sync.Mutex
	var wg sync.WaitGroup
	lat = lat[:0]
	errs = 0
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for k := 0; ; k++ {
		due := start.Add(time.Duration(k) * interval)
		if due.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.submit(b)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			lat = append(lat, ms(time.Since(due)))
		}()
	}
	wg.Wait()
	sort.Float64s(lat)
	res.RateP50MS, res.RateP99MS, res.RateMaxMS, res.RateErrors = percentile(lat, 50), percentile(lat, 99), percentile(lat, 100), errs
	res.RateRefused, res.RateSlow = between(mid, s.readAPI())
	return res
}
