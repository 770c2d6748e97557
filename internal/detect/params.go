package detect

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Default parameter values, the same as Ultralytics' predictor.
const (
	DefaultConf   = 0.25
	DefaultIoU    = 0.7
	DefaultMaxDet = 300
	MaxMaxDet     = 1000
	maxClasses    = 1000 // most entries in a classes list
)

// Params are the detection parameters of one request.
type Params struct {
	Conf     float64  `json:"conf"`
	IoU      float64  `json:"iou"`
	MaxDet   int      `json:"max_det"`
	Classes  []string `json:"classes,omitempty"` // ids or names; empty keeps all
	Agnostic bool     `json:"agnostic"`
}

// DefaultParams returns the parameters used when a request sets none.
func DefaultParams() Params {
	return Params{Conf: DefaultConf, IoU: DefaultIoU, MaxDet: DefaultMaxDet}
}

// Validate returns an EINVALID *Error naming the first bad field, or nil.
func (p Params) Validate() error {
	if math.IsNaN(p.Conf) || p.Conf < 0 || p.Conf > 1 {
		return Errorf(EINVALID, "conf must be a number from 0 to 1.")
	}
	if math.IsNaN(p.IoU) || p.IoU < 0 || p.IoU > 1 {
		return Errorf(EINVALID, "iou must be a number from 0 to 1.")
	}
	if p.MaxDet < 1 || p.MaxDet > MaxMaxDet {
		return Errorf(EINVALID, "max_det must be an integer from 1 to %d.", MaxMaxDet)
	}
	if len(p.Classes) > maxClasses {
		return Errorf(EINVALID, "classes lists at most %d entries.", maxClasses)
	}
	for _, c := range p.Classes {
		if c == "" || len(c) > 100 {
			return Errorf(EINVALID, "classes must be comma-separated class ids or names.")
		}
		if c[0] == '-' || (c[0] >= '0' && c[0] <= '9') {
			if n, err := strconv.Atoi(c); err != nil || n < 0 || n >= maxClasses {
				return Errorf(EINVALID, "class id %q is not an integer from 0 to %d.", clip(c), maxClasses-1)
			}
		}
	}
	return nil
}

// ParseParams reads the parameters from get (a form or query lookup that
// returns "" for an absent name), starting from the defaults. It returns an
// EINVALID *Error naming the first value that does not parse or is out of
// range.
func ParseParams(get func(name string) string) (Params, error) {
	p := DefaultParams()
	var err error
	if v := strings.TrimSpace(get("conf")); v != "" {
		if p.Conf, err = strconv.ParseFloat(v, 64); err != nil {
			return p, Errorf(EINVALID, "conf must be a number from 0 to 1, not %q.", clip(v))
		}
	}
	if v := strings.TrimSpace(get("iou")); v != "" {
		if p.IoU, err = strconv.ParseFloat(v, 64); err != nil {
			return p, Errorf(EINVALID, "iou must be a number from 0 to 1, not %q.", clip(v))
		}
	}
	if v := strings.TrimSpace(get("max_det")); v != "" {
		if p.MaxDet, err = strconv.Atoi(v); err != nil {
			return p, Errorf(EINVALID, "max_det must be an integer from 1 to %d, not %q.", MaxMaxDet, clip(v))
		}
	}
	if v := strings.TrimSpace(get("classes")); v != "" {
		for _, c := range strings.Split(v, ",") {
			p.Classes = append(p.Classes, strings.TrimSpace(c))
		}
	}
	if v := strings.TrimSpace(get("agnostic")); v != "" {
		if p.Agnostic, err = strconv.ParseBool(v); err != nil {
			return p, Errorf(EINVALID, "agnostic must be true or false, not %q.", clip(v))
		}
	}
	return p, p.Validate()
}

// clip shortens a client's value before it is echoed in a message.
func clip(s string) string { return Sanitize(s, 40) }

// Sanitize makes client text fit to echo, log or store: valid UTF-8, no
// control characters, at most max bytes (cut at a character, with an
// ellipsis).
func Sanitize(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max] + "…"
}
