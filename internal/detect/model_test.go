package detect

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestClassMask(t *testing.T) {
	names := []string{"person", "bicycle", "car"}
	for _, tc := range []struct {
		classes []string
		want    []bool
		err     string // a part of the message; "" for none
	}{
		{nil, nil, ""},
		{[]string{"0", "2"}, []bool{true, false, true}, ""},
		{[]string{"Car", "bicycle"}, []bool{false, true, true}, ""},
		{[]string{"3"}, nil, "Class id 3 is out of range; the model has classes 0 to 2."},
		{[]string{"person", "unicorn"}, nil, `The model has no class named "unicorn".`},
	} {
		got, err := ClassMask(names, tc.classes)
		if tc.err == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.classes, err)
			}
		} else if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), tc.err) {
			t.Errorf("%q: error %v, want EINVALID with %q", tc.classes, err, tc.err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q: mask (-want +got):\n%s", tc.classes, diff)
		}
	}
}

// TestCheckClasses: a request is refused only when every model the
// workers serve would fail it, and the message says why for each.
func TestCheckClasses(t *testing.T) {
	coco := ServedModel{Model{Name: "yolov8n", Classes: []string{"person", "bicycle", "car"}}, 2}
	ships := ServedModel{Model{Name: "ships", Classes: []string{"ship", "buoy"}}, 1}
	for _, tc := range []struct {
		name    string
		classes []string
		models  []ServedModel
		err     string // the whole message; "" for none
	}{
		{"no classes asked for", nil, []ServedModel{coco}, ""},
		{"no model announced", []string{"unicorn"}, nil, ""},
		{"a known name", []string{"car"}, []ServedModel{coco}, ""},
		{"an unknown name", []string{"car", "unicorn"}, []ServedModel{coco},
			`The model has no class named "unicorn". GET /models lists its classes.`},
		{"an id out of range", []string{"3"}, []ServedModel{coco},
			"Class id 3 is out of range; the model has classes 0 to 2. GET /models lists its classes."},
		{"one of two models has them all", []string{"buoy", "1"}, []ServedModel{coco, ships}, ""},
		{"each model lacks one", []string{"car", "ship"}, []ServedModel{coco, ships},
			`No model the workers serve has every class asked for. yolov8n: The model has no class named "ship". ships: The model has no class named "car". GET /models lists their classes.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckClasses(tc.classes, tc.models)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.err != "" && (ErrorCode(err) != EINVALID || ErrorMessage(err) != tc.err):
				t.Errorf("got %v (%s), want EINVALID %q", err, ErrorCode(err), tc.err)
			}
		})
	}
}
