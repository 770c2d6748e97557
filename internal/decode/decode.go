package decode

import (
	"fmt"

	"yoloserve/internal/detect"
)

// Image is an 8-bit RGB image, three bytes a pixel, rows packed, as stored
// in its file: Width and Height are the stored size, and Orientation the
// EXIF orientation that turns it upright (1 when it is; Upright, Orient and
// UprightRows apply it).
type Image struct {
	Width, Height int
	Orientation   int
	Pix           []byte
	scratch       []byte   // reused by Orient
	strips        [][]byte // reused by decodeStrips
}

// JPEGDecoder decodes a JPEG into RGB pixels.
type JPEGDecoder interface {
	// DecodeJPEG decodes data, whose header h has been inspected, into
	// dst (resized as needed) as h.Width×h.Height RGB pixels, converting
	// gray and CMYK/YCCK the way OpenCV's IMREAD_COLOR does. It returns the
	// pixels, or an error when the data cannot be decoded.
	DecodeJPEG(data []byte, h Header, dst []byte) ([]byte, error)
	// Name says which implementation this is, for logs and benchmarks.
	Name() string
}

// PNGDecoder decodes a PNG into RGB pixels.
type PNGDecoder interface {
	// DecodePNG decodes data, whose header h has been inspected, into dst
	// (resized as needed) as h.Width×h.Height RGB pixels, converted the
	// way OpenCV's IMREAD_COLOR does (see GoPNG). It returns the pixels,
	// or an error when the data cannot be decoded.
	DecodePNG(data []byte, h Header, dst []byte) ([]byte, error)
	// Name says which implementation this is, for logs and benchmarks.
	Name() string
}

// Decoder turns image bytes into upright RGB pixels.
type Decoder struct {
	JPEG      JPEGDecoder // nil means Go's image/jpeg
	PNG       PNGDecoder  // nil means Go's image/png
	MaxPixels int         // 0 means DefaultMaxPixels; negative means no limit
}

// Decode inspects data, decodes it into img (reusing img's buffers) and
// turns it upright. It returns the header it read, and an EUNSUPPORTED or
// ETOOLARGE *Error for an image the service cannot take.
func (d *Decoder) Decode(data []byte, img *Image) (Header, error) {
	h, err := d.DecodeStored(data, img, 1)
	if err == nil {
		img.Orient()
	}
	return h, err
}

// DecodeStored is Decode without the turn: img holds the pixels as stored,
// with the header's Orientation, for a caller that reads its upright rows
// as it goes (UprightRows) instead of writing the whole image again. A JPEG
// with restart markers is decoded in strips on up to cores goroutines (see
// splitJPEG), with the same pixels. Errors are those of Decode.
func (d *Decoder) DecodeStored(data []byte, img *Image, cores int) (Header, error) {
	max := d.MaxPixels
	if max == 0 {
		max = DefaultMaxPixels
	}
	h, err := Inspect(data, max)
	if err != nil {
		return h, err
	}
	switch h.Format {
	case JPEG:
		dec := d.JPEG
		if dec == nil {
			dec = GoJPEG{}
		}
		if !decodeStrips(dec, data, h, cores, img) {
			img.Pix, err = dec.DecodeJPEG(data, h, img.Pix)
		}
	case PNG:
		dec := d.PNG
		if dec == nil {
			dec = GoPNG{}
		}
		img.Pix, err = dec.DecodePNG(data, h, img.Pix)
	}
	if err != nil {
		return h, detect.Errorf(detect.EUNSUPPORTED, "The %s image could not be decoded: %s.", h.Format, trimErr(err))
	}
	if len(img.Pix) != h.Width*h.Height*3 {
		return h, fmt.Errorf("decode: %s decoder returned %d bytes for %d×%d", h.Format, len(img.Pix), h.Width, h.Height)
	}
	img.Width, img.Height, img.Orientation = h.Width, h.Height, h.Orientation
	return h, nil
}

// CMYKToRGB converts 4-channel pixels as libjpeg stores them (Adobe's
// inverted CMYK) to RGB with OpenCV's icvCvt_CMYK2BGR formula.
func CMYKToRGB(cmyk, dst []byte) {
	for i, j := 0, 0; i+3 < len(cmyk); i, j = i+4, j+3 {
		c, m, y, k := int(cmyk[i]), int(cmyk[i+1]), int(cmyk[i+2]), int(cmyk[i+3])
		dst[j] = byte(k - ((255 - c) * k >> 8))
		dst[j+1] = byte(k - ((255 - m) * k >> 8))
		dst[j+2] = byte(k - ((255 - y) * k >> 8))
	}
}

func trimErr(err error) string {
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	for len(s) > 0 && (s[len(s)-1] == '.' || s[len(s)-1] == '\n') {
		s = s[:len(s)-1]
	}
	return s
}
