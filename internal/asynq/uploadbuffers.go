package asynq

// uploadBuffers keeps the memory that tasks read their uploads into, for
// the tasks after them. Memory allocated afresh for each upload costs a
// page fault for each of its pages once Go has handed the last upload's
// back to the system, as it does between tasks. On the development
// machine (a paravirtualised kernel, where faults are dear) a lone task
// of bus.jpg (487 KB) made 128 page faults and took 2.0 ms to read its
// upload; reading into a kept buffer, 11 faults and 0.2 ms. Unlike the
// API's sync.Pool of upload buffers, it holds them through garbage
// collections, and never more than one per task.
type uploadBuffers struct {
	free chan []byte
}

// keepUploadBytes is the largest buffer kept for the next task: a phone
// photo's JPEG. Larger uploads are read into memory of their own, which
// goes when they are done.
const keepUploadBytes = 8 << 20

// newUploadBuffers returns a keeper of up to n buffers, one for each task
// a server may hold at once.
func newUploadBuffers(n int) *uploadBuffers {
	return &uploadBuffers{free: make(chan []byte, n)}
}

// get returns a kept buffer, or nil when none is free.
func (u *uploadBuffers) get() []byte {
	select {
	case b := <-u.free:
		return b
	default:
		return nil
	}
}

// put keeps b for a later get, unless it is larger than keepUploadBytes or
// as many buffers are kept as tasks may run.
func (u *uploadBuffers) put(b []byte) {
	if cap(b) == 0 || cap(b) > keepUploadBytes {
		return
	}
	select {
	case u.free <- b[:0]:
	default:
	}
}
