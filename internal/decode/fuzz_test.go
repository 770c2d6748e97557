package decode_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"testing"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/testenv"
)

// seeds are small real and broken images for the fuzz corpora.
var seeds = [][]byte{
	[]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x02\x00\x00\x00\xfd\xd4\x9as\x00\x00\x00\x12IDATx\x9cb\xf8\xcf\xc0\xc0\xf0\x1f\x00\x00\x00\xff\xff\x03\x00\x11\xfc\x03\xfd\x00\x00\x00\x00IEND\xaeB`\x82"),
	{0xff, 0xd8, 0xff, 0xe1, 0x00, 0x1c, 'E', 'x', 'i', 'f', 0, 0, 'I', 'I', '*', 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0xff, 0xd9},
	{0xff, 0xd8, 0xff, 0xc0, 0x00, 0x11, 8, 0xff, 0xff, 0xff, 0xff, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xff, 0xda, 0, 2, 0xff, 0xd9},
	[]byte("GIF89a"),
	nil,
}

// FuzzInspect: any bytes get a header or a typed client error, never a
// panic, and an accepted header is within the limit.
func FuzzInspect(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := decode.Inspect(data, 1_000_000)
		if err != nil {
			if c := detect.ErrorCode(err); c != detect.EUNSUPPORTED && c != detect.ETOOLARGE {
				t.Fatalf("code %q for %v", c, err)
			}
			return
		}
		if h.Width*h.Height > 1_000_000 || h.Width <= 0 || h.Height <= 0 || h.Orientation < 1 || h.Orientation > 8 {
			t.Fatalf("accepted header %+v", h)
		}
	})
}

// FuzzDecode: the decoder entry turns any bytes into upright pixels of the
// size the header promised, or a typed client error, with the worker's
// decoders (libjpeg-turbo, libdeflate in front of libpng) and with Go's;
// where the worker's and Go's decoder both take a PNG, their pixels are
// the same; libpng alone gives the worker's error or pixels; and decoding
// in strips gives what decoding whole gives.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	gray := image.NewGray(image.Rect(0, 0, 5, 3))
	pal := image.NewPaletted(image.Rect(0, 0, 6, 2), color.Palette{color.Black, color.NRGBA{9, 8, 7, 100}})
	pal.Pix[3] = 1
	rgba := image.NewNRGBA(image.Rect(0, 0, 9, 9))
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(i)
	}
	// A JPEG with a restart marker every row of MCUs, which decodes in strips.
	restarts := testenv.JPEGTran(f, testenv.EncodeJPEG(f, testenv.Gradient(48, 160), 90), "-restart", "1")
	for _, s := range [][]byte{testenv.EncodePNG(f, gray), testenv.EncodePNG(f, pal), testenv.EncodePNG(f, rgba), testenv.InterlacedPNG(f, rgba), restarts} {
		f.Add(s)
	}
	native := &decode.Decoder{JPEG: turbo(f), PNG: deflatePNG(f), MaxPixels: 1 << 18}
	libpngOnly := &decode.Decoder{JPEG: turbo(f), PNG: libpng(f), MaxPixels: 1 << 18}
	goOnly := &decode.Decoder{MaxPixels: 1 << 18}
	f.Fuzz(func(t *testing.T, data []byte) {
		var imgs [2]decode.Image
		var errs [2]error
		for i, d := range []*decode.Decoder{native, goOnly} {
			var h decode.Header
			h, errs[i] = d.Decode(data, &imgs[i])
			if errs[i] != nil {
				if c := detect.ErrorCode(errs[i]); c != detect.EUNSUPPORTED && c != detect.ETOOLARGE {
					t.Fatalf("code %q for %v", c, errs[i])
				}
				continue
			}
			up, img := h.Upright(), imgs[i]
			if img.Width != up.Width || img.Height != up.Height || len(img.Pix) != up.Width*up.Height*3 {
				t.Fatalf("header %+v, image %dx%d with %d bytes", h, img.Width, img.Height, len(img.Pix))
			}
		}
		if errs[0] == nil && errs[1] == nil && bytes.HasPrefix(data, []byte("\x89PNG")) && !bytes.Equal(imgs[0].Pix, imgs[1].Pix) {
			t.Fatal("the worker's PNG decoder and Go's give different pixels")
		}
		if bytes.HasPrefix(data, []byte("\x89PNG")) {
			var lib decode.Image
			_, err := libpngOnly.Decode(data, &lib)
			if fmt.Sprint(err) != fmt.Sprint(errs[0]) {
				t.Fatalf("libpng alone: error %v, with libdeflate: %v", err, errs[0])
			} else if err == nil && !bytes.Equal(lib.Pix, imgs[0].Pix) {
				t.Fatal("libpng alone gives other pixels than with libdeflate in front")
			}
		}
		var strips decode.Image
		_, err := native.DecodeStored(data, &strips, 3)
		if err == nil {
			strips.Orient()
		}
		if fmt.Sprint(err) != fmt.Sprint(errs[0]) {
			t.Fatalf("in strips: error %v, whole: %v", err, errs[0])
		} else if err == nil && !bytes.Equal(strips.Pix, imgs[0].Pix) {
			t.Fatal("decoded in strips, the pixels differ from the whole decode's")
		}
	})
}
