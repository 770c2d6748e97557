//go:build unix && !linux && !freebsd

package testenv

import "syscall"

// DieWithTest returns the attributes a child process starts with. Only
// Linux and FreeBSD have a parent-death signal: elsewhere (macOS) a test
// that crashes leaves its servers running; Cleanup stops them only when a
// test ends in the ordinary way.
func DieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
