package yolo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/decode"
)

func TestLetterboxGeometry(t *testing.T) {
	for _, tc := range []struct {
		name string
		w, h int
		want Letterbox
	}{
		{"1x1", 1, 1, Letterbox{SrcW: 1, SrcH: 1, NewW: 640, NewH: 640, DstW: 640, DstH: 640, Gain: 640}},
		{"bus 810x1080", 810, 1080, Letterbox{SrcW: 810, SrcH: 1080, NewW: 480, NewH: 640, Left: 80, DstW: 640, DstH: 640, Gain: 640.0 / 1080}},
		{"odd 811x1081", 811, 1081, Letterbox{SrcW: 811, SrcH: 1081, NewW: 480, NewH: 640, Left: 80, DstW: 640, DstH: 640, Gain: 640.0 / 1081}},
		// 275×183 → 640×426: dh = 107, no rounding.
		{"small 275x183", 275, 183, Letterbox{SrcW: 275, SrcH: 183, NewW: 640, NewH: 426, Top: 107, DstW: 640, DstH: 640, Gain: 640.0 / 275}},
		// 640×427 needs no resize; dh = 106.5 → top round(106.4) = 106.
		{"odd padding", 640, 427, Letterbox{SrcW: 640, SrcH: 427, NewW: 640, NewH: 427, Top: 106, DstW: 640, DstH: 640, Gain: 1}},
		{"very wide", 10000, 10, Letterbox{SrcW: 10000, SrcH: 10, NewW: 640, NewH: 1, Top: 319, DstW: 640, DstH: 640, Gain: 0.064}},
		{"very tall", 3, 5000, Letterbox{SrcW: 3, SrcH: 5000, NewW: 1, NewH: 640, Left: 319, DstW: 640, DstH: 640, Gain: 0.128}},
		// round(2.5) is 2 in Python: half to even.
		{"half to even", 1280, 5, Letterbox{SrcW: 1280, SrcH: 5, NewW: 640, NewH: 2, Top: 319, DstW: 640, DstH: 640, Gain: 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NewLetterbox(tc.w, tc.h, 640, 640)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-12 })); diff != "" {
				t.Errorf("NewLetterbox(%d, %d) (-want +got):\n%s", tc.w, tc.h, diff)
			}
			// Fill must cover the input with the image and padding only.
			img := randomImage(tc.w, tc.h, 1)
			dst := make([]float32, 3*640*640)
			for i := range dst {
				dst[i] = -1
			}
			var rz resizer
			rz.Fill(img, got, dst)
			for i, v := range dst {
				y, x := (i/640)%640, i%640
				inside := y >= got.Top && y < got.Top+got.NewH && x >= got.Left && x < got.Left+got.NewW
				if v < 0 || v > 1 || (!inside && v != lut[padValue]) {
					t.Fatalf("pixel (%d,%d) channel %d = %v (inside %v)", x, y, i/(640*640), v, inside)
				}
			}
		})
	}
}

func randomImage(w, h int, seed uint64) *decode.Image {
	r := rand.New(rand.NewPCG(seed, 7))
	img := &decode.Image{Width: w, Height: h, Pix: make([]byte, w*h*3)}
	for i := range img.Pix {
		img.Pix[i] = byte(r.IntN(256))
	}
	return img
}

// readPlanes reads the resized area of a filled input back as RGB bytes.
func readPlanes(dst []float32, lb Letterbox) []byte {
	out := make([]byte, 0, lb.NewW*lb.NewH*3)
	plane := lb.DstW * lb.DstH
	for y := 0; y < lb.NewH; y++ {
		for x := 0; x < lb.NewW; x++ {
			o := (lb.Top+y)*lb.DstW + lb.Left + x
			for c := 0; c < 3; c++ {
				out = append(out, byte(math.Round(float64(dst[c*plane+o])*255)))
			}
		}
	}
	return out
}

