package yolo

import (
	"fmt"

	"yoloserve/internal/detect"
)

// runFailed returns what the error of a failed run becomes. Where the
// detector probes its device (CUDA), it runs a blank image after it: a
// device that fails that too has stopped working (a CUDA error such as
// an illegal memory access leaves every later call of the process
// failing), and the error then wraps detect.ErrDeviceLost, as every
// later Detect's does, so that the worker stops instead of failing every
// task it takes. Otherwise the run's own error is returned, for the task
// to be retried. A batching detector calls it once a failed batch, for
// all its images (batcher.failed).
func (d *Detector) runFailed(err error) error {
	if d.probe == nil {
		return err
	}
	d.lostMu.Lock()
	defer d.lostMu.Unlock()
	if d.lostErr != nil {
		return d.lostErr
	}
	if perr := d.probe(); perr != nil {
		d.lostErr = fmt.Errorf("%w: a run failed (%v), and a blank image's run after it failed too (%v)", detect.ErrDeviceLost, err, perr)
		close(d.lost)
		return d.lostErr
	}
	return err
}

// probeDevice runs a blank image of its own on the detector's first
// session. It returns the run's error, or the one of its tensors.
func (d *Detector) probeDevice() error {
	b, err := d.sessions[0].NewBinding(1, [2]int64{int64(d.model.Height), int64(d.model.Width)}, d.model.outputShapes(1)...)
	if err != nil {
		return err
	}
	defer b.Close()
	return d.sessions[0].Run(b)
}

// Lost is closed once the detector's device has stopped working; Err
// then says why.
func (d *Detector) Lost() <-chan struct{} { return d.lost }

// Err returns nil while the detector can run images, and an error
// wrapping detect.ErrDeviceLost once its device has stopped working. It
// takes no lock, as Detect calls it for every image: lostErr is set
// before lost is closed.
func (d *Detector) Err() error {
	select {
	case <-d.lost:
		return d.lostErr
	default:
		return nil
	}
}
