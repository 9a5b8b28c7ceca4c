//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// cutNode takes node's link to the bridge down (hack/node-cluster.sh gives each node a veth
// named after it) and returns what puts it back, which the test's cleanup runs too.
func cutNode(t *testing.T, node string) (restore func()) {
	t.Helper()
	link := "veth-" + node
	if out, err := exec.Command("ip", "link", "set", link, "down").CombinedOutput(); err != nil {
		t.Fatalf("cutting %s: %v: %s", node, err, out)
	}
	restored := false
	restore = func() {
		if restored {
			return
		}
		restored = true
		if out, err := exec.Command("ip", "link", "set", link, "up").CombinedOutput(); err != nil {
			t.Errorf("restoring %s: %v: %s", node, err, out)
		}
	}
	t.Cleanup(restore)
	return restore
}

// TestANodeCutOffIsSeenByTheFleet: a node whose link goes down (its pods keep running, cut
// off) is seen by the agents on the other nodes within seconds: the controller records
// PrimaryUnreachable for the shards whose primary is on it, long before Kubernetes would mark
// the node NotReady (40-55 s), and for no other shard, and fails the shard over to a pod it
// reaches once the verdict held for failoverAfter. A writer on the other node times the gap.
// Once the link is back, writes through either node's agent succeed.
func TestANodeCutOffIsSeenByTheFleet(t *testing.T) {
	needsRealPods(t)
	if cluster != "nodes" {
		t.Skip("cutting a node's link needs hack/node-cluster.sh's nodes (E2E_CLUSTER=nodes)")
	}
	ns := namespace(t, "e2e-cut")
	readyRealFleet(t, ns, "cut", 2, 1)
	nodeOf := func(pod string) string { return jsonpath(ns, "pod/"+pod, "{.spec.nodeName}") }
	primaryOf := func(shard string) string {
		return jsonpath(ns, "cachefleet/cut", `{.status.primaries[?(@.shard=="`+shard+`")].pod}`)
	}
	// A leader on the cut-off node loses its lease first, and the next one acts only once it
	// expires (15 s): the node cut is the one of a primary away from the leader, when one is.
	leaderNode := "a process off the nodes"
	if managerNamespace != "" {
		pod, _, _ := strings.Cut(leaderIdentity(), "_")
		leaderNode = jsonpath(managerNamespace, "pod/"+pod, "{.spec.nodeName}")
	}
	shard := "shard-0"
	if nodeOf(primaryOf(shard)) == leaderNode && nodeOf(primaryOf("shard-1")) != leaderNode {
		shard = "shard-1"
	}
	victim := nodeOf(primaryOf(shard))
	agents := agentPods(t, ns, "cut")
	var survivor string
	for node := range agents {
		if node != victim {
			survivor = node
		}
	}
	if victim == "" || survivor == "" {
		t.Fatalf("%s's primary on %q, agents on %v: need a second node", shard, victim, agents)
	}
	onVictim := map[string]bool{}
	for _, sh := range []string{"shard-0", "shard-1"} {
		onVictim[sh] = nodeOf(primaryOf(sh)) == victim
	}
	c := agentClient(t, ns, "cut", agents[survivor])
	ctx := context.Background()
	if err := c.Set(ctx, "before-the-cut", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := c.Set(ctx, fmt.Sprintf("cut:%d", i), "0", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	oldPrimary := primaryOf(shard)
	gaps := startGapWriter(c, keysOn(t, ns, "cut", oldPrimary, "cut", 100))
	time.Sleep(time.Second)

	t0 := time.Now()
	restore := cutNode(t, victim)
	var reported string
	eventually(t, time.Minute, "PrimaryUnreachable for "+shard, func() error {
		out, _ := kubectl("", "-n", ns, "get", "events", "--field-selector", "reason=PrimaryUnreachable",
			"-o", `jsonpath={range .items[*]}{.message}{"\n"}{end}`)
		if !strings.Contains(out, shard+":") {
			return fmt.Errorf("events: %q", out)
		}
		reported = out
		return nil
	})
	t.Logf("timing: node %s cut off (the manager's leader on %s): PrimaryUnreachable for %s after %s (%s)", victim, leaderNode, shard,
		time.Since(t0).Round(100*time.Millisecond), strings.TrimSpace(reported))
	for sh, on := range onVictim {
		if !on && strings.Contains(reported, sh+":") {
			t.Errorf("%s's primary is on %s, which was not cut off, and was reported lost: %q", sh, survivor, reported)
		}
	}
	eventually(t, time.Minute, shard+" failed over to a pod the fleet reaches", func() error {
		if p := primaryOf(shard); p == oldPrimary || nodeOf(p) == victim {
			return fmt.Errorf("%s's primary is %s", shard, p)
		}
		return nil
	})
	promoted := time.Since(t0)
	time.Sleep(2 * time.Second) // writes through the new ring
	longest, refused, acked := gaps.finish()
	t.Logf("timing: node %s cut off (the manager's leader on %s): %s failed over after %s; longest write gap on it %s (%s, %d acknowledged)",
		victim, leaderNode, shard, promoted.Round(100*time.Millisecond), longest.Round(100*time.Millisecond), refused, acked)
	restore()
	eventually(t, time.Minute, "writes through the other node's agent", func() error {
		return c.Set(ctx, "after-the-cut", "1", 0).Err()
	})
	v := agentClient(t, ns, "cut", agents[victim]) // waits for it to answer PING
	eventually(t, time.Minute, "a read through the cut node's agent", func() error {
		return v.Get(ctx, "before-the-cut").Err()
	})
}
