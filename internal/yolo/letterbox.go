package yolo

import (
	"math"
	"runtime"
	"sync"

	"yoloserve/internal/decode"
)

// padValue is the letterbox border, as Ultralytics' LetterBox fills it.
const padValue = 114

// Letterbox is the geometry of Ultralytics' LetterBox(auto=False,
// scaleup=True, center=True) from an image to the model's input.
type Letterbox struct {
	SrcW, SrcH int     // the upright image
	NewW, NewH int     // the resized image inside the input
	Left, Top  int     // padding before it
	DstW, DstH int     // the model input
	Gain       float64 // min(DstH/SrcH, DstW/SrcW)
}

// NewLetterbox computes the geometry the way LetterBox does: Python's
// round (half to even) for the new size, round(d ∓ 0.1) for the padding.
func NewLetterbox(srcW, srcH, dstW, dstH int) Letterbox {
	r := math.Min(float64(dstH)/float64(srcH), float64(dstW)/float64(srcW))
	lb := Letterbox{SrcW: srcW, SrcH: srcH, DstW: dstW, DstH: dstH, Gain: r}
	lb.NewW = int(math.RoundToEven(float64(srcW) * r))
	lb.NewH = int(math.RoundToEven(float64(srcH) * r))
	lb.NewW, lb.NewH = max(1, min(lb.NewW, dstW)), max(1, min(lb.NewH, dstH))
	dw, dh := float64(dstW-lb.NewW)/2, float64(dstH-lb.NewH)/2
	lb.Left = int(math.RoundToEven(dw - 0.1))
	lb.Top = int(math.RoundToEven(dh - 0.1))
	return lb
}

// samePadding reports whether lb and o pad the same parts of the same
// input, so that an image letterboxed as o leaves lb's padding as it is.
func (lb Letterbox) samePadding(o Letterbox) bool {
	return lb.DstW == o.DstW && lb.DstH == o.DstH && lb.NewW == o.NewW &&
		lb.NewH == o.NewH && lb.Left == o.Left && lb.Top == o.Top
}

// resizer holds the coefficient tables and row buffers of one resize,
// reused from image to image.
type resizer struct {
	xofs  []int32
	xo0   []int32 // byte offset of each column's left tap
	xo1   []int32 // and of its right tap (the same at the border)
	inner int     // the first columns, whose right tap follows the left
	wide  int     // the first inner columns, whose taps the vector loop may read as dwords
	// perm holds, for each block of eight of the wide columns whose 64
	// bytes from the first tap lie in the row, the bytes of their taps'
	// dwords within those 64, for the AVX-512 loop (hrowSIMD); empty where
	// the blocks span more, as when a large photo is brought down, or
	// without AVX-512.
	perm  []byte
	a0    []int32 // the left tap's coefficient of each column
	a1    []int32 // and the right tap's
	yofs  []int32
	b0    []int32 // the upper tap's coefficient of each row
	b1    []int32 // and the lower tap's
	bands [resizeBands]rowCache
	// cores is how many cores the next resize may take; 0 means
	// GOMAXPROCS. With more than one, a large resize is cut into bands
	// resized in parallel, and the tensor, which the detector pads through
	// beforehand, is written through the caches. With one (an image that
	// is not alone: the other cores are busy, and a band handed to one
	// waits for it), the vertical pass streams its stores past the
	// caches: the tensor is cold after the other images' inferences, and
	// each store would first read its line from memory (bus.jpg's
	// letterbox on a cold tensor on the Xeon of 4 December: 2.25 ms,
	// 1.47 streamed; 0.65 warm either way).
	cores int
}

// resizeBands is how many horizontal bands of the output are resized in
// parallel: the letterbox of a large photo takes a few milliseconds in the
// Go loops (3.0 ms on bus.jpg, 1.8 ms in two bands), worth spreading over
// two cores while they wait for inference. With the AVX2 loops it takes
// about 1.0 ms, 0.9 ms in two bands.
const resizeBands = 2

// rowCache holds the two horizontally resized source rows a band's
// current output row reads, each as three planes (R, G, B), and for an
// image stored turned, the upright rows last turned (upright rows
// turnedY to turnedY+turnedN-1).
type rowCache struct {
	rows   [2][3][]int32
	rowSrc [2]int

	turned           []byte
	turnedY, turnedN int
}

