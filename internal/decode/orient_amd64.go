package decode

import "golang.org/x/sys/cpu"

// useAVX2 says whether a turn's transposes move eight columns at a time as
// AVX2 code; tests turn it off to compare with the Go loop.
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func transpose8AVX2(dst *byte, rowStep int, src *byte, step int, blocks int)

// transpose8SIMD moves 8*blocks columns of a transpose8 with AVX2: column
// j's eight pixels are read from the 24 bytes at src[s+j*step], and pixel
// k is written to dst[at+k*rowStep+3*j]. Each column's load reads 32
// bytes, and each block's store to a row writes 32, eight past the block's
// pixels: it panics when either would pass the end of its slice.
func transpose8SIMD(dst []byte, at, rowStep int, src []byte, s, step, blocks int) {
	lo, hi := at, at+7*rowStep
	if hi < lo {
		lo, hi = hi, lo
	}
	first, last := s, s+(8*blocks-1)*step
	if last < first {
		first, last = last, first
	}
	if blocks <= 0 || lo < 0 || hi+24*blocks+8 > len(dst) || first < 0 || last+32 > len(src) {
		panic("decode: transpose8SIMD: a load or store past its slice")
	}
	transpose8AVX2(&dst[at], rowStep, &src[s], step, blocks)
}
