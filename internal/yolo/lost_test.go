package yolo

import (
	"context"
	"errors"
	"strings"
	"testing"

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
