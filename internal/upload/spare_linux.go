package upload

import (
	"errors"

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
