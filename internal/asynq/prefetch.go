package asynq

import "sync"

// A worker takes tasks ahead (ServerConfig.Prefetch): beyond its slots,
// asynq runs Prefetch more handlers, each of which reads its upload and
// then waits in the detector for a slot. Without them, a slot stood empty
// from the end of one image's detection until the next image was decoded:
// while the result was written, asynq recorded the end and fetched the
// next task, and its upload was read (2.8–2.9 ms per task, 4% of the
// time under 16 clients on two cores; with one task ahead, 0.3 ms and
// 0.4–0.5%).
//
// A worker takes a task ahead only from a backlog. Once every slot is
// taken, its dequeue, finding the queue empty, no longer takes wake-up
// tokens: an announced task goes to a worker with a free slot, which can
// start it at once. When one of its own tasks ends it waits for a token
// again, and finds those of tasks announced meanwhile that no other
// worker took.

// occupancy counts the tasks a server holds (running, or taken ahead)
// against its slots.
type occupancy struct {
	slots int

	mu      sync.Mutex
	running int
	ended   chan struct{} // closed when a task ends, then replaced
}

func newOccupancy(slots int) *occupancy {
	return &occupancy{slots: slots, ended: make(chan struct{})}
}

// begin counts a task in.
func (o *occupancy) begin() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running++
}

// end counts a task out and wakes the dequeue waiting for it.
func (o *occupancy) end() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.running--
	close(o.ended)
	o.ended = make(chan struct{})
}

// held returns how many tasks the server holds.
func (o *occupancy) held() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.running
}

// idle waits until the server holds no task.
func (o *occupancy) idle() {
	for {
		o.mu.Lock()
		running, ended := o.running, o.ended
		o.mu.Unlock()
		if running == 0 {
			return
		}
		<-ended
	}
}

// full returns nil while a slot is free; when every slot is taken, it
// returns a channel closed when a task ends.
func (o *occupancy) full() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running < o.slots {
		return nil
	}
	return o.ended
}
