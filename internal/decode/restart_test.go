package decode_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"yoloserve/internal/decode"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/testenv"
)

// TestStripsDecodeAsWhole: a JPEG with restart markers decoded in strips
// on several goroutines gives exactly the pixels of the whole decode,
// with libjpeg-turbo (whose fancy upsampling reads across the cuts) and
// with Go's decoder; a JPEG that cannot be cut is decoded whole.
func TestStripsDecodeAsWhole(t *testing.T) {
	tj := turbo(t)
	zidane := testenv.ReadImage(t, "zidane.jpg") // 4:2:0, 80 MCUs a row, no restart markers
	var photo decode.Image
	if _, err := (&decode.Decoder{JPEG: tj}).Decode(zidane, &photo); err != nil {
		t.Fatal(err)
	}
	encode := func(pf, subsamp int) []byte {
		pix := photo.Pix
		if pf == imagelib.PixelCMYK {
			pix = make([]byte, 0, photo.Width*photo.Height*4)
			for i := 0; i < len(photo.Pix); i += 3 {
				pix = append(pix, photo.Pix[i], photo.Pix[i+1], photo.Pix[i+2], photo.Pix[i]/2+photo.Pix[i+1]/2)
			}
		}
		b, err := imagelib.EncodeJPEG(pix, photo.Width, photo.Height, pf, subsamp, 90, false)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rows := func(data []byte) []byte { return testenv.JPEGTran(t, data, "-restart", "1") }
	cases := []struct {
		name  string
		data  []byte
		split bool
	}{
		{"bus.jpg, a marker every row (iPhone)", testenv.ReadImage(t, "bus.jpg"), true},
		{"dog.jpg, 4:4:0 (Canon)", testenv.ReadImage(t, "dog.jpg"), true},
		{"horses.jpg (Pentax)", testenv.ReadImage(t, "horses.jpg"), true},
		{"person.jpg (Pentax)", testenv.ReadImage(t, "person.jpg"), true},
		{"4:2:0, every two rows", testenv.JPEGTran(t, zidane, "-restart", "2"), true},
		{"4:2:0, every half row", testenv.JPEGTran(t, zidane, "-restart", "40B"), true},
		{"4:2:0, every 7 MCUs: no marker where a row starts often enough", testenv.JPEGTran(t, zidane, "-restart", "7B"), false},
		{"4:4:4", rows(encode(imagelib.PixelRGB, imagelib.Subsamp444)), true},
		{"4:2:2", rows(encode(imagelib.PixelRGB, imagelib.Subsamp422)), true},
		{"4:4:0", rows(encode(imagelib.PixelRGB, imagelib.Subsamp440)), true},
		{"4:1:1", rows(encode(imagelib.PixelRGB, imagelib.Subsamp411)), true},
		{"grayscale", testenv.JPEGTran(t, zidane, "-grayscale", "-restart", "1"), true},
		{"YCCK", rows(encode(imagelib.PixelCMYK, imagelib.Subsamp420)), true},
		{"rotated (EXIF 6)", testenv.WithJPEGOrientation(rows(zidane), 6), true},
		{"no restart markers", zidane, false},
		{"progressive", testenv.JPEGTran(t, zidane, "-progressive", "-restart", "1"), false},
	}
	for _, dec := range []decode.JPEGDecoder{tj, decode.GoJPEG{}} {
		d := &decode.Decoder{JPEG: dec}
		for _, tc := range cases {
			t.Run(dec.Name()+"/"+tc.name, func(t *testing.T) {
				var whole decode.Image
				_, errWhole := d.DecodeStored(tc.data, &whole, 1)
				for _, cores := range []int{2, 3, 8} {
					if n := decode.StripCount(tc.data, cores); (n >= 2) != tc.split || n > cores {
						t.Errorf("%d cores: %d strips, want split %v", cores, n, tc.split)
					}
					// The buffers first hold another image, as a worker's do.
					strips := decode.Image{Pix: bytes.Repeat([]byte{0xee}, len(whole.Pix)/2)}
					_, err := d.DecodeStored(tc.data, &strips, cores)
					if fmt.Sprint(err) != fmt.Sprint(errWhole) {
						t.Fatalf("%d cores: error %v, want the whole decode's %v", cores, err, errWhole)
					}
					if err != nil {
						continue // Go's decoder takes no progressive JPEG with restart markers
					}
					if strips.Width != whole.Width || strips.Height != whole.Height {
						t.Fatalf("%d cores: %dx%d, want %dx%d", cores, strips.Width, strips.Height, whole.Width, whole.Height)
					}
					if i := firstDiff(whole.Pix, strips.Pix); i >= 0 {
						t.Errorf("%d cores: pixels differ from the whole decode's, first at row %d", cores, i/(3*whole.Width))
					}
				}
			})
		}
	}
}

// TestStripsDamagedData: with bytes of its entropy-coded data changed, a
// JPEG with restart markers decodes in strips to what it decodes to whole:
// the same error, or the same pixels where libjpeg-turbo only warns.
func TestStripsDamagedData(t *testing.T) {
	data := testenv.ReadImage(t, "bus.jpg")
	d := &decode.Decoder{JPEG: turbo(t)}
	rng := rand.New(rand.NewPCG(1, 2))
	split := 0
	for i := 0; i < 60; i++ {
		bad := bytes.Clone(data)
		for range 1 + i%4 {
			at := len(bad)/8 + rng.IntN(len(bad)*7/8-2)
			bad[at] = byte(rng.Uint32())
		}
		if decode.StripCount(bad, 2) >= 2 {
			split++
		}
		var whole, strips decode.Image
		_, errWhole := d.DecodeStored(bad, &whole, 1)
		_, errStrips := d.DecodeStored(bad, &strips, 2)
		if fmt.Sprint(errWhole) != fmt.Sprint(errStrips) {
			t.Fatalf("damage %d: whole %v, strips %v", i, errWhole, errStrips)
		}
		if at := firstDiff(whole.Pix, strips.Pix); errWhole == nil && at >= 0 {
			t.Fatalf("damage %d: pixels differ, first at row %d", i, at/(3*whole.Width))
		}
	}
	if split == 0 {
		t.Error("no damaged image was decoded in strips")
	}
	t.Logf("%d of 60 damaged images decoded in strips", split)
}

// TestStripsAtOnce: images decoded in strips by several goroutines at
// once, as a worker's slots and a neighbouring detector may, each come out
// as the whole decode, whether its strips found the cores free or not.
func TestStripsAtOnce(t *testing.T) {
	d := &decode.Decoder{JPEG: turbo(t)}
	var wg sync.WaitGroup
	for g := range 6 {
		name := []string{"bus.jpg", "dog.jpg", "horses.jpg"}[g%3]
		data := testenv.ReadImage(t, name)
		var whole decode.Image
		if _, err := d.DecodeStored(data, &whole, 1); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			var img decode.Image
			for i := range 20 {
				cores := 2 + i%3
				if _, err := d.DecodeStored(data, &img, cores); err != nil {
					t.Errorf("%s, %d cores: %v", name, cores, err)
					return
				}
				if at := firstDiff(whole.Pix, img.Pix); at >= 0 {
					t.Errorf("%s, %d cores: pixels differ from the whole decode's, first at row %d", name, cores, at/(3*whole.Width))
					return
				}
			}
		})
	}
	wg.Wait()
}

// firstDiff returns the index of the first byte where a and b differ, or
// -1 when they are equal.
func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
