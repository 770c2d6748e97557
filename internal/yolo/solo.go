package yolo

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"yoloserve/internal/onnx"
)

// soloSession is the session on every core that runs an image alone in
// the detector, and the record of how its runs went.
//
// Its threads spin between the operators of a run and stop when it
// returns: on two cores a lone image's inference took 64–66 ms against
// 71–81 ms without spinning (alternating runs in one process). But
// spinning threads fight any other process that wants the cores, and the
// run slows down past what its slot's session would take: beside one busy
// thread of another process, 110–150 ms against 104 on one thread; two
// workers on two cores, each with an image alone, did 11.3–11.4 images/s
// together against 16.6–17.9 without solo sessions (15.5–16.3 with solo
// sessions that never spin).
//
// So each run checks that the process had the cores: one in which it used
// less than minShare × threads × the run's wall time of CPU found them
// taken (crowded), and the solo session rests, first for soloRestMin,
// soloRestGrowth times as long after each crowded run that follows, up
// to soloRestMax; each uncrowded run shortens the next rest by as much,
// so that a few of them bring it back to the first. Meanwhile images run
// on their slots' sessions. The threads spin through the whole run (ONNX
// Runtime spins for milliseconds before it blocks), so an uncrowded run
// uses about all of its cores whatever their number. Measured on two
// cores: an uncrowded run used 0.80–1.00 of them, a crowded one 0.48–0.57
// beside another worker and 0.63–0.75 beside a busy thread; the two
// workers then did 16.1–18.0 images/s together.
//
// The first rest is short, so that a moment's load (another process's
// burst, the host's) costs the lone images that follow a tenth of a
// second on their slots, and the rests grow fast, so that a neighbour
// that stays busy is left alone after as few crowded runs as before. A
// run beside a neighbour can find the cores free by chance; were that to
// end the rests, the next crowded run would start them over from the
// first.
//
// Measured on two cores (1 December), lone bus.jpg images 30 ms apart
// beside a process that took both cores for 40 ms every 1.5 s: 485–496
// of 500 ran on the solo session, against 331–383 with a first rest of a
// second, doubling; their inference took 45.0–52.2 ms on average (90th
// percentile 47.0–57.0) against 49.7–54.9 (61.9–66.5), five alternating
// rounds. Two detectors on the same cores, each with lone images back to
// back for about 20 s, did 28.5–29.2 images/s together against 27.4–29.2
// with the old rests (27.8–30.1 without solo sessions; three alternating
// rounds, in which the machine slowed): 5–7 crowded runs each, against
// 5–9 when an uncrowded run ended the rests and 5–8 with the old rests.
//
// The worker's own images would crowd a solo run too: the first image of
// a burst is alone, and the next reaches its inference a few milliseconds
// into the solo run. So an image about to run on its slot's session gives
// way first (giveWay): it stops a solo run that has only begun, whose
// image then runs again on its own slot's session, and waits for one that
// is further on.
type soloSession struct {
	s        *onnx.Session
	stop     *onnx.Interrupt // stops the run in flight, for giveWay
	threads  int
	minShare float64

	busy    sync.Mutex    // held while a run goes on
	rest    time.Duration // the last rest, shortened by each uncrowded run since; guarded by busy
	until   atomic.Int64  // no run starts before this time, in Unix ns
	runs    atomic.Int64
	crowded atomic.Int64
	yielded atomic.Int64

	mu      sync.Mutex    // guards the state of the run in flight:
	running bool          // a run goes on
	started time.Time     // when it began
	stopped bool          // giveWay stopped it
	took    time.Duration // the last uncrowded run's time
}

const (
	soloMinShare   = 0.75
	soloRestMin    = 100 * time.Millisecond
	soloRestGrowth = 4
	soloRestMax    = time.Minute
)

