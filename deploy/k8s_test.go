package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"yoloserve/internal/config"
)

// manifests is one kustomize build, decoded strictly into the Kubernetes
// API types (an unknown field fails the test).
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pdbs        map[string]*policyv1.PodDisruptionBudget
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	statefuls   map[string]*appsv1.StatefulSet
	secrets     map[string]*corev1.Secret
	scaled      map[string]map[string]any // KEDA ScaledObjects (CRD), as data
	triggerAuth map[string]map[string]any // KEDA TriggerAuthentications (CRD), as data
	podMonitors map[string]*monitoringv1.PodMonitor
	rules       map[string]*monitoringv1.PrometheusRule
}

func build(t *testing.T, dir string) *manifests {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatal("kubectl is needed for kustomize builds")
	}
	out, err := exec.Command("kubectl", "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
	}
	m := &manifests{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, statefuls: map[string]*appsv1.StatefulSet{},
		secrets: map[string]*corev1.Secret{}, scaled: map[string]map[string]any{}, triggerAuth: map[string]map[string]any{}, podMonitors: map[string]*monitoringv1.PodMonitor{},
		rules: map[string]*monitoringv1.PrometheusRule{}}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		json.Unmarshal(js, &head)
		name := head.Metadata.Name
		switch head.Kind {
		case "Deployment":
			strictInto(t, js, m.deployments, name)
		case "Service":
			strictInto(t, js, m.services, name)
		case "ConfigMap":
			strictInto(t, js, m.configMaps, name)
		case "PodDisruptionBudget":
			strictInto(t, js, m.pdbs, name)
		case "HorizontalPodAutoscaler":
			strictInto(t, js, m.hpas, name)
		case "StatefulSet":
			strictInto(t, js, m.statefuls, name)
		case "PodMonitor":
			strictInto(t, js, m.podMonitors, name)
		case "PrometheusRule":
			strictInto(t, js, m.rules, name)
		case "Secret":
			strictInto(t, js, m.secrets, name)
		case "ScaledObject", "TriggerAuthentication":
			var v map[string]any
			json.Unmarshal(js, &v)
			map[string]map[string]map[string]any{"ScaledObject": m.scaled, "TriggerAuthentication": m.triggerAuth}[head.Kind][name] = v
		default:
			t.Fatalf("unexpected kind %q in %s", head.Kind, dir)
		}
	}
	return m
}

// strictInto decodes one manifest into a new T, failing the test on any
// field the Kubernetes type does not have, and files it under name.
func strictInto[T any](t *testing.T, js []byte, into map[string]*T, name string) {
	t.Helper()
	v := new(T)
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%T %s: %v", v, name, err)
	}
	into[name] = v
}

// config returns the configuration c's process runs with: the config maps
// of m it reads, then its own env, defaults for the rest. A missing config
// map or a bad value fails the test.
func (m *manifests) config(t *testing.T, c corev1.Container) config.Config {
	t.Helper()
	vars := map[string]string{}
	for _, f := range c.EnvFrom {
		if f.ConfigMapRef == nil {
			continue
		}
		cm := m.configMaps[f.ConfigMapRef.Name]
		if cm == nil {
			t.Fatalf("%s reads the config map %q, which the build lacks", c.Name, f.ConfigMapRef.Name)
		}
		maps.Copy(vars, cm.Data)
	}
	maps.Copy(vars, env(c))
	cfg, err := config.Parse(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatalf("%s: %v", c.Name, err)
	}
	return cfg
}

