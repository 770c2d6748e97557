package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// apiCutFor is how long TestChaos cuts the API off from Redis.
const apiCutFor = 10 * time.Second

// inFlight is how long after an API's kill TestChaos takes an upload that
// lands in Redis to be one the killed API had sent.
const inFlight = 250 * time.Millisecond

// TestChaos runs the service as processes (an API, two workers, a Redis
// that writes every command to its append-only file before answering)
// under four clients for YOLOSERVE_CHAOS seconds (make chaos), half with
// the uploads on disk and half with them in Redis, while it kills and
// restarts them at random: a worker or the API with SIGKILL or SIGTERM,
// Redis with SIGKILL; or pauses Redis for 3 s, freezes a worker for 40 s,
// past its tasks' lease, cuts a worker off from Redis for as long, or
// cuts the API off from Redis for 10 s. Then every task the API accepted
// must end SUCCESS, and no upload may be left but those an API killed as
// it stored them leaves to UPLOAD_MAX_AGE. YOLOSERVE_CHAOS_SEED replays
// a run.
func TestChaos(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("YOLOSERVE_CHAOS"))
	if secs <= 0 {
		t.Skip("set YOLOSERVE_CHAOS=seconds (make chaos) to run it")
	}
	seed, err := strconv.ParseUint(os.Getenv("YOLOSERVE_CHAOS_SEED"), 10, 64)
	if err != nil {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("YOLOSERVE_CHAOS_SEED=%d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))
	for _, store := range []string{"dir", "redis"} {
		t.Run(store, func(t *testing.T) { chaos(t, store, time.Duration(secs)*time.Second/2, rnd) })
	}
}

// chaos is one run of TestChaos, for d, with uploads stored in store.
func chaos(t *testing.T, store string, d time.Duration, rnd *rand.Rand) {
	h := newHarness(t, options{}) // for its Redis, upload folder and helpers
	h.redis.RestartDurable()      // acknowledged writes survive a kill

	// The API, too, reaches Redis through a proxy that can cut it off.
	apiLink := testenv.StartProxy(t, h.redis.Addr)
	apiEnv, apiURL := h.apiEnv(t, "UPLOAD_STORE="+store, "UPLOAD_MAX_AGE=1h", "REDIS_URL="+strings.Replace(h.redis.URL, h.redis.Addr, apiLink.Addr, 1))
	h.api.URL = apiURL
	api := testenv.Start(t, "api", apiEnv...)
	awaitReady(t, "api", apiURL)
	// The first worker reaches Redis through a proxy that can cut it off.
	partition := testenv.StartProxy(t, h.redis.Addr)
	workerEnvs := [][]string{
		h.workerEnv(t, "WORKER_CONCURRENCY=1", "UPLOAD_STORE="+store, "UPLOAD_MAX_AGE=1h", "REDIS_URL="+strings.Replace(h.redis.URL, h.redis.Addr, partition.Addr, 1)),
		h.workerEnv(t, "WORKER_CONCURRENCY=1", "UPLOAD_STORE="+store, "UPLOAD_MAX_AGE=1h"),
	}
	workers := make([]*testenv.Process, len(workerEnvs))
	for i, env := range workerEnvs {
		workers[i] = testenv.Start(t, "worker", env...)
	}

	var images [][]byte
	for _, name := range testenv.Images(t) {
		images = append(images, testenv.ReadImage(t, name))
	}
	var (
		mu       sync.Mutex
		accepted []string
		refused  = map[string]int{} // by status, or the client's error
		stop     = make(chan struct{})
		clients  sync.WaitGroup
	)
	client := &http.Client{Timeout: 20 * time.Second}
	for c := range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				id, why := chaosPost(client, apiURL, images[(c+i)%len(images)])
				mu.Lock()
				if id != "" {
					accepted = append(accepted, id)
				} else {
					refused[why]++
				}
				mu.Unlock()
			}
		}()
	}

	actions := map[string]int{}
	began := time.Now()
	var timeline []string // when each action came, for a failure's log
	var apiKills []time.Time
	// When the API was cut off from Redis, and when Redis was killed or
	// paused: what the API stores then it may not hear back about.
	var apiCuts, redisFaults []time.Time
	act := func(name string) {
		actions[name]++
		timeline = append(timeline, fmt.Sprintf("%.3fs %s", time.Since(began).Seconds(), name))
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(time.Duration(2000+rnd.IntN(4000)) * time.Millisecond)
		switch a := rnd.IntN(10); a {
		case 0, 1, 2:
			i := rnd.IntN(len(workers))
			how := "SIGKILL"
			if a == 2 {
				how = "SIGTERM"
				workers[i].Signal(syscall.SIGCONT) // if frozen (case 7)
				workers[i].Signal(syscall.SIGTERM)
				workers[i].Wait(t, time.Minute)
			} else {
				workers[i].Kill()
			}
			workers[i] = testenv.Start(t, "worker", workerEnvs[i]...)
			act("worker " + how)
		case 3, 4:
			how := "SIGKILL"
			if a == 4 {
				how = "SIGTERM"
				api.Signal(syscall.SIGTERM)
				api.Wait(t, time.Minute)
			} else {
				apiKills = append(apiKills, time.Now())
				api.Kill()
			}
			api = testenv.Start(t, "api", apiEnv...)
			act("API " + how)
		case 5:
			h.redis.Stop()
			h.redis.StartDurable()
			redisFaults = append(redisFaults, time.Now())
			act("Redis SIGKILL")
		case 6:
			// Redis stalls (a long fork, a slow disk, a network
			// partition): every client's commands wait.
			h.rdb.Do(context.Background(), "CLIENT", "PAUSE", 3000, "ALL")
			redisFaults = append(redisFaults, time.Now())
			act("Redis paused 3 s")
		case 7:
			// A worker frozen past its tasks' lease (a paused VM, a
			// stopped container): asynq hands its tasks to the other,
			// and it finishes them too once it thaws.
			w := workers[rnd.IntN(len(workers))]
			w.Signal(syscall.SIGSTOP)
			time.AfterFunc(40*time.Second, func() { w.Signal(syscall.SIGCONT) })
			act("worker frozen 40 s")
		case 8:
			// The first worker cut off from Redis past its tasks' lease
			// (a network partition) while it runs on: its writes time
			// out, asynq hands its tasks to the other worker.
			partition.Cut()
			time.AfterFunc(40*time.Second, partition.Heal)
			act("worker cut off from Redis 40 s")
		case 9:
			// The API cut off from Redis (a network partition): its
			// commands time out, their bytes held until it heals, so
			// that an upload's store or its task's enqueue may land
			// without the API hearing of it.
			apiLink.Cut()
			apiCuts = append(apiCuts, time.Now())
			time.AfterFunc(apiCutFor, apiLink.Heal)
			act("API cut off from Redis 10 s")
		}
	}
	for _, w := range workers {
		w.Signal(syscall.SIGCONT)
	}
	partition.Heal()
	close(stop)
	clients.Wait()
	awaitReady(t, "api", apiURL)
	t.Logf("%v, uploads on %s: %v; %d tasks accepted, refused %v", d, store, actions, len(accepted), refused)

	ended := map[detect.Status]int{}
	for _, id := range accepted {
		ti, err := chaosResult(client, apiURL, id, 5*time.Minute)
		if err != nil {
			t.Errorf("task %s: %v", id, err)
			continue
		}
		ended[ti.Status]++
		if ti.Status != detect.StatusSuccess {
			t.Errorf("task %s: %s %s", id, ti.Status, ti.Error)
		}
	}
	t.Logf("the accepted tasks ended %v", ended)
	// An API killed between storing an upload and enqueueing its task
	// leaves the upload to UPLOAD_MAX_AGE (the folder's sweeper, or the
	// key's expiry): those stored in the 5 s before a kill (or landing just
	// after it, sent before) may stay (an enqueue may wait out a Redis
	// pause). So may one stored in the minute before a kill while the API
	// could not hear from Redis (cut off, its held store landing as the cut
	// heals; Redis killed or paused), whose delete the API was still trying
	// in the background; and one that an API killed during a cut had sent,
	// which the cut held and which lands as the cut heals, after the kill.
	// Any other upload left is a leak.
	unsure := func(at time.Time) bool {
		return slices.ContainsFunc(apiCuts, func(c time.Time) bool { return !at.Before(c) && at.Sub(c) <= apiCutFor+time.Second }) ||
			slices.ContainsFunc(redisFaults, func(f time.Time) bool { return !at.Before(f.Add(-time.Second)) && at.Sub(f) <= 5*time.Second })
	}
	heldPastKill := func(at time.Time) bool {
		return slices.ContainsFunc(apiCuts, func(c time.Time) bool {
			healed := c.Add(apiCutFor)
			return at.After(healed.Add(-100*time.Millisecond)) && at.Before(healed.Add(2*time.Second)) &&
				slices.ContainsFunc(apiKills, func(k time.Time) bool { return k.After(c) && k.Before(healed) })
		})
	}
	excused := func(at time.Time) bool {
		return heldPastKill(at) || slices.ContainsFunc(apiKills, func(k time.Time) bool {
			// A store the API had sent as it was killed lands moments
			// after: its bytes were on their way.
			k = k.Add(inFlight)
			return !at.After(k) && (k.Sub(at) < 5*time.Second || k.Sub(at) < time.Minute && unsure(at))
		})
	}
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		killed := 0
		for _, u := range h.uploadsStored(t) {
			if excused(u.at) {
				killed++
			} else {
				left = append(left, fmt.Sprintf("%s stored at %.3fs", u.name, u.at.Sub(began).Seconds()))
			}
		}
		if len(left) == 0 {
			t.Logf("uploads left: %d, each stored before an API was killed, in the 5 s before or while it could not hear from Redis, or sent by an API killed during a cut", killed)
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Errorf("uploads left 30 s after the tasks ended: %s; actions: %s", strings.Join(left, ", "), strings.Join(timeline, ", "))
}

