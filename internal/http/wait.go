package http

import (
	"strconv"
	"time"

	"yoloserve/internal/detect"
)

// parseWait reads ?wait=N, seconds from 0 to max. It returns an EINVALID
// *Error for anything else.
func parseWait(v string, max time.Duration) (time.Duration, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > max.Seconds() || f != f {
		return 0, detect.Errorf(detect.EINVALID, "wait must be a number of seconds from 0 to %d.", int(max.Seconds()))
	}
	return time.Duration(f * float64(time.Second)), nil
}