// lut maps a byte to its normalised float32, as im.float() / 255 computes.
var lut = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return
}()

// Fill writes img, turned upright and letterboxed by lb, into dst as
// planar RGB float32 [3, DstH, DstW] scaled to 0–1. The resize reproduces
// OpenCV's cv::resize(INTER_LINEAR) on 8-bit images bit for bit: 11-bit
// fixed-point coefficients with half-pixel centres and the rounding of its
// SIMD vertical pass; an exact 2× reduction is an area average, as OpenCV
// switches to INTER_AREA there. On CPUs with AVX2 the resize's inner loops
// run as vector code (resize_amd64.s), to the same bits; on those with
// AVX-512 VBMI the horizontal pass reads its taps by a byte permute
// instead of gathers.
func (rz *resizer) Fill(img *decode.Image, lb Letterbox, dst []float32) {
	pad(dst, lb)
	rz.fillImage(img, lb, dst)
}

// fillImage is Fill without the padding, for a dst that padAll has
// padded. A resize turns a stored-turned image as it reads its rows
// (resizer.sourceRow); a copy or a 2× reduction turns it first.
func (rz *resizer) fillImage(img *decode.Image, lb Letterbox, dst []float32) {
	if img.Orientation > 1 && (lb.copies() || lb.halves()) {
		img.Orient()
	}
	switch {
	case lb.copies():
		for y := 0; y < lb.NewH; y++ {
			lb.store(dst, y, img.Pix[y*img.Width*3:(y+1)*img.Width*3])
		}
	case lb.halves():
		rz.area2(img, lb, dst)
	default:
		rz.linear(img, lb, dst)
	}
}

// copies reports whether the image goes into the input at its own size.
func (lb Letterbox) copies() bool { return lb.NewW == lb.SrcW && lb.NewH == lb.SrcH }

// halves reports whether the image is brought down exactly 2×, which
// OpenCV averages (INTER_AREA) instead of interpolating.
func (lb Letterbox) halves() bool { return lb.SrcW == 2*lb.NewW && lb.SrcH == 2*lb.NewH }

// pad sets the padding around the resized image in dst.
func pad(dst []float32, lb Letterbox) {
	plane := lb.DstW * lb.DstH
	v := lut[padValue]
	above, below := lb.Top*lb.DstW, (lb.Top+lb.NewH)*lb.DstW
	for c := 0; c < 3; c++ {
		p := dst[c*plane : (c+1)*plane]
		fill(p[:above], v)
		fill(p[below:], v)
		if lb.NewW == lb.DstW {
			continue
		}
		for o := above; o < below; o += lb.DstW {
			fill(p[o:o+lb.Left], v)
			fill(p[o+lb.Left+lb.NewW:o+lb.DstW], v)
		}
	}
}

// padAll sets all of dst to the padding value, for fillImage. A lone
// image's detector runs it on a free core while the image is decoded: the
// tensor is cold by then (an inference goes through far more memory than
// the caches hold), and the letterbox then finds its lines in cache
// instead of reading each from memory before writing it.
func padAll(dst []float32) { fill(dst, lut[padValue]) }

// fill sets every element of p to v, doubling the filled part with copy,
// which runs at memmove's speed.
func fill(p []float32, v float32) {
	if len(p) == 0 {
		return
	}
	p[0] = v
	for n := 1; n < len(p); n *= 2 {
		copy(p[n:], p[:n])
	}
}

// planes returns row y of the resized image in each of dst's planes.
func (lb Letterbox) planes(dst []float32, y int) (r, g, b []float32) {
	plane := lb.DstW * lb.DstH
	o := (lb.Top+y)*lb.DstW + lb.Left
	return dst[o : o+lb.NewW], dst[plane+o : plane+o+lb.NewW], dst[2*plane+o : 2*plane+o+lb.NewW]
}

