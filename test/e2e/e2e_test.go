//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSamplesBecomeReady(t *testing.T) {
	ns := namespace(t, "e2e-samples")
	mustKubectl(t, "", "-n", ns, "apply", "-k", "config/samples")
	waitReady(t, ns, "web-cache", 2*time.Minute)
	samples, err := os.ReadFile(filepath.Join(repoRoot(), "config/samples/cache_v1alpha1_cachepolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policies := strings.Count(string(samples), "kind: CachePolicy")
	eventually(t, time.Minute, "policies accepted", func() error {
		out := mustKubectl(t, "", "-n", ns, "get", "cachepolicies", "--no-headers")
		if strings.Count(out, "Accepted") != policies {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	out := mustKubectl(t, "", "-n", ns, "get", "cachefleets")
	t.Logf("kubectl get cachefleets:\n%s", out)
	nodes := nodeCount(t)
	for _, want := range []string{"SHARDS", "AGENTS", "EPOCH", "STATUS", "3/3", fmt.Sprintf("%d/%d", nodes, nodes), "Ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get cachefleets lacks %q", want)
		}
	}
}

func TestChildrenAreWiredAndAgentsFollowNodes(t *testing.T) {
	ns := namespace(t, "e2e-wiring")
	mustKubectl(t, fleetYAML("wired", 2, 1, ""), "-n", ns, "apply", "-f", "-")
	waitReady(t, ns, "wired", 2*time.Minute)
	for _, obj := range []string{"secret/wired-auth", "secret/wired-bus", "statefulset/wired-shard-0", "statefulset/wired-shard-1",
		"pdb/wired-shard-0", "service/wired-shards", "configmap/wired-ring", "configmap/wired-shards-config",
		"networkpolicy/wired-shards", "serviceaccount/wired-agent", "role/wired-agent", "rolebinding/wired-agent",
		"daemonset/wired-agent", "service/wired-agent"} {
		if !exists(ns, obj) {
			t.Errorf("%s is missing", obj)
		}
		if owner := jsonpath(ns, obj, "{.metadata.ownerReferences[0].name}"); owner != "wired" {
			t.Errorf("%s is owned by %q", obj, owner)
		}
	}
	if p := jsonpath(ns, "service/wired-agent", "{.spec.internalTrafficPolicy}"); p != "Local" {
		t.Errorf("agent Service internalTrafficPolicy %q", p)
	}
	// A shard's replica runs on another node than its primary.
	if a, b := jsonpath(ns, "pod/wired-shard-0-0", "{.spec.nodeName}"), jsonpath(ns, "pod/wired-shard-0-1", "{.spec.nodeName}"); a == b || a == "" {
		t.Errorf("primary and replica on nodes %q and %q", a, b)
	}
	nodes := nodeCount(t)
	if got := jsonpath(ns, "daemonset/wired-agent", "{.status.desiredNumberScheduled}"); got != strconv.Itoa(nodes) {
		t.Errorf("agents desired %s, nodes %d", got, nodes)
	}
	if cluster != "kwok" || kwokName == "" {
		t.Log("adding a node is only exercised on kwok")
		return
	}
	if out, err := exec.Command("kwokctl", "--name", kwokName, "scale", "node", "--replicas", strconv.Itoa(nodes+1)).CombinedOutput(); err != nil {
		t.Fatalf("adding a node: %v\n%s", err, out)
	}
	want := fmt.Sprintf("%d/%d", nodes+1, nodes+1)
	eventually(t, time.Minute, "an agent on the new node", func() error {
		if got := jsonpath(ns, "cachefleet/wired", "{.status.agents}"); got != want {
			return fmt.Errorf("agents %q, want %q", got, want)
		}
		return nil
	})
}

func TestInvalidFleetIsRefusedWithTheField(t *testing.T) {
	ns := namespace(t, "e2e-invalid")
	_, err := kubectl(fleetYAML("bad", 0, 0, ""), "-n", ns, "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "spec.shards.count") || !strings.Contains(err.Error(), "greater than or equal to 1") {
		t.Errorf("count 0 was not refused with the field and reason: %v", err)
	}
	_, err = kubectl(fleetYAML("bad", 1, 0, "  tiers: {l2: {defaultTTL: 1m, minUsableTTL: 2m}}\n"), "-n", ns, "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "spec.tiers.l2.minUsableTTL") {
		t.Errorf("a CEL rule did not refuse the fleet with the field: %v", err)
	}
	if exists(ns, "cachefleet/bad") {
		t.Error("an invalid fleet was stored")
	}
}

func TestScaleUpThenTwoPhaseScaleDown(t *testing.T) {
	ns := namespace(t, "e2e-scale")
	mustKubectl(t, fleetYAML("sc", 3, 0, ""), "-n", ns, "apply", "-f", "-")
	waitReady(t, ns, "sc", 2*time.Minute)
	epoch := readRing(t, ns, "sc").Epoch
	gens := map[string]string{}
	for i := 0; i < 3; i++ {
		gens[strconv.Itoa(i)] = jsonpath(ns, fmt.Sprintf("statefulset/sc-shard-%d", i), "{.metadata.generation}")
	}

	mustKubectl(t, "", "-n", ns, "patch", "cachefleet", "sc", "--type=merge", "-p", `{"spec":{"shards":{"count":4}}}`)
	eventually(t, time.Minute, "4 shards at epoch+1", func() error {
		if d := readRing(t, ns, "sc"); len(d.Shards) != 4 || d.Epoch != epoch+1 || !exists(ns, "statefulset/sc-shard-3") {
			return fmt.Errorf("ring %+v", d)
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		if g := jsonpath(ns, fmt.Sprintf("statefulset/sc-shard-%d", i), "{.metadata.generation}"); g != gens[strconv.Itoa(i)] {
			t.Errorf("shard %d was changed by the scale-up (generation %s -> %s)", i, gens[strconv.Itoa(i)], g)
		}
	}
	waitReady(t, ns, "sc", 2*time.Minute)

	mustKubectl(t, "", "-n", ns, "patch", "cachefleet", "sc", "--type=merge", "-p", `{"spec":{"shards":{"count":3}}}`)
	eventually(t, time.Minute, "ring drops shard-3 first", func() error {
		if d := readRing(t, ns, "sc"); len(d.Shards) != 3 || d.Epoch != epoch+2 {
			return fmt.Errorf("ring %+v", d)
		}
		return nil
	})
	if !exists(ns, "statefulset/sc-shard-3") {
		t.Error("shard-3's StatefulSet was deleted together with the ring change: agents could still route to it")
	}
	eventually(t, 2*time.Minute, "shard-3 deleted after the drain", func() error {
		if exists(ns, "statefulset/sc-shard-3") {
			return fmt.Errorf("still there")
		}
		return nil
	})
}

func TestLosingAPrimaryDegradesThenRecovers(t *testing.T) {
	ns := namespace(t, "e2e-degraded")
	mustKubectl(t, fleetYAML("dg", 2, 0, ""), "-n", ns, "apply", "-f", "-")
	waitReady(t, ns, "dg", 2*time.Minute)
	// Cordon every node so the replacement pod stays Pending: on kwok a recreated
	// pod is Ready within milliseconds, and the outage would be too short to observe.
	nodes := strings.Fields(mustKubectl(t, "", "get", "nodes", "-o", "name"))
	mustKubectl(t, "", append([]string{"cordon"}, nodes...)...)
	t.Cleanup(func() { _, _ = kubectl("", append([]string{"uncordon"}, nodes...)...) })
	mustKubectl(t, "", "-n", ns, "delete", "pod", "dg-shard-1-0", "--wait=false")
	eventually(t, time.Minute, "a Degraded event", func() error {
		out := mustKubectl(t, "", "-n", ns, "get", "events", "--field-selector", "reason=Degraded", "-o", "name")
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("no Degraded event; phase %s", jsonpath(ns, "cachefleet/dg", "{.status.phase}"))
		}
		return nil
	})
	if p := jsonpath(ns, "cachefleet/dg", "{.status.phase}"); p != "Degraded" {
		t.Errorf("phase %q while shard-1 has no primary, want Degraded", p)
	}
	mustKubectl(t, "", append([]string{"uncordon"}, nodes...)...)
	waitReady(t, ns, "dg", 2*time.Minute)
	out := mustKubectl(t, "", "-n", ns, "get", "events", "--field-selector", "reason=Recovered", "-o", "name")
	if strings.TrimSpace(out) == "" {
		t.Error("no Recovered event")
	}
}

func TestServiceMonitorAppearsWithItsCRD(t *testing.T) {
	ns := namespace(t, "e2e-monitoring")
	mustKubectl(t, fleetYAML("mon", 1, 0, "  monitoring: {serviceMonitor: {enabled: true}}\n"), "-n", ns, "apply", "-f", "-")
	eventually(t, time.Minute, "CRDNotInstalled reported", func() error {
		if r := jsonpath(ns, "cachefleet/mon", `{.status.conditions[?(@.type=="MonitoringReady")].reason}`); r != "CRDNotInstalled" {
			return fmt.Errorf("MonitoringReady reason %q", r)
		}
		return nil
	})
	mustKubectl(t, "", "apply", "--server-side", "-f", "test/crds/monitoring.coreos.com_servicemonitors.yaml")
	eventually(t, time.Minute, "ServiceMonitor created", func() error {
		if !exists(ns, "servicemonitor/mon-agent") {
			return fmt.Errorf("no ServiceMonitor yet")
		}
		return nil
	})
}

func TestDeletingAFleetRemovesEverythingItOwned(t *testing.T) {
	ns := namespace(t, "e2e-delete")
	mustKubectl(t, fleetYAML("gone", 2, 0, ""), "-n", ns, "apply", "-f", "-")
	waitReady(t, ns, "gone", 2*time.Minute)
	mustKubectl(t, "", "-n", ns, "delete", "cachefleet", "gone")
	eventually(t, 2*time.Minute, "owned objects garbage-collected", func() error {
		out := mustKubectl(t, "", "-n", ns, "get", "statefulsets,daemonsets,services,configmaps,secrets,roles,rolebindings,serviceaccounts,networkpolicies,pdb,pods",
			"-l", "cachefleet.io/fleet=gone", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left behind:\n%s", out)
		}
		return nil
	})
}

func TestDefaultKustomizationBuildsAndIsAccepted(t *testing.T) {
	manifests := mustKubectl(t, "", "kustomize", "config/default")
	for _, want := range []string{"kind: Deployment", "--leader-elect", "readOnlyRootFilesystem: true", "kind: ClusterRole", "cachefleets.cache.cachefleet.io"} {
		if !strings.Contains(manifests, want) {
			t.Errorf("config/default lacks %q", want)
		}
	}
	// The namespace must exist for a server-side dry run of the namespaced objects.
	kubectl("", "create", "namespace", "cachefleet-system")
	if out, err := kubectl(manifests, "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-"); err != nil {
		t.Errorf("the API server refused config/default: %v\n%s", err, out)
	}
}

// TestHundredFleetsAtOnce runs last: it loads the cluster more than the others.
func TestHundredFleetsAtOnce(t *testing.T) {
	ns := namespace(t, "e2e-hundred")
	// Agents go to one labelled node (a node pool), so the simulated cluster's pod capacity
	// (110 per node) measures the operator, not the scheduler's limits.
	node := strings.TrimPrefix(strings.Fields(mustKubectl(t, "", "get", "nodes", "-o", "name"))[0], "node/")
	mustKubectl(t, "", "label", "node", node, "cachefleet.io/e2e-agents=true", "--overwrite")
	var all strings.Builder
	for i := 0; i < 100; i++ {
		all.WriteString(fleetYAML(fmt.Sprintf("f%03d", i), 1, 0, "  agent: {nodeSelector: {cachefleet.io/e2e-agents: \"true\"}}\n"))
		all.WriteString("---\n")
	}
	start := time.Now()
	mustKubectl(t, all.String(), "-n", ns, "apply", "-f", "-")
	eventually(t, 5*time.Minute, "100 fleets Ready", func() error {
		out := mustKubectl(t, "", "-n", ns, "get", "cachefleets", "--no-headers", "-o", "custom-columns=P:.status.phase")
		if n := strings.Count(out, "Ready"); n != 100 {
			return fmt.Errorf("%d of 100 Ready", n)
		}
		return nil
	})
	elapsed := time.Since(start)
	peak := managerPeakMemory()
	t.Logf("100 CacheFleets Ready in %v; manager peak RSS %s (goals: 60s, 100 MiB)", elapsed.Round(100*time.Millisecond), peak)
	fmt.Printf("e2e-scale: 100 fleets ready in %.1fs, manager peak RSS %s\n", elapsed.Seconds(), peak)
}

func managerPeakMemory() string {
	if managerPID == "" {
		return "unknown (manager not run by the suite)"
	}
	data, err := os.ReadFile("/proc/" + managerPID + "/status")
	if err != nil {
		return "unknown: " + err.Error()
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
	}
	return "unknown"
}

// TestGitOpsApplyShowsNoDrift: applying the samples again, client-side or server-side, changes
// nothing, and kubectl diff is empty: the defaults the API server writes and the status the
// controller writes are not drift a GitOps tool would try to undo.
func TestGitOpsApplyShowsNoDrift(t *testing.T) {
	for _, mode := range []struct {
		name  string
		apply []string
		diff  []string
	}{
		{"client-side", []string{"apply", "-k", "config/samples"}, []string{"diff", "-k", "config/samples"}},
		{"server-side", []string{"apply", "--server-side", "--field-manager=gitops", "-k", "config/samples"},
			[]string{"diff", "--server-side", "--field-manager=gitops", "-k", "config/samples"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			ns := namespace(t, "e2e-drift-"+mode.name)
			mustKubectl(t, "", append([]string{"-n", ns}, mode.apply...)...)
			waitReady(t, ns, "web-cache", 2*time.Minute)
			objs := []string{"cachefleet/web-cache", "cachepolicy/sessions", "cachepolicy/catalog"}
			versions := func() string {
				var v []string
				for _, o := range objs {
					// Not resourceVersion: the controller's status writes move it.
					v = append(v, o+"@"+jsonpath(ns, o, "{.metadata.generation} {.metadata.labels} {.metadata.annotations} {.spec}"))
				}
				return strings.Join(v, " ")
			}
			before := versions()
			out := mustKubectl(t, "", append([]string{"-n", ns}, mode.apply...)...)
			if after := versions(); after != before {
				t.Errorf("a second apply changed objects:\n before %s\n after  %s\n%s", before, after, out)
			}
			if out, err := kubectl("", append([]string{"-n", ns}, mode.diff...)...); err != nil || strings.TrimSpace(out) != "" {
				t.Errorf("kubectl diff after apply is not empty (%v):\n%s", err, out)
			}
		})
	}
}
