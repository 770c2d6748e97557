package testenv

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// ProcKB reads a "Field:   N kB" line of a /proc file (/proc/meminfo,
// /proc/self/status) and returns N. It skips the test where the file
// cannot be read (no /proc), and fails it when the field is missing or
// not a number.
func ProcKB(tb testing.TB, path, field string) int64 {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Skipf("no %s: %v", path, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("%s %s: %q", path, field, v)
			}
			return kb
		}
	}
	tb.Fatalf("no %s in %s", field, path)
	return 0
}
