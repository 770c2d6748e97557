package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"

	"yoloserve/internal/sched"
)

// Parts of the bench that must run as a worker does, or beside another
// process, run in a child: this program run again (Config.Exe) with a
// flag and a job as JSON, which prints what it measured as JSON.

// startChild starts exe with flag and job as JSON, its output into out and
// its errors to the bench's. It returns an error when job cannot be
// written as JSON or the process cannot start.
func startChild(exe, flag string, job any, out *bytes.Buffer) (*exec.Cmd, error) {
	arg, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	c := exec.Command(exe, flag, string(arg))
	c.Stdout, c.Stderr = out, os.Stderr
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// batchPolicy puts the process's threads under SCHED_BATCH, as a worker
// does at its start, before ONNX Runtime starts its threads (which
// inherit the policy), and returns the policy they run under: "batch", or
// "normal" where the kernel refused.
func batchPolicy() string {
	if _, err := sched.Batch(); err != nil {
		return "normal"
	}
	return "batch"
}
