package decode

// StripCount returns how many strips DecodeStored would decode data in on
// cores goroutines: 0 when it decodes it whole.
func StripCount(data []byte, cores int) int {
	h, err := Inspect(data, 0)
	if err != nil {
		return 0
	}
	s, _ := splitJPEG(data, h, cores, nil)
	return len(s)
}
