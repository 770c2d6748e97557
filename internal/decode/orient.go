package decode

import (
	"encoding/binary"

	"yoloserve/internal/detect"
)

// Upright returns the size of img as a person sees it, after its
// Orientation.
func (img *Image) Upright() detect.Size {
	return Header{Width: img.Width, Height: img.Height, Orientation: img.Orientation}.Upright()
}

// Orient turns img upright the way OpenCV's ApplyExifOrientation does
// (flips and transposes), using img's scratch buffer for the result, and
// sets its Orientation to 1.
func (img *Image) Orient() {
	t, ok := newTurn(img)
	if !ok {
		img.Orientation = 1
		return
	}
	dst := grow(img.scratch, t.ow*t.oh*3)
	t.rows(dst, 0, t.oh)
	img.scratch, img.Pix = img.Pix, dst
	img.Width, img.Height, img.Orientation = t.ow, t.oh, 1
}

// UprightRows writes rows y to y+n-1 of img as a person sees it (after its
// Orientation) into dst, resized as needed, and returns dst: n rows of
// Upright().Width RGB pixels. It reads only the stored pixels those rows
// come from, so that a caller working down the image a few rows at a time
// turns it without writing the whole of it again. y and n must lie within
// the upright image.
func (img *Image) UprightRows(y, n int, dst []byte) []byte {
	t, ok := newTurn(img)
	if !ok {
		pitch := img.Width * 3
		return append(dst[:0], img.Pix[y*pitch:(y+n)*pitch]...)
	}
	dst = grow(dst, n*t.ow*3)
	t.rows(dst, y, y+n)
	return dst
}

// turn maps the rows of an upright image to the stored pixels they come
// from: for upright row y, the source pixel of column x is at byte
// base + y*dy + x*step. Each EXIF orientation is a flip or a transpose.
type turn struct {
	src            []byte
	ow, oh         int // the upright size
	base, dy, step int
}

// newTurn returns img's turn, or false when img is upright.
func newTurn(img *Image) (turn, bool) {
	o, w, h := img.Orientation, img.Width, img.Height
	if o <= 1 || o > 8 {
		return turn{}, false
	}
	t := turn{src: img.Pix, ow: w, oh: h}
	if o >= 5 {
		t.ow, t.oh = h, w
	}
	last, bottom := 3*(w-1), 3*(h-1)*w // the last pixel of row 0, the first of the last row
	switch o {
	case 2: // flip horizontally
		t.base, t.dy, t.step = last, 3*w, -3
	case 3: // rotate 180
		t.base, t.dy, t.step = bottom+last, -3*w, -3
	case 4: // flip vertically
		t.base, t.dy, t.step = bottom, -3*w, 3
	case 5: // transpose
		t.base, t.dy, t.step = 0, 3, 3*w
	case 6: // transpose, flip horizontally: 90° clockwise
		t.base, t.dy, t.step = bottom, 3, -3*w
	case 7: // flip both, transpose
		t.base, t.dy, t.step = bottom+last, -3, -3*w
	case 8: // transpose, flip vertically: 90° counter-clockwise
		t.base, t.dy, t.step = last, -3, 3*w
	}
	return t, true
}

// first returns the byte of the stored pixel that upright row y starts at.
func (t turn) first(y int) int { return t.base + y*t.dy }

// rows writes upright rows y0 to y1-1 into dst, which holds them from
// its start. A flip reads each row's source row in order. A transpose reads
// a source column for each upright row, so it goes eight rows at a time:
// their pixels of column x lie side by side in one source row, which it
// reads 24 bytes at a time along the rows (see transpose8). On bus.jpg's
// size this turns 90° in 0.14 ms with AVX2 and 0.40 ms with the Go loop,
// against 1.15–1.33 ms a row at a time in 64-pixel tiles.
func (t turn) rows(dst []byte, y0, y1 int) {
	pitch := t.ow * 3
	y := y0
	if t.step != 3 && t.step != -3 {
		// In orientations 7 and 8 row y+1 reads the pixel left of row y's.
		reversed := t.dy < 0
		for ; y+8 <= y1; y += 8 {
			base := t.first(y)
			if reversed {
				base = t.first(y + 7)
			}
			at := (y - y0) * pitch
			transpose8(dst[at:at+8*pitch], t.src, t.ow, base, t.step, reversed)
		}
	}
	for ; y < y1; y++ {
		at := (y - y0) * pitch
		t.row(dst[at:at+pitch], y)
	}
}

