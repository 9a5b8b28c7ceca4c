//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The Helm chart (charts/cachefleet) and config/default install the same operator. The chart's
// CRDs, RBAC rules, alerts and dashboard are symlinks to config/, so they cannot drift; these
// tests compare the rendered objects that matter and install the chart on the cluster.

func helm(t *testing.T, args ...string) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		t.Fatal("HELM is not set: run the suite with make test-e2e, which builds Helm")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot()
	var stderr strings.Builder
	cmd.Stderr = &stderr // notes on the chart's symlinks to config/; stdout is the manifests
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// objects splits rendered manifests into kind/name -> object.
func objects(t *testing.T, manifests string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, doc := range strings.Split(manifests, "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%s/%s", o["kind"], md["name"])
		if _, dup := out[key]; dup { // the same name in another namespace (RoleBindings)
			key += fmt.Sprintf("@%s", md["namespace"])
		}
		out[key] = o
	}
	return out
}

func get(o map[string]any, path ...any) any {
	var cur any = o
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := cur.(map[string]any)
			cur = m[k]
		case int:
			l, _ := cur.([]any)
			if k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func TestHelmChartLintsAndMatchesKustomize(t *testing.T) {
	out := helm(t, "lint", "--strict", "charts/cachefleet",
		"--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true")
	t.Logf("%s", strings.TrimSpace(out))
	chart := objects(t, helm(t, "template", "cachefleet", "charts/cachefleet", "--namespace", "cachefleet-system",
		"--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true"))
	kust := objects(t, mustKubectl(t, "", "kustomize", "config/default"))

	for _, crd := range []string{"cachefleets.cache.cachefleet.io", "cachepolicies.cache.cachefleet.io"} {
		c, k := chart["CustomResourceDefinition/"+crd], kust["CustomResourceDefinition/"+crd]
		if c == nil || k == nil {
			t.Fatalf("CRD %s missing: chart %v, kustomize %v", crd, c != nil, k != nil)
		}
		if !reflect.DeepEqual(c["spec"], k["spec"]) {
			t.Errorf("CRD %s differs between the chart and config/default", crd)
		}
		if get(c, "metadata", "annotations", "helm.sh/resource-policy") != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep (helm uninstall would delete every fleet)", crd)
		}
	}
	if c, k := get(chart["ClusterRole/cachefleet-manager"], "rules"), get(kust["ClusterRole/cachefleet-manager-role"], "rules"); c == nil || !reflect.DeepEqual(c, k) {
		t.Errorf("ClusterRole rules differ:\n chart %v\n kustomize %v", c, k)
	}
	cd, kd := chart["Deployment/cachefleet-manager"], kust["Deployment/cachefleet-controller-manager"]
	if cd == nil || kd == nil {
		t.Fatalf("manager Deployment missing: chart %v, kustomize %v", cd != nil, kd != nil)
	}
	pod := []any{"spec", "template", "spec"}
	ctr := append(append([]any{}, pod...), "containers", 0)
	for _, field := range [][]any{
		append(append([]any{}, pod...), "securityContext"),
		append(append([]any{}, ctr...), "securityContext"),
		append(append([]any{}, ctr...), "ports"),
		append(append([]any{}, ctr...), "livenessProbe"),
		append(append([]any{}, ctr...), "readinessProbe"),
		append(append([]any{}, ctr...), "resources"),
		{"spec", "replicas"},
	} {
		if c, k := get(cd, field...), get(kd, field...); !reflect.DeepEqual(c, k) {
			t.Errorf("Deployment %v differs:\n chart %v\n kustomize %v", field, c, k)
		}
	}
	chartArgs := fmt.Sprint(get(cd, append(append([]any{}, ctr...), "args")...))
	for _, a := range get(kd, append(append([]any{}, ctr...), "args")...).([]any) {
		if !strings.Contains(chartArgs, a.(string)) {
			t.Errorf("the chart's manager lacks %s (chart args %s)", a, chartArgs)
		}
	}
	if c, k := get(chart["Service/cachefleet-manager-metrics"], "spec", "ports"), get(kust["Service/cachefleet-controller-manager-metrics"], "spec", "ports"); !reflect.DeepEqual(c, k) {
		t.Errorf("metrics Service ports differ: %v vs %v", c, k)
	}
	for _, want := range []string{"ServiceMonitor/cachefleet-manager", "PrometheusRule/cachefleet-alerts", "ConfigMap/cachefleet-dashboard"} {
		if chart[want] == nil {
			t.Errorf("%s not rendered with its value enabled", want)
		}
	}
}

// TestHelmChartInstalls applies the rendered chart to the cluster: the API server accepts every
// object, the manager Deployment rolls out, and a fleet created against the chart's CRDs
// becomes Ready (on kwok the fleet is reconciled by the suite's manager process, as the chart's
// pods are simulated; on kind by the chart's own manager).
func TestHelmChartInstalls(t *testing.T) {
	ns := namespace(t, "e2e-helm")
	manifests := helm(t, "template", "e2e", "charts/cachefleet", "--namespace", ns)
	mustKubectl(t, manifests, "-n", ns, "apply", "--server-side", "--field-manager=helm-e2e", "-f", "-")
	t.Cleanup(func() {
		kubectl("", "delete", "clusterrole,clusterrolebinding", "e2e-cachefleet-manager", "--ignore-not-found")
	})
	eventually(t, 2*time.Minute, "the chart's manager Deployment available", func() error {
		if got := jsonpath(ns, "deployment/e2e-cachefleet-manager", "{.status.availableReplicas}"); got != "2" {
			return fmt.Errorf("available replicas %q", got)
		}
		return nil
	})
	mustKubectl(t, fleetYAML("from-helm", 1, 0, ""), "-n", ns, "apply", "-f", "-")
	waitReady(t, ns, "from-helm", 2*time.Minute)
}
