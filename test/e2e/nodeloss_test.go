//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A lost node, three ways, each with a writer and a reader on every node (an application there,
// talking to its own node's agent). What the issue asks of each: writes back for every shard
// within seconds, reads never failing, and no acknowledged write lost. The figures go to the log
// as one "nodeloss:" line per run (docs/operations.md keeps them).

// lossKind is one way to lose a node, and what brings it back.
type lossKind struct {
	name string
	lose func(t *testing.T, node string) (restore func())
	// failsOver: the node's pods cannot serve, so its primaries must be replaced. A node whose
	// kubelet alone died still serves, and nothing should move.
	failsOver bool
	// appsSurvive: the applications on the node keep running (they die with a powered-off node).
	appsSurvive bool
}

// fenceBound is how long after a cut a cut-off primary may still acknowledge writes: the fleet's
// fencing.maxLagSeconds (2 s by default), plus up to 1 s for Valkey's once-a-second count of
// good replicas, plus 1 s for the writer's own round trip and clock.
const fenceBound = 4 * time.Second

// TestANodeCutOffIsSeenByTheFleet: a node whose link goes down (its pods keep running, cut off).
// The agents on the other node see its primaries lost within seconds; the controller fails them
// over long before Kubernetes would mark the node NotReady (40-55 s); the cut-off primaries stop
// taking writes (fencing) and rejoin as replicas once the link is back.
func TestANodeCutOffIsSeenByTheFleet(t *testing.T) {
	testNodeLoss(t, lossKind{name: "cut off", lose: cutNode, failsOver: true, appsSurvive: true})
}

// TestANodePoweredOffIsFailedOver: a node whose kubelet, containerd and every container die at
// once. Its primaries are failed over; the primaries elsewhere that lose their replica on it stop
// refusing writes as soon as the controller lifts their fence.
func TestANodePoweredOffIsFailedOver(t *testing.T) {
	testNodeLoss(t, lossKind{name: "powered off", lose: powerOff, failsOver: true})
}

// TestANodeWhoseKubeletDiesKeepsServing: a node whose kubelet alone dies: its pods keep serving,
// Kubernetes marks the node NotReady and its pods unready after its grace period, and the fleet
// moves nothing: a primary that answers as one is not replaced.
func TestANodeWhoseKubeletDiesKeepsServing(t *testing.T) {
	testNodeLoss(t, lossKind{name: "kubelet dead", lose: killKubelet, appsSurvive: true})
}

