package yolo

import (
	"context"
	"math"
	"time"
)

// Occupy takes a slot as an image in the detector would, until the
// returned function is called.
func (d *Detector) Occupy(ctx context.Context) (func(), error) {
	s, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	return func() { d.release(s) }, nil
}

// IgnoreCrowding has the solo session run every image that is alone,
// however busy the cores, for tests of where images run: the test
// binaries of other packages, run alongside, may crowd the cores.
func (d *Detector) IgnoreCrowding() {
	if d.solo != nil {
		d.CrowdEveryRun(false)
	}
}

// CrowdEveryRun has the solo session find every run crowded (true) or
// none (false), whatever the cores do, for tests of its rests.
func (d *Detector) CrowdEveryRun(crowded bool) {
	d.solo.minShare = 0
	if crowded {
		d.solo.minShare = math.Inf(1)
	}
}

// SoloRest returns the solo session's last rest, as shortened by the
// uncrowded runs since.
func (d *Detector) SoloRest() time.Duration {
	d.solo.busy.Lock()
	defer d.solo.busy.Unlock()
	return d.solo.rest
}

// EndSoloRest ends the rest in course, so that the next lone image runs on
// the solo session.
func (d *Detector) EndSoloRest() { d.solo.until.Store(0) }

// ProcessCPU returns the CPU time the process has used.
var ProcessCPU = processCPU

// SoloRunning reports whether the solo session is running an image.
func (d *Detector) SoloRunning() bool {
	d.solo.mu.Lock()
	defer d.solo.mu.Unlock()
	return d.solo.running
}

// GiveWay does what an image about to run on its slot's session does, as
// if runs on a slot's session took slot and on the solo session took solo;
// it returns whether a solo run was in flight and whether it stopped it.
func (d *Detector) GiveWay(slot, solo time.Duration) (inFlight, stopped bool) {
	d.solo.mu.Lock()
	d.solo.took = solo
	d.solo.mu.Unlock()
	return d.solo.giveWay(slot)
}

// Inside returns how many images hold a slot.
func (d *Detector) Inside() int32 { return d.inside.Load() }
