//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Helpers for the tests whose pods really run (E2E_CLUSTER=nodes or kind).

// shardImage is the Valkey image real-pod fleets run: built from source and imported into each
// node by hack/node-cluster.sh, pulled from Docker Hub on kind.
var shardImage = envOr("E2E_SHARD_IMAGE", "valkey/valkey:8.0.1")

func needsRealPods(t *testing.T) {
	t.Helper()
	if cluster == "kwok" {
		t.Skip("kwok simulates pods without running containers: E2E_CLUSTER=nodes (make test-e2e runs it) or kind")
	}
}

// realFleetYAML is a fleet whose shards run shardImage, with small requests (2 cores here).
func realFleetYAML(name string, shards, replicas int, extra string) string {
	return fmt.Sprintf(`apiVersion: cache.cachefleet.io/v1alpha1
kind: CacheFleet
metadata: {name: %s}
spec:
  shards:
    count: %d
    replicas: %d
    image: %s
    resources: {requests: {cpu: 10m, memory: 96Mi}, limits: {memory: 96Mi}}
%s`, name, shards, replicas, shardImage, extra)
}

// readyRealFleet applies a fleet of real pods (realFleetYAML, no extra spec) and waits until
// it is Ready.
func readyRealFleet(t *testing.T, ns, name string, shards, replicas int) {
	t.Helper()
	mustKubectl(t, realFleetYAML(name, shards, replicas, ""), "-n", ns, "apply", "-f", "-")
	waitReady(t, ns, name, 3*time.Minute)
}

// podAddr is an address this process can dial for port of pod: the pod IP where the cluster's
// pod network is routed to this machine (nodes), a kubectl port-forward otherwise (kind).
func podAddr(t *testing.T, ns, pod string, port int) string {
	t.Helper()
	if cluster == "nodes" {
		return fmt.Sprintf("%s:%d", jsonpath(ns, "pod/"+pod, "{.status.podIP}"), port)
	}
	cmd := exec.Command("kubectl", "-n", ns, "port-forward", "pod/"+pod, fmt.Sprintf(":%d", port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("port-forward to %s: %v %q", pod, err, line)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return "127.0.0.1:" + m[1]
}

// agentPods maps node name to the fleet's agent pod on it.
func agentPods(t *testing.T, ns, fleet string) map[string]string {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "pods", "-l", "cachefleet.io/fleet="+fleet+",app.kubernetes.io/component=agent",
		"-o", `jsonpath={range .items[*]}{.spec.nodeName}={.metadata.name}{"\n"}{end}`)
	pods := map[string]string{}
	for _, l := range strings.Fields(out) {
		node, pod, _ := strings.Cut(l, "=")
		pods[node] = pod
	}
	return pods
}

func fleetPassword(t *testing.T, ns, fleet string) string {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "secret", fleet+"-auth", "-o", "go-template={{.data.password | base64decode}}")
	return out
}

// agentClient is a go-redis client of the agent pod on node.
func agentClient(t *testing.T, ns, fleet, pod string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: podAddr(t, ns, pod, 6380), Password: fleetPassword(t, ns, fleet),
		MaxRetries: -1, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolSize: 8,
	})
	t.Cleanup(func() { c.Close() })
	eventually(t, 30*time.Second, "agent "+pod+" answers PING", func() error {
		return c.Ping(context.Background()).Err()
	})
	return c
}

// agentMetric reads one sample of the agent's /metrics ("name{labels}" as printed) or 0; the
// fleet's password is the credential, as for a ServiceMonitor's scrape.
func agentMetric(t *testing.T, addr, password, sample string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("agent metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// valkeyCLI runs valkey-cli in a shard pod, authenticated with the pod's own password.
func valkeyCLI(ns, pod string, args ...string) (string, error) {
	out, err := kubectl("", append([]string{"-n", ns, "exec", pod, "--", "sh", "-c",
		`REDISCLI_AUTH="$VALKEY_PASSWORD" valkey-cli "$@"`, "valkey-cli"}, args...)...)
	return strings.TrimSpace(out), err
}

func execValkeyCLI(t *testing.T, ns, pod string, args ...string) string {
	t.Helper()
	out, err := valkeyCLI(ns, pod, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// oneAgent is the name of one of the fleet's agent pods.
func oneAgent(t *testing.T, ns, fleet string) string {
	t.Helper()
	for _, pod := range agentPods(t, ns, fleet) {
		return pod
	}
	t.Fatalf("fleet %s has no agent pod", fleet)
	return ""
}

// since formats a duration for the printed timings.
func since(t0 time.Time) string { return time.Since(t0).Round(100 * time.Millisecond).String() }

// runToCompletion runs script in a pod of the shard image on node and returns its log once it
// has ended (read afterwards: an attached `kubectl run -i` misses what a fast pod prints first).
func runToCompletion(t *testing.T, ns, name, node, password, script string) (string, error) {
	t.Helper()
	startPod(t, ns, name, node, shardImage, []string{"PW=" + password}, "sh", "-c", script)
	return podResult(t, ns, name, 2*time.Minute)
}

// startPod starts a pod of image on node running command, and returns at once.
func startPod(t *testing.T, ns, name, node, image string, env []string, command ...string) {
	t.Helper()
	args := []string{"-n", ns, "run", name, "--restart=Never", "--image=" + image,
		"--overrides=" + fmt.Sprintf(`{"spec": {"nodeName": %q}}`, node)}
	for _, e := range env {
		args = append(args, "--env="+e)
	}
	mustKubectl(t, "", append(append(args, "--command", "--"), command...)...)
}

// podResult waits for a pod started by startPod to end and returns its log.
func podResult(t *testing.T, ns, name string, timeout time.Duration) (string, error) {
	t.Helper()
	var phase string
	eventually(t, timeout, name+" ends", func() error {
		if phase = jsonpath(ns, "pod/"+name, "{.status.phase}"); phase != "Succeeded" && phase != "Failed" {
			return fmt.Errorf("phase %q", phase)
		}
		return nil
	})
	out, err := kubectl("", "-n", ns, "logs", name)
	if err == nil && phase != "Succeeded" {
		err = fmt.Errorf("pod %s", phase)
	}
	return out, err
}
