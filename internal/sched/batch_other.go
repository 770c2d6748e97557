//go:build !linux

package sched

import "errors"

// Batch is Linux's SCHED_BATCH; elsewhere it returns an error and changes
// nothing.
func Batch() (int, error) {
	return 0, errors.New("sched: SCHED_BATCH is Linux's")
}
