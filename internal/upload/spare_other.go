//go:build !linux

package upload

import "errors"

// errNoRenameNoReplace is what renameNoReplace returns: this system has
// no rename that refuses to replace, so a Dir keeps no spares here.
var errNoRenameNoReplace = errors.New("no rename without replacing on this system")

func renameNoReplace(from, to string) error { return errNoRenameNoReplace }
