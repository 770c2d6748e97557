package bench

import (
	"os/exec"
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

// A child that fails gives an error that names its job and ends with its
// own last line of errors, said once: the bench's message begins with
// "bench: ", and the child's, this program's, does too.
func TestChildFailureSaysWhy(t *testing.T) {
	for _, tc := range []struct{ name, script, want string }{
		{"its own error", `echo "warning: slow disk" >&2; echo "bench: no JPEG among the images" >&2; exit 1`,
			"stages: exit status 1: no JPEG among the images"},
		{"an error of another program", `echo "sh: 1: bad: not found" >&2; exit 2`,
			"stages: exit status 2: sh: 1: bad: not found"},
		{"no error", `exit 3`, "stages: exit status 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &child{flag: StagesFlag, cmd: exec.Command("sh", "-c", tc.script)}
			c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.errs
			if err := c.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var r struct{}
			if err := c.wait(&r); err == nil || err.Error() != tc.want {
				t.Errorf("wait: %v, want %q", err, tc.want)
			}
		})
	}
}
