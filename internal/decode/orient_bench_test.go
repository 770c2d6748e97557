package decode

import "testing"

func BenchmarkOrient(b *testing.B) {
	for _, o := range []int{3, 6} {
		b.Run(map[int]string{3: "rotate180", 6: "rotate90"}[o], func(b *testing.B) {
			img := &Image{Width: 1080, Height: 810, Pix: make([]byte, 1080*810*3)}
			for b.Loop() {
				orient(img, o)
			}
		})
	}
}
