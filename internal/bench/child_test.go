package bench

import (
	"strings"
	"testing"
)

// lastLine keeps the last non-empty line however the writes split it,
// and only the end of a line longer than it keeps.
func TestLastLine(t *testing.T) {
	long := strings.Repeat("x", 3*maxLastLine) + "the end"
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing", nil, ""},
		{"one line", []string{"bench: no model\n"}, "bench: no model"},
		{"the last of several", []string{"warning: a\nbench: no ", "model\n\n  \n"}, "bench: no model"},
		{"an unfinished line", []string{"first\nsecond"}, "second"},
		{"a long line's end", []string{long[:100], long[100:], "\n"}, long[len(long)-maxLastLine:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l lastLine
			for _, w := range tc.writes {
				if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := l.String(); got != tc.want {
				t.Errorf("last line %q, want %q", got, tc.want)
			}
		})
	}
}
