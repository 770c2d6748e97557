//go:build !linux

package upload

import (
	"errors"
	"time"
)

// errNoRenameNoReplace is what renameNoReplace returns: this system has
// no rename that refuses to replace, so a Dir keeps no spares here.
var errNoRenameNoReplace = errors.New("no rename without replacing on this system")

func renameNoReplace(from, to string) error { return errNoRenameNoReplace }

// readCost returns what read returns and the wall time it took.
func readCost(read func() []string) ([]string, time.Duration) { return wallCost(read) }
