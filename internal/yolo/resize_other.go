//go:build !amd64

package yolo

// useAVX2 is false off amd64: the resize and the NMS run their Go loops.
var useAVX2 = false

// useVBMI is false off amd64.
var useVBMI = false

// hrowSIMD computes no column: hrow's Go loops compute them all.
func hrowSIMD(src []byte, xo0 []int32, perm []byte, a0, a1, r, g, b []int32) int { return 0 }

// blendVectorSIMD blends no value: blendVector does them all.
func blendVectorSIMD(out []float32, a, b []int32, b0, b1 int32, stream bool) int { return 0 }

// sfence does nothing: nothing streams.
func sfence() {}

// area2SIMD averages no pixel: area2's Go loop does them all.
func area2SIMD(row0, row1 []byte, r, g, b []float32) int { return 0 }

// storeSIMD stores no pixel: store's Go loop does them all.
func storeSIMD(rgb []byte, r, g, b []float32) int { return 0 }
