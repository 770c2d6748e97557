//go:build unix && !linux

package testenv

import "syscall"

// DieWithTest returns the attributes a child process starts with. Only
// Linux has a parent-death signal: elsewhere a test that crashes leaves
// its servers running, and Cleanup stops them only on a test's ordinary end.
func DieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