// store writes one resized RGB row into the planes at row y of the image.
func (lb Letterbox) store(dst []float32, y int, rgb []byte) {
	r, g, b := lb.planes(dst, y)
	for x := storeSIMD(rgb, r, g, b); x < len(r); x++ {
		r[x], g[x], b[x] = lut[rgb[3*x]], lut[rgb[3*x+1]], lut[rgb[3*x+2]]
	}
}

// area2 is OpenCV's fast INTER_AREA for an exact 2× reduction, each 2×2
// block averaged with rounding and written straight into the planes.
func (rz *resizer) area2(img *decode.Image, lb Letterbox, dst []float32) {
	stride := img.Width * 3
	for y := 0; y < lb.NewH; y++ {
		r0 := img.Pix[2*y*stride : (2*y+1)*stride]
		r1 := img.Pix[(2*y+1)*stride : (2*y+2)*stride]
		r, g, b := lb.planes(dst, y)
		for x := area2SIMD(r0, r1, r, g, b); x < len(r); x++ {
			p, q := r0[6*x:6*x+6:6*x+6], r1[6*x:6*x+6:6*x+6]
			r[x] = mean4(p[0], p[3], q[0], q[3])
			g[x] = mean4(p[1], p[4], q[1], q[4])
			b[x] = mean4(p[2], p[5], q[2], q[5])
		}
	}
}

// mean4 is the rounded mean of four bytes, normalised.
func mean4(a, b, c, d byte) float32 {
	return lut[uint8((uint(a)+uint(b)+uint(c)+uint(d)+2)>>2)]
}

const (
	coefBits  = 11 // INTER_RESIZE_COEF_BITS
	coefScale = 1 << coefBits
)

// coefficients fills ofs and the two taps' coefficients c0, c1 for one
// axis the way cv::resize's resizeGeneric computes them (as shorts);
// clamp is true for the horizontal axis, where OpenCV pins out-of-range
// taps to the border.
func coefficients(src, dst int, ofs, c0, c1 []int32, clamp bool) {
	scale := 1 / (float64(dst) / float64(src))
	for d := 0; d < dst; d++ {
		f := float32((float64(d)+0.5)*scale - 0.5)
		s := int(math.Floor(float64(f)))
		f -= float32(s)
		if clamp {
			if s < 0 {
				s, f = 0, 0
			}
			if s >= src-1 {
				s, f = src-1, 0
			}
		}
		ofs[d] = int32(s)
		c0[d] = int32(saturate16(float64(1-f) * coefScale))
		c1[d] = int32(saturate16(float64(f) * coefScale))
	}
}

// tapBytes returns, in perm's memory, the byte indexes a block of eight
// columns of xo0 reads, relative to the block's first tap: 32 for the
// left taps' dwords (bytes o to o+3 of each column), then 32 for the right
// taps' (o+3 to o+6). It stops before the first block whose 64 bytes from
// its first tap would pass the end of a row of rowLen bytes, and returns
// none when a block spans 64 bytes or more, more than one AVX-512 permute
// reaches.
func tapBytes(perm []byte, xo0 []int32, rowLen int) []byte {
	blocks := len(xo0) / 8
	for blocks > 0 && int(xo0[8*(blocks-1)])+64 > rowLen {
		blocks--
	}
	perm = grow(perm, 64*blocks)
	for b := range blocks {
		cols, p := xo0[8*b:8*b+8], perm[64*b:64*b+64]
		if cols[7]-cols[0]+6 >= 64 {
			return perm[:0]
		}
		for j, o := range cols {
			for t := range 4 {
				p[4*j+t] = byte(o - cols[0] + int32(t))
				p[32+4*j+t] = byte(o - cols[0] + 3 + int32(t))
			}
		}
	}
	return perm
}

// saturate16 is OpenCV's saturate_cast<short>: round half to even, clamp.
func saturate16(v float64) int16 {
	r := math.RoundToEven(v)
	return int16(max(math.MinInt16, min(math.MaxInt16, r)))
}

// grow returns b resized to n elements, reusing its storage when it can.
func grow[T any](b []T, n int) []T {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]T, n)
}