// grace returns how long Kubernetes waits for d's pods to stop before it
// kills them: terminationGracePeriodSeconds, or its default of 30s.
func grace(d *appsv1.Deployment) time.Duration {
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// memBytes reads a GOMEMLIMIT value: bytes, or a number of KiB, MiB or GiB.
func memBytes(v string) (int64, error) {
	for i, unit := range []string{"KiB", "MiB", "GiB"} {
		if n, ok := strings.CutSuffix(v, unit); ok {
			f, err := strconv.ParseInt(n, 10, 64)
			return f << (10 * (i + 1)), err
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// env returns c's own environment variables that have a value.
func env(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
	}
	return out
}

func TestKubernetesCPU(t *testing.T) {
	m := build(t, "k8s/overlays/cpu")
	api, worker := m.deployments["yoloserve-api"], m.deployments["yoloserve-worker"]
	if api == nil || worker == nil || m.services["yoloserve-api"] == nil {
		t.Fatalf("deployments %v, services %v", keys(m.deployments), keys(m.services))
	}
	ac, wc := api.Spec.Template.Spec.Containers[0], worker.Spec.Template.Spec.Containers[0]
	if ac.ReadinessProbe.HTTPGet.Path != "/readyz" || ac.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("API probes must be /readyz and /healthz")
	}
	if wc.ReadinessProbe.HTTPGet.Path != "/readyz" || wc.LivenessProbe.HTTPGet.Path != "/healthz" ||
		wc.ReadinessProbe.HTTPGet.Port.String() != "health" || wc.Ports[0].ContainerPort != 9091 || env(wc)["WORKER_ADDR"] != ":9091" {
		t.Error("worker probes must hit /readyz and /healthz on WORKER_ADDR")
	}
	// A stopping worker finishes its running tasks, and Kubernetes waits
	// for it.
	wcfg, acfg := m.config(t, wc), m.config(t, ac)
	if wcfg.ShutdownGrace < wcfg.TaskTimeout {
		t.Errorf("worker SHUTDOWN_TIMEOUT %v must be at least TASK_TIMEOUT %v", wcfg.ShutdownGrace, wcfg.TaskTimeout)
	}
	if g := grace(worker); g <= wcfg.ShutdownGrace {
		t.Errorf("worker terminationGracePeriodSeconds %v must exceed SHUTDOWN_TIMEOUT %v", g, wcfg.ShutdownGrace)
	}
	// A stopping API keeps taking uploads until the proxies have let it
	// go, then finishes those it reads.
	if ac.Lifecycle == nil || ac.Lifecycle.PreStop == nil || ac.Lifecycle.PreStop.Sleep == nil || ac.Lifecycle.PreStop.Sleep.Seconds < 3 {
		t.Error("API: want a preStop sleep of a few seconds, so that no upload is refused while the pod leaves its endpoints")
	} else if g, sleep := grace(api), time.Duration(ac.Lifecycle.PreStop.Sleep.Seconds)*time.Second; g <= sleep+acfg.ShutdownGrace {
		t.Errorf("API terminationGracePeriodSeconds %v must exceed the preStop sleep %v and SHUTDOWN_TIMEOUT %v", g, sleep, acfg.ShutdownGrace)
	}
	// The API's memory stays under its limit: the bodies it reads are
	// bounded by MAX_INFLIGHT_BYTES, and Go's heap, their garbage
	// included, by GOMEMLIMIT, with room for the rest of the process.
	memLimit := ac.Resources.Limits.Memory().Value()
	goLimit, err := memBytes(env(ac)["GOMEMLIMIT"])
	if err != nil {
		t.Errorf("API GOMEMLIMIT: %v", err)
	} else if goLimit < acfg.MaxInflightBytes+64<<20 || goLimit > memLimit*85/100 {
		t.Errorf("API GOMEMLIMIT %d must hold MAX_INFLIGHT_BYTES %d and 64 MiB more, and stay within 85%% of the memory limit %d", goLimit, acfg.MaxInflightBytes, memLimit)
	}
	for _, d := range []*appsv1.Deployment{api, worker} {
		sc := d.Spec.Template.Spec.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s must run as non-root", d.Name)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s needs CPU requests and memory limits", d.Name)
		}
	}
	// The worker's threads fit its CPUs: the slots' sessions side by side,
	// and the solo session alone (by default it would take the node's
	// every core when the pod has no CPU limit).
	we := env(wc)
	conc, _ := strconv.Atoi(we["WORKER_CONCURRENCY"])
	threads, _ := strconv.Atoi(we["ORT_THREADS"])
	solo, _ := strconv.Atoi(we["ORT_SOLO_THREADS"])
	if cpus := wc.Resources.Requests.Cpu().Value(); conc*threads != int(cpus) || solo != int(cpus) {
		t.Errorf("worker: %d slots × %d threads and a solo session of %d threads on %d CPUs; want both to fill the CPUs", conc, threads, solo, cpus)
	}
	if cm := m.configMaps["yoloserve"]; cm == nil || cm.Data["UPLOAD_STORE"] != "redis" {
		t.Error("pods share no disk: the config must set UPLOAD_STORE=redis")
	}
	if pdb := m.pdbs["yoloserve-worker"]; pdb == nil || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "yoloserve-worker" {
		t.Error("no PodDisruptionBudget for the workers")
	}
	so := m.scaled["yoloserve-worker"]
	if so == nil {
		t.Fatal("no KEDA ScaledObject")
	}
	spec := so["spec"].(map[string]any)
	if spec["scaleTargetRef"].(map[string]any)["name"] != "yoloserve-worker" || spec["fallback"] == nil {
		t.Errorf("ScaledObject spec %v", spec)
	}
	types := map[string]map[string]any{}
	for _, tr := range spec["triggers"].([]any) {
		tr := tr.(map[string]any)
		types[tr["type"].(string)] = tr["metadata"].(map[string]any)
	}
	if types["redis"]["listName"] != "asynq:{detect}:pending" || types["cpu"] == nil {
		t.Errorf("triggers %v: want redis on asynq's pending list and cpu", types)
	}
	m.checkTriggerReadsQueue(t, "cpu", wcfg)
	if len(m.hpas) != 0 {
		t.Error("with KEDA, no separate HPA (KEDA makes its own)")
	}
}

