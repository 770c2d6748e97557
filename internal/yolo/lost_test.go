package yolo

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// TestLostDevice: a failed run is returned as it is where the detector
// does not probe its device (the CPU) or where the probe's blank image
// runs; when the probe fails too, the detector is lost: the error wraps
// detect.ErrDeviceLost and says both failures, Lost is closed, every
// later Detect returns it without running, and later failed runs keep
// it. The probe itself runs on a working session without error. (A GPU
// that stopped working cannot be had here: the probe's failure is
// injected; the GPU runs of docs/performance.md show the failure.)
func TestLostDevice(t *testing.T) {
	d, err := Open(Config{ModelPath: testenv.Model(t, "yolov8n.onnx"), Provider: "cpu", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	isLost := func() bool {
		select {
		case <-d.Lost():
			return true
		default:
			return false
		}
	}
	runErr := errors.New("injected: the run failed")
	if d.probe != nil {
		t.Error("a CPU detector probes its device")
	}
	if got := d.runFailed(runErr); got != runErr {
		t.Errorf("a failed run on the CPU: %v, want the run's error", got)
	}
	if err := d.probeDevice(); err != nil {
		t.Fatalf("the probe on a working session: %v", err)
	}
	d.probe = d.probeDevice
	if got := d.runFailed(runErr); got != runErr || d.Err() != nil || isLost() {
		t.Errorf("a failed run whose probe ran: %v (Err %v, lost %v), want the run's error and the detector working", got, d.Err(), isLost())
	}
	img := testenv.ReadImage(t, "bus.jpg")
	if _, err := d.Detect(context.Background(), img, detect.DefaultParams()); err != nil {
		t.Fatalf("Detect after a passing probe: %v", err)
	}

	d.probe = func() error { return errors.New("injected: CUDA failure 700") }
	lost := d.runFailed(runErr)
	if !errors.Is(lost, detect.ErrDeviceLost) || !strings.Contains(lost.Error(), runErr.Error()) || !strings.Contains(lost.Error(), "CUDA failure 700") {
		t.Errorf("a failed run whose probe failed: %v, want detect.ErrDeviceLost with both errors", lost)
	}
	if !isLost() || d.Err() != lost {
		t.Errorf("after the probe failed: lost %v, Err %v; want Lost closed and Err the same error", isLost(), d.Err())
	}
	if _, err := d.Detect(context.Background(), img, detect.DefaultParams()); err != lost {
		t.Errorf("Detect once lost: %v, want %v", err, lost)
	}
	probes := 0
	d.probe = func() error { probes++; return nil }
	if got := d.runFailed(errors.New("another failure")); got != lost || probes != 0 {
		t.Errorf("a later failed run: %v after %d probes, want the first loss's error and no probe", got, probes)
	}
}

// TestLostDeviceProbesOnceABatch: when a batch's run fails, the device is
// probed once for the batch, and every image in it gets the same verdict:
// the run's error when the probe passes, the loss when it fails. (The run
// fails for real: the batch runs on a session of the static model, which
// refuses a batch of four; the probe is injected.)
func TestLostDeviceProbesOnceABatch(t *testing.T) {
	d, err := Open(Config{ModelPath: testenv.Model(t, "yolov8n-dynamic.onnx"), Provider: "cpu", Concurrency: 4, BatchMax: 4, BatchWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	static, err := Open(Config{ModelPath: testenv.Model(t, "yolov8n.onnx"), Provider: "cpu", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer static.Close()
	session := d.batcher.runs[0].session
	d.batcher.runs[0].session = static.sessions[0]
	defer func() { d.batcher.runs[0].session = session }()
	img := testenv.ReadImage(t, "bus.jpg")
	batch := func() []error {
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() { _, errs[i] = d.Detect(context.Background(), img, detect.DefaultParams()) })
		}
		wg.Wait()
		return errs
	}
	var probes atomic.Int32
	d.probe = func() error { probes.Add(1); return nil }
	errs := batch()
	for i, err := range errs {
		if err == nil || errors.Is(err, detect.ErrDeviceLost) || err != errs[0] {
			t.Errorf("image %d of a failed batch whose probe passed: %v, want the run's error, the same for all", i, err)
		}
	}
	if n := probes.Load(); n != 1 {
		t.Errorf("a failed batch of four probed %d times, want once", n)
	}
	probes.Store(0)
	d.probe = func() error { probes.Add(1); return errors.New("injected: CUDA failure 700") }
	for i, err := range batch() {
		if !errors.Is(err, detect.ErrDeviceLost) {
			t.Errorf("image %d of a failed batch whose probe failed: %v, want detect.ErrDeviceLost", i, err)
		}
	}
	if n := probes.Load(); n != 1 || d.Err() == nil {
		t.Errorf("a failed batch whose probe failed: %d probes, Err %v; want one probe and the detector lost", n, d.Err())
	}
}