// linear is cv::resize(INTER_LINEAR) for 8-bit, 3-channel images, fused
// with the conversion to normalised planes.
func (rz *resizer) linear(img *decode.Image, lb Letterbox, dst []float32) {
	sw, sh, dw, dh := lb.SrcW, lb.SrcH, lb.NewW, lb.NewH
	rz.xofs, rz.a0, rz.a1 = grow(rz.xofs, dw), grow(rz.a0, dw), grow(rz.a1, dw)
	rz.yofs, rz.b0, rz.b1 = grow(rz.yofs, dh), grow(rz.b0, dh), grow(rz.b1, dh)
	coefficients(sw, dw, rz.xofs, rz.a0, rz.a1, true)
	coefficients(sh, dh, rz.yofs, rz.b0, rz.b1, false)
	rz.xo0, rz.xo1 = grow(rz.xo0, dw), grow(rz.xo1, dw)
	rz.inner, rz.wide = 0, 0
	for x, sx := range rz.xofs {
		rz.xo0[x], rz.xo1[x] = 3*sx, 3*min(sx+1, int32(sw-1))
		if rz.xo1[x] == rz.xo0[x]+3 && rz.inner == x {
			rz.inner = x + 1
			// The vector loop reads a dword at each tap: up to o+6.
			if int(rz.xo0[x])+7 <= 3*sw {
				rz.wide = x + 1
			}
		}
	}
	rz.perm = rz.perm[:0]
	if useVBMI {
		rz.perm = tapBytes(rz.perm, rz.xo0[:rz.wide], 3*sw)
	}
	// OpenCV's vertical pass runs over the interleaved row 16 bytes at a
	// time, then 8 while more than 8 remain, then one at a time; the
	// vector lanes round differently from the scalar tail. In plane c,
	// the pixels x with 3x+c below vec took the vector lanes.
	width := dw * 3
	vec := width / 16 * 16
	if width-vec > 8 {
		vec += 8
	}
	var vecPix [3]int
	for c := range vecPix {
		if vec > c {
			vecPix[c] = (vec-c-1)/3 + 1
		}
	}
	bands, cores := 1, rz.cores
	if cores == 0 {
		cores = runtime.GOMAXPROCS(0)
	}
	if dw*dh >= 100_000 && cores > 1 {
		bands = resizeBands
	}
	stream := cores == 1
	var wg sync.WaitGroup
	for b := 0; b < bands; b++ {
		c := &rz.bands[b]
		for k := range c.rows {
			for p := range c.rows[k] {
				c.rows[k][p] = grow(c.rows[k][p], dw)
			}
			c.rowSrc[k] = -1
		}
		c.turnedN = 0
		y0, y1 := dh*b/bands, dh*(b+1)/bands
		wg.Add(1)
		go func() {
			defer wg.Done()
			rz.vertical(img, lb, dst, c, y0, y1, vecPix, stream)
		}()
	}
	wg.Wait()
}

// vertical computes output rows y0 to y1 from the horizontally resized
// source rows and writes them as normalised planes, with stream past the
// caches.
func (rz *resizer) vertical(img *decode.Image, lb Letterbox, dst []float32, c *rowCache, y0, y1 int, vecPix [3]int, stream bool) {
	dw, sh := lb.NewW, lb.SrcH
	plane := lb.DstW * lb.DstH
	if stream {
		defer sfence()
	}
	for y := y0; y < y1; y++ {
		sy := int(rz.yofs[y])
		r0 := rz.hrow(img, lb, c, min(max(sy, 0), sh-1))
		r1 := rz.hrow(img, lb, c, min(max(sy+1, 0), sh-1))
		b0, b1 := rz.b0[y], rz.b1[y]
		o := (lb.Top+y)*lb.DstW + lb.Left
		for p := range 3 {
			out := dst[p*plane+o : p*plane+o+dw]
			n := vecPix[p]
			v := blendVectorSIMD(out[:n], r0[p][:n], r1[p][:n], b0, b1, stream)
			blendVector(out[v:n], r0[p][v:n], r1[p][v:n], b0, b1)
			blendScalar(out[n:], r0[p][n:dw], r1[p][n:dw], b0, b1)
		}
	}
}

