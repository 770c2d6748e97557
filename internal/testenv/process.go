package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]error{} // by command, once built or failed
)

// Binaries builds cmd/api and cmd/worker once per test process and
// returns the folder holding them.
func Binaries(tb testing.TB) string {
	tb.Helper()
	Binary(tb, "api")
	return filepath.Dir(Binary(tb, "worker"))
}

// Binary builds cmd/name once per test process, into the folder Binaries
// returns, and returns its path. A build that failed fails every test
// that asks for it.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "yoloserve-bin-")
		if err != nil {
			tb.Fatal(err)
		}
		buildDir = dir
	}
	path := filepath.Join(buildDir, name)
	err, ok := built[name]
	if !ok {
		if out, berr := exec.Command("go", "build", "-o", path, "yoloserve/cmd/"+name).CombinedOutput(); berr != nil {
			err = &buildError{cmd: name, out: string(out), err: berr}
		}
		built[name] = err
	}
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

// RemoveBinaries deletes what Binaries and Binary built. A package whose
// tests start processes calls it from TestMain once its tests have run;
// the folder is otherwise left behind in the temporary directory, 35 MB a
// run.
func RemoveBinaries() error {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir == "" {
		return nil
	}
	return os.RemoveAll(buildDir)
}

type buildError struct {
	cmd, out string
	err      error
}

func (e *buildError) Error() string { return "building " + e.cmd + ": " + e.err.Error() + "\n" + e.out }

// Process is a service binary run by a test.
type Process struct {
	cmd    *exec.Cmd
	out    *SyncBuffer
	done   chan struct{}
	exited error
}

// SyncBuffer collects what processes or loggers write from several
// goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// BaseEnv is the clean environment a test's processes start from: PATH
// and HOME kept, logs from warnings up.
func BaseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LOG_LEVEL=warn"}
	if v, ok := os.LookupEnv("GORACE"); ok {
		env = append(env, "GORACE="+v)
	}
	return env
}

// Start runs a built binary ("api" or "worker") with env added to
// BaseEnv (no .env read from the working folder: it runs in a temporary
// one). It is killed when the test ends.
func Start(tb testing.TB, name string, env ...string) *Process {
	tb.Helper()
	cmd := exec.Command(filepath.Join(Binaries(tb), name))
	cmd.Dir = tb.TempDir()
	cmd.Env = append(BaseEnv(), env...)
	cmd.SysProcAttr = DieWithTest()
	return Run(tb, name, cmd)
}

// Run starts cmd, collecting what it prints. It is killed when the test
// ends, and its output logged under name if the test failed.
func Run(tb testing.TB, name string, cmd *exec.Cmd) *Process {
	tb.Helper()
	p := &Process{cmd: cmd, out: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		p.exited = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Kill kills the process with SIGKILL, as a crash or an OOM kill would,
// and waits for it.
func (p *Process) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Signal sends sig.
func (p *Process) Signal(sig os.Signal) { p.cmd.Process.Signal(sig) }

// SignalGroup sends sig to the process group the process leads (started
// with Setpgid), as a terminal's Ctrl-C does. It returns kill(2)'s error.
func (p *Process) SignalGroup(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for status 0); it fails the test if it is still running.
func (p *Process) Wait(tb testing.TB, timeout time.Duration) error {
	tb.Helper()
	select {
	case <-p.done:
		return p.exited
	case <-time.After(timeout):
		tb.Fatalf("process still running after %v; output:\n%s", timeout, p.Output())
		return nil
	}
}

// Output is what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }
