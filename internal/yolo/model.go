// Package yolo runs Ultralytics YOLOv8 / YOLO11 detection models exported
// to ONNX with the predictor's exact semantics: letterbox, inference,
// non-maximum suppression and box scaling.
package yolo

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"yoloserve/internal/detect"
	"yoloserve/internal/onnx"
)

// Model is what the detector knows of a loaded model.
type Model struct {
	Name         string   // the file's base name without extension, e.g. "yolov8n"
	Names        []string // class names by id
	Height       int      // input height
	Width        int      // input width
	Anchors      int      // candidate boxes per image (N of the [B, 4+nc, N] output)
	DynamicBatch bool     // whether the batch dimension is free

	// split is the model cut before its head's decoding, which the
	// detector runs instead of the whole model; nil when it runs the
	// whole model (Config.HeadDecode).
	split *splitHead
}

// NewModel checks that info describes a YOLO detection model of the
// Ultralytics family and reads its geometry and class names. It returns an
// error that says what does not fit.
func NewModel(path string, info onnx.ModelInfo) (*Model, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("model %s is not a YOLO detection model: %s", path, fmt.Sprintf(format, args...))
	}
	if task, ok := info.Metadata["task"]; ok && task != "detect" {
		return nil, bad("its task is %q; export a detection model (yolov8n.pt, yolo11n.pt...)", task)
	}
	if info.Outputs != 1 {
		return nil, bad("it has %d outputs; a detection export has one, [batch, 4+classes, anchors]", info.Outputs)
	}
	in, out := info.InputShape, info.OutputShape
	if len(in) != 4 || (in[1] != 3 && in[1] > 0) {
		return nil, bad("its input %q is %v; [batch, 3, height, width] is expected", info.InputName, in)
	}
	if len(out) != 3 {
		return nil, bad("its output %q is %v; [batch, 4+classes, anchors] is expected", info.OutputName, out)
	}
	m := &Model{Name: strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), DynamicBatch: in[0] < 1}
	m.Height, m.Width = int(in[2]), int(in[3])
	if m.Height < 1 || m.Width < 1 {
		h, w, err := parseImgsz(info.Metadata["imgsz"])
		if err != nil {
			return nil, bad("its input size is free and its imgsz metadata %q is unreadable", info.Metadata["imgsz"])
		}
		m.Height, m.Width = h, w
	}
	if m.Height%32 != 0 || m.Width%32 != 0 || m.Height > 8192 || m.Width > 8192 {
		return nil, bad("its input size %d×%d is not a multiple of 32 up to 8192", m.Width, m.Height)
	}
	if s, ok := info.Metadata["names"]; ok {
		names, err := ParseNames(s)
		if err != nil {
			return nil, bad("its names metadata is unreadable: %v", err)
		}
		m.Names = names
	}
	nc := int(out[1]) - 4
	if out[1] < 1 {
		nc = len(m.Names)
	}
	if nc < 1 {
		return nil, bad("its output %v has no class scores", out)
	}
	if m.Names == nil {
		for i := 0; i < nc; i++ {
			m.Names = append(m.Names, "class"+strconv.Itoa(i))
		}
	}
	if len(m.Names) != nc {
		return nil, bad("its output has %d classes but its names metadata %d", nc, len(m.Names))
	}
	// Anchors at strides 8, 16 and 32.
	want := (m.Height/8)*(m.Width/8) + (m.Height/16)*(m.Width/16) + (m.Height/32)*(m.Width/32)
	if out[2] > 0 && int(out[2]) != want {
		return nil, bad("its output %v has %d anchors where a %d×%d YOLOv8 head has %d (end-to-end exports such as YOLOv10 are not supported)", out, out[2], m.Width, m.Height, want)
	}
	m.Anchors = want
	return m, nil
}

// Classes is the number of classes.
func (m *Model) Classes() int { return len(m.Names) }

// outputShapes are the shapes of the outputs the detector's sessions
// write for batch images: the whole model's one, or the split model's.
func (m *Model) outputShapes(batch int) [][]int64 {
	if m.split != nil {
		return m.split.outputShapes(batch, len(m.Names))
	}
	return [][]int64{{int64(batch), int64(4 + len(m.Names)), int64(m.Anchors)}}
}

// Describe returns what the worker announces of the model.
func (m *Model) Describe() detect.Model {
	return detect.Model{Name: m.Name, Classes: m.Names, Input: detect.Size{Width: m.Width, Height: m.Height}}
}

// parseImgsz reads Ultralytics' imgsz metadata: "[640, 640]" or "640".
func parseImgsz(s string) (h, w int, err error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == '[' || r == ']' || r == ',' || r == ' ' || r == '(' || r == ')' })
	switch len(f) {
	case 1:
		h, err = strconv.Atoi(f[0])
		return h, h, err
	case 2:
		if h, err = strconv.Atoi(f[0]); err == nil {
			w, err = strconv.Atoi(f[1])
		}
		return h, w, err
	}
	return 0, 0, fmt.Errorf("imgsz %q", s)
}