func testNodeLoss(t *testing.T, kind lossKind) {
	needsRealPods(t)
	if cluster != "nodes" {
		t.Skip("losing a node needs hack/node-cluster.sh's nodes (E2E_CLUSTER=nodes)")
	}
	const fleet = "loss"
	ns := namespace(t, "e2e-loss-"+strings.ReplaceAll(kind.name, " ", "-"))
	readyRealFleet(t, ns, fleet, 2, 1)
	nodeOf := func(pod string) string { return jsonpath(ns, "pod/"+pod, "{.spec.nodeName}") }
	primaryOf := func(shard string) string {
		return jsonpath(ns, "cachefleet/"+fleet, `{.status.primaries[?(@.shard=="`+shard+`")].pod}`)
	}
	shards := []string{"shard-0", "shard-1"}
	victim, leaderNode := lossVictim(t, ns, nodeOf, primaryOf, shards)
	agents := agentPods(t, ns, fleet)
	var survivor string
	for node := range agents {
		if node != victim {
			survivor = node
		}
	}
	if survivor == "" {
		t.Fatalf("agents on %v: need a second node besides %s", agents, victim)
	}
	before := map[string]string{} // shard -> its primary before the loss
	for _, sh := range shards {
		before[sh] = primaryOf(sh)
	}

	c := agentClient(t, ns, fleet, agents[survivor])
	ctx := context.Background()
	var seeds []string
	for i := range 200 {
		seeds = append(seeds, fmt.Sprintf("seed:%d", i))
		if err := c.Set(ctx, seeds[i], "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	type workload struct {
		w *lossWriter
		r *lossReader
	}
	apps := map[string]workload{}
	for _, node := range []string{survivor, victim} {
		nc := nodeClient(t, ns, fleet, node, agents[node])
		apps[node] = workload{startLossWriter(nc, "w-"+node), startLossReader(nc, seeds)}
	}
	time.Sleep(2 * time.Second)

	t0 := time.Now()
	restore := kind.lose(t, victim)
	lostShards := slices.DeleteFunc(slices.Clone(shards), func(sh string) bool { return nodeOf(before[sh]) != victim })
	if kind.failsOver {
		eventually(t, 2*time.Minute, fmt.Sprintf("%v failed over away from %s", lostShards, victim), func() error {
			for _, sh := range lostShards {
				if p := primaryOf(sh); p == before[sh] || nodeOf(p) == victim {
					return fmt.Errorf("%s's primary is %s", sh, p)
				}
			}
			return nil
		})
	} else {
		eventually(t, 2*time.Minute, victim+" NotReady", func() error {
			if s := jsonpath("", "node/"+victim, `{.status.conditions[?(@.type=="Ready")].status}`); s == "True" {
				return fmt.Errorf("%s Ready: %s", victim, s)
			}
			return nil
		})
		time.Sleep(15 * time.Second) // the pods turn unready; failoverAfter (5 s) passes twice
		for _, sh := range shards {
			if p := primaryOf(sh); p != before[sh] {
				t.Errorf("%s's primary moved from %s to %s, though it kept serving", sh, before[sh], p)
			}
		}
	}
	moved := time.Since(t0)
	time.Sleep(3 * time.Second) // writes through the new ring
	apps[survivor].w.finish()
	apps[survivor].r.finish()
	writesBack := apps[survivor].w.writesBack(t0)

	restore()
	eventually(t, 3*time.Minute, "every former primary replicating from its shard's primary", func() error {
		for _, sh := range lostShards {
			if p := primaryOf(sh); p == before[sh] {
				continue
			}
			info, err := podInfo(t, ns, fleet, before[sh], "replication")
			if err != nil || !strings.Contains(info, "role:slave") || !strings.Contains(info, "master_link_status:up") {
				return fmt.Errorf("%s's former primary %s: %v %q", sh, before[sh], err, firstLines(info, 3))
			}
		}
		return nil
	})
	apps[victim].w.finish()
	apps[victim].r.finish()
	reader := agentClient(t, ns, fleet, agents[survivor])
	lostSurvivor := apps[survivor].w.lost(t, reader)
	lostVictim := apps[victim].w.lost(t, reader)
	lateVictim := 0 // lost writes acknowledged after the fence should have closed
	for _, at := range lostVictim {
		if at.Sub(t0) > fenceBound {
			lateVictim++
		}
	}
	movedHow := "failed over after"
	if !kind.failsOver {
		movedHow = "kept through"
	}
	t.Logf("nodeloss: %s, node %s (manager leader on %s): primaries of %v %s %s; writes back on every shard after %s, longest gap %s (%s); "+
		"reads failed %d of %d on %s (slowest %s), %d of %d on %s (slowest %s); acknowledged writes lost: %d on %s, %d on %s (%d after the fence's %s); on %s: %s",
		kind.name, victim, leaderNode, lostShards, movedHow, moved.Round(100*time.Millisecond), writesBack.Round(100*time.Millisecond), apps[survivor].w.longestGap.Round(10*time.Millisecond), apps[survivor].w.summary(t0),
		apps[survivor].r.fails, apps[survivor].r.reads, survivor, apps[survivor].r.slowest.Round(10*time.Millisecond),
		apps[victim].r.fails, apps[victim].r.reads, victim, apps[victim].r.slowest.Round(10*time.Millisecond),
		len(lostSurvivor), survivor, len(lostVictim), victim, lateVictim, fenceBound, victim, apps[victim].w.summary(t0))
	if len(lostSurvivor) > 0 {
		t.Errorf("writes acknowledged on %s lost: %v", survivor, slices.Sorted(maps.Keys(lostSurvivor))[:min(len(lostSurvivor), 10)])
	}
	if lateVictim > 0 {
		t.Errorf("%d writes acknowledged on %s more than %s after the loss were lost: the cut-off primary was not fenced", lateVictim, victim, fenceBound)
	}
	if f := apps[survivor].r; f.fails > 0 {
		t.Errorf("reads on %s failed %s", survivor, f.failures(t0))
	}
	if f := apps[victim].r; kind.appsSurvive && f.fails > 0 {
		t.Errorf("reads on %s failed %s", victim, f.failures(t0))
		logs, _ := kubectl("", "-n", ns, "logs", agents[victim], "--since=5m")
		t.Logf("agent %s's log:\n%s", agents[victim], logs)
	}
	bound := 20 * time.Second
	if victim == leaderNode {
		bound += 15 * time.Second // the next manager acts once the lost leader's lease expires
	}
	if writesBack > bound {
		t.Errorf("writes on %s failed until %s after the loss", survivor, writesBack)
	}
	if gap := apps[survivor].w.longestGap; !kind.failsOver && gap > 2*time.Second {
		t.Errorf("writes on %s stopped for %s while every pod kept serving: %s", survivor, gap, apps[survivor].w.summary(t0))
	}
}

// lossVictim picks the node to lose: the one of a primary away from the manager's leader when
// there is one (a leader on the lost node loses its lease first, and the next one acts only once
// it expires, 15 s later); the leader's own with E2E_LOSE_LEADER_NODE set.
func lossVictim(t *testing.T, ns string, nodeOf, primaryOf func(string) string, shards []string) (victim, leaderNode string) {
	t.Helper()
	leaderNode = "a process off the nodes"
	if managerNamespace != "" {
		pod, _, _ := strings.Cut(leaderIdentity(), "_")
		leaderNode = jsonpath(managerNamespace, "pod/"+pod, "{.spec.nodeName}")
	}
	if os.Getenv("E2E_LOSE_LEADER_NODE") != "" && leaderNode != "a process off the nodes" {
		return leaderNode, leaderNode // the case with the lease to wait for, on purpose
	}
	for _, sh := range shards {
		if n := nodeOf(primaryOf(sh)); n != leaderNode {
			return n, leaderNode
		}
	}
	return nodeOf(primaryOf(shards[0])), leaderNode
}

// podInfo is INFO section of a shard pod, asked directly.
func podInfo(t *testing.T, ns, fleet, pod, section string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: podAddr(t, ns, pod, 6379), Password: fleetPassword(t, ns, fleet), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return c.Info(context.Background(), section).Result()
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[:min(len(lines), n)], " ")
}

