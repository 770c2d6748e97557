package upload

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes the file system that holds f write what it holds in
// memory, and returns its error.
func syncFS(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
