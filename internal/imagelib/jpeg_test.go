package imagelib

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"yoloserve/internal/decode"
	"yoloserve/internal/testenv"
)

// turbo returns libjpeg-turbo's decoder, or fails the test saying what to
// install.
func turbo(tb testing.TB) JPEG {
	tb.Helper()
	tj, err := OpenJPEG("")
	if err != nil {
		tb.Fatalf("libjpeg-turbo (apt-get install libturbojpeg0): %v", err)
	}
	return tj
}

// TestStripsOnOtherCores: a lone JPEG's strips are decoded by the threads
// bound to the other cores, not only by the caller, and the pixels are the
// whole decode's. Those threads take a strip only when their core is
// free, which on a machine busy with other tests can take a while.
func TestStripsOnOtherCores(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: no other core to decode on")
	}
	tj := turbo(t)
	data := testenv.ReadImage(t, "bus.jpg") // a restart marker every MCU row
	d := &decode.Decoder{JPEG: tj}
	var whole, strips decode.Image
	if _, err := d.DecodeStored(data, &whole, 1); err != nil {
		t.Fatal(err)
	}
	before := helpedStrips.Load()
	deadline := time.Now().Add(60 * time.Second)
	for helpedStrips.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("in 60 s of decoding in strips, no strip was decoded by a thread on another core")
		}
		clear(strips.Pix)
		if _, err := d.DecodeStored(data, &strips, 2); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(strips.Pix, whole.Pix) {
			t.Fatal("the strips' pixels differ from the whole decode's")
		}
	}
}

// TestStripErrors: a strip that cannot be decoded gets libjpeg-turbo's
// error, on the caller's thread or another's, and the others decode.
func TestStripErrors(t *testing.T) {
	tj := turbo(t)
	good := testenv.ReadImage(t, "dog.jpg")
	h, err := decode.Inspect(good, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want decode.Image
	if _, err := (&decode.Decoder{JPEG: tj}).DecodeStored(good, &want, 1); err != nil {
		t.Fatal(err)
	}
	bad := []byte("not a JPEG at all")
	for at := range 3 {
		strips := make([]decode.Strip, 3)
		for i := range strips {
			strips[i] = decode.Strip{Data: good, Header: h, Dst: make([]byte, len(want.Pix))}
			if i == at {
				strips[i].Data = bad
			}
		}
		if !tj.DecodeJPEGStrips(strips) {
			t.Fatal("DecodeJPEGStrips declined RGB strips")
		}
		for i, s := range strips {
			switch {
			case i == at && s.Err == nil:
				t.Errorf("bad strip %d: no error", i)
			case i != at && s.Err != nil:
				t.Errorf("strip %d (bad one %d): %v", i, at, s.Err)
			case i != at && !bytes.Equal(s.Dst, want.Pix):
				t.Errorf("strip %d (bad one %d): pixels differ from the whole decode's", i, at)
			}
		}
	}
}
