//go:build linux

package testenv

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// ThreadPolicies asks the kernel the scheduling policy (unix.SCHED_*) of
// each thread of process pid, by thread id. Threads that exit while it
// reads are left out; it fails tb when the threads cannot be listed.
func ThreadPolicies(tb testing.TB, pid int) map[int]uint32 {
	tb.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		tb.Fatal(err)
	}
	got := map[int]uint32{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited meanwhile
		}
		got[tid] = attr.Policy
	}
	return got
}