func TestKubernetesHPAOnly(t *testing.T) {
	m := build(t, "k8s/overlays/cpu-hpa")
	h := m.hpas["yoloserve-worker"]
	if h == nil || len(m.scaled) != 0 || h.Spec.ScaleTargetRef.Name != "yoloserve-worker" || h.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
		t.Errorf("hpa-only: HPA %v, ScaledObjects %v", h, keys(m.scaled))
	}
}

func TestKubernetesGPU(t *testing.T) {
	m := build(t, "k8s/overlays/gpu")
	w := m.deployments["yoloserve-worker"].Spec.Template.Spec.Containers[0]
	if !strings.Contains(w.Image, "cuda") || env(w)["ORT_PROVIDER"] != "cuda" {
		t.Errorf("gpu worker image %s, ORT_PROVIDER %q", w.Image, env(w)["ORT_PROVIDER"])
	}
	one := resource.MustParse("1")
	if q, ok := w.Resources.Limits["nvidia.com/gpu"]; !ok || q.Cmp(one) != 0 {
		t.Errorf("gpu worker limits %v", w.Resources.Limits)
	}
	if env(w)["WORKER_ADDR"] != ":9091" || w.ReadinessProbe == nil || w.LivenessProbe == nil {
		t.Error("the gpu patch must keep the base's env and probes")
	}
	// A CUDA worker loads its libraries and runs each size of run before
	// it answers: the liveness probe must not restart it meanwhile.
	if p := w.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.PeriodSeconds*p.FailureThreshold < 300 {
		t.Errorf("gpu worker startup probe %+v, want /healthz given at least 5 minutes", p)
	}
	if api := m.deployments["yoloserve-api"].Spec.Template.Spec.Containers[0]; strings.Contains(api.Image, "cuda") {
		t.Error("the API image must not change")
	}
	m.checkTriggerReadsQueue(t, "gpu", m.config(t, w))
	checkBatchesFill(t, "the gpu overlay's worker", m.config(t, w))
}

