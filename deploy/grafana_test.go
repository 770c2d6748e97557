package deploy_test

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// loadDashboard decodes a Grafana dashboard's JSON strictly, in Grafana's
// own schema (its Foundation SDK, with the panels' and the Prometheus
// queries' types), and returns it: a field the schema lacks, one it
// requires and the file lacks, or a value of the wrong type fails the test.
func loadDashboard(t *testing.T, path string) *dashboard.Dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	plugins.RegisterDefaultPlugins()
	if err := strict(new(dashboard.Dashboard).UnmarshalJSONStrict(b)); err != nil {
		t.Fatalf("%s in Grafana's schema:\n%v", path, err)
	}
	// The strict decoding (SDK v0.0.22) checks every panel and query, but
	// keeps none it decoded without an error, from the mistake strict
	// works around; the plain one keeps them.
	var d dashboard.Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// strict returns err, or nil for the SDK's empty list of errors, which
// it returns as an error when it found none.
func strict(err error) error {
	if errs := (cog.BuildErrors)(nil); errors.As(err, &errs) && len(errs) == 0 {
		return nil
	}
	return err
}

// TestGrafanaDashboard: the dashboard loads in Grafana's schema, asks
// which Prometheus to read, and lays out panels that each say what they
// show, query that Prometheus, and do not cover one another. That its
// queries name only exported metrics, TestAlertsAndDashboard (e2e) checks.
func TestGrafanaDashboard(t *testing.T) {
	d := loadDashboard(t, dashboardFile)
	if d.Uid == nil || *d.Uid == "" {
		t.Error("the dashboard needs a uid, so that a provisioned copy replaces the last one")
	}
	hasVar := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == dashboard.VariableTypeDatasource && v.Query != nil && v.Query.String != nil && *v.Query.String == "prometheus" {
			hasVar = true
		}
	}
	if !hasVar {
		t.Error("the dashboard needs a datasource variable for Prometheus, so that it works with any data source's name")
	}
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	name := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	ids := map[uint32]bool{}
	var placed []*dashboard.GridPos
	for i, pr := range d.Panels {
		p := pr.Panel
		if p == nil {
			t.Errorf("panel %d is a row; the dashboard has none", i)
			continue
		}
		title := name(p.Title)
		if p.Id == nil || ids[*p.Id] || title == "" || name(p.Description) == "" {
			t.Errorf("panel %d %q: want a unique id, a title and a description", i, title)
		}
		if p.Id != nil {
			ids[*p.Id] = true
		}
		if p.Datasource == nil || name(p.Datasource.Uid) != "${datasource}" {
			t.Errorf("panel %q must read the datasource variable's Prometheus", title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for j, q := range p.Targets {
			if pq, ok := q.(*prometheus.Dataquery); !ok || pq.Expr == "" || name(pq.RefId) == "" {
				t.Errorf("panel %q: query %d (%T): want a Prometheus expression with a refId", title, j, q)
			}
		}
		g := p.GridPos
		if g == nil || g.W == 0 || g.H == 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: grid position %+v, want a size within the 24 columns", title, g)
			continue
		}
		for _, o := range placed {
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panel %q at %+v covers the one at %+v", title, *g, *o)
			}
		}
		placed = append(placed, g)
	}
}
