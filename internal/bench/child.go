package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// Parts of the bench that must run as a worker does, or beside another
// process, run in a child: this program run again (Config.Exe) with a
// flag and a job as JSON, which prints what it measured as JSON.

// The names of the flags a child is started with (-name JSON), one per
// job; cmd/bench declares its flags by them.
const (
	NeighbourFlag = "neighbour"
	StagesFlag    = "stages"
)

// RunChild does the job a child was started with: the flag's name and its
// JSON arg, as startChild passes them. It writes what the job measured to w as
// JSON, and returns an error for an unknown flag, an arg that is not such
// a job, or a job that fails.
func RunChild(flag, arg string, w io.Writer) error {
	switch flag {
	case NeighbourFlag:
		return answer(flag, arg, w, RunNeighbour)
	case StagesFlag:
		return answer(flag, arg, w, RunStages)
	}
	return fmt.Errorf("bench: no child job -%s", flag)
}

// answer decodes arg as do's job, does it and writes its result to w as
// JSON. It returns an error when arg is not such a job or do fails.
func answer[J, R any](flag, arg string, w io.Writer, do func(J) (R, error)) error {
	var job J
	if err := json.Unmarshal([]byte(arg), &job); err != nil {
		return fmt.Errorf("-%s: %w", flag, err)
	}
	r, err := do(job)
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(r)
}

// startChild starts exe with -flag and job as JSON, its output into out and
// its errors to the bench's. It returns an error when job cannot be
// written as JSON or the process cannot start.
func startChild(exe, flag string, job any, out *bytes.Buffer) (*exec.Cmd, error) {
	arg, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	c := exec.Command(exe, "-"+flag, string(arg))
	c.Stdout, c.Stderr = out, os.Stderr
	if err := c.Start(); err != nil {
		return nil, err
	}
	return c, nil
}
