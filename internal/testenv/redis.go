package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"github.com/redis/go-redis/v9"
)

// RedisServer is a private redis-server for a test, on a free port.
type RedisServer struct {
	Addr string
	URL  string
	dir  string
	cmd  *exec.Cmd
	tb   testing.TB
}

// StartRedis starts redis-server (no persistence) on a free loopback port
// and stops it when the test ends. With REDIS_URL set it uses that server
// instead, on database 15, flushed first. It fails the test when
// redis-server is not installed.
func StartRedis(tb testing.TB) *RedisServer {
	tb.Helper()
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			tb.Fatal(err)
		}
		r := &RedisServer{Addr: opt.Addr, URL: fmt.Sprintf("redis://%s/15", opt.Addr), tb: tb}
		r.Flush()
		return r
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatal("tests need redis-server (apt-get install redis-server) or REDIS_URL")
	}
	r := &RedisServer{Addr: "127.0.0.1:" + strconv.Itoa(FreePort(tb)), dir: tb.TempDir(), tb: tb}
	r.URL = "redis://" + r.Addr + "/0"
	r.Start()
	tb.Cleanup(r.Stop)
	return r
}

// FreePort returns a loopback TCP port nobody listens on now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start (re)starts the server on its address and waits until it answers.
func (r *RedisServer) Start(args ...string) {
	r.tb.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	base := []string{"--port", port, "--bind", "127.0.0.1", "--dir", r.dir, "--save", "", "--appendonly", "no", "--loglevel", "warning"}
	r.cmd = exec.Command("redis-server", append(base, args...)...)
	r.cmd.SysProcAttr = DieWithTest()
	r.cmd.SysProcAttr.Setpgid = true // Stop kills the children it forks too
	if err := r.cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.tb.Fatalf("redis-server on %s did not answer within 10s", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartDurable (re)starts the server writing every command to its
// append-only file, on disk before it answers, so that a kill loses
// nothing it acknowledged; the file stays for the next StartDurable.
func (r *RedisServer) StartDurable() {
	r.tb.Helper()
	r.Start("--appendonly", "yes", "--appendfsync", "always")
}

// RestartDurable restarts the server as StartDurable starts it, for a
// test that kills it and starts it again without losing what it
// acknowledged. A test on REDIS_URL's server, which it may not restart,
// is skipped.
func (r *RedisServer) RestartDurable() {
	r.tb.Helper()
	if !r.Restartable() {
		r.tb.Skip("needs a redis-server of its own, not REDIS_URL's")
	}
	r.Stop()
	r.StartDurable()
}

// Dir is the folder the server keeps its files in (empty for REDIS_URL's
// server).
func (r *RedisServer) Dir() string { return r.dir }

// Restartable says whether the test has a server of its own, which Stop
// and Start may kill and start again (not REDIS_URL's).
func (r *RedisServer) Restartable() bool { return r.dir != "" }

// Stop kills the server and the children it forked, a background save
// or append-only rewrite that would otherwise go on writing into its
// folder (as a crash of its container would), and waits for them to exit.
func (r *RedisServer) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	pid := r.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGKILL)
	r.cmd.Wait()
	r.cmd = nil
	deadline := time.Now().Add(10 * time.Second)
	for groupRuns(pid) {
		if time.Now().After(deadline) {
			r.tb.Logf("a child of redis-server %d still runs 10s after the kill", pid)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// groupRuns reports whether a process of group pgid runs, one not yet
// exited (an exited one left unreaped, whose parent died, counts as gone).
func groupRuns(pgid int) bool {
	return LiveProcess(func(st procfs.ProcStat) bool { return st.PGRP == pgid }) != 0
}

// LiveProcess returns the id of a running process that match accepts, or
// 0 when there is none; one that exited but is left unreaped counts as
// gone.
func LiveProcess(match func(procfs.ProcStat) bool) int {
	procs, err := procfs.AllProcs()
	if err != nil {
		return 0
	}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil || st.State == "Z" || st.State == "X" {
			continue // exited since the listing, or unreaped
		}
		if match(st) {
			return st.PID
		}
	}
	return 0
}

// Client returns a go-redis client on the server's database, closed when
// the test ends.
func (r *RedisServer) Client() *redis.Client {
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		r.tb.Fatal(err)
	}
	c := redis.NewClient(opt)
	r.tb.Cleanup(func() { c.Close() })
	return c
}

// Flush empties the server's database.
func (r *RedisServer) Flush() {
	r.tb.Helper()
	if err := r.Client().FlushDB(context.Background()).Err(); err != nil {
		r.tb.Fatal(err)
	}
}

// InfoField returns the value of key in section of Redis's INFO, and
// whether INFO has it. It fails the test when Redis does not answer.
func InfoField(tb testing.TB, rdb redis.UniversalClient, section, key string) (string, bool) {
	tb.Helper()
	info, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return v, true
		}
	}
	return "", false
}

// CommandCalls returns how many times rdb's Redis has run the commands,
// by clients or by scripts, as INFO commandstats counts them (a command
// never run counts 0). It fails the test when Redis does not answer or
// the count cannot be read.
func CommandCalls(tb testing.TB, rdb redis.UniversalClient, cmds ...string) int {
	tb.Helper()
	n := 0
	for _, cmd := range cmds {
		v, ok := InfoField(tb, rdb, "commandstats", "cmdstat_"+cmd)
		if !ok {
			continue // never run
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
		c, err := strconv.Atoi(calls)
		if err != nil {
			tb.Fatalf("INFO commandstats %s: %q", cmd, v)
		}
		n += c
	}
	return n
}

// LimitRedisMemory gives rdb's Redis a memory limit room bytes above what
// it holds now, refusing writes past it (noeviction), until the test
// ends. It returns the limit.
func LimitRedisMemory(tb testing.TB, rdb redis.UniversalClient, room int64) int64 {
	tb.Helper()
	ctx := context.Background()
	used, _ := InfoField(tb, rdb, "memory", "used_memory")
	base, _ := strconv.ParseInt(used, 10, 64)
	limit := base + room
	for k, v := range map[string]string{"maxmemory": strconv.FormatInt(limit, 10), "maxmemory-policy": "noeviction"} {
		if err := rdb.ConfigSet(ctx, k, v).Err(); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() { rdb.ConfigSet(ctx, "maxmemory", "0") })
	return limit
}

// Eventually calls cond every few milliseconds until it returns true or
// the timeout passes, then fails the test with msg.
func Eventually(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
