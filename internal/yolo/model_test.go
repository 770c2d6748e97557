package yolo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"

	"yoloserve/internal/onnx"
	"yoloserve/internal/testenv"
)

func TestParseNames(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"{0: 'person', 1: 'bicycle'}", []string{"person", "bicycle"}, false},
		{`{1: "dog's toy", 0: 'a\'b'}`, []string{"a'b", "dog's toy"}, false},
		{"{0: 'x',}", []string{"x"}, false},
		{"{}", []string{}, false},
		{"{0: 'a', 2: 'c'}", nil, true},
		{"{0: 'a', 0: 'b'}", nil, true},
		{"{0: 'a'", nil, true},
		{"['a', 'b']", nil, true},
		{"{0: unquoted}", nil, true},
	} {
		got, err := ParseNames(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseNames(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); !tc.err && diff != "" {
			t.Errorf("ParseNames(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// identityModel encodes a minimal ONNX model, y = Identity(x), with the
// given float32 shape and metadata.
func identityModel(shape []int64, meta map[string]string) []byte {
	msg := func(field protowire.Number, body []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), body)
	}
	str := func(field protowire.Number, s string) []byte { return msg(field, []byte(s)) }
	varint := func(field protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, field, protowire.VarintType), v)
	}
	var dims []byte
	for _, d := range shape {
		dims = append(dims, msg(1, varint(1, uint64(d)))...)
	}
	tensorType := append(varint(1, 1), msg(2, dims)...) // elem_type FLOAT, shape
	valueInfo := func(name string) []byte { return append(str(1, name), msg(2, msg(1, tensorType))...) }
	node := append(append(str(1, "x"), str(2, "y")...), str(4, "Identity")...)
	graph := append(msg(1, node), str(2, "g")...)
	graph = append(graph, msg(11, valueInfo("x"))...)
	graph = append(graph, msg(12, valueInfo("y"))...)
	model := varint(1, 8) // ir_version
	model = append(model, msg(8, append(str(1, ""), varint(2, 13)...))...)
	model = append(model, msg(7, graph)...)
	for k, v := range meta {
		model = append(model, msg(14, append(str(1, k), str(2, v)...))...)
	}
	return model
}

// TestOpenRefusesForeignModels checks that a file that is not a YOLO
// detection model fails at start with a message saying why, not a panic.
func TestOpenRefusesForeignModels(t *testing.T) {
	dir := t.TempDir()
	real, err := os.ReadFile(testenv.Model(t, "yolov8n.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"garbage.onnx", []byte("this is not a model"), "not a readable ONNX model"},
		{"truncated.onnx", real[:len(real)/3], "not a readable ONNX model"},
		{"empty.onnx", nil, "not a readable ONNX model"},
		{"classifier.onnx", identityModel([]int64{1, 1000}, nil), "input"},
		{"image-to-image.onnx", identityModel([]int64{1, 3, 64, 64}, nil), "output"},
		{"segment.onnx", identityModel([]int64{1, 3, 64, 64}, map[string]string{"task": "segment"}), `task is "segment"`},
		{"missing.onnx", nil, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.name != "missing.onnx" {
				if err := os.WriteFile(path, tc.data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			d, err := Open(Config{ModelPath: path, Concurrency: 1})
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should name %s and say %q", err, path, tc.want)
			}
		})
	}
}

func TestNewModelReadsShapesAndNames(t *testing.T) {
	for _, tc := range []struct {
		file    string
		dynamic bool
	}{{"yolov8n.onnx", false}, {"yolov8n-dynamic.onnx", true}, {"yolov8n-int8.onnx", false}} {
		d, err := Open(Config{ModelPath: testenv.Model(t, tc.file), Concurrency: 1})
		if err != nil {
			t.Fatal(err)
		}
		m := d.Model()
		got := []any{m.Width, m.Height, m.Anchors, m.Classes(), m.Names[0], m.Names[79], m.DynamicBatch}
		want := []any{640, 640, 8400, 80, "person", "toothbrush", tc.dynamic}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.file, diff)
		}
		d.Close()
	}
}

// TestCUDAUnavailable: without the CUDA provider (none on this machine),
// the cuda provider fails with onnx.ErrCUDAUnavailable and the reason,
// unless CPU fallback is asked for.
func TestCUDAUnavailable(t *testing.T) {
	model := testenv.Model(t, "yolov8n.onnx")
	d, err := Open(Config{ModelPath: model, Provider: "cuda", Concurrency: 1})
	if err == nil {
		provider := d.Provider()
		d.Close()
		if provider == "cuda" {
			t.Skip("this machine has a working CUDA provider")
		}
		t.Fatalf("cuda without fallback opened on %s", provider)
	}
	if !errors.Is(err, onnx.ErrCUDAUnavailable) || len(err.Error()) <= len(onnx.ErrCUDAUnavailable.Error())+2 {
		t.Errorf("error should say CUDA failed, and why: %v", err)
	}
	d, err = Open(Config{ModelPath: model, Provider: "cuda", FallbackCPU: true, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Provider() != "cpu" {
		t.Errorf("fallback runs on %s", d.Provider())
	}
	// A convolution algorithm search that does not exist is a mistake
	// to fix, not a reason to fall back to the CPU.
	_, err = Open(Config{ModelPath: model, Provider: "cuda", FallbackCPU: true, ConvAlgoSearch: "fastest", Concurrency: 1})
	if err == nil || errors.Is(err, onnx.ErrCUDAUnavailable) || !strings.Contains(err.Error(), `"fastest"`) {
		t.Errorf("ConvAlgoSearch fastest: %v, want an error naming it", err)
	}
}