// tryRun runs the model on b when the solo session is free and not
// resting; ran says whether it did, and is false for a run that giveWay
// stopped, whose image is then to run on its slot's session.
func (so *soloSession) tryRun(b *onnx.Binding) (ran bool, err error) {
	if time.Now().UnixNano() < so.until.Load() || !so.busy.TryLock() {
		return false, nil
	}
	defer so.busy.Unlock()
	cpu0, t0 := processCPU(), time.Now()
	so.mu.Lock()
	so.running, so.started, so.stopped = true, t0, false
	so.mu.Unlock()
	err = so.s.RunWith(b, so.stop)
	so.mu.Lock()
	so.running = false
	stopped := so.stopped
	so.mu.Unlock()
	if stopped {
		so.yielded.Add(1)
		// No run can be stopped or start before this returns (busy is
		// held). Should the flag stay set, every later run would fail at
		// once: the solo session is then given up.
		if so.stop.Reset() != nil {
			so.until.Store(math.MaxInt64)
		}
		return false, nil
	}
	so.runs.Add(1)
	if err != nil {
		return true, err
	}
	cpu, wall := processCPU()-cpu0, time.Since(t0)
	if float64(cpu) >= so.minShare*float64(so.threads)*float64(wall) {
		so.rest /= soloRestGrowth
		so.mu.Lock()
		so.took = wall
		so.mu.Unlock()
		return true, nil
	}
	so.crowded.Add(1)
	so.rest = min(soloRestMax, max(soloRestMin, soloRestGrowth*so.rest))
	so.until.Store(time.Now().Add(so.rest).UnixNano())
	return true, nil
}

// resting reports whether the solo session rests after a run that found
// the cores taken by other processes (not one given up for good).
func (so *soloSession) resting() bool {
	until := so.until.Load()
	return until != math.MaxInt64 && time.Now().UnixNano() < until
}

// processCPU returns the CPU time the process has used, or 0 when the
// system cannot say (every run then looks crowded).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// giveWay is called by an image about to run on its slot's session, which
// takes slot to run, so that it does not share the cores with a solo run.
// A solo run that began less than its usual time less slot/2 ago is
// stopped: its image runs again on its own slot's session, and both images
// are done about slot after this call, where waiting would finish them
// later on average. A solo run further on is waited for. It returns
// whether a run was in flight and whether it stopped it.
//
// Measured on two cores with bus.jpg, medians of eight alternating rounds
// in one process: a second image 8 ms behind a lone one, both done in
// 120 ms, against 158 ms side by side with the solo run and 112 ms without
// a solo session; 16 images, the 15 others 10 ms behind the first, in 879
// ms, against 930 and 880.
func (so *soloSession) giveWay(slot time.Duration) (inFlight, stopped bool) {
	so.mu.Lock()
	inFlight = so.running
	if inFlight && !so.stopped && slot > 0 && time.Since(so.started) < so.took-slot/2 {
		so.stopped = so.stop.Stop() == nil
		stopped = so.stopped
	}
	so.mu.Unlock()
	so.busy.Lock() // the end of the run in flight, if any
	so.busy.Unlock()
	return inFlight, stopped
}

// run runs the model on the slot's input: on the solo session when the
// image is alone in the detector, else on the slot's session, once the
// solo session has given way.
func (d *Detector) run(s *slot) error {
	if d.solo != nil {
		if d.alone() {
			if ran, err := d.solo.tryRun(s.binding); ran {
				return err
			}
		} else {
			d.solo.giveWay(time.Duration(d.slotRun.Load()))
		}
	}
	t := time.Now()
	err := s.session.Run(s.binding)
	d.slotRun.Store(int64(time.Since(t)))
	return err
}

// SoloThreads returns the thread count of the solo session of a CPU
// detector without batching, given its slots, their threads and the
// SoloThreads asked for (0: every core), or 0 when it has none.
func SoloThreads(concurrency, threads, solo int) int {
	if solo == 0 {
		solo = runtime.GOMAXPROCS(0)
	}
	if solo <= threads || concurrency < 2 {
		return 0
	}
	return solo
}
