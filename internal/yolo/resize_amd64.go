package yolo

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAVX2 says whether the resize's inner loops and the NMS's scan for
// scores above conf run as AVX2 code; tests turn it off to compare with the
// Go loops.
var useAVX2 = cpu.X86.HasAVX2

// useVBMI says whether the resize's horizontal pass and the 2× reduction
// read their source bytes with one AVX-512 byte permute per eight columns
// and row instead of two AVX2 gathers; tests turn it off to compare.
var useVBMI = useAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VBMI

//go:noescape
func hrowAVX2(src *byte, xo0 *int32, perm *byte, a0, a1, rout, gout, bout *int32, n, permuted int)

//go:noescape
func blendAVX2(out *float32, asrc, bsrc *int32, n int, b0, b1 int32, stream int)

// sfence orders the non-temporal stores before it before the stores after.
func sfence()

// hrowSIMD computes the first columns of a horizontally resized row, as
// hrow's loop over neighbouring taps does, eight at a time; it returns how
// many it computed (none without AVX2). The offsets in xo0 rise from
// column to column, and the dwords at each and three bytes after it are
// read: it panics when the last of them would pass the end of src. Where
// the CPU has AVX-512 VBMI, the first blocks, for which perm holds the tap
// bytes (tapBytes), read their 64 bytes from the first tap with one
// permute; it panics when those would pass the end of src. The other
// blocks' taps are gathered.
func hrowSIMD(src []byte, xo0 []int32, perm []byte, a0, a1, r, g, b []int32) int {
	n := len(xo0) &^ 7
	if !useAVX2 || n == 0 {
		return 0
	}
	_, _, _, _, _ = a0[n-1], a1[n-1], r[n-1], g[n-1], b[n-1]
	if int(xo0[0]) < 0 || int(xo0[n-1])+7 > len(src) {
		panic("yolo: hrowSIMD: a tap past the row")
	}
	permuted, p := 0, (*byte)(nil)
	if useVBMI && len(perm) >= 64 {
		permuted = min(n, len(perm)/64*8)
		if int(xo0[permuted-8])+64 > len(src) {
			panic("yolo: hrowSIMD: a permute past the row")
		}
		p = &perm[0]
	}
	hrowAVX2(&src[0], &xo0[0], p, &a0[0], &a1[0], &r[0], &g[0], &b[0], n, permuted)
	return n
}

// blendVectorSIMD does blendVector's work on the first values of a, eight
// at a time, and returns how many it did (none without AVX2). With stream,
// it writes out around the caches, its first values up to a 32-byte
// boundary in Go; the caller calls sfence after.
func blendVectorSIMD(out []float32, a, b []int32, b0, b1 int32, stream bool) int {
	if !useAVX2 || len(a) < 8 {
		return 0
	}
	_, _ = out[len(a)-1], b[len(a)-1]
	h, st := 0, 0
	if stream {
		h = int((32-uintptr(unsafe.Pointer(&out[0]))&31)&31) / 4
		blendVector(out[:h], a[:h], b[:h], b0, b1)
		st = 1
	}
	n := (len(a) - h) &^ 7
	if n == 0 {
		return h
	}
	blendAVX2(&out[h], &a[h], &b[h], n, b0, b1, st)
	return h + n
}

//go:noescape
func area2AVX2(row0, row1, perm *byte, rout, gout, bout *float32, n, permuted int)

// area2Perm is the permute of a block of an exact 2× reduction, whose
// eight output pixels read the source pixels at 6x and 6x+3: the tap
// bytes of a horizontal pass with those offsets.
var area2Perm = tapBytes(nil, []int32{0, 6, 12, 18, 24, 30, 36, 42}, 64)

// area2SIMD does area2's work for the first pixels of an output row from
// its two source rows, eight at a time, and returns how many it did (none
// without AVX2). It leaves the last pixel to the Go loop: its dwords would
// pass the end of the rows. Where the CPU has AVX-512 VBMI, the blocks of
// eight whose 64 bytes from their first source pixel lie in the rows read
// them with one permute (area2Perm); the others are gathered.
func area2SIMD(row0, row1 []byte, r, g, b []float32) int {
	n := (len(r) - 1) &^ 7
	if !useAVX2 || n <= 0 {
		return 0
	}
	_, _, _, _ = g[n-1], b[n-1], row0[6*n], row1[6*n]
	permuted := 0
	if rows := min(len(row0), len(row1)); useVBMI && rows >= 64 {
		// The block at x reads bytes 6x to 6x+63.
		permuted = min(n, 8*((rows-64)/48+1))
	}
	area2AVX2(&row0[0], &row1[0], &area2Perm[0], &r[0], &g[0], &b[0], n, permuted)
	return n
}

//go:noescape
func storeAVX2(src *byte, rout, gout, bout *float32, n int)

// storeSIMD does store's work for the first pixels of an interleaved RGB
// row, eight at a time, and returns how many it did (none without AVX2).
// It leaves the last pixels to the Go loop: the dword of each pixel is
// read, whose last byte passes the row's end.
func storeSIMD(rgb []byte, r, g, b []float32) int {
	if !useAVX2 {
		return 0
	}
	// The block ending at pixel n-1 reads up to byte 3n.
	n := min(len(r), (len(rgb)-1)/3) &^ 7
	if n <= 0 {
		return 0
	}
	_, _ = g[n-1], b[n-1]
	storeAVX2(&rgb[0], &r[0], &g[0], &b[0], n)
	return n
}
