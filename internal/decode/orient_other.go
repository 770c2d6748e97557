//go:build !amd64

package decode

// useAVX2 is false off amd64: a turn's transposes run the Go loop.
var useAVX2 = false

// transpose8SIMD is never called off amd64 (simdColumns gives it no
// column).
func transpose8SIMD(dst []byte, at, rowStep int, src []byte, s, step, blocks int) {
	panic("decode: transpose8SIMD without AVX2")
}
