package bench

import (
	"time"

	"github.com/prometheus/procfs"
)

// What the bench reads from /proc, through procfs: each reader returns
// zero when it cannot read (a process that has gone, no /proc).

// machineTimes is the whole machine's CPU time so far, in seconds, by
// kind as the first line of /proc/stat gives it: user, nice, system,
// idle, iowait, irq, softirq, steal.
type machineTimes [8]float64

// readMachineTimes reads /proc/stat; zeros when it cannot.
func readMachineTimes() machineTimes {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return machineTimes{}
	}
	st, err := fs.Stat()
	if err != nil {
		return machineTimes{}
	}
	c := st.CPUTotal
	return machineTimes{c.User, c.Nice, c.System, c.Idle, c.Iowait, c.IRQ, c.SoftIRQ, c.Steal}
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
	var all float64
	for _, v := range t {
		all += v
	}
	if all <= 0 {
		return MachineShare{}
	}
	return MachineShare{Idle: (t[3] + t[4]) / all, SoftIRQ: t[6] / all, Steal: t[7] / all}
}

// procCPU returns a process's user and system time so far; 0 when it
// cannot read it.
func procCPU(pid int) time.Duration {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return time.Duration(st.CPUTime() * float64(time.Second))
}

// peakRSS returns a process's peak resident memory (VmHWM) in MiB; 0
// when it cannot read it.
func peakRSS(pid int) float64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.NewStatus()
	if err != nil {
		return 0
	}
	return float64(st.VmHWM) / (1 << 20)
}
