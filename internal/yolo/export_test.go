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
