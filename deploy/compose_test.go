// Package deploy_test checks the deployment files (compose, Dockerfiles,
// Kubernetes manifests) by parsing them with the engines' own libraries,
// since Docker and a cluster cannot run here.
package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"yoloserve/internal/config"
)

// loadCompose loads the Compose files, as `docker compose` run in the
// project's root with no variables set would, with the services of the
// given profiles as well as those in none.
func loadCompose(t *testing.T, profiles []string, files ...string) *types.Project {
	t.Helper()
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join("..", f))
	}
	opts, err := cli.NewProjectOptions(paths, cli.WithName("yoloserve"), cli.WithWorkingDirectory(".."), cli.WithEnv([]string{}),
		cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose-go cannot load %v: %v", files, err)
	}
	return p
}

func TestCompose(t *testing.T) {
	p := loadCompose(t, nil, "docker-compose.yml")
	if diff := slices.Compare(p.ServiceNames(), []string{"api", "redis", "worker"}); diff != 0 {
		t.Fatalf("services %v", p.ServiceNames())
	}
	redis, api, worker := p.Services["redis"], p.Services["api"], p.Services["worker"]

	// Redis persists to disk (append-only file on a volume) and is checked.
	if !slices.Contains(redis.Command, "--appendonly") || !hasMount(redis, "redis-data", "/data", false) {
		t.Errorf("redis must run with --appendonly yes on a volume: %v %v", redis.Command, redis.Volumes)
	}
	for _, s := range []types.ServiceConfig{redis, api, worker} {
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no health check", s.Name)
		}
	}
	for _, s := range []types.ServiceConfig{api, worker} {
		if dep, ok := s.DependsOn["redis"]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s must wait for a healthy redis", s.Name)
		}
		if s.Environment["REDIS_URL"] == nil || *s.Environment["REDIS_URL"] != "redis://redis:6379/0" {
			t.Errorf("%s REDIS_URL %v", s.Name, s.Environment["REDIS_URL"])
		}
		if !hasMount(s, "uploads", "/data/uploads", false) || *s.Environment["UPLOAD_DIR"] != "/data/uploads" {
			t.Errorf("%s must share the uploads volume at UPLOAD_DIR", s.Name)
		}
	}
	// The API publishes its port; workers publish none, so that
	// `--scale worker=4` works.
	if len(api.Ports) != 1 || api.Ports[0].Target != 5000 {
		t.Errorf("api ports %v", api.Ports)
	}
	if len(worker.Ports) != 0 || worker.ContainerName != "" {
		t.Errorf("worker must not bind host ports or fix its name: %v %q", worker.Ports, worker.ContainerName)
	}
	// A worker's sizing can be set from the shell, so that several workers
	// on one host can each be given their share of the cores.
	for _, k := range []string{"WORKER_CONCURRENCY", "ORT_THREADS", "ORT_SOLO_THREADS"} {
		if v := worker.Environment[k]; v == nil || *v != "0" {
			t.Errorf("worker %s = %v, want it passed through, 0 by default", k, v)
		}
	}
	// Models come from ./models, read-only; none is baked in.
	if !hasBind(worker, "models", "/app/models", true) {
		t.Errorf("worker must mount ./models read-only at /app/models: %v", worker.Volumes)
	}
	// A stop lets the work in flight finish: Docker kills a container
	// stop_grace_period after SIGTERM, and the process itself stops waiting
	// after SHUTDOWN_TIMEOUT.
	ac, wc := effective(t, api), effective(t, worker)
	if g := stopGrace(api); g <= ac.ShutdownGrace {
		t.Errorf("api stop_grace_period %v must exceed its SHUTDOWN_TIMEOUT %v", g, ac.ShutdownGrace)
	}
	if wc.ShutdownGrace < wc.TaskTimeout {
		t.Errorf("worker SHUTDOWN_TIMEOUT %v must be at least TASK_TIMEOUT %v, so that a running task finishes", wc.ShutdownGrace, wc.TaskTimeout)
	}
	if g := stopGrace(worker); g <= wc.ShutdownGrace {
		t.Errorf("worker stop_grace_period %v must exceed its SHUTDOWN_TIMEOUT %v", g, wc.ShutdownGrace)
	}
	if api.Build == nil || api.Build.Dockerfile != "Dockerfile.api" || worker.Build == nil || worker.Build.Dockerfile != "Dockerfile.worker" {
		t.Error("api and worker must build from Dockerfile.api and Dockerfile.worker")
	}
}

// effective returns the configuration a service's process runs with: its
// environment in the compose file, defaults for the rest. A bad value fails
// the test.
func effective(t *testing.T, s types.ServiceConfig) config.Config {
	t.Helper()
	c, err := config.Parse(func(k string) string {
		if v := s.Environment[k]; v != nil {
			return *v
		}
		return ""
	})
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	return c
}

// stopGrace returns how long Docker waits after SIGTERM before it kills the
// service's container: its stop_grace_period, or Docker's default of 10s.
func stopGrace(s types.ServiceConfig) time.Duration {
	if s.StopGracePeriod == nil {
		return 10 * time.Second
	}
	return time.Duration(*s.StopGracePeriod)
}

