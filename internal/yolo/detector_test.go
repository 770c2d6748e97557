package yolo_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// TestCloseWaitsForImagesInFlight: a detector closed while images are in
// it (a worker whose shutdown time ran out) lets them finish with their
// detections before it frees the sessions; an image that comes after
// gets its context's error, and a second Close does nothing.
func TestCloseWaitsForImagesInFlight(t *testing.T) {
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 2, Threads: 1})
	ctx, p := context.Background(), detect.DefaultParams()
	data := testenv.ReadImage(t, "bus.jpg")
	want, err := d.Detect(ctx, data, p)
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res *detect.Result
		err error
	}
	results := make(chan outcome, 2)
	for range 2 {
		go func() {
			res, err := d.Detect(ctx, data, p)
			results <- outcome{res, err}
		}()
	}
	testenv.Eventually(t, 10*time.Second, "the images never entered the detector", func() bool { return d.Inside() == 2 })
	closed := make(chan struct{})
	go func() {
		d.Close()
		close(closed)
	}()
	for range 2 {
		select {
		case o := <-results:
			if o.err != nil {
				t.Fatalf("an image in flight at Close: %v", o.err)
			}
			if diff := cmp.Diff(want.Detections, o.res.Detections); diff != "" {
				t.Errorf("an image in flight at Close (-want +got):\n%s", diff)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("an image in flight at Close never finished")
		}
	}
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close never returned")
	}
	late, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := d.Detect(late, data, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Detect after Close: %v, want the context's deadline", err)
	}
	d.Close()
}

// TestDetectRepadsOnlyWhatChanged: a slot whose tensor holds the last
// image's letterbox leaves the padding of the next image of the same
// geometry as it is, and pads afresh for one of another geometry, so each
// image's detections are those it gets from a fresh detector. One core,
// where no image is prefilled on another while it is decoded.
func TestDetectRepadsOnlyWhatChanged(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	detectOnce := func(d *yolo.Detector, name string) []detect.Detection {
		t.Helper()
		r, err := d.Detect(context.Background(), testenv.ReadImage(t, name), detect.DefaultParams())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r.Detections
	}
	// Portrait and landscape photos, and two portraits of one geometry.
	order := []string{"zidane.jpg", "bus.jpg", "bus_exif6.jpg", "bus.jpg", "zidane.jpg", "person.jpg"}
	want := map[string][]detect.Detection{}
	for _, name := range order {
		if want[name] == nil {
			want[name] = detectOnce(openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 1}), name)
		}
	}
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 1})
	for i, name := range order {
		if diff := cmp.Diff(want[name], detectOnce(d, name)); diff != "" {
			t.Errorf("image %d, %s, after the others (-fresh +got):\n%s", i, name, diff)
		}
	}
}
