package controller

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
	"github.com/cachefleet/cachefleet/internal/testenv"
)

// managerMetricNames are the names the manager's own collectors export.
func managerMetricNames(t *testing.T) []string {
	t.Helper()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for _, c := range []prometheus.Collector{reconcileErrors, epochConvergence, fleetsCollector{}} {
		ch := make(chan *prometheus.Desc, 10)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names = append(names, m[1])
		}
	}
	return names
}

var metricRef = regexp.MustCompile(`\bcachefleet_[a-z0-9_]+\b`)

// TestDashboardAndAlertsUseRealMetrics: every cachefleet metric the Grafana dashboard and the
// PrometheusRule query is one the agent or the manager exports (a renamed metric fails here,
// not on a blank panel), and the dashboard shows every agent metric.
func TestDashboardAndAlertsUseRealMetrics(t *testing.T) {
	known := map[string]bool{}
	for _, n := range append(server.MetricNames(), managerMetricNames(t)...) {
		known[n] = true
	}
	root := testenv.RepoRoot()
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "config/grafana/cachefleet.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok {
			exprs = append(exprs, q)
		}
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
					Expr  string `json:"expr"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	raw, err = os.ReadFile(filepath.Join(root, "config/prometheus/alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	nAlerts := 0
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			nAlerts++
			exprs = append(exprs, r.Expr)
		}
	}
	if nAlerts == 0 {
		t.Fatal("no alerts in alerts.yaml")
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRef.FindAllString(e, -1) {
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(m, suffix); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("%q queries %s, which nothing exports", e, m)
			}
			used[base] = true
		}
	}
	for _, n := range server.MetricNames() {
		if !used[n] {
			t.Errorf("the dashboard does not show the agent metric %s", n)
		}
	}
	t.Logf("%d panels, %d alerts, %d agent metrics", len(dash.Panels), nAlerts, len(server.MetricNames()))
}
