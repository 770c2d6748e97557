package testenv

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os/exec"
	"testing"
)

// Gradient returns a w×h RGB test image with smooth colour ramps, which
// survives JPEG compression well.
func Gradient(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.Set(x, y, color.RGBA{byte(x * 255 / max(1, w-1)), byte(y * 255 / max(1, h-1)), byte((x + y) * 127 / max(1, w+h-2)), 255})
		}
	}
	return m
}

// EncodePNG encodes m as PNG.
func EncodePNG(tb testing.TB, m image.Image) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// EncodeJPEG encodes m as a baseline JPEG (4:2:0 colour, or gray for a
// *image.Gray).
func EncodeJPEG(tb testing.TB, m image.Image, quality int) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: quality}); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// JPEGTran rewrites a JPEG losslessly with libjpeg-turbo's jpegtran and
// args (-restart to add restart markers, -progressive, -grayscale), for
// the JPEG variants that no encoder the tests link can write.
func JPEGTran(tb testing.TB, data []byte, args ...string) []byte {
	tb.Helper()
	path, err := exec.LookPath("jpegtran")
	if err != nil {
		tb.Fatalf("the JPEG variants need jpegtran (apt-get install libjpeg-turbo-progs): %v", err)
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(data), &out, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("jpegtran %v: %v: %s", args, err, stderr.String())
	}
	return out.Bytes()
}

// exifBlock is a little-endian TIFF block holding only an orientation tag.
func exifBlock(orientation int) []byte {
	b := []byte("II*\x00\x08\x00\x00\x00\x01\x00")
	entry := make([]byte, 12)
	binary.LittleEndian.PutUint16(entry[0:], 0x0112)
	binary.LittleEndian.PutUint16(entry[2:], 3)
	binary.LittleEndian.PutUint32(entry[4:], 1)
	binary.LittleEndian.PutUint16(entry[8:], uint16(orientation))
	return append(append(b, entry...), 0, 0, 0, 0)
}

// WithJPEGOrientation inserts an EXIF APP1 segment with the orientation
// right after the JPEG's SOI marker.
func WithJPEGOrientation(data []byte, orientation int) []byte {
	body := append([]byte("Exif\x00\x00"), exifBlock(orientation)...)
	seg := []byte{0xff, 0xe1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(body)+2))
	out := append([]byte{}, data[:2]...)
	out = append(append(out, seg...), body...)
	return append(out, data[2:]...)
}

// PNGChunk encodes one PNG chunk with its checksum.
func PNGChunk(typ string, body []byte) []byte {
	c := make([]byte, 8, 12+len(body))
	binary.BigEndian.PutUint32(c, uint32(len(body)))
	copy(c[4:], typ)
	c = append(c, body...)
	return binary.BigEndian.AppendUint32(c, crc32.ChecksumIEEE(c[4:]))
}

// WithPNGOrientation inserts an eXIf chunk with the orientation after the
// PNG's IHDR chunk.
func WithPNGOrientation(data []byte, orientation int) []byte {
	const afterIHDR = 8 + 25
	out := append([]byte{}, data[:afterIHDR]...)
	out = append(out, PNGChunk("eXIf", exifBlock(orientation))...)
	return append(out, data[afterIHDR:]...)
}

// HugePNG is a well-formed PNG header claiming w×h pixels, with a token
// IDAT: a decoder that trusted it would allocate w×h×3 bytes.
func HugePNG(w, h uint32) []byte {
	return pngFile(w, h, 2, false, []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
}

// pngFile is a PNG of one IDAT chunk: a w×h 8-bit image of the colour
// type, Adam7-interlaced or not, with the compressed data idat.
func pngFile(w, h uint32, colorType byte, interlaced bool, idat []byte) []byte {
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, colorType
	if interlaced {
		ihdr[12] = 1
	}
	out := []byte("\x89PNG\r\n\x1a\n")
	out = append(out, PNGChunk("IHDR", ihdr)...)
	out = append(out, PNGChunk("IDAT", idat)...)
	return append(out, PNGChunk("IEND", nil)...)
}

// HugeJPEG is a small real JPEG whose frame header is rewritten to claim
// w×h pixels.
func HugeJPEG(tb testing.TB, w, h uint16) []byte {
	tb.Helper()
	data := EncodeJPEG(tb, Gradient(16, 16), 90)
	for i := 2; i+9 < len(data); {
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		if data[i+1] == 0xc0 {
			binary.BigEndian.PutUint16(data[i+5:], h)
			binary.BigEndian.PutUint16(data[i+7:], w)
			return data
		}
		i += 2 + n
	}
	tb.Fatal("no SOF0 in Go's JPEG")
	return nil
}

// adam7 is PNG's interlace: each pass's first column and row, and its
// steps.
var adam7 = [7][4]int{{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}}

// InterlacedPNG encodes m as an 8-bit RGBA PNG with Adam7 interlacing,
// which Go's encoder does not write, in one IDAT chunk.
func InterlacedPNG(tb testing.TB, m *image.NRGBA) []byte {
	tb.Helper()
	b := m.Bounds()
	var raw []byte
	for _, p := range adam7 {
		for y := p[1]; y < b.Dy(); y += p[3] {
			if p[0] >= b.Dx() {
				break
			}
			raw = append(raw, 0) // filter: none
			for x := p[0]; x < b.Dx(); x += p[2] {
				c := m.NRGBAAt(b.Min.X+x, b.Min.Y+y)
				raw = append(raw, c.R, c.G, c.B, c.A)
			}
		}
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return pngFile(uint32(b.Dx()), uint32(b.Dy()), 6, true, z.Bytes())
}
