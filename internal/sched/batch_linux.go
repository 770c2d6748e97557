//go:build linux

// Package sched sets how the kernel schedules the process's threads.
package sched

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Batch puts every thread of the process that runs under the normal policy
// (SCHED_OTHER) under SCHED_BATCH, keeping its nice value; threads started
// afterwards inherit the policy of the thread that starts them, so Go's and
// ONNX Runtime's later threads get it too. The kernel then takes the
// threads for CPU-bound work: their wake-ups (Go's scheduler monitor wakes
// every 20 µs while a cgo call runs long) no longer preempt the thread
// running on a core, which on a shared machine is an inference. Threads
// under another policy (an operator's chrt) are left as they are.
//
// It returns how many threads it changed, or an error when the process's
// threads cannot be listed or the kernel refuses the change (a seccomp
// profile that denies sched_setattr, say); threads changed before the error
// keep the new policy.
func Batch() (int, error) {
	changed := 0
	seen := map[int]bool{}
	// A thread not yet changed may start another while the folder is read:
	// read it again until a pass finds nothing new. The new thread takes
	// its policy as its clone begins but shows in the folder only once the
	// clone has ended, so a pass that finds nothing new is made once more
	// after settle, for a clone begun before its parent was changed.
	settled := false
	for {
		tids, err := threads()
		if err != nil {
			return changed, err
		}
		fresh := 0
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			fresh++
			ok, err := batch(tid)
			if err != nil {
				return changed, err
			}
			if ok {
				changed++
			}
		}
		switch {
		case fresh > 0:
			settled = false
		case settled:
			return changed, nil
		default:
			settled = true
			time.Sleep(settle)
		}
	}
}

// settle is how long Batch waits before its last look for new threads:
// some hundred times what a clone takes. A clone preempted for longer
// still leaves its thread under the normal policy, which its wake-ups
// then cost in preemptions, not in correctness.
const settle = 5 * time.Millisecond

// batch moves thread tid from SCHED_OTHER to SCHED_BATCH. It reports
// whether it did; a thread that exited meanwhile is no error.
func batch(tid int) (bool, error) {
	attr, err := unix.SchedGetAttr(tid, 0)
	if errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sched_getattr of thread %d: %w", tid, err)
	}
	if attr.Policy != unix.SCHED_NORMAL {
		return false, nil
	}
	attr.Policy = unix.SCHED_BATCH
	err = unix.SchedSetAttr(tid, attr, 0)
	if errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sched_setattr SCHED_BATCH on thread %d: %w", tid, err)
	}
	return true, nil
}

// threads lists the process's thread ids.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
