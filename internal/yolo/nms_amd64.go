package yolo

//go:noescape
func skipBelowAVX2(row *float32, n int, conf float32) int

// skipBelow returns how many of row's first values a search for values
// above conf can pass over: the whole blocks of 32 before the first that
// holds one above conf (none without AVX2). NaN is not above conf.
func skipBelow(row []float32, conf float32) int {
	n := len(row) &^ 31
	if !useAVX2 || n == 0 {
		return 0
	}
	return skipBelowAVX2(&row[0], n, conf)
}
