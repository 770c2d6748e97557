package deploy_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the generated manifests (the PrometheusRule, the dashboard's ConfigMap) from their sources")

const (
	alertsFile    = "prometheus/alerts.yml"
	ruleFile      = "k8s/components/prometheus/prometheusrule.yaml"
	dashboardFile = "grafana/yoloserve.json"
	dashboardMap  = "k8s/components/prometheus/grafana-dashboard.yaml"
)

// prometheusRule returns the PrometheusRule manifest that carries the
// groups of alerts, a Prometheus rule file, as they are written there.
// It returns an error when alerts has no top-level groups.
func prometheusRule(alerts []byte) ([]byte, error) {
	_, groups, ok := bytes.Cut(alerts, []byte("\ngroups:\n"))
	if !ok {
		return nil, errors.New("no top-level groups")
	}
	return indented(`# Generated from deploy/prometheus/alerts.yml, which is the one to edit; then
# go test ./deploy -run TestKubernetesPrometheus -update
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: yoloserve
  labels:
    app.kubernetes.io/part-of: yoloserve
spec:
  groups:
`, groups, "  "), nil
}

// dashboardConfigMap returns the ConfigMap that carries dashboard, a
// Grafana dashboard's JSON, labelled for the Grafana sidecar of
// kube-prometheus-stack, which loads every config map so labelled.
func dashboardConfigMap(dashboard []byte) []byte {
	return indented(`# Generated from deploy/grafana/yoloserve.json, which is the one to edit; then
# go test ./deploy -run TestKubernetesPrometheus -update
apiVersion: v1
kind: ConfigMap
metadata:
  name: yoloserve-grafana-dashboard
  labels:
    app.kubernetes.io/part-of: yoloserve
    grafana_dashboard: "1"
data:
  yoloserve.json: |
`, dashboard, "    ")
}

// indented returns head followed by the lines of body, each but the empty
// ones indented by indent.
func indented(head string, body []byte, indent string) []byte {
	var b bytes.Buffer
	b.WriteString(head)
	for line := range strings.Lines(string(body)) {
		if line != "\n" {
			b.WriteString(indent)
		}
		b.WriteString(line)
	}
	return b.Bytes()
}

// generated checks that the file at path holds want, what its source
// gives; with -update it writes want there first.
func generated(t *testing.T, path, source string, want []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not what %s gives: edit %[2]s, then run\n\tgo test ./deploy -run TestKubernetesPrometheus -update", path, source)
	}
}

// TestKubernetesPrometheus builds the CPU overlay with the prometheus
// component, as a user's kustomization would: the PodMonitor must scrape
// the API's and every worker's /metrics, the PrometheusRule must carry
// the alerts of deploy/prometheus/alerts.yml, in the operator's schema,
// and a ConfigMap the dashboard, for Grafana's sidecar. Both are
// generated from their files, and must be what those give.
func TestKubernetesPrometheus(t *testing.T) {
	alerts, file := loadAlerts(t)
	rule, err := prometheusRule(alerts)
	if err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	generated(t, ruleFile, alertsFile, rule)
	dashboard, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	generated(t, dashboardMap, dashboardFile, dashboardConfigMap(dashboard))
	if t.Failed() {
		t.FailNow()
	}

	m := build(t, userKustomization(t, "k8s/overlays/cpu", "k8s/components/prometheus"))
	pm := m.podMonitors["yoloserve"]
	if pm == nil {
		t.Fatalf("no PodMonitor yoloserve in %v", keys(m.podMonitors))
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"yoloserve-api", "yoloserve-worker"} {
		d := m.deployments[name]
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("the PodMonitor's selector %v misses %s's pods (labels %v)", sel, name, d.Spec.Template.Labels)
			continue
		}
		ports := map[string]bool{}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
		}
		scraped := false
		for _, e := range pm.Spec.PodMetricsEndpoints {
			if e.Port != nil && ports[*e.Port] && e.Path == "/metrics" {
				scraped = true
			}
		}
		if !scraped {
			t.Errorf("no PodMonitor endpoint scrapes /metrics on a port of %s's pods (%v)", name, keys(ports))
		}
	}

	pr := m.rules["yoloserve"]
	if pr == nil {
		t.Fatalf("no PrometheusRule yoloserve in %v", keys(m.rules))
	}
	if n := alertNames(pr.Spec); len(n) != len(alertNames(file)) || len(n) == 0 {
		t.Errorf("the PrometheusRule has alerts %v, %s %v", n, alertsFile, alertNames(file))
	}

	cm := m.configMaps["yoloserve-grafana-dashboard"]
	if cm == nil {
		t.Fatalf("no dashboard ConfigMap in %v", keys(m.configMaps))
	}
	if cm.Data["yoloserve.json"] != string(dashboard) || cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard's ConfigMap (labels %v) must carry %s as it is, under yoloserve.json, for Grafana's sidecar", cm.Labels, dashboardFile)
	}
}

// loadAlerts returns deploy/prometheus/alerts.yml as it is written and
// decoded strictly into the operator's PrometheusRuleSpec: a field the
// operator's schema lacks fails the test.
func loadAlerts(t *testing.T) ([]byte, monitoringv1.PrometheusRuleSpec) {
	t.Helper()
	alerts, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var file monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(alerts, &file); err != nil {
		t.Fatalf("%s in the operator's schema: %v", alertsFile, err)
	}
	return alerts, file
}

// alertNames returns the names of the alerting rules of spec.
func alertNames(spec monitoringv1.PrometheusRuleSpec) []string {
	var names []string
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	return names
}

// userKustomization writes, in a temporary folder, a kustomization that
// takes resources and components (folders under deploy) by their paths
// from there, as a user's own beside the checkout would, and returns its
// folder.
func userKustomization(t *testing.T, resources string, components ...string) string {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string { return relFrom(t, dir, p) }
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel(resources) + "\ncomponents:\n"
	for _, c := range components {
		k += "  - " + rel(c) + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// relFrom returns the path p (relative to this package's folder) as seen
// from the folder dir. It fails the test when there is none.
func relFrom(t *testing.T, dir, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.Rel(dir, a)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestREADMENamesOnlyAlertsThatExist: every alert the README names (its
// table of what breaks says which alert fires) is one of alerts.yml's, so
// that a renamed alert does not leave operators looking for a name no
// rule has.
func TestREADMENamesOnlyAlertsThatExist(t *testing.T) {
	_, file := loadAlerts(t)
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile("`(Yoloserve[A-Za-z]+)`").FindAllStringSubmatch(string(readme), -1)
	if len(named) == 0 {
		t.Fatal("the README names no alert")
	}
	for _, m := range named {
		if !slices.Contains(alertNames(file), m[1]) {
			t.Errorf("the README names the alert %s, which %s lacks", m[1], alertsFile)
		}
	}
}
