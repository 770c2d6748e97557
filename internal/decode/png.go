package decode

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
)

// GoPNG decodes PNGs with Go's image/png into RGB the way OpenCV's
// IMREAD_COLOR does: 16-bit samples keep their high byte (libpng's
// strip_16), gray is replicated, palettes are expanded and alpha is
// dropped without compositing. Its pixels are libpng's, bit for bit; it is
// the fallback when libpng is not installed, and takes about twice
// libpng's time.
type GoPNG struct{}

// Name implements PNGDecoder.
func (GoPNG) Name() string { return "go-image/png" }

// DecodePNG implements PNGDecoder.
func (GoPNG) DecodePNG(data []byte, _ Header, dst []byte) ([]byte, error) {
	m, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return dst, err
	}
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	dst = grow(dst, w*h*3)
	switch m := m.(type) {
	case *image.RGBA:
		copyRGB(dst, m.Pix, m.Stride, w, h, 4, 1)
	case *image.NRGBA:
		copyRGB(dst, m.Pix, m.Stride, w, h, 4, 1)
	case *image.RGBA64:
		copyRGB(dst, m.Pix, m.Stride, w, h, 8, 2)
	case *image.NRGBA64:
		copyRGB(dst, m.Pix, m.Stride, w, h, 8, 2)
	case *image.Gray:
		copyGray(dst, m.Pix, m.Stride, w, h, 1)
	case *image.Gray16:
		copyGray(dst, m.Pix, m.Stride, w, h, 2)
	case *image.Paletted:
		lut := make([][3]byte, 256)
		for i, c := range m.Palette {
			r, g, b, a := c.RGBA()
			if a != 0 && a != 0xffff { // un-premultiply to the stored values
				r, g, b = r*0xffff/a, g*0xffff/a, b*0xffff/a
			}
			lut[i] = [3]byte{byte(r >> 8), byte(g >> 8), byte(b >> 8)}
		}
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			out := dst[y*w*3:]
			for x, p := range row {
				copy(out[x*3:x*3+3], lut[p][:])
			}
		}
	default:
		return dst, fmt.Errorf("unexpected PNG layout %T", m)
	}
	return dst, nil
}

// copyRGB copies the first three channels of each pixel, taking the high
// byte of 16-bit samples (sample is 1 or 2 bytes; px is bytes per pixel).
func copyRGB(dst, src []byte, stride, w, h, px, sample int) {
	for y := 0; y < h; y++ {
		row := src[y*stride:]
		out := dst[y*w*3:]
		for x := 0; x < w; x++ {
			p := row[x*px:]
			out[x*3] = p[0]
			out[x*3+1] = p[sample]
			out[x*3+2] = p[2*sample]
		}
	}
}

func copyGray(dst, src []byte, stride, w, h, sample int) {
	for y := 0; y < h; y++ {
		row := src[y*stride:]
		out := dst[y*w*3:]
		for x := 0; x < w; x++ {
			v := row[x*sample]
			out[x*3], out[x*3+1], out[x*3+2] = v, v, v
		}
	}
}