func TestComposeGPU(t *testing.T) {
	p := loadCompose(t, nil, "docker-compose.yml", "docker-compose.gpu.yml")
	w := p.Services["worker"]
	if w.Build.Args["FLAVOR"] == nil || *w.Build.Args["FLAVOR"] != "cuda" || *w.Environment["ORT_PROVIDER"] != "cuda" {
		t.Errorf("gpu worker: build args %v, ORT_PROVIDER %v", w.Build.Args, w.Environment["ORT_PROVIDER"])
	}
	if w.Deploy == nil || len(w.Deploy.Resources.Reservations.Devices) != 1 ||
		!slices.Contains(w.Deploy.Resources.Reservations.Devices[0].Capabilities, "gpu") {
		t.Errorf("gpu worker must reserve a GPU device")
	}
	checkBatchesFill(t, "compose's gpu worker", effective(t, w))
	// A CUDA worker loads its libraries and runs each size of run before it
	// answers: its failed checks meanwhile must not mark it unhealthy, and
	// the override keeps the base's check.
	if h := w.HealthCheck; h == nil || len(h.Test) == 0 || h.StartPeriod == nil || time.Duration(*h.StartPeriod) < 5*time.Minute {
		t.Errorf("gpu worker health check %+v, want the base's check with a start period of at least 5 minutes", h)
	}
}

// checkBatchesFill fails unless a batching worker has slots for two
// batches: one running on the GPU while the next fills. With as many
// slots as BATCH_MAX, every slot's image is in the batch that runs, and
// the GPU waits while the next tasks are read, decoded and letterboxed.
func checkBatchesFill(t *testing.T, what string, c config.Config) {
	t.Helper()
	if c.BatchMax > 1 && c.Concurrency() < 2*c.BatchMax {
		t.Errorf("%s: WORKER_CONCURRENCY %d with BATCH_MAX %d, want at least %d, so that a batch fills while one runs", what, c.Concurrency(), c.BatchMax, 2*c.BatchMax)
	}
}

func hasMount(s types.ServiceConfig, source, target string, readOnly bool) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == source && v.Target == target && v.ReadOnly == readOnly {
			return true
		}
	}
	return false
}

func hasBind(s types.ServiceConfig, sourceBase, target string, readOnly bool) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && filepath.Base(v.Source) == sourceBase && v.Target == target && v.ReadOnly == readOnly {
			return true
		}
	}
	return false
}

// instruction is one Dockerfile instruction: its keyword and arguments.
type instruction struct {
	cmd  string
	args []string
	line string
}

func parseDockerfile(t *testing.T, name string) []instruction {
	t.Helper()
	f, err := os.Open(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("BuildKit cannot parse %s: %v", name, err)
	}
	var out []instruction
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), line: n.Original}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		out = append(out, in)
	}
	return out
}

// finalStage returns the instructions after the last FROM.
func finalStage(ins []instruction) []instruction {
	last := 0
	for i, in := range ins {
		if in.cmd == "from" {
			last = i
		}
	}
	return ins[last:]
}

func find(ins []instruction, cmd string) []instruction {
	var out []instruction
	for _, in := range ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func TestDockerfiles(t *testing.T) {
	for _, tc := range []struct {
		file, user, base string
	}{
		{"Dockerfile.api", "65532:65532", "scratch"},
		{"Dockerfile.worker", "10001:10001", "runtime-${FLAVOR}"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			all := parseDockerfile(t, tc.file)
			final := finalStage(all)
			if final[0].args[0] != tc.base {
				t.Errorf("final stage FROM %v, want %s", final[0].args, tc.base)
			}
			users := find(final, "user")
			if len(users) == 0 || users[len(users)-1].args[0] != tc.user || strings.HasPrefix(users[len(users)-1].args[0], "0") {
				t.Errorf("final stage must run as non-root %s: %v", tc.user, users)
			}
			if len(find(final, "healthcheck")) != 1 {
				t.Error("no HEALTHCHECK")
			}
			for _, in := range all {
				if (in.cmd == "copy" || in.cmd == "add") && strings.Contains(strings.ToLower(in.line), ".onnx") {
					t.Errorf("a model is baked into the image: %s", in.line)
				}
			}
		})
	}
	// The worker image carries the ONNX Runtime library and libjpeg-turbo
	// in both flavours, and the CUDA one runs on a CUDA 13 base.
	all := parseDockerfile(t, "Dockerfile.worker")
	text := ""
	for _, in := range all {
		text += in.line + "\n"
	}
	for _, want := range []string{"make ort ORT_FLAVOR=${FLAVOR}", "COPY --from=build /out/lib /app/lib", "libturbojpeg0", "libpng16-16", "libdeflate0", "nvidia/cuda:13", "ENV ORT_PROVIDER=cuda"} {
		if !strings.Contains(text, want) {
			t.Errorf("Dockerfile.worker lacks %q", want)
		}
	}
}
