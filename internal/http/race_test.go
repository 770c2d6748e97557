//go:build race

package http

// raceEnabled: the race detector's instrumentation allocates where a
// normal build does not, so allocation counts do not hold under it.
const raceEnabled = true