// TestKubernetesRedisTLS: the redis-tls component, on the CPU and the GPU
// overlays, gives the API and the workers a configuration that parses
// (a rediss:// REDIS_URL and the three REDIS_TLS_ files), with each file
// a key of the Secret yoloserve-redis-tls mounted whole (a subPath mount
// would never see the kubelet's updates, and the files are read again for
// those) and readable by the pod's group only; and KEDA reads the queue
// over TLS with the same Secret.
func TestKubernetesRedisTLS(t *testing.T) {
	for _, overlay := range []string{"k8s/overlays/cpu", "k8s/overlays/gpu"} {
		m := build(t, userKustomization(t, overlay, "k8s/components/redis-tls"))
		for _, name := range []string{"yoloserve-api", "yoloserve-worker"} {
			pod := m.deployments[name].Spec.Template.Spec
			c := pod.Containers[0]
			cfg := m.config(t, c)
			if !strings.HasPrefix(cfg.RedisURL, "rediss://") {
				t.Errorf("%s %s: REDIS_URL %s, want rediss://", overlay, name, cfg.RedisURL)
			}
			for file, key := range map[string]string{cfg.RedisTLSCA: "ca.crt", cfg.RedisTLSCert: "tls.crt", cfg.RedisTLSKey: "tls.key"} {
				if got := secretKeyAt(pod, c, file); got != "yoloserve-redis-tls/"+key {
					t.Errorf("%s %s: %s is %q, want the key %s of the Secret yoloserve-redis-tls, mounted whole", overlay, name, file, got, key)
				}
			}
			for _, v := range pod.Volumes {
				if v.Secret == nil {
					continue
				}
				if mode := v.Secret.DefaultMode; mode == nil || *mode&0o007 != 0 || pod.SecurityContext.FSGroup == nil {
					t.Errorf("%s %s: the Secret %s is readable by others: want a defaultMode closed to them, and fsGroup set", overlay, name, v.Secret.SecretName)
				}
			}
		}

		// KEDA: the redis trigger's authentication turns TLS on and takes
		// the CA, certificate and key from the same Secret.
		auth, _ := m.redisTrigger(t)["authenticationRef"].(map[string]any)
		ref, _ := auth["name"].(string)
		ta := m.triggerAuth[ref]
		if ta == nil {
			t.Fatalf("%s: the redis trigger's authentication %q is not in the build (%v)", overlay, ref, keys(m.triggerAuth))
		}
		params := map[string]string{}
		for _, r := range ta["spec"].(map[string]any)["secretTargetRef"].([]any) {
			r := r.(map[string]any)
			sec, key := r["name"].(string), r["key"].(string)
			params[r["parameter"].(string)] = sec + "/" + key
			if s := m.secrets[sec]; s != nil {
				params[r["parameter"].(string)] = string(s.Data[key])
			}
		}
		want := map[string]string{"tls": "enable", "ca": "yoloserve-redis-tls/ca.crt", "cert": "yoloserve-redis-tls/tls.crt", "key": "yoloserve-redis-tls/tls.key"}
		if diff := cmp.Diff(want, params); diff != "" {
			t.Errorf("%s: KEDA's TLS parameters (-want +got):\n%s", overlay, diff)
		}
		m.checkTriggerReadsQueue(t, overlay+" with redis-tls", m.config(t, m.deployments["yoloserve-worker"].Spec.Template.Spec.Containers[0]))
	}
}

// TestKubernetesRedisPassword: the redis-password component, alone and
// with redis-tls, gives the API and the workers REDIS_PASSWORD from the
// Secret yoloserve-redis, and KEDA's redis trigger reads the same
// variable of the workers' pods, so that a Redis that asks for a password
// is still counted (a trigger without it fails, and KEDA holds its
// fallback replica count).
func TestKubernetesRedisPassword(t *testing.T) {
	for _, components := range [][]string{{"k8s/components/redis-password"}, {"k8s/components/redis-password", "k8s/components/redis-tls"}} {
		m := build(t, userKustomization(t, "k8s/overlays/cpu", components...))
		for _, name := range []string{"yoloserve-api", "yoloserve-worker"} {
			c := m.deployments[name].Spec.Template.Spec.Containers[0]
			if got := secretEnv(c, "REDIS_PASSWORD"); got != "yoloserve-redis/password" {
				t.Errorf("%v %s: REDIS_PASSWORD from %q, want the key password of the Secret yoloserve-redis", components, name, got)
			}
			if got := secretEnv(c, "REDIS_SENTINEL_PASSWORD"); got != "yoloserve-redis/sentinel-password (optional)" {
				t.Errorf("%v %s: REDIS_SENTINEL_PASSWORD from %q, want the optional key sentinel-password of the Secret yoloserve-redis: a Redis without Sentinel has none", components, name, got)
			}
			m.config(t, c) // the rest still parses
		}
		trigger := m.redisTrigger(t)
		auth := trigger["authenticationRef"]
		env, _ := trigger["metadata"].(map[string]any)["passwordFromEnv"].(string)
		if worker := m.deployments["yoloserve-worker"].Spec.Template.Spec.Containers[0]; env == "" || secretEnv(worker, env) != "yoloserve-redis/password" {
			t.Errorf("%v: KEDA's redis trigger reads the password from %q, want a variable of the workers' pods from the Secret", components, env)
		}
		if tls := len(components) > 1; tls != (auth != nil) {
			t.Errorf("%v: the trigger's TLS authentication %v; the password must not replace it, nor add one", components, auth)
		}
		m.checkTriggerReadsQueue(t, fmt.Sprint(components), m.config(t, m.deployments["yoloserve-worker"].Spec.Template.Spec.Containers[0]))
	}
}

