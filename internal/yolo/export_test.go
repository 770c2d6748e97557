package yolo

import "context"

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
		d.solo.minShare = 0
	}
}

// ProcessCPU returns the CPU time the process has used.
var ProcessCPU = processCPU
