package e2e

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"yoloserve/internal/asynq"
	"yoloserve/internal/testenv"
)

// startHeldWorker starts a worker with one slot and one task ahead (10 s
// poll) whose detector holds every task until release is called or the
// test ends; up to held tasks may enter it.
func (h *harness) startHeldWorker(held int) (g *gate, release func()) {
	h.t.Helper()
	g = &gate{d: detector(h.t), entered: make(chan struct{}, held), release: make(chan struct{})}
	h.startWorkerConfig(g, asynq.ServerConfig{Concurrency: 1, Prefetch: 1, PollInterval: 10 * time.Second})
	// Registered after the worker's shutdown, so run before it.
	release = sync.OnceFunc(func() { close(g.release) })
	h.t.Cleanup(release)
	return g, release
}

// startBusyWorker starts a held worker and posts img to it, which it
// holds in its one slot; first is that task's id.
func (h *harness) startBusyWorker(held int, img []byte) (g *gate, release func(), first string) {
	h.t.Helper()
	g, release = h.startHeldWorker(held)
	first = h.submit(img, nil)
	awaitEntered(h.t, g, 1)
	return g, release, first
}

// statusWithin reads a task's status, waiting up to seconds for its end.
func (h *harness) statusWithin(id string, seconds int) any {
	h.t.Helper()
	return h.get("/result/" + id + "?wait=" + strconv.Itoa(seconds)).body["status"]
}

// TestPrefetchTakesBacklogAhead: a worker whose one slot is busy takes one
// more task from a backlog, which reads STARTED while it waits; the rest
// stay PENDING for other workers, and all end once the slot frees.
func TestPrefetchTakesBacklogAhead(t *testing.T) {
	h := newHarness(t, options{})
	img := testenv.ReadImage(t, "dog.jpg")
	ids := []string{h.submit(img, nil), h.submit(img, nil), h.submit(img, nil)}
	g, release := h.startHeldWorker(3)
	awaitEntered(t, g, 2)
	started := 0
	for _, id := range ids {
		if h.get("/result/" + id).body["status"] == "STARTED" {
			started++
		}
	}
	if started != 2 {
		t.Errorf("%d tasks STARTED with one slot busy and one task ahead, want 2", started)
	}
	release()
	for i, id := range ids {
		if s := h.statusWithin(id, 20); s != "SUCCESS" {
			t.Errorf("task %d after release: %v", i, s)
		}
	}
}

// TestPrefetchLeavesAnnouncedTasks: a worker whose slots are all busy does
// not take an announced task ahead; a worker with a free slot gets each
// one. Taken ahead, a task would wait behind the busy slot.
func TestPrefetchLeavesAnnouncedTasks(t *testing.T) {
	h := newHarness(t, options{})
	img := testenv.ReadImage(t, "dog.jpg")
	g, release, first := h.startBusyWorker(8, img)
	h.startWorkerConfig(detector(t), asynq.ServerConfig{Concurrency: 1, PollInterval: 10 * time.Second})
	for i := range 6 {
		if s := h.statusWithin(h.submit(img, nil), 10); s != "SUCCESS" {
			t.Errorf("task %d, posted while the first worker was busy: %v after 10s, want SUCCESS from the idle worker", i, s)
		}
	}
	if n := len(g.entered); n != 0 {
		t.Errorf("the busy worker took %d announced tasks ahead", n)
	}
	release()
	if s := h.statusWithin(first, 20); s != "SUCCESS" {
		t.Errorf("the busy worker's task after release: %v", s)
	}
}

// TestPrefetchTakesTaskWhenSlotFrees: a task left alone while the worker's
// slot was busy is taken when the slot frees, not at the next poll.
func TestPrefetchTakesTaskWhenSlotFrees(t *testing.T) {
	h := newHarness(t, options{})
	img := testenv.ReadImage(t, "dog.jpg")
	_, release, first := h.startBusyWorker(2, img)
	second := h.submit(img, nil)
	release()
	if s := h.statusWithin(first, 20); s != "SUCCESS" {
		t.Fatalf("first task: %v", s)
	}
	released := time.Now()
	if s := h.statusWithin(second, 5); s != "SUCCESS" {
		t.Errorf("second task: %v %v after the slot freed, want SUCCESS well before the 10s poll", s, time.Since(released).Round(time.Millisecond))
	}
}