// TestKubernetesRedisSentinel: the redis-sentinel component, alone, with
// redis-password, and with redis-tls and a rediss-sentinel:// URL of the
// user's, gives the API and the workers a sentinel REDIS_URL that parses
// and the API REDIS_WAIT_REPLICAS=1 (a failover loses no accepted task);
// and KEDA counts the same queue through the same sentinels, with the
// workers' passwords (the sentinels' one optional) and the TLS
// authentication kept, whichever order the components come in.
func TestKubernetesRedisSentinel(t *testing.T) {
	const userURL = "rediss-sentinel://s-0.sentinel:26379,s-1.sentinel:26379,s-2.sentinel:26379/prod/3"
	for _, tc := range []struct {
		components []string
		userURL    string // set by the user's kustomization, with the trigger's addresses
	}{
		{[]string{"k8s/components/redis-sentinel"}, ""},
		{[]string{"k8s/components/redis-sentinel", "k8s/components/redis-password"}, ""},
		{[]string{"k8s/components/redis-password", "k8s/components/redis-sentinel"}, ""},
		{[]string{"k8s/components/redis-tls", "k8s/components/redis-sentinel", "k8s/components/redis-password"}, userURL},
	} {
		what := fmt.Sprint(tc.components)
		dir := userKustomization(t, "k8s/overlays/cpu", tc.components...)
		if tc.userURL != "" {
			u, _ := url.Parse(tc.userURL)
			path := strings.Split(strings.Trim(u.Path, "/"), "/")
			patch := fmt.Sprintf(`patches:
  - target: {kind: ConfigMap, name: yoloserve}
    patch: |-
      - {op: replace, path: /data/REDIS_URL, value: "%s"}
  - target: {kind: ScaledObject, name: yoloserve-worker}
    patch: |-
      - {op: replace, path: /spec/triggers/0/metadata/addresses, value: "%s"}
      - {op: replace, path: /spec/triggers/0/metadata/sentinelMaster, value: %s}
      - {op: replace, path: /spec/triggers/0/metadata/databaseIndex, value: "%s"}
`, tc.userURL, u.Host, path[0], path[1])
			f, err := os.OpenFile(filepath.Join(dir, "kustomization.yaml"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(patch)
			f.Close()
		}
		m := build(t, dir)
		api := m.config(t, m.deployments["yoloserve-api"].Spec.Template.Spec.Containers[0])
		wc := m.deployments["yoloserve-worker"].Spec.Template.Spec.Containers[0]
		worker := m.config(t, wc)
		if !strings.Contains(worker.RedisURL, "-sentinel://") || api.RedisURL != worker.RedisURL {
			t.Errorf("%s: REDIS_URL %s (API) and %s (workers), want one sentinel URL", what, api.Redacted(), worker.Redacted())
		}
		if api.RedisWaitReplicas != 1 {
			t.Errorf("%s: the API's REDIS_WAIT_REPLICAS %d, want 1: a failover to a replica that lacks a task loses it", what, api.RedisWaitReplicas)
		}
		m.checkTriggerReadsQueue(t, what, worker)

		meta := m.redisTrigger(t)["metadata"].(map[string]any)
		password := slices.Contains(tc.components, "k8s/components/redis-password")
		if got, _ := meta["sentinelPasswordFromEnv"].(string); got != "REDIS_SENTINEL_PASSWORD" {
			t.Errorf("%s: the trigger's sentinelPasswordFromEnv %q, want REDIS_SENTINEL_PASSWORD, the workers' variable", what, got)
		}
		if got, _ := meta["passwordFromEnv"].(string); password != (got != "" && secretEnv(wc, got) == "yoloserve-redis/password") {
			t.Errorf("%s: the trigger's passwordFromEnv %q; want the workers' REDIS_PASSWORD from the Secret exactly when redis-password is used", what, got)
		}
		if password && secretEnv(wc, "REDIS_SENTINEL_PASSWORD") == "" {
			t.Errorf("%s: the workers have no REDIS_SENTINEL_PASSWORD for the trigger to read", what)
		}
		m.checkTriggerTLS(t, what, tc.userURL != "")
	}
}

// TestKubernetesUserRedisURL: the README's kustomizations for a Redis of
// the user's own, alone, over TLS (with redis-tls) and behind Sentinel,
// build; KEDA's trigger reads the Redis (or the sentinels and primary)
// and database of their REDIS_URL, and follows it when another URL is put
// in its place; redis-tls's authentication stays on the trigger.
func TestKubernetesUserRedisURL(t *testing.T) {
	const own, sentinels = "A kustomization of yours for a Redis elsewhere", "A kustomization of yours with three sentinels"
	const ownURL, sentinelURL = "redis://redis-master.data:6379/2", "redis-sentinel://s-0.sentinel:26379,s-1.sentinel:26379,s-2.sentinel:26379/prod/0"
	for _, tc := range []struct {
		marker, readmeURL string
		tls               bool     // redis-tls added to the README's components
		urls              []string // put in place of the README's URL, in turn
	}{
		{own, ownURL, false, []string{ownURL, "redis://cache.example:6380/5"}},
		{own, ownURL, true, []string{"rediss://redis-master.data:6379/2", "rediss://cache.example:6380/5"}},
		{sentinels, sentinelURL, false, []string{sentinelURL, "redis-sentinel://a:26379,b:26380/other/4"}},
	} {
		dir := readmeKustomization(t, tc.marker)
		file := filepath.Join(dir, "kustomization.yaml")
		k, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(k), tc.readmeURL) {
			t.Fatalf("the README's %q does not set REDIS_URL %s", tc.marker, tc.readmeURL)
		}
		if tc.tls {
			k = append(k, "components:\n  - "+relFrom(t, dir, "k8s/components/redis-tls")+"\n"...)
		}
		for _, want := range tc.urls {
			what := fmt.Sprintf("the README's %q with REDIS_URL %s (redis-tls: %v)", tc.marker, want, tc.tls)
			if err := os.WriteFile(file, []byte(strings.ReplaceAll(string(k), tc.readmeURL, want)), 0o644); err != nil {
				t.Fatal(err)
			}
			m := build(t, dir)
			worker := m.config(t, m.deployments["yoloserve-worker"].Spec.Template.Spec.Containers[0])
			if worker.RedisURL != want {
				t.Errorf("%s: the workers' REDIS_URL %s", what, worker.Redacted())
			}
			m.checkTriggerReadsQueue(t, what, worker)
			m.checkTriggerTLS(t, what, tc.tls)
		}
	}
}

// readmeKustomization writes the README's YAML block that follows the
// line holding marker into a folder of its own, with the paths into the
// checkout (../yoloserve/...) made relative to that folder, and returns
// the folder. A README without such a block fails the test.
func readmeKustomization(t *testing.T, marker string) string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), marker)
	if !ok {
		t.Fatalf("the README has no %q", marker)
	}
	_, block, ok1 := strings.Cut(after, "```yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok1 || !ok2 {
		t.Fatalf("the README has no YAML block after %q", marker)
	}
	dir := t.TempDir()
	block = strings.ReplaceAll(block, "../yoloserve/", relFrom(t, dir, "..")+"/")
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// redisTrigger returns the redis trigger of the workers' ScaledObject, as
// data. A build without one fails the test.
func (m *manifests) redisTrigger(t *testing.T) map[string]any {
	t.Helper()
	so := m.scaled["yoloserve-worker"]
	if so == nil {
		t.Fatal("no KEDA ScaledObject yoloserve-worker")
	}
	for _, tr := range so["spec"].(map[string]any)["triggers"].([]any) {
		if tr := tr.(map[string]any); tr["type"] == "redis" || tr["type"] == "redis-sentinel" {
			return tr
		}
	}
	t.Fatal("the workers' ScaledObject has no redis or redis-sentinel trigger")
	return nil
}

