package decode

import (
	"bytes"
	"fmt"
	"testing"
)

// TestOrientPixelMap turns images whose sizes cross the transpose's blocks
// of eight rows and eight columns unevenly, whole and a few rows at a
// time, with the AVX2 code where the CPU has it and with the Go loop, and
// checks every pixel against the orientation's mapping of coordinates.
func TestOrientPixelMap(t *testing.T) {
	avx2 := useAVX2
	t.Cleanup(func() { useAVX2 = avx2 })
	for _, loops := range []string{"avx2", "go"} {
		if loops == "avx2" && !avx2 {
			continue
		}
		useAVX2 = loops == "avx2"
		t.Run(loops, testOrientPixelMap)
	}
}

func testOrientPixelMap(t *testing.T) {
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
	for _, size := range [][2]int{{1, 1}, {64, 64}, {97, 45}, {700, 333}, {8, 9}, {13, 8}, {16, 17}, {29, 26}} {
		w, h := size[0], size[1]
		for o := 1; o <= 8; o++ {
			stored := func() *Image {
				img := &Image{Width: w, Height: h, Orientation: o, Pix: make([]byte, w*h*3)}
				for i := 0; i < w*h; i++ {
					img.Pix[3*i], img.Pix[3*i+1], img.Pix[3*i+2] = byte(i), byte(i>>8), byte(i>>16)
				}
				return img
			}
			uw, uh := w, h
			if o >= 5 {
				uw, uh = h, w
			}
			// check compares rows y0 to y0+n-1 of the upright image with
			// rows, which holds them.
			check := func(t *testing.T, rows []byte, y0, n int) {
				t.Helper()
				if len(rows) != n*uw*3 {
					t.Fatalf("rows %d to %d: %d bytes, want %d", y0, y0+n-1, len(rows), n*uw*3)
				}
				for y := y0; y < y0+n; y++ {
					for x := 0; x < uw; x++ {
						sx, sy := source(o, x, y, w, h)
						i := sy*w + sx
						want := [3]byte{byte(i), byte(i >> 8), byte(i >> 16)}
						p := ((y-y0)*uw + x) * 3
						if got := [3]byte(rows[p : p+3]); got != want {
							t.Fatalf("pixel (%d, %d) is %v, want %v (stored pixel (%d, %d))", x, y, got, want, sx, sy)
						}
					}
				}
			}
			t.Run(fmt.Sprintf("%dx%d/%d/whole", w, h, o), func(t *testing.T) {
				img := stored()
				img.scratch = bytes.Repeat([]byte{0xee}, w*h*3)
				if up := img.Upright(); up.Width != uw || up.Height != uh {
					t.Fatalf("upright size %dx%d, want %dx%d", up.Width, up.Height, uw, uh)
				}
				img.Orient()
				if img.Width != uw || img.Height != uh || img.Orientation != 1 {
					t.Fatalf("turned to %dx%d, orientation %d; want %dx%d, 1", img.Width, img.Height, img.Orientation, uw, uh)
				}
				check(t, img.Pix, 0, uh)
			})
			// Rows asked for in runs of every length up to two blocks of
			// eight and beyond, from every offset, into a buffer that
			// held other pixels.
			t.Run(fmt.Sprintf("%dx%d/%d/rows", w, h, o), func(t *testing.T) {
				img := stored()
				buf := bytes.Repeat([]byte{0xee}, 20*uw*3)
				for n := 1; n <= 17; n++ {
					for y := 0; y+n <= uh; y += max(1, uh/7) {
						buf = img.UprightRows(y, n, buf)
						check(t, buf, y, n)
					}
				}
				if img.Width != w || img.Height != h || img.Orientation != o {
					t.Fatalf("UprightRows changed the image to %dx%d, orientation %d", img.Width, img.Height, img.Orientation)
				}
			})
		}
	}
}

// BenchmarkOrient turns a photo of bus.jpg's size and a 12 MP one whole,
// with the AVX2 code where the CPU has it and with the Go loop.
func BenchmarkOrient(b *testing.B) {
	avx2 := useAVX2
	b.Cleanup(func() { useAVX2 = avx2 })
	for _, size := range [][2]int{{1080, 810}, {4032, 3024}} {
		for _, o := range []int{3, 6} {
			for _, loops := range []string{"avx2", "go"} {
				if loops == "avx2" && !avx2 {
					continue
				}
				name := fmt.Sprintf("%s/%dx%d/%s", map[int]string{3: "rotate180", 6: "rotate90"}[o], size[0], size[1], loops)
				b.Run(name, func(b *testing.B) {
					useAVX2 = loops == "avx2"
					img := &Image{Width: size[0], Height: size[1], Pix: make([]byte, size[0]*size[1]*3)}
					for b.Loop() {
						img.Width, img.Height, img.Orientation = size[0], size[1], o
						img.Orient()
					}
				})
			}
		}
	}
}
