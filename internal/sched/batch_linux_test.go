package sched

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"yoloserve/internal/testenv"
)

// lockedThread runs f on a goroutine locked to its own OS thread, which
// stays alive (and locked) until release is closed; it returns the
// thread's id.
func lockedThread(t *testing.T, release <-chan struct{}, f func()) int {
	t.Helper()
	tid := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		f()
		tid <- unix.Gettid()
		<-release
	}()
	return <-tid
}

func TestBatchCoversEveryThreadAndTheirOffspring(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	// A thread an operator put under another policy keeps it.
	idle := lockedThread(t, release, func() {
		if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_IDLE}, 0); err != nil {
			t.Errorf("setting SCHED_IDLE: %v", err)
		}
	})

	changed, err := Batch()
	if err != nil {
		t.Fatal(err)
	}
	if changed == 0 {
		t.Fatal("Batch changed no thread")
	}
	// Threads the runtime starts from now on are cloned from batch threads.
	for range 4 {
		lockedThread(t, release, func() {})
	}

	for tid, policy := range testenv.ThreadPolicies(t, os.Getpid()) {
		want := uint32(unix.SCHED_BATCH)
		if tid == idle {
			want = unix.SCHED_IDLE
		}
		if policy != want {
			t.Errorf("thread %d: policy %d, want %d", tid, policy, want)
		}
	}
	if again, err := Batch(); err != nil || again != 0 {
		t.Errorf("a second Batch changed %d threads (error %v), want 0", again, err)
	}
	if policy, err := BatchOrNormal(); err != nil || policy != "batch" {
		t.Errorf("BatchOrNormal() = %q, %v; want \"batch\", nil", policy, err)
	}
}
