//go:build !linux

package upload

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes every file system write what it holds in memory, where
// there is no syncfs(2), and returns its error.
func syncFS(*os.File) error { return unix.Sync() }
