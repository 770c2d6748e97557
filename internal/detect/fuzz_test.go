package detect

import (
	"net/url"
	"testing"
)

// FuzzParseParams: any query string gives valid parameters or an EINVALID
// error whose message is valid UTF-8 and short.
func FuzzParseParams(f *testing.F) {
	for _, s := range []string{"", "conf=0.5&iou=0.45&max_det=3&classes=0,dog&agnostic=true", "conf=NaN", "max_det=1e9", "classes=" + string([]byte{0xff, 0xfe})} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		p, err := ParseParams(q.Get)
		if err != nil {
			if ErrorCode(err) != EINVALID || len(ErrorMessage(err)) > 300 {
				t.Fatalf("%q: %v", query, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q parsed to invalid %+v: %v", query, p, err)
		}
	})
}
