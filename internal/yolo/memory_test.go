package yolo_test

import (
	"context"
	"runtime/debug"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/procfs"

	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/testenv"
	"yoloserve/internal/yolo"
)

// residentMB reads this process's resident memory, in MB.
func residentMB(tb testing.TB) int {
	tb.Helper()
	p, err := procfs.Self()
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	st, err := p.NewStatus()
	if err != nil || st.VmRSS == 0 {
		tb.Fatalf("no VmRSS in /proc/self/status (%v)", err)
	}
	return int(st.VmRSS >> 20)
}

// TestHugePhotoMemoryReturns checks that a detector does not hold on to a
// huge photo's buffers: after a rotated 20 MP JPEG, whose decoding takes
// 120 MB, the process's resident memory comes back to within 40 MB of
// where it was, while ordinary photos go on being detected.
func TestHugePhotoMemoryReturns(t *testing.T) {
	d := openDetector(t, "yolov8n.onnx", yolo.Config{Concurrency: 1, Threads: 1})
	small := testenv.ReadImage(t, "bus.jpg")
	w, h := 5472, 3648
	pix := make([]byte, w*h*3)
	for i := range pix {
		pix[i] = byte(i/3%w + i/(3*w))
	}
	huge, err := imagelib.EncodeJPEG(pix, w, h, imagelib.PixelRGB, imagelib.Subsamp420, 90, false)
	if err != nil {
		t.Fatal(err)
	}
	pix = nil
	huge = testenv.WithJPEGOrientation(huge, 6)
	ctx := context.Background()
	if _, err := d.Detect(ctx, small, detect.DefaultParams()); err != nil {
		t.Fatal(err)
	}
	debug.FreeOSMemory()
	before := residentMB(t)

	r, err := d.Detect(ctx, huge, detect.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(detect.Size{Width: h, Height: w}, r.Image); diff != "" {
		t.Errorf("image size (-want +got):\n%s", diff)
	}
	if _, err := d.Detect(ctx, small, detect.DefaultParams()); err != nil {
		t.Fatal(err)
	}
	var now int
	testenv.Eventually(t, 10*time.Second, "resident memory did not come back after the huge photo", func() bool {
		now = residentMB(t)
		return now <= before+40
	})
	t.Logf("resident: %d MB before, %d MB after", before, now)
}