// TestResizeMatchesBilinear checks the fixed-point resize against a plain
// float bilinear resize with OpenCV's half-pixel centres: the two may
// differ by one level from rounding, never more.
func TestResizeMatchesBilinear(t *testing.T) {
	for _, sz := range [][2]int{{275, 183}, {810, 1080}, {1281, 719}, {33, 640}} {
		img := randomImage(sz[0], sz[1], uint64(sz[0]))
		lb := NewLetterbox(sz[0], sz[1], 640, 640)
		dst := make([]float32, 3*640*640)
		var rz resizer
		rz.Fill(img, lb, dst)
		got := readPlanes(dst, lb)
		sx, sy := float64(sz[0])/float64(lb.NewW), float64(sz[1])/float64(lb.NewH)
		worst := 0.0
		for y := 0; y < lb.NewH; y++ {
			fy := math.Max((float64(y)+0.5)*sy-0.5, 0)
			y0 := min(int(fy), sz[1]-1)
			y1, wy := min(y0+1, sz[1]-1), fy-float64(int(fy))
			for x := 0; x < lb.NewW; x++ {
				fx := math.Max((float64(x)+0.5)*sx-0.5, 0)
				x0 := min(int(fx), sz[0]-1)
				x1, wx := min(x0+1, sz[0]-1), fx-float64(int(fx))
				if x0 == sz[0]-1 {
					wx = 0
				}
				for c := 0; c < 3; c++ {
					p := func(x, y int) float64 { return float64(img.Pix[(y*sz[0]+x)*3+c]) }
					want := (p(x0, y0)*(1-wx)+p(x1, y0)*wx)*(1-wy) + (p(x0, y1)*(1-wx)+p(x1, y1)*wx)*wy
					worst = math.Max(worst, math.Abs(want-float64(got[(y*lb.NewW+x)*3+c])))
				}
			}
		}
		if worst > 1.01 {
			t.Errorf("%dx%d: fixed-point resize differs from bilinear by %.2f levels", sz[0], sz[1], worst)
		}
	}
}

func TestResizeArea2x(t *testing.T) {
	img := randomImage(1280, 960, 3)
	lb := NewLetterbox(1280, 960, 640, 640)
	dst := make([]float32, 3*640*640)
	var rz resizer
	rz.Fill(img, lb, dst)
	got := readPlanes(dst, lb)
	for y := 0; y < lb.NewH; y++ {
		for x := 0; x < lb.NewW; x++ {
			for c := 0; c < 3; c++ {
				p := func(dx, dy int) int { return int(img.Pix[((2*y+dy)*1280+2*x+dx)*3+c]) }
				want := byte((p(0, 0) + p(1, 0) + p(0, 1) + p(1, 1) + 2) >> 2)
				if g := got[(y*lb.NewW+x)*3+c]; g != want {
					t.Fatalf("(%d,%d,%d) = %d, want the 2×2 average %d", x, y, c, g, want)
				}
			}
		}
	}
}

func TestResizeUniformStaysUniform(t *testing.T) {
	img := &decode.Image{Width: 123, Height: 77, Pix: make([]byte, 123*77*3)}
	for i := range img.Pix {
		img.Pix[i] = []byte{10, 200, 255}[i%3]
	}
	lb := NewLetterbox(123, 77, 640, 640)
	dst := make([]float32, 3*640*640)
	var rz resizer
	rz.Fill(img, lb, dst)
	got := readPlanes(dst, lb)
	for i, v := range got {
		if want := []byte{10, 200, 255}[i%3]; v != want {
			t.Fatalf("byte %d = %d, want %d", i, v, want)
		}
	}
}

// BenchmarkLetterbox fills the model input from a portrait photo's size
// (the bilinear path, bus.jpg), from a landscape one's (the exact 2×
// reduction, zidane.jpg) and from one at the model's width (the copy),
// with the AVX2 loops where the CPU has them and with the Go loops.
func BenchmarkLetterbox(b *testing.B) {
	avx2, vbmi := useAVX2, useVBMI
	b.Cleanup(func() { useAVX2, useVBMI = avx2, vbmi })
	// The stored size and EXIF orientation: bus.jpg, a video frame,
	// bus.jpg stored turned 90° (bus_exif6.jpg), and a photo at the
	// model's width (person.jpg, copied).
	for _, sz := range [][3]int{{810, 1080, 1}, {1280, 720, 1}, {1080, 810, 6}, {640, 424, 1}} {
		for _, loops := range []string{"vbmi", "avx2", "go"} {
			if loops == "avx2" && !avx2 || loops == "vbmi" && !vbmi {
				continue
			}
			b.Run(fmt.Sprintf("%dx%d/o%d/%s", sz[0], sz[1], sz[2], loops), func(b *testing.B) {
				useAVX2, useVBMI = loops != "go", loops == "vbmi"
				img := randomImage(sz[0], sz[1], 1)
				img.Orientation = sz[2]
				up := img.Upright()
				lb := NewLetterbox(up.Width, up.Height, 640, 640)
				dst := make([]float32, 3*640*640)
				var rz resizer
				b.ReportAllocs()
				for b.Loop() {
					rz.Fill(img, lb, dst)
				}
			})
		}
	}
}

