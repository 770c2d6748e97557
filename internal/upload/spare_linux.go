package upload

import (
	"errors"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// errNoRenameNoReplace is what renameNoReplace returns where the file
// system or the kernel cannot rename without replacing.
var errNoRenameNoReplace = errors.New("renameat2(RENAME_NOREPLACE) is not supported here")

// renameNoReplace renames from to to, failing with an error that is
// fs.ErrExist when to exists and fs.ErrNotExist when from does not, or
// errNoRenameNoReplace.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return errNoRenameNoReplace
	}
	return err
}

// readCost returns what read returns and the CPU time it took: the
// calling goroutine keeps its thread meanwhile, whose CPU clock then
// counts the read alone. Where that clock cannot be read, the cost is the
// wall time.
func readCost(read func() []string) ([]string, time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var from, to unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &from) != nil {
		return wallCost(read)
	}
	names := read()
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &to)
	return names, time.Duration(to.Nano() - from.Nano())
}
