package bench

import (
	"os"
	"strconv"
	"strings"
)

// machineTimes is the whole machine's CPU time so far, in clock ticks,
// by kind as the first line of /proc/stat gives it: user, nice, system,
// idle, iowait, irq, softirq, steal.
type machineTimes [8]int64

// readMachineTimes reads /proc/stat; zeros when it cannot.
func readMachineTimes() machineTimes {
	var t machineTimes
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return t
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 1+len(t) || f[0] != "cpu" {
		return t
	}
	for i := range t {
		t[i], _ = strconv.ParseInt(f[1+i], 10, 64)
	}
	return t
}

// since is the time spent between earlier and t.
func (t machineTimes) since(earlier machineTimes) machineTimes {
	for i := range t {
		t[i] -= earlier[i]
	}
	return t
}

// share turns spent time into the shares of the machine's CPU time that
// no process's own time counts: idle (with iowait), soft interrupts and
// time the hypervisor took. It returns zeros for no time.
func (t machineTimes) share() MachineShare {
	var all int64
	for _, v := range t {
		all += v
	}
	if all == 0 {
		return MachineShare{}
	}
	f := func(v int64) float64 { return float64(v) / float64(all) }
	return MachineShare{Idle: f(t[3] + t[4]), SoftIRQ: f(t[6]), Steal: f(t[7])}
}
