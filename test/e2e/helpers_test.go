//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The suite drives a running cluster (KUBECONFIG) the way users do: kubectl apply of manifests
// and `kubectl get` output. `make test-e2e` prepares the cluster and the manager:
//   E2E_CLUSTER=kwok (default): a kwokctl cluster here, the manager as a local process;
//   E2E_CLUSTER=kind: the operator deployed from config/default with built images.

var (
	cluster    = envOr("E2E_CLUSTER", "kwok")
	kwokName   = os.Getenv("E2E_KWOK_NAME")
	managerPID = os.Getenv("E2E_MANAGER_PID")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// kubectl runs kubectl with stdin and returns stdout, or the error with stderr.
func kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", args...)
	cmd.Dir = repoRoot()
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func mustKubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonpath reads one field with kubectl.
func jsonpath(ns, obj, path string) string {
	out, _ := kubectl("", "-n", ns, "get", obj, "-o", "jsonpath="+path)
	return strings.TrimSpace(out)
}

func exists(ns, obj string) bool {
	_, err := kubectl("", "-n", ns, "get", obj)
	return err == nil
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s (after %v): %v", what, timeout, err)
}

func namespace(t *testing.T, name string) string {
	t.Helper()
	kubectl("", "create", "namespace", name)
	t.Cleanup(func() { kubectl("", "delete", "namespace", name, "--wait=false") })
	return name
}

func fleetYAML(name string, shards, replicas int, extra string) string {
	return fmt.Sprintf(`apiVersion: cache.cachefleet.io/v1alpha1
kind: CacheFleet
metadata: {name: %s}
spec:
  shards: {count: %d, replicas: %d, resources: {requests: {cpu: 10m, memory: 64Mi}, limits: {memory: 64Mi}}}
%s`, name, shards, replicas, extra)
}

func waitReady(t *testing.T, ns, name string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, name+" Ready", func() error {
		// Ready about the current spec: a status written before the last change does not count.
		gen := jsonpath(ns, "cachefleet/"+name, "{.metadata.generation} {.status.observedGeneration}")
		if g := strings.Fields(gen); len(g) != 2 || g[0] != g[1] {
			return fmt.Errorf("generation, observed generation: %q", gen)
		}
		if phase := jsonpath(ns, "cachefleet/"+name, "{.status.phase}"); phase != "Ready" {
			return fmt.Errorf("phase %q, conditions %s", phase, jsonpath(ns, "cachefleet/"+name, "{.status.conditions}"))
		}
		return nil
	})
}

type ringDoc struct {
	Epoch  int64
	Shards []struct{ Name string }
}

func readRing(t *testing.T, ns, fleet string) ringDoc {
	t.Helper()
	var d ringDoc
	raw := jsonpath(ns, "configmap/"+fleet+"-ring", `{.data.ring\.json}`)
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatalf("ring document of %s: %v (%q)", fleet, err, raw)
	}
	return d
}

func nodeCount(t *testing.T) int {
	t.Helper()
	out := mustKubectl(t, "", "get", "nodes", "-o", "name")
	return len(strings.Fields(out))
}
