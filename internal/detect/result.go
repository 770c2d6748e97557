package detect

import (
	"math"
	"time"
)

// Result is what a detection returns: the `result` object of the contract,
// the shape of Ultralytics' Results.summary().
type Result struct {
	Model      string      `json:"model"`
	Image      Size        `json:"image"`
	Detections []Detection `json:"detections"`
	SpeedMS    Speed       `json:"speed_ms"`
}

// Size is an upright image size in pixels.
type Size struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

// Detection is one detected object.
type Detection struct {
	Name       string  `json:"name"`
	Class      int     `json:"class"`
	Confidence float64 `json:"confidence"`
	Box        Box     `json:"box"`
}

// Box is a box in pixels of the upright image.
type Box struct {
	X1 float64 `json:"x1"`
	Y1 float64 `json:"y1"`
	X2 float64 `json:"x2"`
	Y2 float64 `json:"y2"`
}

// Millis returns d in milliseconds, rounded to a hundredth: the unit of
// Speed, and of the times the processes log.
func Millis(d time.Duration) float64 {
	return math.Round(float64(d.Microseconds())/10) / 100
}

// Speed holds the time of each stage in milliseconds. Decode (reading the
// image bytes into pixels) is reported on its own; Preprocess is the
// letterbox into the input tensor, as in Ultralytics.
type Speed struct {
	Decode      float64 `json:"decode"`
	Preprocess  float64 `json:"preprocess"`
	Inference   float64 `json:"inference"`
	Postprocess float64 `json:"postprocess"`
}
