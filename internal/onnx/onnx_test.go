package onnx

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestInit: the version is empty until a library is loaded, then the
// loaded library's own, which is the one `make build` recorded beside it;
// the library loads once, so a second Init names the same file (relative
// or absolute) or fails; its telemetry is off.
func TestInit(t *testing.T) {
	if got := Version(); got != "" {
		t.Fatalf("Version() before Init = %q, want \"\"", got)
	}
	lib, err := FindLibrary(os.Getenv("ORT_LIB"))
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(lib)
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, abs)
	if err != nil {
		t.Fatal(err)
	}
	if err := Init(rel, Env{}); err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv(TelemetrySwitch); got != "1" {
		t.Errorf("%s=%q after Init with the default Env, want 1: ONNX Runtime's telemetry left on", TelemetrySwitch, got)
	}
	got := Version()
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(got) {
		t.Fatalf("Version() = %q, want MAJOR.MINOR.PATCH", got)
	}
	stamps, _ := filepath.Glob(filepath.Join(filepath.Dir(abs), ".version-*"))
	if len(stamps) == 1 {
		if want := strings.TrimPrefix(filepath.Base(stamps[0]), ".version-"); got != want {
			t.Errorf("Version() = %q, but make recorded %s beside %s", got, want, abs)
		}
	}
	if err := Init(abs, Env{}); err != nil {
		t.Errorf("Init(%s) after Init(%s): %v, want nil (the same file)", abs, rel, err)
	}
	other := filepath.Join(t.TempDir(), LibraryName)
	if err := Init(other, Env{}); err == nil || !strings.Contains(err.Error(), "already initialised") {
		t.Errorf("Init(%s) after Init(%s): %v, want an \"already initialised\" error", other, rel, err)
	}
}