// checkTriggerReadsQueue checks that KEDA's trigger reads the queue the
// workers take tasks from, as cfg (the workers' configuration) has it:
// asynq's pending list of QUEUE, in the database of REDIS_URL, on its
// Redis (a redis trigger) or through its sentinels and primary's name (a
// redis-sentinel trigger, for a sentinel URL). A trigger that reads
// another Redis or list counts nothing, and KEDA keeps the workers at
// their minimum however long the queue grows.
func (m *manifests) checkTriggerReadsQueue(t *testing.T, what string, cfg config.Config) {
	t.Helper()
	tr := m.redisTrigger(t)
	meta := map[string]string{}
	for k, v := range tr["metadata"].(map[string]any) {
		meta[k], _ = v.(string)
	}
	u, err := url.Parse(cfg.RedisURL)
	if err != nil {
		t.Fatalf("%s: REDIS_URL: %v", what, err)
	}
	path := strings.Split(strings.Trim(u.Path, "/"), "/")
	got := map[string]string{"type": tr["type"].(string), "listName": meta["listName"], "databaseIndex": meta["databaseIndex"]}
	want := map[string]string{"listName": "asynq:{" + cfg.Queue + "}:pending"}
	switch u.Scheme {
	case "redis", "rediss":
		want["type"], want["address"], want["databaseIndex"] = "redis", u.Host, path[0]
		got["address"] = meta["address"]
	case "redis-sentinel", "rediss-sentinel":
		want["type"], want["addresses"], want["sentinelMaster"], want["databaseIndex"] = "redis-sentinel", u.Host, path[0], path[len(path)-1]
		got["addresses"], got["sentinelMaster"] = strings.ReplaceAll(meta["addresses"], " ", ""), meta["sentinelMaster"]
	default:
		t.Fatalf("%s: REDIS_URL %s: no KEDA trigger for its scheme", what, cfg.Redacted())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: KEDA's trigger against REDIS_URL %s and QUEUE %s (-want +got):\n%s", what, cfg.Redacted(), cfg.Queue, diff)
	}
}

