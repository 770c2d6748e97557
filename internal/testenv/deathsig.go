//go:build linux || freebsd

package testenv

import "syscall"

// DieWithTest makes a child process get SIGKILL when the test process
// dies, so that a crashed test leaves no servers behind.
func DieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
