package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"yoloserve/internal/testenv"
)

// TestMakeRunCtrlC runs scripts/run.sh, what `make run` runs, and presses
// Ctrl-C as a terminal does (SIGINT to its whole process group) while the
// worker runs tasks. The worker must finish them and record them in the
// script's private Redis before that Redis stops: nothing is logged as an
// error, nothing is left running, and once started again every task reads
// SUCCESS at once, none of them left to wait for its lease to end.
func TestMakeRunCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the service twice")
	}
	root := quickstartTree(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	env := append(append(testenv.BaseEnv(), "API_ADDR="+addr), workerProcessEnv(t)...)
	h := &harness{t: t, api: &apiServer{URL: "http://" + addr}}

	run := startScript(t, root, env)
	awaitReady(t, "API", h.api.URL)
	bus := testenv.ReadImage(t, "bus.jpg")
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = h.submit(bus, nil)
	}
	h.awaitStarted(ids)
	ctrlC(t, run)
	if out := run.Output(); strings.Contains(out, "level=ERROR") {
		t.Errorf("errors logged while stopping:\n%s", out)
	}
	if c, err := net.DialTimeout("tcp", redisAddr(t, run), time.Second); err == nil {
		c.Close()
		t.Errorf("the private Redis at %s still runs", redisAddr(t, run))
	}

	run = startScript(t, root, env)
	awaitReady(t, "API", h.api.URL)
	testenv.Eventually(t, 15*time.Second, "tasks not SUCCESS after a restart", func() bool {
		for _, id := range ids {
			if h.status(id) != "SUCCESS" {
				return false
			}
		}
		return true
	})
	ctrlC(t, run)
}

// quickstartTree lays out what scripts/run.sh needs in a temporary folder:
// the script and bin/ with the built binaries.
func quickstartTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	script, err := os.ReadFile("../../scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"scripts", "bin"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "scripts", "run.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api", "worker"} {
		if err := os.Symlink(filepath.Join(testenv.Binaries(t), name), filepath.Join(root, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// startScript runs root's scripts/run.sh with env in a process group of
// its own, as a terminal's foreground job. When the test ends it is
// stopped as by Ctrl-C, and killed if that does not end it.
func startScript(t *testing.T, root string, env []string) *testenv.Process {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "run.sh"))
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := testenv.Run(t, "run.sh", cmd)
	t.Cleanup(func() { // before Run's, which kills only the script
		select {
		case <-p.Done():
			return
		default:
		}
		p.SignalGroup(syscall.SIGINT)
		select {
		case <-p.Done():
		case <-time.After(60 * time.Second):
			p.SignalGroup(syscall.SIGKILL)
		}
	})
	return p
}

// ctrlC sends SIGINT to the script's process group, waits up to 60 s for
// the script to end, and fails the test if a process of its group is
// still running then.
func ctrlC(t *testing.T, p *testenv.Process) {
	t.Helper()
	if err := p.SignalGroup(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	p.Wait(t, 60*time.Second) // its status is the interrupt's
	testenv.Eventually(t, 5*time.Second, "a process of run.sh's group still runs", func() bool {
		return p.SignalGroup(0) == syscall.ESRCH
	})
}

var privateRedis = regexp.MustCompile(`starting a private redis-server on (\S+)`)

// redisAddr is the address of the private Redis the script started.
func redisAddr(t *testing.T, p *testenv.Process) string {
	t.Helper()
	m := privateRedis.FindStringSubmatch(p.Output())
	if m == nil {
		t.Fatalf("run.sh started no private Redis; output:\n%s", p.Output())
	}
	return m[1]
}