// row writes upright row y into dst. A pixel moves as one 4-byte word
// whose last byte the next pixel overwrites; the row's last pixel moves
// byte by byte, as its word would reach past the row (or the image).
func (t turn) row(dst []byte, y int) {
	src, step := t.src, t.step
	s, x := t.first(y), 0
	for ; x+3 < len(dst) && s+3 < len(src); x, s = x+3, s+step {
		binary.LittleEndian.PutUint32(dst[x:x+4], binary.LittleEndian.Uint32(src[s:s+4]))
	}
	for ; x < len(dst); x, s = x+3, s+step {
		dst[x], dst[x+1], dst[x+2] = src[s], src[s+1], src[s+2]
	}
}

// transpose8 writes eight upright rows of a transpose, dst (ow pixels
// each), from src: the eight pixels of column x lie side by side in a
// source row, at base + x*step, in row order, or in reverse order when
// reversed. Where the CPU has AVX2, the columns whose loads and stores
// stay inside src and the rows go eight at a time (transpose8SIMD); the
// others move as 4-byte words whose last byte the next column's
// overwrites, and the last column byte by byte.
func transpose8(dst, src []byte, ow, base, step int, reversed bool) {
	pitch := ow * 3
	first, rowStep := 0, pitch // where row 0 starts in dst, and row k+1 after row k
	if reversed {
		first, rowStep = 7*pitch, -pitch
	}
	x0, x1 := simdColumns(len(src), ow, base, step)
	transpose8Words(dst, src, first, rowStep, base, step, 0, x0)
	if x1 > x0 {
		transpose8SIMD(dst, first+3*x0, rowStep, src, base+x0*step, step, (x1-x0)/8)
	}
	transpose8Words(dst, src, first, rowStep, base, step, x1, ow-1)
	p := src[base+(ow-1)*step:][:24]
	for k := range 8 {
		at := first + k*rowStep + pitch - 3
		copy(dst[at:at+3], p[3*k:3*k+3])
	}
}

// simdColumns returns the columns [x0, x1) of a transpose8 that its AVX2
// code moves, a multiple of eight (none without AVX2): those whose 32-byte
// loads at base + x*step stay inside src's n bytes, in blocks of eight
// whose 32-byte stores of 24 bytes end before the row's last column, so
// that their last eight bytes land on columns still to be written.
func simdColumns(n, ow, base, step int) (x0, x1 int) {
	if !useAVX2 || ow < 16 {
		return 0, 0
	}
	lastCol := ow - 2            // the last column is moved byte by byte
	lastStart := (3*ow - 35) / 3 // a block starting here stores up to 3*(ow-1)
	if step < 0 {                // loads at base + x*step + 32 <= n
		if over := base + 32 - n; over > 0 {
			x0 = (over - step - 1) / -step
		}
	} else {
		lastCol = min(lastCol, (n-32-base)/step)
	}
	blocks := min((lastStart-x0)/8+1, (lastCol-x0+1)/8)
	if lastStart < x0 || blocks <= 0 {
		return 0, 0
	}
	return x0, x0 + 8*blocks
}

// transpose8Words moves columns [x0, x1) of a transpose8, each pixel as a
// 4-byte word whose last byte the next column's overwrites: x1 must be
// short of the last column, and the 24 bytes at each column's source
// inside src.
func transpose8Words(dst, src []byte, first, rowStep, base, step, x0, x1 int) {
	if x1 <= x0 {
		return
	}
	row := func(k int) []byte { return dst[first+k*rowStep:] }
	r0, r1, r2, r3 := row(0), row(1), row(2), row(3)
	r4, r5, r6, r7 := row(4), row(5), row(6), row(7)
	le := binary.LittleEndian
	s := base + x0*step
	for o := 3 * x0; o < 3*x1; o, s = o+3, s+step {
		p := src[s : s+24 : s+24]
		a, b, c := le.Uint64(p), le.Uint64(p[8:]), le.Uint64(p[16:])
		le.PutUint32(r0[o:o+4], uint32(a))
		le.PutUint32(r1[o:o+4], uint32(a>>24))
		le.PutUint32(r2[o:o+4], uint32(a>>48|b<<16))
		le.PutUint32(r3[o:o+4], uint32(b>>8))
		le.PutUint32(r4[o:o+4], uint32(b>>32))
		le.PutUint32(r5[o:o+4], uint32(b>>56|c<<8))
		le.PutUint32(r6[o:o+4], uint32(c>>16))
		le.PutUint32(r7[o:o+4], uint32(c>>40))
	}
}

// grow returns b resized to n bytes, reusing its storage when it can.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}
