package decode_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/decode"
	"yoloserve/internal/detect"
	"yoloserve/internal/imagelib"
	"yoloserve/internal/testenv"
)

func turbo(tb testing.TB) decode.JPEGDecoder {
	tb.Helper()
	d, err := imagelib.OpenJPEG("")
	if err != nil {
		tb.Fatalf("libjpeg-turbo (apt-get install libturbojpeg0): %v", err)
	}
	return d
}

func libpng(tb testing.TB) decode.PNGDecoder {
	tb.Helper()
	d, err := imagelib.OpenPNG("")
	if err != nil {
		tb.Fatalf("libpng (apt-get install libpng16-16): %v", err)
	}
	return d
}

// deflatePNG is libdeflate's decoder, passing what it does not decode to
// libpng.
func deflatePNG(tb testing.TB) decode.PNGDecoder {
	tb.Helper()
	d, err := imagelib.OpenDeflatePNG("", libpng(tb))
	if err != nil {
		tb.Fatalf("libdeflate (apt-get install libdeflate0): %v", err)
	}
	return d
}

// pngDecoders are the three PNG decoders, which must give the same pixels.
func pngDecoders(tb testing.TB) []decode.PNGDecoder {
	return []decode.PNGDecoder{decode.GoPNG{}, libpng(tb), deflatePNG(tb)}
}

// rgbOf returns the RGB bytes OpenCV's IMREAD_COLOR gives for m: alpha
// dropped (not composited) and 16-bit samples cut to their high byte.
func rgbOf(m image.Image) []byte {
	b := m.Bounds()
	var out []byte
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			switch c := m.At(x, y).(type) {
			case color.NRGBA:
				out = append(out, c.R, c.G, c.B)
			case color.NRGBA64:
				out = append(out, byte(c.R>>8), byte(c.G>>8), byte(c.B>>8))
			case color.Gray16:
				out = append(out, byte(c.Y>>8), byte(c.Y>>8), byte(c.Y>>8))
			default:
				r, g, bl, _ := c.RGBA()
				out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
			}
		}
	}
	return out
}

