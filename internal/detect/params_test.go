package detect

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseParams(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  Params
		err   string // expected EINVALID message fragment; "" for success
	}{
		{"", DefaultParams(), ""},
		{"conf=0.5&iou=0.45&max_det=3&classes=0,+dog+&agnostic=true",
			Params{Conf: 0.5, IoU: 0.45, MaxDet: 3, Classes: []string{"0", "dog"}, Agnostic: true}, ""},
		{"conf=0&iou=1&max_det=1000", Params{Conf: 0, IoU: 1, MaxDet: 1000}, ""},
		{"conf=1.5", Params{}, "conf must be"},
		{"conf=-0.1", Params{}, "conf must be"},
		{"conf=NaN", Params{}, "conf must be"},
		{"conf=abc", Params{}, "conf must be"},
		{"iou=2", Params{}, "iou must be"},
		{"max_det=0", Params{}, "max_det must be"},
		{"max_det=1001", Params{}, "max_det must be"},
		{"max_det=3.5", Params{}, "max_det must be"},
		{"agnostic=maybe", Params{}, "agnostic must be"},
		{"classes=0,,1", Params{}, "classes must be"},
		{"classes=-1", Params{}, "class id"},
		{"classes=99999", Params{}, "class id"},
	} {
		q, _ := url.ParseQuery(tc.query)
		got, err := ParseParams(q.Get)
		if tc.err != "" {
			if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), tc.err) {
				t.Errorf("%q: error %v, want EINVALID with %q", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.query, diff)
		}
	}
}

func TestErrorCodeAndMessage(t *testing.T) {
	if ErrorCode(nil) != "" || ErrorMessage(nil) != "" {
		t.Error("nil error has a code or message")
	}
	e := Errorf(ETOOLARGE, "big %d", 3)
	if ErrorCode(e) != ETOOLARGE || ErrorMessage(e) != "big 3" {
		t.Errorf("code %q message %q", ErrorCode(e), ErrorMessage(e))
	}
	if ErrorCode(errString("boom")) != EINTERNAL || ErrorMessage(errString("/secret/path")) != "Internal error." {
		t.Error("a plain error must map to EINTERNAL with a generic message")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"photo.jpg":             "photo.jpg",
		"bad\xff\xfename":       "bad\uFFFDname",
		"line\nbreak\x00":       "linebreak",
		strings.Repeat("é", 30): strings.Repeat("é", 5) + "…",
	} {
		if got := Sanitize(in, 10); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
