package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// TestStopKillsForkedChildren: a server stopped while its child rewrites
// the append-only file leaves no child running, one that would go on
// writing into the test's folder after its parent died (and fail the
// folder's removal when the test ends).
func TestStopKillsForkedChildren(t *testing.T) {
	r := StartRedis(t)
	if !r.Restartable() {
		t.Skip("needs a redis-server of its own")
	}
	c := r.Client()
	ctx := context.Background()
	for i := range 20 {
		if err := c.Set(ctx, fmt.Sprint("key", i), "value", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Each key the child writes now takes it 100 ms: about 2 s in all.
	if err := c.ConfigSet(ctx, "rdb-key-save-delay", "100000").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	server := r.cmd.Process.Pid
	var child int
	Eventually(t, 10*time.Second, "redis-server forked no child for its append-only file", func() bool {
		child = childOf(server)
		return child != 0
	})
	r.Stop()
	if state := procState(child); state != "" && state != "Z" {
		t.Errorf("the server's child %d is in state %s after Stop, want it gone", child, state)
	}
}

// childOf returns a live child of process pid, or 0.
func childOf(pid int) int {
	return LiveProcess(func(st procfs.ProcStat) bool { return st.PPID == pid })
}

// procState returns process pid's state letter, or "" when it is gone.
func procState(pid int) string {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return ""
	}
	st, err := p.Stat()
	if err != nil {
		return ""
	}
	return st.State
}