func TestDecodePNGFormats(t *testing.T) {
	const w, h = 7, 5
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	gray := image.NewGray(image.Rect(0, 0, w, h))
	gray16 := image.NewGray16(image.Rect(0, 0, w, h))
	rgb16 := image.NewRGBA64(image.Rect(0, 0, w, h))
	nrgba16 := image.NewNRGBA64(image.Rect(0, 0, w, h))
	pal := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{
		color.RGBA{255, 0, 0, 255}, color.NRGBA{0, 200, 10, 128}, color.RGBA{0, 0, 0, 0}, color.RGBA{9, 99, 199, 255}})
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := byte(x*30 + y*7)
			rgba.Set(x, y, color.RGBA{v, 255 - v, v / 2, 255})
			nrgba.Set(x, y, color.NRGBA{v, 255 - v, v / 3, byte(x * 40)}) // alpha varies, even 0
			gray.Set(x, y, color.Gray{v})
			gray16.Set(x, y, color.Gray16{uint16(v)<<8 | 0xab})
			rgb16.Set(x, y, color.RGBA64{uint16(v) << 8, 0xffff - uint16(v)<<8, 0x1234, 0xffff})
			nrgba16.Set(x, y, color.NRGBA64{uint16(v)<<8 | 0xff, 0x8000, uint16(x) << 12, uint16(y) << 13})
			pal.SetColorIndex(x, y, uint8((x+y)%4))
		}
	}
	// Palettes of 2 and 16 colours make 1- and 4-bit PNGs.
	pal1 := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.Gray{10}, color.Gray{240}})
	pal4 := image.NewPaletted(image.Rect(0, 0, w, h), nil)
	for i := range 16 {
		pal4.Palette = append(pal4.Palette, color.RGBA{byte(i * 16), byte(255 - i*9), byte(i * i), 255})
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			pal1.SetColorIndex(x, y, uint8((x^y)&1))
			pal4.SetColorIndex(x, y, uint8((x*3+y)%16))
		}
	}
	// Adam7 passes cover a 7×5 image partly; 19×13 fills all seven.
	big := image.NewNRGBA(image.Rect(0, 0, 19, 13))
	for i := range big.Pix {
		big.Pix[i] = byte(i * 37)
	}
	cases := []struct {
		name string
		m    image.Image
		data []byte
	}{
		{"rgb8", rgba, nil}, {"rgba8 alpha dropped", nrgba, nil}, {"gray8", gray, nil}, {"gray16", gray16, nil},
		{"rgb16", rgb16, nil}, {"rgba16", nrgba16, nil}, {"palette with transparency", pal, nil},
		{"palette 1-bit", pal1, nil}, {"palette 4-bit", pal4, nil},
		{"interlaced rgba8", nrgba, testenv.InterlacedPNG(t, nrgba)},
		{"interlaced rgba8 19x13", big, testenv.InterlacedPNG(t, big)},
	}
	for _, dec := range pngDecoders(t) {
		for _, tc := range cases {
			t.Run(dec.Name()+"/"+tc.name, func(t *testing.T) {
				data := tc.data
				if data == nil {
					data = testenv.EncodePNG(t, tc.m)
				}
				var img decode.Image
				h, err := (&decode.Decoder{PNG: dec}).Decode(data, &img)
				if err != nil {
					t.Fatal(err)
				}
				b := tc.m.Bounds()
				if h.Format != decode.PNG || img.Width != b.Dx() || img.Height != b.Dy() {
					t.Fatalf("header %+v, image %dx%d", h, img.Width, img.Height)
				}
				if diff := cmp.Diff(rgbOf(tc.m), img.Pix); diff != "" {
					t.Errorf("pixels (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestPNGDecodersAgree decodes the shared PNGs with each PNG decoder: the
// pixels are Go's decoder's, bit for bit.
func TestPNGDecodersAgree(t *testing.T) {
	decs := pngDecoders(t)
	for name, data := range testenv.SharedPNGs(t) {
		got := make([]decode.Image, len(decs))
		for i, dec := range decs {
			if _, err := (&decode.Decoder{PNG: dec}).Decode(data, &got[i]); err != nil {
				t.Fatalf("%s, %s: %v", name, dec.Name(), err)
			}
			if got[i].Width != got[0].Width || got[i].Height != got[0].Height || !bytes.Equal(got[i].Pix, got[0].Pix) {
				t.Errorf("%s: %s and %s differ (%dx%d, %dx%d)", name, decs[0].Name(), dec.Name(), got[0].Width, got[0].Height, got[i].Width, got[i].Height)
			}
		}
	}
}

// TestPNGCorruptData checks that a PNG whose chunks are whole (so that
// Inspect takes it) but whose compressed pixels are damaged is refused by
// either decoder with a client error that says so, and that the decoder
// then still decodes a good image.
func TestPNGCorruptData(t *testing.T) {
	good := testenv.EncodePNG(t, testenv.Gradient(40, 30))
	idat := bytes.Index(good, []byte("IDAT"))
	n := int(binary.BigEndian.Uint32(good[idat-4:]))
	body := append([]byte{}, good[idat+4:idat+4+n]...)
	withIDAT := func(body []byte) []byte {
		out := append([]byte{}, good[:idat-4]...)
		out = append(out, testenv.PNGChunk("IDAT", body)...)
		return append(out, good[idat+8+n:]...)
	}
	badStream := append([]byte{}, body...)
	for i := 2; i < len(badStream)-4; i++ {
		badStream[i] ^= 0x5a
	}
	badSum := append([]byte{}, body...)
	badSum[len(badSum)-1] ^= 0xff
	for _, dec := range pngDecoders(t) {
		for _, tc := range []struct {
			name string
			data []byte
		}{
			{"damaged deflate stream", withIDAT(badStream)},
			{"wrong zlib checksum", withIDAT(badSum)},
			{"image data cut short", withIDAT(body[:len(body)/2])},
		} {
			t.Run(dec.Name()+"/"+tc.name, func(t *testing.T) {
				d := &decode.Decoder{PNG: dec}
				var img decode.Image
				_, err := d.Decode(tc.data, &img)
				if detect.ErrorCode(err) != detect.EUNSUPPORTED || !strings.Contains(err.Error(), "The png image could not be decoded") {
					t.Fatalf("err %v, want EUNSUPPORTED: could not be decoded", err)
				}
				if _, err := d.Decode(good, &img); err != nil || img.Width != 40 || !bytes.Equal(img.Pix, rgbOf(testenv.Gradient(40, 30))) {
					t.Errorf("the good PNG after it: %v, %dx%d", err, img.Width, img.Height)
				}
			})
		}
	}
}

// meanDiff is the mean absolute difference of two byte slices.
func meanDiff(a, b []byte) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	s := 0.0
	for i := range a {
		s += math.Abs(float64(a[i]) - float64(b[i]))
	}
	return s / float64(len(a))
}

func TestDecodeJPEGFormats(t *testing.T) {
	const w, h = 64, 48
	src := testenv.Gradient(w, h)
	rgb := rgbOf(src)
	grayImg := image.NewGray(src.Bounds())
	for i := range grayImg.Pix {
		grayImg.Pix[i] = rgb[3*i+1]
	}
	// CMYK pixels as libjpeg stores them, and what OpenCV makes of them.
	cmyk := make([]byte, w*h*4)
	for i := 0; i < w*h; i++ {
		cmyk[4*i], cmyk[4*i+1], cmyk[4*i+2], cmyk[4*i+3] = rgb[3*i], rgb[3*i+1], rgb[3*i+2], 200
	}
	cmykRGB := make([]byte, w*h*3)
	decode.CMYKToRGB(cmyk, cmykRGB)
	turbo(t)
	enc := func(pix []byte, pf, ss int, progressive bool) []byte {
		b, err := imagelib.EncodeJPEG(pix, w, h, pf, ss, 95, progressive)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
		want []byte
		comp int
	}{
		{"baseline 4:2:0", testenv.EncodeJPEG(t, src, 95), rgb, 3},
		{"grayscale", testenv.EncodeJPEG(t, grayImg, 95), rgbOf(grayImg), 1},
		{"progressive", enc(rgb, imagelib.PixelRGB, imagelib.Subsamp420, true), rgb, 3},
		{"4:4:4", enc(rgb, imagelib.PixelRGB, imagelib.Subsamp444, false), rgb, 3},
		{"YCCK", enc(cmyk, imagelib.PixelCMYK, imagelib.Subsamp444, false), cmykRGB, 4},
	}
	for _, dec := range []decode.JPEGDecoder{turbo(t), decode.GoJPEG{}} {
		for _, tc := range cases {
			t.Run(dec.Name()+"/"+tc.name, func(t *testing.T) {
				var img decode.Image
				hd, err := (&decode.Decoder{JPEG: dec}).Decode(tc.data, &img)
				if err != nil {
					t.Fatal(err)
				}
				if hd.Components != tc.comp || img.Width != w || img.Height != h {
					t.Fatalf("components %d, size %dx%d; want %d, %dx%d", hd.Components, img.Width, img.Height, tc.comp, w, h)
				}
				if d := meanDiff(tc.want, img.Pix); d > 3 {
					t.Errorf("mean difference from the source %.2f levels, want ≤ 3", d)
				}
			})
		}
	}
}

// TestOrientation decodes a 3×2 image with every EXIF orientation and
// checks the upright pixels against OpenCV's flips and transposes.
func TestOrientation(t *testing.T) {
	// Stored pixels, labelled a..f:  a b c
	//                                d e f
	labels := "abcdef"
	src := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range labels {
		src.Set(i%3, i/3, color.NRGBA{byte(i * 40), byte(i), 0, 255})
	}
	want := map[int][]string{
		1: {"abc", "def"},
		2: {"cba", "fed"},
		3: {"fed", "cba"},
		4: {"def", "abc"},
		5: {"ad", "be", "cf"},
		6: {"da", "eb", "fc"},
		7: {"fc", "eb", "da"},
		8: {"cf", "be", "ad"},
	}
	base := testenv.EncodePNG(t, src)
	for o := 1; o <= 8; o++ {
		t.Run(fmt.Sprint(o), func(t *testing.T) {
			var img decode.Image
			h, err := (&decode.Decoder{}).Decode(testenv.WithPNGOrientation(base, o), &img)
			if err != nil {
				t.Fatal(err)
			}
			var rows []string
			for y := 0; y < img.Height; y++ {
				row := ""
				for x := 0; x < img.Width; x++ {
					row += string(labels[img.Pix[(y*img.Width+x)*3]/40])
				}
				rows = append(rows, row)
			}
			if diff := cmp.Diff(want[o], rows); diff != "" {
				t.Errorf("orientation %d (-want +got):\n%s", o, diff)
			}
			if up := h.Upright(); up.Width != img.Width || up.Height != img.Height {
				t.Errorf("Upright %v, decoded %dx%d", up, img.Width, img.Height)
			}
		})
	}
}

func TestJPEGOrientation(t *testing.T) {
	data := testenv.EncodeJPEG(t, testenv.Gradient(64, 32), 95)
	for o := 1; o <= 8; o++ {
		var img decode.Image
		h, err := (&decode.Decoder{JPEG: turbo(t)}).Decode(testenv.WithJPEGOrientation(data, o), &img)
		if err != nil {
			t.Fatal(err)
		}
		wantW, wantH := 64, 32
		if o >= 5 {
			wantW, wantH = 32, 64
		}
		if h.Orientation != o || img.Width != wantW || img.Height != wantH {
			t.Errorf("orientation %d: read %d, decoded %dx%d, want %dx%d", o, h.Orientation, img.Width, img.Height, wantW, wantH)
		}
	}
}

func TestInspectRefuses(t *testing.T) {
	jpg := testenv.EncodeJPEG(t, testenv.Gradient(32, 32), 90)
	pngData := testenv.EncodePNG(t, testenv.Gradient(32, 32))
	for _, tc := range []struct {
		name string
		data []byte
		code string
	}{
		{"empty", nil, detect.EUNSUPPORTED},
		{"text", []byte("hello, world"), detect.EUNSUPPORTED},
		{"gif", []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), detect.EUNSUPPORTED},
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), detect.EUNSUPPORTED},
		{"jpeg truncated in scan", jpg[:len(jpg)-40], detect.EUNSUPPORTED},
		{"jpeg truncated in header", jpg[:100], detect.EUNSUPPORTED},
		{"jpeg SOI only", []byte{0xff, 0xd8, 0xff}, detect.EUNSUPPORTED},
		{"png truncated", pngData[:len(pngData)-20], detect.EUNSUPPORTED},
		{"png signature only", pngData[:8], detect.EUNSUPPORTED},
		{"png bad IHDR checksum", append(append([]byte{}, pngData[:29]...), append([]byte{0, 0, 0, 0}, pngData[33:]...)...), detect.EUNSUPPORTED},
		{"png 100000x100000", testenv.HugePNG(100000, 100000), detect.ETOOLARGE},
		{"jpeg 65000x65000", testenv.HugeJPEG(t, 65000, 65000), detect.ETOOLARGE},
		{"png 0x10", testenv.HugePNG(0, 10), detect.EUNSUPPORTED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode.Inspect(tc.data, decode.DefaultMaxPixels)
			if got := detect.ErrorCode(err); got != tc.code {
				t.Errorf("Inspect: %v (code %q), want code %q", err, got, tc.code)
			}
		})
	}
}

// TestDecodeRefusesHugeBeforeAllocating checks that a header claiming 10¹⁰
// pixels is refused from the header: the decoder's buffers stay empty.
func TestDecodeRefusesHugeBeforeAllocating(t *testing.T) {
	var img decode.Image
	_, err := (&decode.Decoder{}).Decode(testenv.HugePNG(100000, 100000), &img)
	if detect.ErrorCode(err) != detect.ETOOLARGE || img.Pix != nil {
		t.Errorf("err %v, %d bytes allocated", err, len(img.Pix))
	}
}

func TestDecodeSharedImages(t *testing.T) {
	for _, name := range testenv.Images(t) {
		var img decode.Image
		h, err := (&decode.Decoder{JPEG: turbo(t)}).Decode(testenv.ReadImage(t, name), &img)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(img.Pix) != img.Width*img.Height*3 || bytes.Count(img.Pix, []byte{0}) == len(img.Pix) {
			t.Errorf("%s: %+v decoded to %d bytes", name, h, len(img.Pix))
		}
	}
}

// BenchmarkDecodePNG decodes the shared PNGs with each PNG decoder.
func BenchmarkDecodePNG(b *testing.B) {
	for name, data := range testenv.SharedPNGs(b) {
		for _, dec := range pngDecoders(b) {
			b.Run(dec.Name()+"/"+name, func(b *testing.B) {
				d := &decode.Decoder{PNG: dec}
				var img decode.Image
				for b.Loop() {
					if _, err := d.Decode(data, &img); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