// checkTriggerTLS checks that KEDA's trigger has a TLS authentication
// exactly when the build has redis-tls (tls).
func (m *manifests) checkTriggerTLS(t *testing.T, what string, tls bool) {
	t.Helper()
	if auth := m.redisTrigger(t)["authenticationRef"]; tls != (auth != nil) {
		t.Errorf("%s: the trigger's TLS authentication %v, want it exactly with redis-tls", what, auth)
	}
}

// secretEnv returns "secret/key" for the variable name of c when it comes
// from a Secret, followed by " (optional)" when the key may be missing,
// else "".
func secretEnv(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref.Optional != nil && *ref.Optional {
				return ref.Name + "/" + ref.Key + " (optional)"
			}
			return ref.Name + "/" + ref.Key
		}
	}
	return ""
}

// secretKeyAt returns "secret/key" for the file at path in container c of
// pod, when a Secret volume mounted whole (no subPath) holds it, or where
// it is otherwise.
func secretKeyAt(pod corev1.PodSpec, c corev1.Container, path string) string {
	for _, vm := range c.VolumeMounts {
		key, ok := strings.CutPrefix(path, vm.MountPath+"/")
		if !ok {
			continue
		}
		if vm.SubPath != "" || !vm.ReadOnly {
			return "a subPath or writable mount of " + vm.Name
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				return v.Secret.SecretName + "/" + key
			}
		}
		return "volume " + vm.Name
	}
	return "no volume"
}

func TestKubernetesRedisExample(t *testing.T) {
	m := build(t, "k8s/redis")
	r := m.statefuls["redis"]
	if r == nil || !strings.Contains(fmt.Sprint(r.Spec.Template.Spec.Containers[0].Args), "--appendonly yes") || len(r.Spec.VolumeClaimTemplates) != 1 {
		t.Error("the Redis example must persist (append-only file on a volume claim)")
	}
	c := r.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "--maxmemory-policy noeviction") || !strings.Contains(args, "--maxmemory 640mb") || 640<<20 > c.Resources.Limits.Memory().Value()*3/4 {
		t.Errorf("the Redis example must refuse writes (noeviction) at a maxmemory well under its pod's limit %v: %s", c.Resources.Limits.Memory(), args)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