// storedUpload is an upload in the folder or in Redis, and when it was
// stored.
type storedUpload struct {
	name string
	at   time.Time
}

// uploadsStored lists the uploads in h's folder (stored at their files'
// times) and in Redis (an hour, UPLOAD_MAX_AGE in TestChaos, before their
// keys expire).
func (h *harness) uploadsStored(t *testing.T) []storedUpload {
	t.Helper()
	var ups []storedUpload
	for _, name := range h.uploadsLeft() {
		if fi, err := os.Stat(filepath.Join(h.uploadDir, name)); err == nil {
			ups = append(ups, storedUpload{name, fi.ModTime()})
		}
	}
	for _, k := range h.uploadsInRedis() {
		if ttl := h.rdb.PTTL(context.Background(), k).Val(); ttl > 0 {
			ups = append(ups, storedUpload{k, time.Now().Add(ttl - time.Hour)})
		}
	}
	return ups
}

// chaosPost posts an image and returns the task's id, or why there is
// none: the status and the API's error message, its numbers left out (the
// refusals' reasons told apart), or the client's error.
func chaosPost(client *http.Client, url string, img []byte) (id, why string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, _ := mw.CreateFormFile("image", "image")
	fw.Write(img)
	mw.Close()
	resp, err := client.Post(url+"/predict", mw.FormDataContentType(), &b)
	if err != nil {
		return "", "no answer"
	}
	defer resp.Body.Close()
	var ti detect.TaskInfo
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusAccepted && json.Unmarshal(body, &ti) == nil && ti.ID != "" {
		return ti.ID, ""
	}
	var answer struct{ Error string }
	json.Unmarshal(body, &answer)
	return "", strings.TrimSpace(strconv.Itoa(resp.StatusCode) + " " + digits.ReplaceAllString(answer.Error, "N"))
}

// digits are the numbers in a refusal's message.
var digits = regexp.MustCompile(`[0-9]+`)

// chaosResult waits up to d for a task to end, asking again when the API
// does not answer or answers 503. Any other answer but 200 is an error.
func chaosResult(client *http.Client, url, id string, d time.Duration) (detect.TaskInfo, error) {
	var ti detect.TaskInfo
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		resp, err := client.Get(url + "/result/" + id + "?wait=15")
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable:
			time.Sleep(time.Second)
			continue
		case resp.StatusCode != http.StatusOK:
			return ti, fmt.Errorf("GET /result: %d %s", resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &ti); err != nil {
			return ti, err
		}
		if ti.Status.Done() {
			return ti, nil
		}
	}
	return ti, fmt.Errorf("still %s after %v", ti.Status, d)
}
