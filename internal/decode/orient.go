package decode

import (
	"encoding/binary"
	"runtime"
	"sync"
)

// orient applies an EXIF orientation to img the way OpenCV's
// ApplyExifOrientation does (flips and transposes), using img's scratch
// buffer for the result. With need, only the output rows y with need[y]
// are written.
func orient(img *Image, o int, need []bool) {
	if o <= 1 || o > 8 {
		return
	}
	w, h := img.Width, img.Height
	ow, oh := w, h
	if o >= 5 {
		ow, oh = h, w
	}
	dst := grow(img.scratch, ow*oh*3)
	src := img.Pix
	// For output row y the source pixel of column x is at
	// first(y) + x*step (bytes); each orientation is a flip or transpose.
	var first func(y int) int
	var step int
	switch o {
	case 2: // flip horizontally
		first, step = func(y int) int { return (y*w + w - 1) * 3 }, -3
	case 3: // rotate 180
		first, step = func(y int) int { return ((h-1-y)*w + w - 1) * 3 }, -3
	case 4: // flip vertically
		first, step = func(y int) int { return (h - 1 - y) * w * 3 }, 3
	case 5: // transpose
		first, step = func(y int) int { return y * 3 }, 3*w
	case 6: // transpose, flip horizontally: 90° clockwise
		first, step = func(y int) int { return ((h-1)*w + y) * 3 }, -3*w
	case 7: // flip both, transpose
		first, step = func(y int) int { return ((h-1)*w + w - 1 - y) * 3 }, -3*w
	case 8: // transpose, flip vertically: 90° counter-clockwise
		first, step = func(y int) int { return (w - 1 - y) * 3 }, 3*w
	}
	// span copies output row y's columns x0 to x1. A pixel moves as one
	// 4-byte word whose last byte the next pixel overwrites: a span must
	// therefore come before the one to its right in the same row. The
	// row's last pixel moves byte by byte, as its word would reach past the
	// row (or the image).
	span := func(y, x0, x1 int) {
		row := dst[y*ow*3 : (y+1)*ow*3]
		s := first(y) + x0*step
		x, end := x0*3, x1*3
		for ; x < end && x+3 < len(row) && s+3 < len(src); x, s = x+3, s+step {
			binary.LittleEndian.PutUint32(row[x:x+4], binary.LittleEndian.Uint32(src[s:s+4]))
		}
		for ; x < end; x, s = x+3, s+step {
			row[x], row[x+1], row[x+2] = src[s], src[s+1], src[s+2]
		}
	}
	copyRows := func(y0, y1 int) {
		if o < 5 {
			// A flip reads each source row in order.
			for y := y0; y < y1; y++ {
				if need == nil || need[y] {
					span(y, 0, ow)
				}
			}
			return
		}
		// A transpose reads a source column for each output row: it goes
		// tile by tile, so that the source rows a tile reads stay in
		// cache from one output row to the next (a 12 MP photo turned 90°
		// in 20–21 ms on one core, against 25–30 ms row by row).
		for ty := y0; ty < y1; ty += orientTile {
			for tx := 0; tx < ow; tx += orientTile {
				for y := ty; y < min(ty+orientTile, y1); y++ {
					if need == nil || need[y] {
						span(y, tx, min(tx+orientTile, ow))
					}
				}
			}
		}
	}
	// A large image is turned in two bands at once.
	if ow*oh < 200_000 || runtime.GOMAXPROCS(0) < 2 {
		copyRows(0, oh)
	} else {
		var wg sync.WaitGroup
		mid := oh / 2
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyRows(0, mid)
		}()
		copyRows(mid, oh)
		wg.Wait()
	}
	img.scratch, img.Pix = img.Pix, dst
	img.Width, img.Height = ow, oh
}

// orientTile is the side, in pixels, of the tiles a transpose moves
// one at a time.
const orientTile = 64

// grow returns b resized to n bytes, reusing its storage when it can.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}
