//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestManagerServiceAccountHoldsItsRole applies the RBAC objects of config/default and of the
// chart for real and asks the API server, as each manager's ServiceAccount, for every verb its
// ClusterRole names. config/default once bound its role to "system/controller-manager", an
// account that does not exist, so the manager pods ran but could list no CachePolicy.
func TestManagerServiceAccountHoldsItsRole(t *testing.T) {
	// The role names ServiceMonitors: kubectl resolves a resource through discovery.
	mustKubectl(t, "", "apply", "--server-side", "-f", "test/crds/monitoring.coreos.com_servicemonitors.yaml")
	chartNS := namespace(t, "e2e-rbac-chart")
	watched := namespace(t, "e2e-rbac-watched")
	// roles: each ClusterRole the install grants and where it holds ("" for every namespace).
	type grant struct{ role, ns string }
	for _, install := range []struct {
		name      string
		roles     []grant
		manifests string
		// secretsOutside: whether the manager may read Secrets in namespaces it does not watch.
		secretsOutside bool
	}{
		{"config/default", []grant{{"ClusterRole/cachefleet-manager-role", ""}}, mustKubectl(t, "", "kustomize", "config/default"), true},
		{"chart", []grant{{"ClusterRole/e2e-rbac-cachefleet-manager", ""}},
			helm(t, "template", "e2e-rbac", "charts/cachefleet", "--namespace", chartNS), true},
		{"chart watching one namespace", []grant{{"ClusterRole/e2e-rbac-cachefleet-manager", ""}, {"ClusterRole/e2e-rbac-cachefleet-manager-namespaced", watched}},
			helm(t, "template", "e2e-rbac", "charts/cachefleet", "--namespace", chartNS, "--set", "watchNamespaces={"+watched+"}"), false},
	} {
		t.Run(strings.ReplaceAll(install.name, "/", "-"), func(t *testing.T) {
			objs := objects(t, install.manifests)
			var rbac []string
			var account, accountNS string
			for key, o := range objs {
				kind := strings.SplitN(key, "/", 2)[0]
				md := o["metadata"].(map[string]any)
				switch kind {
				case "ServiceAccount", "Role", "RoleBinding":
					// helm template leaves the release's namespace to the client.
					if md["namespace"] == nil {
						md["namespace"] = chartNS
					}
					if kind == "ServiceAccount" {
						account, accountNS = md["name"].(string), md["namespace"].(string)
					}
				case "ClusterRole", "ClusterRoleBinding", "Namespace":
				default:
					continue
				}
				b, err := yamlOf(o)
				if err != nil {
					t.Fatal(err)
				}
				rbac = append(rbac, b)
			}
			if account == "" {
				t.Fatalf("%s renders no ServiceAccount", install.name)
			}
			kubectl("", "create", "namespace", accountNS)
			mustKubectl(t, strings.Join(rbac, "\n---\n"), "apply", "--server-side", "--force-conflicts", "-f", "-")
			t.Cleanup(func() {
				kubectl(strings.Join(rbac, "\n---\n"), "delete", "--ignore-not-found", "-f", "-")
			})
			as := fmt.Sprintf("system:serviceaccount:%s:%s", accountNS, account)
			checked := 0
			for _, g := range install.roles {
				role := objs[g.role]
				if role == nil {
					t.Fatalf("%s renders no %s", install.name, g.role)
				}
				checked += canAll(t, install.name, as, role, g.ns)
			}
			if checked < 20 {
				t.Errorf("%s: only %d verbs checked; the role's rules were not read", install.name, checked)
			}
			// What it must not do: write its own RBAC (no escalation) or touch nodes.
			for _, deny := range [][]string{{"create", "clusterrolebindings.rbac.authorization.k8s.io"}, {"delete", "nodes"}} {
				if out, _ := kubectl("", "auth", "can-i", deny[0], deny[1], "-A", "--as", as); strings.TrimSpace(out) != "no" {
					t.Errorf("%s: %s can %s %s", install.name, as, deny[0], deny[1])
				}
			}
			// Secrets: an operator watching every namespace needs them everywhere (its cache
			// holds only its own, by label, but RBAC cannot say so); one watching some
			// namespaces is refused every other one.
			out, _ := kubectl("", "auth", "can-i", "get", "secrets", "-n", "kube-system", "--as", as)
			if got := strings.TrimSpace(out) == "yes"; got != install.secretsOutside {
				t.Errorf("%s: %s may get Secrets in kube-system: %v, want %v", install.name, as, got, install.secretsOutside)
			}
			t.Logf("%s: %s holds all %d verbs of its role", install.name, as, checked)
		})
	}
}

// canAll asks, as the account, for every verb of every rule of role, in ns ("" for all), and
// returns how many it checked.
func canAll(t *testing.T, install, as string, role map[string]any, ns string) int {
	t.Helper()
	scope := []string{"-A"}
	if ns != "" {
		scope = []string{"-n", ns}
	}
	checked := 0
	for _, r := range get(role, "rules").([]any) {
		rule := r.(map[string]any)
		for _, g := range rule["apiGroups"].([]any) {
			for _, res := range rule["resources"].([]any) {
				resource, sub, _ := strings.Cut(res.(string), "/")
				if g.(string) != "" {
					resource += "." + g.(string)
				}
				for _, v := range rule["verbs"].([]any) {
					checked++
					args := append([]string{"auth", "can-i", v.(string), resource, "--as", as}, scope...)
					if sub != "" {
						args = append(args, "--subresource="+sub)
					}
					if out, _ := kubectl("", args...); strings.TrimSpace(out) != "yes" {
						t.Errorf("%s: %s cannot %s %s (%q)", install, as, v, resource, strings.TrimSpace(out))
					}
				}
			}
		}
	}
	return checked
}

func yamlOf(o map[string]any) (string, error) {
	b, err := yaml.Marshal(o)
	return string(b), err
}
