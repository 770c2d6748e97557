package bench

import (
	"math"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"yoloserve/internal/detect"
)

func TestLevelPoolsWindows(t *testing.T) {
	a := window{lat: []float64{10, 20, 30}, wall: 2 * time.Second, errs: 1,
		cpu:   [4]time.Duration{300 * time.Millisecond, 30 * time.Millisecond, 6 * time.Millisecond, 3 * time.Millisecond},
		speed: detect.Speed{Decode: 12, Preprocess: 6, Inference: 300, Postprocess: 3}, solo: 2,
		machine: machineTimes{600, 0, 20, 10, 2, 0, 3, 0}}
	b := window{lat: []float64{5, 40}, wall: time.Second,
		cpu:   [4]time.Duration{200 * time.Millisecond, 20 * time.Millisecond, 4 * time.Millisecond, 2 * time.Millisecond},
		speed: detect.Speed{Decode: 8, Preprocess: 4, Inference: 200, Postprocess: 2}, solo: 1,
		machine: machineTimes{340, 0, 10, 10, 0, 0, 1, 4}}
	got := level(16, a, b)
	want := LoadLevel{Clients: 16, ImagesPerS: 5.0 / 3, P50MS: 20, P95MS: 40, P99MS: 40, MaxMS: 40, Errors: 1,
		CPUPerImage: CPUShare{Worker: 100, API: 10, Redis: 2, Client: 1},
		Speed:       detect.Speed{Decode: 4, Preprocess: 2, Inference: 100, Postprocess: 1}, SoloShare: 0.6,
		Machine: MachineShare{Idle: 0.022, SoftIRQ: 0.004, Steal: 0.004}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("level (-want +got):\n%s", diff)
	}
}

// TestCeiling: two cores whose bare sessions do 35 images/s spend 57.1
// ms of a core an image; a service that spends 67.5 ms of CPU an image
// in all its processes can reach 0.847 of them.
func TestCeiling(t *testing.T) {
	used := CPUShare{Worker: 62.7, API: 2.3, Redis: 0.9, Client: 1.6}
	if got, want := ceiling(2, 35, used), 2000.0/35/67.5; math.Abs(got-want) > 1e-9 {
		t.Errorf("ceiling = %v, want %v", got, want)
	}
	if got := ceiling(4, 35, used); math.Abs(got-2*2000.0/35/67.5) > 1e-9 {
		t.Errorf("four cores: ceiling = %v, want twice two cores'", got)
	}
	for _, c := range []struct {
		barePS float64
		used   CPUShare
	}{{0, used}, {35, CPUShare{}}} {
		if got := ceiling(2, c.barePS, c.used); got != 0 {
			t.Errorf("ceiling(2, %v, %+v) = %v, want 0 (unknown)", c.barePS, c.used, got)
		}
	}
}

// TestMachineTimes: the machine's busy time grows while this process
// spins, and a load's shares are fractions of all its cores' time.
func TestMachineTimes(t *testing.T) {
	before := readMachineTimes()
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	spent := readMachineTimes().since(before)
	if busy := spent[0] + spent[1] + spent[2]; busy <= 0 {
		t.Fatalf("no busy time while spinning: %v", spent)
	}
	m := spent.share()
	for name, v := range map[string]float64{"idle": m.Idle, "softirq": m.SoftIRQ, "steal": m.Steal} {
		if v < 0 || v >= 1 {
			t.Errorf("%s share %v, want in [0, 1)", name, v)
		}
	}
	if got := (machineTimes{}).share(); got != (MachineShare{}) {
		t.Errorf("no time: %+v, want zeros", got)
	}
}

func TestProcCPU(t *testing.T) {
	before := procCPU(os.Getpid())
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	if after := procCPU(os.Getpid()); after <= before {
		t.Errorf("CPU time did not grow while spinning: %v then %v", before, after)
	}
	if got := procCPU(1 << 30); got != 0 {
		t.Errorf("a missing process reads %v, want 0", got)
	}
}

