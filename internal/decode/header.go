// Package decode reads JPEG and PNG images into upright RGB pixels the way
// OpenCV's imdecode(IMREAD_COLOR) does, and inspects their headers without
// decoding pixels so that a server can refuse an image before it costs
// memory.
package decode

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"yoloserve/internal/detect"
)

// Format is an image container format.
type Format string

// The formats the service accepts.
const (
	JPEG Format = "jpeg"
	PNG  Format = "png"
)

// DefaultMaxPixels is the default limit on width×height: 40 megapixels.
const DefaultMaxPixels = 40_000_000

// Header is what Inspect reads from an image without decoding its pixels.
type Header struct {
	Format Format
	// Width and Height are the stored size, before orientation.
	Width, Height int
	// Components is 1 (gray), 3 (YCbCr/RGB) or 4 (CMYK/YCCK) for a JPEG.
	Components int
	// Orientation is the EXIF orientation, 1 to 8 (1 when absent or invalid).
	Orientation int
}

// Upright returns the size of the image as a person sees it, after its
// EXIF orientation.
func (h Header) Upright() detect.Size {
	if h.Orientation >= 5 {
		return detect.Size{Width: h.Height, Height: h.Width}
	}
	return detect.Size{Width: h.Width, Height: h.Height}
}

var (
	pngSignature = []byte("\x89PNG\r\n\x1a\n")
	jpegEOI      = []byte{0xff, 0xd9}
)

// Inspect identifies data as a JPEG or PNG by its content, reads its size
// and orientation and checks that its structure is whole. It returns an
// EUNSUPPORTED *Error for anything else or for a truncated or malformed
// file, and an ETOOLARGE *Error when width×height exceeds maxPixels (no limit
// when maxPixels ≤ 0).
func Inspect(data []byte, maxPixels int) (Header, error) {
	var h Header
	var err error
	switch {
	case len(data) >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff:
		h, err = inspectJPEG(data)
	case bytes.HasPrefix(data, pngSignature):
		h, err = inspectPNG(data)
	case len(data) == 0:
		return h, detect.Errorf(detect.EUNSUPPORTED, "The image file is empty.")
	default:
		return h, detect.Errorf(detect.EUNSUPPORTED, "The file is not a JPEG or PNG image (%s).", sniffName(data))
	}
	if err != nil {
		return h, err
	}
	if h.Width <= 0 || h.Height <= 0 {
		return h, detect.Errorf(detect.EUNSUPPORTED, "The %s image has no pixels (%d×%d).", h.Format, h.Width, h.Height)
	}
	if maxPixels > 0 && int64(h.Width)*int64(h.Height) > int64(maxPixels) {
		return h, detect.Errorf(detect.ETOOLARGE, "The image is %d×%d pixels; the limit is %.1f megapixels.",
			h.Width, h.Height, float64(maxPixels)/1e6)
	}
	return h, nil
}

func malformed(f Format, what string) error {
	return detect.Errorf(detect.EUNSUPPORTED, "The %s image is damaged or truncated (%s).", f, what)
}

// jpegSegment is one marker of a JPEG before its first scan, with its
// segment when it has one.
type jpegSegment struct {
	marker     byte
	at         int    // where the marker begins
	body       []byte // the segment after its length; nil for a standalone marker
	next       int    // where the next marker is looked for
	standalone bool   // SOI, EOI, TEM or RSTn, which have no segment
}

// readSegment reads the marker at pos, after any fill bytes, and its
// segment. It returns what is wrong ("no image data", "bad marker",
// "segment cut short") when the data there is not a marker and segment.
func readSegment(data []byte, pos int) (s jpegSegment, what string) {
	for pos+1 < len(data) && data[pos] == 0xff && data[pos+1] == 0xff {
		pos++ // fill bytes
	}
	if pos+2 > len(data) {
		return s, "no image data"
	}
	if data[pos] != 0xff {
		return s, "bad marker"
	}
	s.marker, s.at = data[pos+1], pos
	m := s.marker
	if m == 0x01 || m == 0xd8 || m == 0xd9 || (m >= 0xd0 && m <= 0xd7) {
		s.standalone, s.next = true, pos+2
		return s, ""
	}
	if pos+4 > len(data) {
		return s, "segment cut short"
	}
	n := int(binary.BigEndian.Uint16(data[pos+2:]))
	if n < 2 || pos+2+n > len(data) {
		return s, "segment cut short"
	}
	s.body, s.next = data[pos+4:pos+2+n], pos+2+n
	return s, ""
}

