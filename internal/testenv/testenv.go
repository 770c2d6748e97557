// Package testenv gives tests the real parts they run against: the shared
// models, images and reference detections beside the checkout, and a
// private redis-server on a free port.
package testenv

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// SharedDir returns the shared/ folder beside the checkout (found from the
// working directory upwards), failing the test when there is none, since
// every developer and CI machine has it.
func SharedDir(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "..", "shared")
		if _, err := os.Stat(filepath.Join(p, "models")); err == nil {
			return filepath.Clean(p)
		}
		if filepath.Dir(dir) == dir {
			tb.Fatalf("no ../shared/models above %s", wd)
		}
	}
}

// Model returns the path of a shared model by file name; for the default
// model, yolov8n.onnx, MODEL_PATH wins when set.
func Model(tb testing.TB, name string) string {
	tb.Helper()
	if v := os.Getenv("MODEL_PATH"); v != "" && name == "yolov8n.onnx" {
		return v
	}
	return filepath.Join(SharedDir(tb), "models", name)
}

// Provider returns where tests run the detector: ORT_PROVIDER, as the
// worker reads it, else "cpu". ORT_PROVIDER=cuda runs the parity and
// batching tests on a GPU (scripts/gpu-bench.sh does); the tests of the
// CPU's threads and sessions need "cpu".
func Provider() string {
	if v := os.Getenv("ORT_PROVIDER"); v != "" {
		return v
	}
	return "cpu"
}

// Image returns the path of a shared test image.
func Image(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(SharedDir(tb), "images", name)
}

// ReadImage returns the bytes of a shared test image.
func ReadImage(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(Image(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Images lists the shared test images by file name.
func Images(tb testing.TB) []string {
	tb.Helper()
	es, err := os.ReadDir(filepath.Join(SharedDir(tb), "images"))
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

// SharedPNGs returns the shared test images that are PNGs, by file name,
// and fails the test when there is none.
func SharedPNGs(tb testing.TB) map[string][]byte {
	tb.Helper()
	pngs := map[string][]byte{}
	for _, name := range Images(tb) {
		if data := ReadImage(tb, name); bytes.HasPrefix(data, []byte("\x89PNG")) {
			pngs[name] = data
		}
	}
	if len(pngs) == 0 {
		tb.Fatal("no PNG among the shared images")
	}
	return pngs
}
