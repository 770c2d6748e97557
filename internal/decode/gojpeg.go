package decode

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
)

// GoJPEG decodes JPEGs with Go's image/jpeg. It is the fallback when
// libjpeg-turbo is not installed: its chroma upsampling and IDCT differ
// from libjpeg's, which moves confidences by up to a few hundredths on small
// images.
type GoJPEG struct{}

// Name implements JPEGDecoder.
func (GoJPEG) Name() string { return "go-image/jpeg" }

// DecodeJPEG implements JPEGDecoder.
func (GoJPEG) DecodeJPEG(data []byte, h Header, dst []byte) ([]byte, error) {
	m, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return dst, err
	}
	b := m.Bounds()
	w, ht := b.Dx(), b.Dy()
	dst = grow(dst, w*ht*3)
	switch m := m.(type) {
	case *image.Gray:
		copyGray(dst, m.Pix, m.Stride, w, ht, 1)
	case *image.YCbCr:
		for y := 0; y < ht; y++ {
			for x := 0; x < w; x++ {
				yi, ci := m.YOffset(x+b.Min.X, y+b.Min.Y), m.COffset(x+b.Min.X, y+b.Min.Y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				o := (y*w + x) * 3
				dst[o], dst[o+1], dst[o+2] = r, g, bl
			}
		}
	case *image.CMYK:
		// Go has already undone Adobe's inversion; redo it so that the
		// OpenCV formula sees what libjpeg would have returned.
		inv := make([]byte, len(m.Pix))
		for i, v := range m.Pix {
			inv[i] = 255 - v
		}
		for y := 0; y < ht; y++ {
			CMYKToRGB(inv[y*m.Stride:y*m.Stride+w*4], dst[y*w*3:])
		}
	default:
		return dst, fmt.Errorf("unexpected JPEG layout %T", m)
	}
	return dst, nil
}