// blendVector is the vertical blend of OpenCV's vector lanes: each row
// scaled down by 16, multiplied by its weight keeping the high 16 bits,
// summed and rounded off by 2 bits. The weights sum to 2048, so each value
// stays within 0–255 and its uint8 is itself (which spares the table's
// bounds check).
func blendVector(out []float32, a, b []int32, b0, b1 int32) {
	b, out = b[:len(a)], out[:len(a)]
	for x, v := range a {
		out[x] = lut[uint8((b0*(v>>4)>>16+b1*(b[x]>>4)>>16+2)>>2)]
	}
}

// blendScalar is the vertical blend of OpenCV's scalar tail: full
// precision, rounded once.
func blendScalar(out []float32, a, b []int32, b0, b1 int32) {
	b, out = b[:len(a)], out[:len(a)]
	for x, v := range a {
		out[x] = lut[uint8((v*b0+b[x]*b1+1<<(2*coefBits-1))>>(2*coefBits))]
	}
}

// hrow returns upright source row sy resized horizontally (values scaled
// by 2048) as three planes, computing it unless one of the two cached rows
// holds it.
func (rz *resizer) hrow(img *decode.Image, lb Letterbox, c *rowCache, sy int) *[3][]int32 {
	for k := range c.rowSrc {
		if c.rowSrc[k] == sy {
			return &c.rows[k]
		}
	}
	// Replace the row that is not the other tap of this output row: the
	// older one, which has the smaller source index.
	k := 0
	if c.rowSrc[1] < c.rowSrc[0] {
		k = 1
	}
	row := &c.rows[k]
	src := sourceRow(img, lb, c, sy)
	r := row[0]
	g, b := row[1][:len(r)], row[2][:len(r)]
	xo0, xo1 := rz.xo0[:len(r)], rz.xo1[:len(r)]
	alpha0, alpha1 := rz.a0[:len(r)], rz.a1[:len(r)]
	// Inside the image a column's two taps are neighbours, one load
	// window; at the right border both taps are the last pixel. The
	// vector loop takes the first of the inner columns.
	inner := rz.inner
	v := hrowSIMD(src, xo0[:rz.wide], rz.perm, alpha0, alpha1, r, g, b)
	for x := v; x < inner; x++ {
		o := int(xo0[x])
		a0, a1 := alpha0[x], alpha1[x]
		p := src[o : o+6 : o+6]
		r[x] = int32(p[0])*a0 + int32(p[3])*a1
		g[x] = int32(p[1])*a0 + int32(p[4])*a1
		b[x] = int32(p[2])*a0 + int32(p[5])*a1
	}
	for x := inner; x < len(r); x++ {
		o0, o1 := int(xo0[x]), int(xo1[x])
		a0, a1 := alpha0[x], alpha1[x]
		p, q := src[o0:o0+3:o0+3], src[o1:o1+3:o1+3]
		r[x] = int32(p[0])*a0 + int32(q[0])*a1
		g[x] = int32(p[1])*a0 + int32(q[1])*a1
		b[x] = int32(p[2])*a0 + int32(q[2])*a1
	}
	c.rowSrc[k] = sy
	return row
}

// sourceRow returns upright row sy of img (lb.SrcW pixels). An image stored
// turned (EXIF orientation) is turned here, a few rows at a time into the
// band's buffer, instead of whole before the letterbox: that saves writing
// the whole photo again and reading it back (bus.jpg turned 90°: 0.9 ms).
// Where the resize reads most rows, it turns the eight rows around sy at
// once, which a 90° turn does at the cost of two (see decode.UprightRows);
// where it reads few, as in a large photo brought down, it turns the two
// rows an output row reads.
func sourceRow(img *decode.Image, lb Letterbox, c *rowCache, sy int) []byte {
	pitch := lb.SrcW * 3
	if img.Orientation <= 1 {
		return img.Pix[sy*pitch : (sy+1)*pitch]
	}
	if sy < c.turnedY || sy >= c.turnedY+c.turnedN {
		y, n := sy&^7, 8
		if lb.SrcH > 3*lb.NewH {
			y, n = sy, 2
		}
		n = min(n, lb.SrcH-y)
		c.turned = img.UprightRows(y, n, c.turned)
		c.turnedY, c.turnedN = y, n
	}
	at := (sy - c.turnedY) * pitch
	return c.turned[at : at+pitch]
}
