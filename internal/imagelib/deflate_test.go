package imagelib

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/decode"
	"yoloserve/internal/testenv"
)

var errPassed = errors.New("passed to the next decoder")

// refuse is a PNG decoder that decodes nothing: what DeflatePNG passes on
// comes back as errPassed.
type refuse struct{}

func (refuse) Name() string { return "refuse" }

func (refuse) DecodePNG(_ []byte, _ decode.Header, dst []byte) ([]byte, error) {
	return dst, errPassed
}

func deflateOver(tb testing.TB, next decode.PNGDecoder) DeflatePNG {
	tb.Helper()
	d, err := OpenDeflatePNG("", next)
	if err != nil {
		tb.Fatalf("libdeflate (apt-get install libdeflate0): %v", err)
	}
	return d
}

// paeth is the specification's Paeth predictor.
func paeth(a, b, c byte) byte {
	p := int(a) + int(b) - int(c)
	pa, pb, pc := abs(p-int(a)), abs(p-int(b)), abs(p-int(c))
	switch {
	case pa <= pb && pa <= pc:
		return a
	case pb <= pc:
		return b
	}
	return c
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// filterRows is the encoder's side of PNG's filters: each row of pix (w
// pixels of bpp bytes) behind its filter byte, row y filtered with
// filters[y%len(filters)].
func filterRows(pix []byte, w, h, bpp int, filters []byte) []byte {
	n := w * bpp
	out := make([]byte, 0, h*(n+1))
	prev := make([]byte, n)
	for y := range h {
		row := pix[y*n : (y+1)*n]
		f := filters[y%len(filters)]
		out = append(out, f)
		for i, v := range row {
			var a, b, c byte
			if i >= bpp {
				a, c = row[i-bpp], prev[i-bpp]
			}
			b = prev[i]
			switch f {
			case 1:
				v -= a
			case 2:
				v -= b
			case 3:
				v -= byte((int(a) + int(b)) / 2)
			case 4:
				v -= paeth(a, b, c)
			}
			out = append(out, v)
		}
		prev = row
	}
	return out
}

func zlibOf(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return z.Bytes()
}

// craft is a PNG put together chunk by chunk: the IHDR of a w×h 8-bit
// image of the colour type, then the chunks.
func craft(w, h int, colorType byte, chunks ...[]byte) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, colorType
	out := append([]byte("\x89PNG\r\n\x1a\n"), testenv.PNGChunk("IHDR", ihdr)...)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

// idats splits z into n IDAT chunks, the second of them empty when n > 2.
func idats(z []byte, n int) [][]byte {
	var out [][]byte
	for i := range n {
		part := z[len(z)*i/n : len(z)*(i+1)/n]
		if n > 2 && i == 1 {
			out = append(out, testenv.PNGChunk("IDAT", nil))
		}
		out = append(out, testenv.PNGChunk("IDAT", part))
	}
	return out
}

// photo is w×h pixels of bpp bytes: noise, with flat patches and ramps
// where Paeth's and Average's ties and carries happen.
func photo(w, h, bpp int) []byte {
	r := rand.New(rand.NewPCG(uint64(w), uint64(h*bpp)))
	pix := make([]byte, w*h*bpp)
	for y := range h {
		for x := range w {
			for k := range bpp {
				i := (y*w+x)*bpp + k
				switch (x / 7) % 3 {
				case 0:
					pix[i] = byte(r.IntN(256))
				case 1:
					pix[i] = byte(200 + k)
				default:
					pix[i] = byte(x*9 + y*5 + k*80)
				}
			}
		}
	}
	return pix
}

// rgbOf is the RGB of pixels of bpp bytes: gray (1 and 2) replicated,
// alpha (2 and 4) dropped.
func rgbOf(pix []byte, bpp int) []byte {
	out := make([]byte, 0, len(pix)/bpp*3)
	for i := 0; i < len(pix); i += bpp {
		if bpp < 3 {
			out = append(out, pix[i], pix[i], pix[i])
		} else {
			out = append(out, pix[i:i+3]...)
		}
	}
	return out
}

// colorTypes are PNG's colour types by bytes a pixel at 8 bits.
var colorTypes = map[int]byte{1: 0, 2: 4, 3: 2, 4: 6}

func header(w, h int) decode.Header {
	return decode.Header{Format: decode.PNG, Width: w, Height: h, Orientation: 1}
}

// TestDeflatePNG decodes 8-bit gray, gray and alpha, RGB and RGBA PNGs
// with every filter on its own path, without the decoder behind it: the
// pixels are the image's, gray replicated and alpha dropped, bit for bit, however the data is split into IDAT chunks
// and whatever ancillary chunks lie around them.
func TestDeflatePNG(t *testing.T) {
	d := deflateOver(t, refuse{})
	text := testenv.PNGChunk("tEXt", []byte("Comment\x00made for a test"))
	for _, bpp := range []int{1, 2, 3, 4} {
		for _, tc := range []struct {
			name    string
			w, h    int
			filters []byte
			parts   int
		}{
			{"each filter in turn", 61, 23, []byte{0, 1, 2, 3, 4}, 1},
			{"paeth only", 64, 9, []byte{4}, 1},
			{"average only", 33, 9, []byte{3}, 1},
			{"sub, up, paeth", 17, 40, []byte{1, 2, 4}, 1},
			{"one pixel a row", 1, 11, []byte{4, 3, 1, 2, 0}, 1},
			{"one row", 50, 1, []byte{4}, 1},
			{"four IDAT chunks and an empty one", 61, 23, []byte{4, 3}, 4},
		} {
			t.Run(map[int]string{1: "gray8/", 2: "graya8/", 3: "rgb8/", 4: "rgba8/"}[bpp]+tc.name, func(t *testing.T) {
				pix := photo(tc.w, tc.h, bpp)
				z := zlibOf(t, filterRows(pix, tc.w, tc.h, bpp, tc.filters))
				chunks := append([][]byte{text}, idats(z, tc.parts)...)
				chunks = append(chunks, text, testenv.PNGChunk("IEND", nil))
				got, err := d.DecodePNG(craft(tc.w, tc.h, colorTypes[bpp], chunks...), header(tc.w, tc.h), nil)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(rgbOf(pix, bpp), got); diff != "" {
					t.Errorf("pixels (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestDeflatePNGSharedImages: the shared PNGs are decoded on libdeflate's
// path, to libpng's pixels.
func TestDeflatePNGSharedImages(t *testing.T) {
	lib, err := OpenPNG("")
	if err != nil {
		t.Fatalf("libpng (apt-get install libpng16-16): %v", err)
	}
	d := deflateOver(t, refuse{})
	for name, data := range testenv.SharedPNGs(t) {
		h, err := decode.Inspect(data, -1)
		if err != nil {
			t.Fatal(err)
		}
		want, err := lib.DecodePNG(data, h, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.DecodePNG(data, h, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: libdeflate's pixels differ from libpng's", name)
		}
	}
}

// TestDeflatePNGPasses: every PNG that libdeflate's path does not take,
// or that libpng could read differently or refuse, goes to the decoder
// behind it, whose error is the one returned.
func TestDeflatePNGPasses(t *testing.T) {
	d := deflateOver(t, refuse{})
	const w, h = 20, 6
	pix := photo(w, h, 3)
	raw := filterRows(pix, w, h, 3, []byte{4, 1})
	z := zlibOf(t, raw)
	idat, iend := testenv.PNGChunk("IDAT", z), testenv.PNGChunk("IEND", nil)
	good := craft(w, h, 2, idat, iend)
	if _, err := d.DecodePNG(good, header(w, h), nil); err != nil {
		t.Fatalf("the unbroken PNG: %v", err)
	}
	broken := func(chunk []byte, at int, xor byte) []byte {
		c := append([]byte{}, chunk...)
		c[at] ^= xor
		return c
	}
	badFilter := append([]byte{}, raw...)
	badFilter[(w*3+1)*2] = 5
	badSum := append([]byte{}, z...)
	badSum[len(badSum)-1] ^= 1
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range nrgba.Pix {
		nrgba.Pix[i] = byte(i * 7)
	}
	rgb16 := image.NewRGBA64(image.Rect(0, 0, w, h))
	rgb16.Set(3, 2, color.RGBA64{1, 2, 3, 0xffff})
	for _, tc := range []struct {
		name string
		data []byte
		h    decode.Header
	}{
		{"gray 4-bit", craft4BitGray(t, w, h), header(w, h)},
		{"gray 16-bit", testenv.EncodePNG(t, image.NewGray16(image.Rect(0, 0, w, h))), header(w, h)},
		{"palette", testenv.EncodePNG(t, image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.Black})), header(w, h)},
		{"16-bit", testenv.EncodePNG(t, rgb16), header(w, h)},
		{"interlaced", testenv.InterlacedPNG(t, nrgba), header(w, h)},
		{"another size than the header's", good, header(w+1, h)},
		{"IDAT checksum", craft(w, h, 2, broken(idat, len(idat)-1, 1), iend), header(w, h)},
		{"IEND checksum", craft(w, h, 2, idat, broken(iend, len(iend)-1, 1)), header(w, h)},
		{"no IEND", craft(w, h, 2, idat), header(w, h)},
		{"IEND cut short", craft(w, h, 2, idat, iend[:8]), header(w, h)},
		{"an IDAT after another chunk", craft(w, h, 2, idat, testenv.PNGChunk("tEXt", []byte("a\x00b")), testenv.PNGChunk("IDAT", nil), iend), header(w, h)},
		{"PLTE", craft(w, h, 2, testenv.PNGChunk("PLTE", []byte{1, 2, 3}), idat, iend), header(w, h)},
		{"unknown critical chunk", craft(w, h, 2, testenv.PNGChunk("ZZZZ", nil), idat, iend), header(w, h)},
		{"chunk type not letters", craft(w, h, 2, testenv.PNGChunk("a1b2", nil), idat, iend), header(w, h)},
		{"unknown filter", craft(w, h, 2, testenv.PNGChunk("IDAT", zlibOf(t, badFilter)), iend), header(w, h)},
		{"image data cut short", craft(w, h, 2, testenv.PNGChunk("IDAT", zlibOf(t, raw[:len(raw)-1])), iend), header(w, h)},
		{"image data too long", craft(w, h, 2, testenv.PNGChunk("IDAT", zlibOf(t, append(raw, 0))), iend), header(w, h)},
		{"zlib checksum", craft(w, h, 2, testenv.PNGChunk("IDAT", badSum), iend), header(w, h)},
		{"no image data", craft(w, h, 2, testenv.PNGChunk("IDAT", nil), iend), header(w, h)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := d.DecodePNG(tc.data, tc.h, nil); !errors.Is(err, errPassed) {
				t.Errorf("err %v, want the next decoder's", err)
			}
		})
	}
}

// craft4BitGray is a w×h 4-bit gray PNG, which Go's encoder does not
// write.
func craft4BitGray(tb testing.TB, w, h int) []byte {
	tb.Helper()
	raw := make([]byte, h*(1+(w+1)/2))
	data := craft(w, h, 0, testenv.PNGChunk("IDAT", zlibOf(tb, raw)), testenv.PNGChunk("IEND", nil))
	// The IHDR's bit depth, and its checksum again.
	data[8+8+8] = 4
	binary.BigEndian.PutUint32(data[8+8+13:], crc32.ChecksumIEEE(data[8+4:8+8+13]))
	return data
}

// BenchmarkDeflatePNG decodes 1280×720 photo-like PNGs, gray, RGB and RGBA,
// each row Paeth- or Average-filtered, with libpng and with libdeflate.
func BenchmarkDeflatePNG(b *testing.B) {
	lib, err := OpenPNG("")
	if err != nil {
		b.Fatal(err)
	}
	const w, h = 1280, 720
	for _, bpp := range []int{1, 3, 4} {
		pix := photo(w, h, bpp)
		data := craft(w, h, colorTypes[bpp], testenv.PNGChunk("IDAT", zlibOf(b, filterRows(pix, w, h, bpp, []byte{4, 3}))), testenv.PNGChunk("IEND", nil))
		for _, dec := range []decode.PNGDecoder{lib, deflateOver(b, lib)} {
			b.Run(dec.Name()+map[int]string{1: "/gray8", 3: "/rgb8", 4: "/rgba8"}[bpp], func(b *testing.B) {
				dst := make([]byte, w*h*3)
				for b.Loop() {
					if _, err := dec.DecodePNG(data, header(w, h), dst); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