// openCVLinear is a plain transcription of cv::resize(INTER_LINEAR) for
// 8-bit, 3-channel images as resizeGeneric_ runs it: the horizontal pass
// over interleaved rows into int32 (scaled by 2048), then the vertical
// pass over the interleaved row, whose first vec bytes go through
// VResizeLinearVec_32s8u (rows scaled down by 16, high halves of the
// products, rounding by 2 bits) and the rest through the scalar
// fixed-point cast.
func openCVLinear(img *decode.Image, dw, dh int) []byte {
	sw, sh := img.Width, img.Height
	xofs, a0, a1 := make([]int32, dw), make([]int32, dw), make([]int32, dw)
	yofs, beta0, beta1 := make([]int32, dh), make([]int32, dh), make([]int32, dh)
	coefficients(sw, dw, xofs, a0, a1, true)
	coefficients(sh, dh, yofs, beta0, beta1, false)
	hrow := func(sy int) []int32 {
		sy = min(max(sy, 0), sh-1)
		row := make([]int32, 3*dw)
		for x := 0; x < dw; x++ {
			sx0, sx1 := int(xofs[x]), min(int(xofs[x])+1, sw-1)
			for c := 0; c < 3; c++ {
				p, q := int32(img.Pix[(sy*sw+sx0)*3+c]), int32(img.Pix[(sy*sw+sx1)*3+c])
				row[3*x+c] = p*a0[x] + q*a1[x]
			}
		}
		return row
	}
	width := 3 * dw
	vec := width / 16 * 16
	if width-vec > 8 {
		vec += 8
	}
	out := make([]byte, width*dh)
	for y := 0; y < dh; y++ {
		r0, r1 := hrow(int(yofs[y])), hrow(int(yofs[y])+1)
		b0, b1 := beta0[y], beta1[y]
		for i := 0; i < width; i++ {
			var v int32
			if i < vec {
				v = ((b0*(r0[i]>>4))>>16 + (b1*(r1[i]>>4))>>16 + 2) >> 2
			} else {
				v = (r0[i]*b0 + r1[i]*b1 + 1<<21) >> 22
			}
			out[y*width+i] = byte(v)
		}
	}
	return out
}

// resizeSizes returns image sizes that scale up and down, put the
// vector/scalar boundaries at every channel and column, take the exact 2×
// reduction and the copy, and twelve drawn from seed.
func resizeSizes(seed uint64) [][2]int {
	sizes := [][2]int{{810, 1080}, {1080, 810}, {275, 183}, {1281, 719}, {33, 640}, {640, 33}, {3, 5000}, {5000, 3},
		{1, 1}, {2, 3}, {17, 1000}, {1000, 17}, {641, 640}, {4000, 3000}, {1280, 720}, {34, 1280}, {640, 427}}
	r := rand.New(rand.NewPCG(seed, seed+1))
	for range 12 {
		sizes = append(sizes, [2]int{1 + r.IntN(2000), 1 + r.IntN(2000)})
	}
	return sizes
}

// TestResizeMatchesOpenCVTranscription checks the planar, banded resize
// bit for bit against openCVLinear, over sizes that put the vector/scalar
// boundary at every channel and scale up and down.
func TestResizeMatchesOpenCVTranscription(t *testing.T) {
	for _, sz := range resizeSizes(5) {
		img := randomImage(sz[0], sz[1], uint64(sz[0]*7+sz[1]))
		lb := NewLetterbox(sz[0], sz[1], 640, 640)
		if sz[0] == 2*lb.NewW && sz[1] == 2*lb.NewH || sz[0] == lb.NewW && sz[1] == lb.NewH {
			continue // the area and copy paths
		}
		dst := make([]float32, 3*640*640)
		var rz resizer
		rz.Fill(img, lb, dst)
		got := readPlanes(dst, lb)
		want := openCVLinear(img, lb.NewW, lb.NewH)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%dx%d → %dx%d: byte %d (x %d, y %d, channel %d) = %d, want %d",
					sz[0], sz[1], lb.NewW, lb.NewH, i, i/3%lb.NewW, i/3/lb.NewW, i%3, got[i], want[i])
			}
		}
	}
}