// inspectJPEG walks the marker segments up to the first scan, reading the
// frame header and the EXIF orientation, then checks that an end-of-image
// marker follows (entropy-coded data cannot contain one, so its absence
// means the file was cut short).
func inspectJPEG(data []byte) (Header, error) {
	h := Header{Format: JPEG, Orientation: 1}
	for pos := 2; ; {
		sg, what := readSegment(data, pos)
		if what != "" {
			return h, malformed(JPEG, what)
		}
		pos = sg.next
		m, seg := sg.marker, sg.body
		switch {
		case m == 0xd9 || m == 0xd8:
			return h, malformed(JPEG, "no image data")
		case sg.standalone:
			continue
		case m == 0xc0 || m == 0xc1 || m == 0xc2 || m == 0xc9 || m == 0xca:
			if len(seg) < 6 {
				return h, malformed(JPEG, "short frame header")
			}
			if seg[0] != 8 {
				return h, detect.Errorf(detect.EUNSUPPORTED, "The JPEG has %d-bit samples; only 8-bit JPEGs are supported.", seg[0])
			}
			h.Height = int(binary.BigEndian.Uint16(seg[1:]))
			h.Width = int(binary.BigEndian.Uint16(seg[3:]))
			h.Components = int(seg[5])
			if h.Components != 1 && h.Components != 3 && h.Components != 4 {
				return h, detect.Errorf(detect.EUNSUPPORTED, "The JPEG has %d colour components; 1, 3 or 4 are supported.", h.Components)
			}
		case m >= 0xc3 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc:
			return h, detect.Errorf(detect.EUNSUPPORTED, "The JPEG uses a lossless or hierarchical coding that is not supported; save it as a baseline or progressive JPEG.")
		case m == 0xe1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")):
			if o := exifOrientation(seg[6:]); o != 0 {
				h.Orientation = o
			}
		case m == 0xda:
			if h.Components == 0 {
				return h, malformed(JPEG, "no frame header before the scan")
			}
			if !bytes.Contains(data[pos:], jpegEOI) {
				return h, malformed(JPEG, "no end-of-image marker")
			}
			return h, nil
		}
	}
}

// inspectPNG checks the signature and the IHDR chunk, then walks the chunk
// list to IEND, reading an eXIf chunk's orientation on the way.
func inspectPNG(data []byte) (Header, error) {
	h := Header{Format: PNG, Orientation: 1}
	pos := len(pngSignature)
	first, idat := true, false
	for {
		if pos+12 > len(data) {
			return h, malformed(PNG, "no IEND chunk")
		}
		n := int64(binary.BigEndian.Uint32(data[pos:]))
		typ := string(data[pos+4 : pos+8])
		if n > int64(len(data)-pos-12) {
			return h, malformed(PNG, "chunk "+printable(typ)+" cut short")
		}
		body := data[pos+8 : pos+8+int(n)]
		if first {
			if typ != "IHDR" || n != 13 {
				return h, malformed(PNG, "no IHDR chunk")
			}
			if crc32.ChecksumIEEE(data[pos+4:pos+8+int(n)]) != binary.BigEndian.Uint32(data[pos+8+int(n):]) {
				return h, malformed(PNG, "IHDR checksum")
			}
			w, ht := binary.BigEndian.Uint32(body), binary.BigEndian.Uint32(body[4:])
			if w > 1<<31-1 || ht > 1<<31-1 {
				return h, malformed(PNG, "size out of range")
			}
			h.Width, h.Height = int(w), int(ht)
			depth, color := body[8], body[9]
			if !validPNGDepth(depth, color) || body[10] != 0 || body[11] != 0 || body[12] > 1 {
				return h, malformed(PNG, "invalid IHDR")
			}
			h.Components = map[byte]int{0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[color]
			first = false
		}
		switch typ {
		case "IDAT":
			idat = true
		case "eXIf":
			if o := exifOrientation(body); o != 0 {
				h.Orientation = o
			}
		case "IEND":
			if !idat {
				return h, malformed(PNG, "no IDAT chunk")
			}
			return h, nil
		}
		pos += 12 + int(n)
	}
}

func validPNGDepth(depth, color byte) bool {
	switch color {
	case 0:
		return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16
	case 3:
		return depth == 1 || depth == 2 || depth == 4 || depth == 8
	case 2, 4, 6:
		return depth == 8 || depth == 16
	}
	return false
}

func printable(s string) string {
	for _, c := range []byte(s) {
		if c < 'A' || c > 'z' {
			return "?"
		}
	}
	return s
}

// sniffName names common non-image content for the error message.
func sniffName(data []byte) string {
	head := data
	if len(head) > 512 {
		head = head[:512]
	}
	lower := bytes.ToLower(bytes.TrimSpace(head))
	switch {
	case bytes.HasPrefix(data, []byte("GIF8")):
		return "it looks like a GIF"
	case bytes.HasPrefix(data, []byte("BM")):
		return "it looks like a BMP"
	case bytes.HasPrefix(data, []byte("RIFF")) && len(data) > 12 && string(data[8:12]) == "WEBP":
		return "it looks like a WebP"
	case bytes.HasPrefix(data, []byte("II*\x00")) || bytes.HasPrefix(data, []byte("MM\x00*")):
		return "it looks like a TIFF"
	case bytes.HasPrefix(data, []byte("%PDF")):
		return "it looks like a PDF"
	case bytes.Contains(lower, []byte("<svg")):
		return "it looks like an SVG"
	case bytes.HasPrefix(lower, []byte("<!doctype html")) || bytes.HasPrefix(lower, []byte("<html")):
		return "it looks like HTML"
	case len(data) > 8 && string(data[4:8]) == "ftyp":
		return "it looks like HEIC, AVIF or a video"
	}
	return "unrecognised content"
}
