package imagelib_test

import (
	"bytes"
	"image"
	"image/color"
	"testing"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/testenv"
)

// FuzzDecodePNG: any bytes decode through libpng to pixels of the size the
// header promised, or to a client error; where Go's decoder takes them too,
// the two give the same pixels.
func FuzzDecodePNG(f *testing.F) {
	lib, err := imagelib.OpenPNG("")
	if err != nil {
		f.Fatalf("libpng (apt-get install libpng16-16): %v", err)
	}
	gray := image.NewGray(image.Rect(0, 0, 5, 3))
	pal := image.NewPaletted(image.Rect(0, 0, 6, 2), color.Palette{color.Black, color.NRGBA{9, 8, 7, 100}})
	pal.Pix[3] = 1
	rgba := image.NewNRGBA(image.Rect(0, 0, 9, 9))
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(i)
	}
	for _, s := range [][]byte{
		testenv.EncodePNG(f, testenv.Gradient(8, 4)), testenv.EncodePNG(f, gray), testenv.EncodePNG(f, pal),
		testenv.InterlacedPNG(f, rgba), testenv.HugePNG(3, 2),
	} {
		f.Add(s)
	}
	withLib := &decode.Decoder{PNG: lib, MaxPixels: 1 << 18}
	withGo := &decode.Decoder{PNG: decode.GoPNG{}, MaxPixels: 1 << 18}
	f.Fuzz(func(t *testing.T, data []byte) {
		var img, ref decode.Image
		h, err := withLib.Decode(data, &img)
		if err != nil {
			if c := detect.ErrorCode(err); c != detect.EUNSUPPORTED && c != detect.ETOOLARGE {
				t.Fatalf("code %q for %v", c, err)
			}
			return
		}
		up := h.Upright()
		if img.Width != up.Width || img.Height != up.Height || len(img.Pix) != up.Width*up.Height*3 {
			t.Fatalf("header %+v, image %dx%d with %d bytes", h, img.Width, img.Height, len(img.Pix))
		}
		if _, err := withGo.Decode(data, &ref); err == nil && !bytes.Equal(img.Pix, ref.Pix) {
			t.Fatalf("libpng and Go's decoder differ on %+v", h)
		}
	})
}