// TestPeakRSS: a process's peak resident memory, in MiB, holds what it
// has touched. The buffer is larger than the peak before, which earlier
// allocations may have set.
func TestPeakRSS(t *testing.T) {
	before := peakRSS(os.Getpid())
	if before <= 0 {
		t.Fatalf("peak RSS %v MiB, want above 0", before)
	}
	n := int(before) + 64
	b := make([]byte, n<<20)
	for i := range b {
		b[i] = 1
	}
	// The bound above is loose: under the race detector every byte
	// touched takes shadow memory too. A unit off by 1,024 still breaks it.
	if after := peakRSS(os.Getpid()); after < float64(n) || after > 16*(before+float64(n)) {
		t.Errorf("peak RSS %v MiB after touching %d MiB, %v before", after, n, before)
	}
	runtime.KeepAlive(b)
	if got := peakRSS(1 << 30); got != 0 {
		t.Errorf("a missing process reads %v MiB, want 0", got)
	}
}

func TestParseWorkerConfig(t *testing.T) {
	for in, want := range map[string]WorkerConfig{
		"2x1x2":    {Concurrency: 2, Threads: 1, Sessions: 2},
		"2x1x2x1":  {Concurrency: 2, Threads: 1, Sessions: 2, Solo: 1},
		"8x2x8x16": {Concurrency: 8, Threads: 2, Sessions: 8, Solo: 16},
	} {
		got, err := ParseWorkerConfig(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", in, diff)
		}
	}
	for _, in := range []string{"", "2", "2x1", "0x1x1", "2x0x1", "2x1x0", "axbxc", "2x1x2x-1"} {
		if _, err := ParseWorkerConfig(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// TestRatiosMarkSlowStretch: a configuration whose bare measurements ran
// well under the run's fastest like ones (a slow stretch of the machine, as
// in a run of 1 December: rounds at 19.8 and 18.9 images/s against 33.6,
// pairs' 2-thread sessions at 57.6 and 58.2 ms against 39.4) gets a note on
// the ratios taken against them; the others, within the usual drift, none.
func TestRatiosMarkSlowStretch(t *testing.T) {
	rep := Report{Workers: []WorkerRun{
		{Concurrency: 2, Threads: 1, Sessions: 2, SoloThreads: 2, LoneTasks: LoneTasks{BareMS: 39.4}, BareBestPS: 33.6},
		{Concurrency: 2, Threads: 1, Sessions: 2, LoneTasks: LoneTasks{BareMS: 58.2}, BareBestPS: 19.8},
		{Concurrency: 2, Threads: 2, Sessions: 2, LoneTasks: LoneTasks{BareMS: 57.6}, BareBestPS: 18.9},
		{Concurrency: 2, Threads: 2, Sessions: 1, LoneTasks: LoneTasks{BareMS: 58.2}, BareBestPS: 33.3},
	}}
	rep.ratios("cpu")
	got := map[string]bool{}
	for _, r := range rep.Ratios {
		got[r.Name] = r.Note != ""
	}
	want := map[string]bool{
		"worker 2x1/2s, solo 2: service time / bare 2-thread session":     false,
		"worker 2x1/2s, solo 2: idle POST→result / bare 2-thread session": false,
		"worker 2x1/2s, solo 2: 16-client throughput / best bare":         false,
		"worker 2x1/2s, solo 2: peak RSS MiB":                             false,
		// The only configuration with 1-thread pairs: the fastest of its kind.
		"worker 2x1/2s, no solo: service time / bare 1-thread session":     false,
		"worker 2x1/2s, no solo: idle POST→result / bare 1-thread session": false,
		"worker 2x1/2s, no solo: 16-client throughput / best bare":         true,
		"worker 2x1/2s, no solo: peak RSS MiB":                             false,
		"worker 2x2/2s, no solo: service time / bare 2-thread session":     true,
		"worker 2x2/2s, no solo: idle POST→result / bare 2-thread session": true,
		"worker 2x2/2s, no solo: 16-client throughput / best bare":         true,
		"worker 2x2/2s, no solo: peak RSS MiB":                             false,
		"worker 2x2/1s, no solo: service time / bare 2-thread session":     true,
		"worker 2x2/1s, no solo: idle POST→result / bare 2-thread session": true,
		"worker 2x2/1s, no solo: 16-client throughput / best bare":         false,
		"worker 2x2/1s, no solo: peak RSS MiB":                             false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ratios noted as from a slow stretch (-want +got):\n%s", diff)
	}
}

// TestRatiosMarkSlowStretchAgainstFloor checks that the run's floor is a
// reference for the throughput: a slow stretch over every configuration's
// rounds is marked against it. The pairs are not compared with the floor.
func TestRatiosMarkSlowStretchAgainstFloor(t *testing.T) {
	// The floor of a run on this machine (stop 53's second).
	floor := []FloorResult{
		{Sessions: 1, Threads: 1, Batch: 1, MedianMS: 54.5, ImagesPerS: 18.3},
		{Sessions: 1, Threads: 2, Batch: 1, MedianMS: 36.6, ImagesPerS: 27.3},
		{Sessions: 2, Threads: 1, Batch: 1, MedianMS: 58.1, ImagesPerS: 34.4},
	}
	noted := func(workers ...WorkerRun) map[string]bool {
		rep := Report{Floor: floor, Workers: workers}
		rep.ratios("cpu")
		got := map[string]bool{}
		for _, r := range rep.Ratios {
			if r.Note != "" {
				got[r.Name] = true
			}
		}
		return got
	}

	// The usual run: nothing marked.
	solo := WorkerRun{Concurrency: 2, Threads: 1, Sessions: 2, SoloThreads: 2, LoneTasks: LoneTasks{BareMS: 36.8}, BareBestPS: 31.3}
	noSolo := WorkerRun{Concurrency: 2, Threads: 1, Sessions: 2, LoneTasks: LoneTasks{BareMS: 61.4}, BareBestPS: 31.8}
	if diff := cmp.Diff(map[string]bool{}, noted(solo, noSolo)); diff != "" {
		t.Errorf("an ordinary run (-want +got):\n%s", diff)
	}
	// Every configuration after the floor in a slow stretch: their rounds
	// are marked against the floor's best throughput; their pairs, each
	// the fastest of its kind, are not.
	solo.BareMS, solo.BareBestPS = 58, 20
	noSolo.BareMS, noSolo.BareBestPS = 95, 20
	want := map[string]bool{
		"worker 2x1/2s, solo 2: 16-client throughput / best bare":  true,
		"worker 2x1/2s, no solo: 16-client throughput / best bare": true,
	}
	if diff := cmp.Diff(want, noted(solo, noSolo)); diff != "" {
		t.Errorf("every configuration in a slow stretch (-want +got):\n%s", diff)
	}
}

// TestWindowNotes: an intake window's line names its refusals by reason
// and its slow uploads by step, each in a fixed order, and says nothing
// when there were none.
func TestWindowNotes(t *testing.T) {
	for _, tc := range []struct {
		refused, slow map[string]int
		want          string
	}{
		{nil, nil, ""},
		{map[string]int{}, map[string]int{}, ""},
		{map[string]int{"uploads_in_flight": 9}, nil, " (503: uploads_in_flight 9)"},
		{map[string]int{"upload_store": 2, "queue_full": 1, "redis": 4}, nil, " (503: queue_full 1, redis 4, upload_store 2)"},
		{nil, map[string]int{"store": 41}, " (over 32 ms: store 41)"},
		{map[string]int{"uploads_in_flight": 9}, map[string]int{"store": 41, "enqueue": 2}, " (503: uploads_in_flight 9; over 32 ms: enqueue 2, store 41)"},
	} {
		if got := windowNotes(tc.refused, tc.slow); got != tc.want {
			t.Errorf("windowNotes(%v, %v) = %q, want %q", tc.refused, tc.slow, got, tc.want)
		}
	}
}

// TestMedianSpeed: the pairs' stages are each a median, so that one slow
// pair moves them no more than it moves the service time.
func TestMedianSpeed(t *testing.T) {
	speeds := []detect.Speed{
		{Decode: 5, Preprocess: 0.7, Inference: 40, Postprocess: 0.2},
		{Decode: 4, Preprocess: 0.9, Inference: 41, Postprocess: 0.3},
		{Decode: 6, Preprocess: 0.8, Inference: 180, Postprocess: 0.2}, // a slow pair
	}
	want := detect.Speed{Decode: 5, Preprocess: 0.8, Inference: 41, Postprocess: 0.2}
	if diff := cmp.Diff(want, medianSpeed(speeds)); diff != "" {
		t.Errorf("medianSpeed (-want +got):\n%s", diff)
	}
}

// TestSummarizePairs: the sequential figures are medians over the pairs,
// each ratio set against its own pair's bare run (not the ratio of two
// medians, which may come from different moments), the time outside the
// detector each pair's own; and the JSON keeps every pair.
func TestSummarizePairs(t *testing.T) {
	pairs := []Pair{
		{BareMS: 30, ServiceMS: 36, IdleMS: 39, Speed: detect.Speed{Decode: 4, Preprocess: 0.5, Inference: 30, Postprocess: 0.2}},
		{BareMS: 40, ServiceMS: 44, IdleMS: 48, Speed: detect.Speed{Decode: 3, Preprocess: 0.4, Inference: 39, Postprocess: 0.1}}, // a slow moment
		{BareMS: 35, ServiceMS: 49, IdleMS: 52, Speed: detect.Speed{Decode: 5, Preprocess: 0.6, Inference: 41, Postprocess: 0.2}}, // a slow task
	}
	var run LoneTasks
	run.summarize(pairs)
	want := LoneTasks{
		BareMS: 35, ServiceMS: 44, IdleLatencyMS: 48,
		ServiceRatio: 1.2, IdleRatio: 1.3, // of 1.2, 1.1, 1.4 and 1.3, 1.2, 1.486; 44/35 would be 1.257
		Speed:     detect.Speed{Decode: 4, Preprocess: 0.5, Inference: 39, Postprocess: 0.2},
		OutsideMS: 1.5, // of 1.3, 1.5, 2.2
		Pairs:     pairs,
	}
	if diff := cmp.Diff(want, run, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("summarize (-want +got):\n%s", diff)
	}
	var none LoneTasks
	none.summarize(nil)
	if diff := cmp.Diff(LoneTasks{}, none); diff != "" {
		t.Errorf("summarize(nil) (-want +got):\n%s", diff)
	}
}

// TestBetween: a window's refusals and slow steps are the counters'
// growth over it, by label, leaving out those that did not grow; nothing
// when either reading failed.
func TestBetween(t *testing.T) {
	before := &apiReading{
		refused: map[string]float64{"uploads_in_flight": 3, "queue_full": 0, "redis": 2},
		slow:    map[string]float64{"store": 5, "enqueue": 1},
	}
	after := &apiReading{
		refused: map[string]float64{"uploads_in_flight": 12, "queue_full": 0, "redis": 2},
		slow:    map[string]float64{"store": 46, "enqueue": 1},
	}
	refused, slow := between(before, after)
	if diff := cmp.Diff(map[string]int{"uploads_in_flight": 9}, refused); diff != "" {
		t.Errorf("refused (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"store": 41}, slow); diff != "" {
		t.Errorf("slow (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		name          string
		before, after *apiReading
	}{{"before", nil, after}, {"after", before, nil}} {
		if refused, slow := between(tc.before, tc.after); refused != nil || slow != nil {
			t.Errorf("between without a reading %s = %v, %v, want nil", tc.name, refused, slow)
		}
	}
}
