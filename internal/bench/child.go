package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
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
	return fmt.Errorf("no child job -%s", flag)
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

// child is a child the bench started: its answer, and the last line of
// its errors, which also go to the bench's.
type child struct {
	flag string
	cmd  *exec.Cmd
	out  bytes.Buffer
	errs lastLine
}

// startChild starts exe with -flag and job as JSON; the process is killed
// when ctx ends. It returns an error when job cannot be written as JSON or
// the process cannot start.
func startChild(ctx context.Context, exe, flag string, job any) (*child, error) {
	arg, err := json.Marshal(job)
	if err != nil {
		return nil, err
	}
	c := &child{flag: flag, cmd: exec.CommandContext(ctx, exe, "-"+flag, string(arg))}
	c.cmd.Stdout, c.cmd.Stderr = &c.out, io.MultiWriter(os.Stderr, &c.errs)
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	return c, nil
}

// wait waits for the child to exit and reads its answer into r. When the
// child fails it returns an error that names the flag and ends with the
// child's last line of errors (its own error, which RunChild's caller
// prints last, less the "bench: " it begins with, which the bench's own
// message adds again), so that the bench says why and not only "exit
// status 1"; when the answer is not r's JSON, an error that quotes it.
func (c *child) wait(r any) error {
	if err := c.cmd.Wait(); err != nil {
		if why := strings.TrimPrefix(c.errs.String(), "bench: "); why != "" {
			return fmt.Errorf("%s: %w: %s", c.flag, err, why)
		}
		return fmt.Errorf("%s: %w", c.flag, err)
	}
	if err := json.Unmarshal(c.out.Bytes(), r); err != nil {
		return fmt.Errorf("%s: answer %q: %w", c.flag, c.out.String(), err)
	}
	return nil
}

// maxLastLine is as much of a child's last line of errors as lastLine
// keeps.
const maxLastLine = 1 << 10

// lastLine is an io.Writer that keeps the last non-empty line written to
// it, up to maxLastLine bytes of its end.
type lastLine struct {
	line, next []byte // the last complete line; the one being written
}

// Write keeps p's last line; it never fails.
func (l *lastLine) Write(p []byte) (int, error) {
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			l.next = keepEnd(append(l.next, rest...))
			break
		}
		l.next = keepEnd(append(l.next, rest[:i]...))
		if len(bytes.TrimSpace(l.next)) > 0 {
			l.line = append(l.line[:0], l.next...)
		}
		l.next, rest = l.next[:0], rest[i+1:]
	}
	return len(p), nil
}

// String returns the last non-empty line, or the unfinished one when it
// is not empty, without surrounding space.
func (l *lastLine) String() string {
	if s := bytes.TrimSpace(l.next); len(s) > 0 {
		return string(s)
	}
	return string(bytes.TrimSpace(l.line))
}

// keepEnd returns b's last maxLastLine bytes.
func keepEnd(b []byte) []byte {
	if len(b) <= maxLastLine {
		return b
	}
	return append(b[:0], b[len(b)-maxLastLine:]...)
}