// cutNode takes node's link to the bridge down (hack/node-cluster.sh gives each node a veth
// named after it) and returns what puts it back, which the test's cleanup runs too.
func cutNode(t *testing.T, node string) (restore func()) {
	t.Helper()
	link := "veth-" + node
	if out, err := exec.Command("ip", "link", "set", link, "down").CombinedOutput(); err != nil {
		t.Fatalf("cutting %s: %v: %s", node, err, out)
	}
	return once(t, func() {
		if out, err := exec.Command("ip", "link", "set", link, "up").CombinedOutput(); err != nil {
			t.Errorf("restoring %s: %v: %s", node, err, out)
		}
	})
}

// powerOff kills node's kubelet, kube-proxy, containerd and every container process at once;
// restoring starts them again and waits for the node to be Ready.
func powerOff(t *testing.T, node string) (restore func()) {
	t.Helper()
	nodeCluster(t, "stop-node", node)
	return once(t, func() { nodeCluster(t, "start-node", node); waitNodeReady(t, node) })
}

// killKubelet kills node's kubelet alone; restoring starts it again.
func killKubelet(t *testing.T, node string) (restore func()) {
	t.Helper()
	nodeCluster(t, "stop-kubelet", node)
	return once(t, func() { nodeCluster(t, "start-node", node); waitNodeReady(t, node) })
}

// nodeCluster runs hack/node-cluster.sh cmd on node's number (cfnode2 -> 2).
func nodeCluster(t *testing.T, cmd, node string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(repoRoot(), "hack", "node-cluster.sh"), cmd, strings.TrimPrefix(node, "cfnode")).CombinedOutput()
	if err != nil {
		t.Fatalf("node-cluster.sh %s %s: %v: %s", cmd, node, err, out)
	}
}

func waitNodeReady(t *testing.T, node string) {
	t.Helper()
	eventually(t, 2*time.Minute, node+" Ready", func() error {
		if s := jsonpath("", "node/"+node, `{.status.conditions[?(@.type=="Ready")].status}`); s != "True" {
			return fmt.Errorf("Ready %q", s)
		}
		return nil
	})
}

// once runs restore at most once: when the test calls it, or in its cleanup after a failure.
func once(t *testing.T, restore func()) func() {
	done := false
	f := func() {
		if !done {
			done = true
			restore()
		}
	}
	t.Cleanup(f)
	return f
}
