package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"yoloserve/internal/testenv"
)

// TestStagesRunUnderTheWorkersPolicy: the detector's stages are measured
// in a process of their own under the worker's scheduling policy
// (SCHED_BATCH), each photo with the worker's decoders and then Go's,
// while the bench's own process, whose bare sessions are the floor, keeps
// the normal policy.
func TestStagesRunUnderTheWorkersPolicy(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Model: testenv.Model(t, "yolov8n.onnx"), Provider: "cpu", Exe: exe,
		Images: []string{testenv.Image(t, "bus.jpg"), testenv.Image(t, "person.png")}}
	r, err := runStages(context.Background(), cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.Policy != "batch" {
		t.Errorf("stages under the %q policy, want batch", r.Policy)
	}
	var got []string
	for _, s := range append(r.Stages, r.Decoders...) {
		got = append(got, s.Image+" "+s.Decoder)
		if s.Runs < 2 || s.DecodeMS <= 0 || s.InferenceMS <= 0 {
			t.Errorf("%s with %s: %d runs, decoding %.2f ms, inference %.2f ms", s.Image, s.Decoder, s.Runs, s.DecodeMS, s.InferenceMS)
		}
	}
	want := []string{"bus.jpg libjpeg-turbo", "person.png libdeflate+libpng", "bus.jpg go-image/jpeg", "person.png go-image/png"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stages measured (-want +got):\n%s", diff)
	}
	for tid, policy := range testenv.ThreadPolicies(t, os.Getpid()) {
		if policy != unix.SCHED_NORMAL {
			t.Errorf("the bench's thread %d under policy %d, want the normal one", tid, policy)
		}
	}
}

// A stages child that fails says why in the bench's error, not only
// that it exited: here, the model it was given is not there.
func TestStagesChildSaysWhyItFailed(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.onnx")
	cfg := &Config{Model: missing, Provider: "cpu", Exe: exe, Images: []string{testenv.Image(t, "bus.jpg")}}
	_, err = runStages(context.Background(), cfg, 1)
	if err == nil {
		t.Fatal("stages measured with no model")
	}
	if !strings.HasPrefix(err.Error(), "stages: exit status 1: ") || !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q, want the child's exit and its reason, which names %s", err, missing)
	}
}
