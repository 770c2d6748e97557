package yolo

import (
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
)

// TestFindHeadOutputs finds the shared model's head outputs, level by
// level, and finds none in graphs cut before or inside the head.
func TestFindHeadOutputs(t *testing.T) {
	data, err := os.ReadFile(testenv.Model(t, "yolov8n.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := onnx.ReadGraph(data)
	if err != nil {
		t.Fatal(err)
	}
	box, cls, err := findHeadOutputs(g)
	if err != nil {
		t.Fatal(err)
	}
	var want [2][]string
	for _, l := range []string{"0", "1", "2"} {
		want[0] = append(want[0], "/model.22/cv2."+l+"/cv2."+l+".2/Conv_output_0")
		want[1] = append(want[1], "/model.22/cv3."+l+"/cv3."+l+".2/Conv_output_0")
	}
	if diff := cmp.Diff(want, [2][]string{box, cls}); diff != "" {
		t.Errorf("head outputs (-want +got):\n%s", diff)
	}
	for _, cut := range []string{
		"/model.22/Concat_output_0",      // the box distributions' Concat
		"/model.22/Sigmoid_output_0",     // the scores alone
		"/model.22/Mul_2_output_0",       // the boxes alone
		"/model.21/cv2/act/Mul_output_0", // the backbone and neck
	} {
		pruned, err := g.Prune([]string{cut})
		if err != nil {
			t.Fatal(err)
		}
		pg, err := onnx.ReadGraph(pruned)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := findHeadOutputs(pg); !errors.Is(err, errNoHead) {
			t.Errorf("cut at %s: %v, want errNoHead", cut, err)
		}
	}
}
