package yolo

// BatchPadding is the size of run a batch of n images takes: n itself, or
// n padded up to one of a few fixed sizes, each run by a session of its
// own, so that no session meets a second input shape. The images beyond
// n are whatever the batch's tensors held; their detections are never
// read.
type BatchPadding string

const (
	// PadNone runs a batch of n images as n, on one session: the CPU's
	// default, where a size's first run costs a few milliseconds and a
	// padded image costs its whole inference.
	PadNone BatchPadding = "none"
	// PadPow2 runs a batch of n images as the smallest power of two that
	// holds n, BatchMax at most, each size on a session of its own: the
	// default on CUDA, where a session that meets an input shape other
	// than its last one sets its convolutions up again, which cost
	// 116–143 ms a run on an H200 against 6.7 ms for the run itself
	// (docs/performance.md).
	PadPow2 BatchPadding = "pow2"
	// PadFull runs every batch as BatchMax images, on one session.
	PadFull BatchPadding = "full"
)

// defaultPadding is the padding of a batcher on provider.
func defaultPadding(provider string) BatchPadding {
	if provider == "cuda" {
		return PadPow2
	}
	return PadNone
}

// sizes returns the sizes of run a batcher of up to max images takes,
// smallest first; nil for PadNone, where every size runs as it is.
func (p BatchPadding) sizes(max int) []int {
	switch p {
	case PadPow2:
		var sizes []int
		for n := 1; n < max; n *= 2 {
			sizes = append(sizes, n)
		}
		return append(sizes, max)
	case PadFull:
		return []int{max}
	}
	return nil
}
