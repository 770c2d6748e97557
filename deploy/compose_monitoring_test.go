package deploy_test

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// promConfig is the part of a Prometheus configuration file that says what
// it scrapes and which rules it loads.
type promConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		MetricsPath   string `json:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `json:"names"`
			Type  string   `json:"type"`
			Port  int      `json:"port"`
		} `json:"dns_sd_configs"`
	} `json:"scrape_configs"`
}

// grafanaDatasources is a Grafana provisioning file of data sources.
type grafanaDatasources struct {
	Datasources []struct {
		Type      string `json:"type"`
		URL       string `json:"url"`
		IsDefault bool   `json:"isDefault"`
	} `json:"datasources"`
}

// grafanaDashboards is a Grafana provisioning file of dashboard providers.
type grafanaDashboards struct {
	Providers []struct {
		Type    string `json:"type"`
		Options struct {
			Path string `json:"path"`
		} `json:"options"`
	} `json:"providers"`
}

// TestComposeMonitoring: `docker compose --profile monitoring up` adds a
// Prometheus that scrapes the API and every worker where they serve
// /metrics and loads the alerting rules of deploy/prometheus/alerts.yml,
// and a Grafana that reads that Prometheus and shows the dashboard that
// TestGrafanaDashboard checks; both published on this host only. Without
// the profile neither starts (TestCompose).
func TestComposeMonitoring(t *testing.T) {
	p := loadCompose(t, []string{"monitoring"}, "docker-compose.yml")
	prom, ok := p.Services["prometheus"]
	graf, ok2 := p.Services["grafana"]
	if !ok || !ok2 {
		t.Fatalf("the monitoring profile's services are %v, want prometheus and grafana among them", p.ServiceNames())
	}
	for _, s := range []types.ServiceConfig{prom, graf} {
		if len(s.Ports) != 1 || s.Ports[0].HostIP != "127.0.0.1" {
			t.Fatalf("%s must publish one port, on 127.0.0.1 only: %+v", s.Name, s.Ports)
		}
		if _, tag, ok := strings.Cut(s.Image, ":"); !ok || tag == "latest" {
			t.Errorf("%s's image %q must name its version", s.Name, s.Image)
		}
		if !slices.Contains(s.Profiles, "monitoring") {
			t.Errorf("%s must start only with --profile monitoring: profiles %v", s.Name, s.Profiles)
		}
	}

	// Prometheus reads its configuration and rules from deploy/prometheus.
	dir := bindTarget(t, prom, "deploy/prometheus")
	file, ok := flagValue(prom.Command, "--config.file")
	if !ok || filepath.Dir(file) != dir {
		t.Fatalf("prometheus's --config.file %q is not in %s, where deploy/prometheus is mounted", file, dir)
	}
	var conf promConfig
	readYAML(t, filepath.Join("prometheus", filepath.Base(file)), &conf)
	if !slices.Contains(conf.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("prometheus loads the rules %v, not %s", conf.RuleFiles, filepath.Base(alertsFile))
	}
	for _, f := range conf.RuleFiles {
		if _, err := os.Stat(filepath.Join("prometheus", f)); err != nil {
			t.Errorf("rule file %s: %v", f, err)
		}
	}
	// It scrapes the API at the port it listens on, and every worker (all
	// the addresses Compose's DNS gives for the service) at WORKER_ADDR's.
	api, worker := p.Services["api"], p.Services["worker"]
	apiPort, workerPort := addrPort(t, effective(t, api).APIAddr), addrPort(t, effective(t, worker).WorkerAddr)
	if len(api.Ports) != 1 || api.Ports[0].Target != uint32(apiPort) {
		t.Errorf("the API listens on %d but publishes %+v", apiPort, api.Ports)
	}
	var apiScraped, workersScraped bool
	for _, sc := range conf.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s, not /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			apiScraped = apiScraped || slices.Contains(st.Targets, net.JoinHostPort("api", strconv.Itoa(apiPort)))
		}
		for _, d := range sc.DNSSDConfigs {
			workersScraped = workersScraped || (slices.Equal(d.Names, []string{"worker"}) && d.Type == "A" && d.Port == workerPort)
		}
	}
	if !apiScraped {
		t.Errorf("prometheus does not scrape the API at api:%d", apiPort)
	}
	if !workersScraped {
		t.Errorf("prometheus does not scrape every worker: want dns_sd_configs of the name worker, type A, port %d", workerPort)
	}

	// Grafana reads that Prometheus by default and loads the dashboard
	// from the folder where deploy/grafana/yoloserve.json is mounted.
	prov := bindTarget(t, graf, "deploy/grafana/provisioning")
	if prov != "/etc/grafana/provisioning" {
		t.Errorf("grafana's provisioning is mounted at %s, not where Grafana reads it (/etc/grafana/provisioning)", prov)
	}
	var ds grafanaDatasources
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	wantURL := "http://prometheus:" + strconv.Itoa(int(prom.Ports[0].Target))
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != wantURL || !ds.Datasources[0].IsDefault {
		t.Errorf("grafana's data sources %+v, want one default prometheus at %s", ds.Datasources, wantURL)
	}
	var dp grafanaDashboards
	readYAML(t, "grafana/provisioning/dashboards/yoloserve.yml", &dp)
	dash := bindTarget(t, graf, filepath.Join("deploy", dashboardFile))
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || dp.Providers[0].Options.Path != filepath.Dir(dash) {
		t.Errorf("grafana's dashboard providers %+v, want one reading %s, where the dashboard is mounted", dp.Providers, filepath.Dir(dash))
	}
	if home := graf.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home == nil || *home != dash {
		t.Errorf("grafana's home dashboard %v, want %s", home, dash)
	}
	if _, ok := graf.DependsOn["prometheus"]; !ok {
		t.Error("grafana must start after prometheus")
	}
}

// bindTarget returns where s mounts the project's path source (relative
// to the project's root), read-only; it fails the test when s does not.
func bindTarget(t *testing.T, s types.ServiceConfig, source string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == filepath.Join(root, source) {
			if !v.ReadOnly {
				t.Errorf("%s mounts %s writable", s.Name, source)
			}
			return v.Target
		}
	}
	t.Fatalf("%s does not mount %s: %+v", s.Name, source, s.Volumes)
	return ""
}

// flagValue returns the value of the flag name given as name=value among
// args, and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// readYAML decodes the YAML file at path (relative to deploy) into the
// fields v has; a file that cannot be read or decoded fails the test.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// addrPort returns the port of a listen address such as ":9091".
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := net.LookupPort("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