// TestResizeVectorLoopsMatchGoLoops checks that the AVX2 loops, and the
// AVX-512 permute of the taps where the CPU has it, write the same float32
// values as the Go loops, bit for bit, over sizes that put the gathered
// columns' end and the vector lanes' end everywhere, the area and copy
// paths among them; in two bands, and on one core, where the blend
// streams its stores from the first 32-byte boundary of each row.
func TestResizeVectorLoopsMatchGoLoops(t *testing.T) {
	if !useAVX2 {
		t.Skip("this machine runs the Go loops only")
	}
	vbmi := useVBMI
	t.Cleanup(func() { useAVX2, useVBMI = true, vbmi })
	loops := []string{"avx2"}
	if vbmi {
		loops = append(loops, "vbmi")
	}
	type size struct{ w, h, dst int }
	var sizes []size
	for _, sz := range resizeSizes(8) {
		sizes = append(sizes, size{sz[0], sz[1], 640})
	}
	// Copies and 2× reductions whose rows start 15 values before a
	// 64-byte boundary, and an input whose rows start anywhere, which the
	// streamed blend reaches its 32-byte boundaries in at every value.
	sizes = append(sizes, size{637, 640, 640}, size{1274, 1280, 640},
		size{637, 400, 637}, size{1274, 800, 637}, size{810, 1080, 637})
	for _, sz := range sizes {
		img := randomImage(sz.w, sz.h, uint64(sz.w*3+sz.h))
		lb := NewLetterbox(sz.w, sz.h, sz.dst, sz.dst)
		fill := func(l string, cores int) []float32 {
			useAVX2, useVBMI = l != "go", l == "vbmi"
			dst := make([]float32, 3*sz.dst*sz.dst)
			rz := resizer{cores: cores}
			rz.Fill(img, lb, dst)
			return dst
		}
		want := fill("go", 2)
		for _, l := range loops {
			// On one core the blend streams its stores past the caches.
			for _, cores := range []int{2, 1} {
				got := fill(l, cores)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						plane := sz.dst * sz.dst
						t.Fatalf("%dx%d into %d: value %d (channel %d, y %d, x %d) = %v with %s on %d cores, %v with the Go loops",
							sz.w, sz.h, sz.dst, i, i/plane, i%plane/sz.dst, i%sz.dst, got[i], l, cores, want[i])
					}
				}
			}
		}
	}
}

// TestPrefillKeepsTheTensor checks that padAll then fillImage, which skips
// the padding, writes the tensor a Fill alone writes, bit for bit, and that
// a Fill after that, of an image letterboxed the other way, pads it.
func TestPrefillKeepsTheTensor(t *testing.T) {
	portrait, landscape := randomImage(810, 1080, 1), randomImage(1280, 600, 2)
	lbP := NewLetterbox(portrait.Width, portrait.Height, 640, 640)
	lbL := NewLetterbox(landscape.Width, landscape.Height, 640, 640)
	fresh := func(img *decode.Image, lb Letterbox) []float32 {
		dst := garbage(3 * 640 * 640)
		var rz resizer
		rz.Fill(img, lb, dst)
		return dst
	}
	wantP, wantL := fresh(portrait, lbP), fresh(landscape, lbL)

	dst := garbage(3 * 640 * 640)
	var rz resizer
	padAll(dst)
	rz.fillImage(portrait, lbP, dst)
	sameBits(t, "portrait after prefill", wantP, dst)
	rz.Fill(landscape, lbL, dst)
	sameBits(t, "landscape after it, without prefill", wantL, dst)
}

// garbage returns n NaNs, which no letterbox writes.
func garbage(n int) []float32 {
	p := make([]float32, n)
	for i := range p {
		p[i] = float32(math.NaN())
	}
	return p
}

func sameBits(t *testing.T, what string, want, got []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d (channel %d, y %d, x %d) = %v, want %v",
				what, i, i/(640*640), i/640%640, i%640, got[i], want[i])
		}
	}
}

// TestLetterboxTurnsAsItReads letterboxes photos stored turned (every EXIF
// orientation), turning them as the resize reads their rows, and checks the
// input against the letterbox of the same photo turned whole first, bit for
// bit: photos brought down a little (turned eight rows at a time), a lot
// (two at a time), copied at their size and halved (turned whole). The
// resizer first letterboxes another turned image, whose turned rows it must
// not reuse.
func TestLetterboxTurnsAsItReads(t *testing.T) {
	for _, size := range [][2]int{{1600, 1200}, {2000, 900}, {641, 1500}, {700, 500}, {4000, 300}, {640, 480}, {1280, 960}, {97, 45}} {
		w, h := size[0], size[1]
		for o := 2; o <= 8; o++ {
			t.Run(fmt.Sprintf("%dx%d/%d", w, h, o), func(t *testing.T) {
				stored := randomImage(w, h, uint64(o))
				stored.Orientation = o
				up := *stored
				up.Pix = append([]byte(nil), stored.Pix...)
				up.Orient()
				lb := NewLetterbox(up.Width, up.Height, 640, 640)
				want := garbage(3 * 640 * 640)
				var fresh resizer
				fresh.Fill(&up, lb, want)

				// The resizer last turned the top rows of a strip as wide
				// as the photo stands.
				var rz resizer
				other := randomImage(w, 5, 99)
				if o >= 5 {
					other = randomImage(5, h, 99)
				}
				other.Orientation = o
				rz.Fill(other, NewLetterbox(up.Width, 5, 640, 640), garbage(3*640*640))
				got := garbage(3 * 640 * 640)
				rz.Fill(stored, lb, got)
				sameBits(t, "turned as read", want, got)
			})
		}
	}
}
