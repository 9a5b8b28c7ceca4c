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
	for _, install := range []struct {
		name, role, manifests string
	}{
		{"config/default", "ClusterRole/cachefleet-manager-role", mustKubectl(t, "", "kustomize", "config/default")},
		{"chart", "ClusterRole/e2e-rbac-cachefleet-manager", helm(t, "template", "e2e-rbac", "charts/cachefleet", "--namespace", chartNS)},
	} {
		t.Run(strings.ReplaceAll(install.name, "/", "-"), func(t *testing.T) {
			objs := objects(t, install.manifests)
			var rbac []string
			var account, accountNS string
			for key, o := range objs {
				kind := strings.SplitN(key, "/", 2)[0]
				switch kind {
				case "ServiceAccount":
					md := o["metadata"].(map[string]any)
					account, _ = md["name"].(string)
					accountNS, _ = md["namespace"].(string)
					if accountNS == "" {
						accountNS = chartNS
					}
				case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Namespace":
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
			mustKubectl(t, strings.Join(rbac, "\n---\n"), "-n", accountNS, "apply", "--server-side", "--force-conflicts", "-f", "-")
			t.Cleanup(func() {
				kubectl(strings.Join(rbac, "\n---\n"), "-n", accountNS, "delete", "--ignore-not-found", "-f", "-")
			})
			role := objs[install.role]
			if role == nil {
				t.Fatalf("%s renders no %s", install.name, install.role)
			}
			as := fmt.Sprintf("system:serviceaccount:%s:%s", accountNS, account)
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
							args := []string{"auth", "can-i", v.(string), resource, "-A", "--as", as}
							if sub != "" {
								args = append(args, "--subresource="+sub)
							}
							if out, _ := kubectl("", args...); strings.TrimSpace(out) != "yes" {
								t.Errorf("%s: %s cannot %s %s (%q)", install.name, as, v, resource, strings.TrimSpace(out))
							}
						}
					}
				}
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
			t.Logf("%s: %s holds all %d verbs of its role", install.name, as, checked)
		})
	}
}

func yamlOf(o map[string]any) (string, error) {
	b, err := yaml.Marshal(o)
	return string(b), err
}
