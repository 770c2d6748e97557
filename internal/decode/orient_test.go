package decode

import (
	"bytes"
	"fmt"
	"testing"
)

// TestOrientPixelMap turns images whose sizes cross the transpose's tiles
// unevenly, one of them large enough to be turned in two bands, and checks
// every pixel against the orientation's mapping of coordinates.
func TestOrientPixelMap(t *testing.T) {
	// source returns the stored pixel that upright pixel (x, y) comes
	// from, for a stored image w wide and h high.
	source := func(o, x, y, w, h int) (int, int) {
		switch o {
		case 2:
			return w - 1 - x, y
		case 3:
			return w - 1 - x, h - 1 - y
		case 4:
			return x, h - 1 - y
		case 5:
			return y, x
		case 6:
			return y, h - 1 - x
		case 7:
			return w - 1 - y, h - 1 - x
		case 8:
			return w - 1 - y, x
		}
		return x, y
	}
	for _, size := range [][2]int{{1, 1}, {64, 64}, {97, 45}, {700, 333}} {
		w, h := size[0], size[1]
		for o := 1; o <= 8; o++ {
			for _, some := range []bool{false, true} {
				name := fmt.Sprintf("%dx%d/%d", w, h, o)
				if some {
					name += "/some rows"
				}
				t.Run(name, func(t *testing.T) {
					uw, uh := w, h
					if o >= 5 {
						uw, uh = h, w
					}
					// Asked for some rows, orient writes those and leaves
					// the others as the buffer held them.
					var need []bool
					if some {
						need = make([]bool, uh)
						for y := range need {
							need[y] = y%3 != 1
						}
					}
					img := &Image{Width: w, Height: h, Pix: make([]byte, w*h*3), scratch: bytes.Repeat([]byte{0xee}, w*h*3)}
					for i := 0; i < w*h; i++ {
						img.Pix[3*i], img.Pix[3*i+1], img.Pix[3*i+2] = byte(i), byte(i>>8), byte(i>>16)
					}
					orient(img, o, need)
					if img.Width != uw || img.Height != uh {
						t.Fatalf("turned to %dx%d, want %dx%d", img.Width, img.Height, uw, uh)
					}
					for y := 0; y < uh; y++ {
						for x := 0; x < uw; x++ {
							sx, sy := source(o, x, y, w, h)
							i := sy*w + sx
							want := [3]byte{byte(i), byte(i >> 8), byte(i >> 16)}
							if o > 1 && need != nil && !need[y] {
								want = [3]byte{0xee, 0xee, 0xee}
							}
							p := (y*uw + x) * 3
							if got := [3]byte(img.Pix[p : p+3]); got != want {
								t.Fatalf("pixel (%d, %d) is %v, want %v (stored pixel (%d, %d), row asked for: %v)", x, y, got, want, sx, sy, need == nil || need[y])
							}
						}
					}
				})
			}
		}
	}
}

func BenchmarkOrient(b *testing.B) {
	for _, size := range [][2]int{{1080, 810}, {4032, 3024}} {
		for _, o := range []int{3, 6} {
			name := fmt.Sprintf("%s/%dx%d", map[int]string{3: "rotate180", 6: "rotate90"}[o], size[0], size[1])
			b.Run(name, func(b *testing.B) {
				img := &Image{Width: size[0], Height: size[1], Pix: make([]byte, size[0]*size[1]*3)}
				for b.Loop() {
					orient(img, o, nil)
				}
			})
		}
	}
}
