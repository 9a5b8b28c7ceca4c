package controller

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestDecideFailover(t *testing.T) {
	const after = 5 * time.Second
	p := func(name string, ordinal int, ready bool, role string, offset int64) shardPod {
		return shardPod{name: name, ordinal: ordinal, addr: name + ":6379", ready: ready, reachable: role != "", role: role, offset: offset}
	}
	for _, tc := range []struct {
		name     string
		primary  string
		pods     []shardPod
		downFor  time.Duration
		promote  string
		wantWait bool
		switchTo string
	}{
		{"healthy primary", "s-0", []shardPod{p("s-0", 0, true, "master", 100), p("s-1", 1, true, "slave", 100)}, 0, "", false, ""},
		{"primary down, not long enough", "s-0", []shardPod{p("s-0", 0, false, "", 0), p("s-1", 1, true, "slave", 100)}, 2 * time.Second, "", true, ""},
		{"primary down long enough", "s-0", []shardPod{p("s-0", 0, false, "", 0), p("s-1", 1, true, "slave", 100)}, after, "s-1", false, ""},
		{"primary pod gone: at once", "s-0", []shardPod{{name: "s-0", gone: true}, p("s-1", 1, true, "slave", 100)}, 0, "s-1", false, ""},
		{"terminating primary still a master: switch over to its replica at once", "s-0", []shardPod{{name: "s-0", gone: true, addr: "x", reachable: true, role: "master", offset: 100}, p("s-1", 1, true, "slave", 100)}, 0, "", true, "s-1"},
		{"terminating primary: the most up-to-date replica takes over", "s-0", []shardPod{{name: "s-0", gone: true, addr: "x", reachable: true, role: "master", offset: 100}, p("s-1", 1, true, "slave", 90), p("s-2", 2, true, "slave", 100)}, 0, "", true, "s-2"},
		{"terminating primary with no ready replica: its preStop may still hand over", "s-0", []shardPod{{name: "s-0", gone: true, addr: "x", reachable: true, role: "master", offset: 100}, p("s-1", 1, false, "slave", 100)}, time.Second, "", true, ""},
		{"terminating primary handed over: publish the new one", "s-0", []shardPod{{name: "s-0", gone: true, addr: "x", reachable: true, role: "slave", offset: 100}, p("s-1", 1, true, "master", 100)}, time.Second, "s-1", false, ""},
		{"terminating primary's switchover took too long", "s-0", []shardPod{{name: "s-0", gone: true, addr: "x", reachable: true, role: "master", offset: 100}, p("s-1", 1, true, "slave", 90)}, 9 * time.Second, "s-1", false, ""},
		{"the replica with the most data wins", "s-0", []shardPod{p("s-0", 0, false, "", 0), p("s-1", 1, true, "slave", 90), p("s-2", 2, true, "slave", 120)}, after, "s-2", false, ""},
		{"a tie goes to the lowest ordinal", "s-0", []shardPod{p("s-0", 0, false, "", 0), p("s-2", 2, true, "slave", 100), p("s-1", 1, true, "slave", 100)}, after, "s-1", false, ""},
		{"unready replicas are not candidates", "s-0", []shardPod{p("s-0", 0, false, "", 0), p("s-1", 1, false, "slave", 100)}, after, "", false, ""},
		{"restarted empty primary deferring to a peer (unready)", "s-0", []shardPod{p("s-0", 0, false, "slave", 0), p("s-1", 1, true, "slave", 100)}, after, "s-1", false, ""},
		{"restarted empty primary deferring: at once, not after failoverAfter", "s-0", []shardPod{p("s-0", 0, false, "slave", 0), p("s-1", 1, true, "slave", 100)}, 300 * time.Millisecond, "s-1", false, ""},
		{"restarted primary already synced from its peer (ready): still replaced", "s-0", []shardPod{p("s-0", 0, true, "slave", 100), p("s-1", 1, true, "slave", 100)}, 0, "s-1", false, ""},
		{"ready replicas holding nothing, primary deferring", "s-0", []shardPod{p("s-0", 0, false, "slave", 0), p("s-1", 1, true, "master", 0)}, after, "s-1", false, ""},
		{"no replica holds data: keep the primary", "s-0", []shardPod{p("s-0", 0, false, "", 0), p("s-1", 1, true, "slave", 0)}, after, "", false, ""},
		{"an unready primary holding more stays", "s-0", []shardPod{p("s-0", 0, false, "master", 500), p("s-1", 1, true, "slave", 100)}, after, "", true, ""},
		{"an unready primary that answers as one stays (its kubelet died)", "s-0", []shardPod{p("s-0", 0, false, "master", 100), p("s-1", 1, true, "slave", 100)}, 10 * after, "", true, ""},
		{"after a failover the new primary is watched", "s-1", []shardPod{p("s-0", 0, true, "slave", 100), p("s-1", 1, false, "", 0)}, after, "s-0", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideFailover(tc.primary, tc.pods, tc.downFor, after)
			if d.promote != tc.promote || d.switchTo != tc.switchTo || (d.wait > 0) != tc.wantWait {
				t.Errorf("promote %q switch to %q wait %v (%s), want promote %q switch to %q wait %v",
					d.promote, d.switchTo, d.wait, d.reason, tc.promote, tc.switchTo, tc.wantWait)
			}
			if d.wait > reprobeEvery {
				t.Errorf("waits %s: a down primary is asked again every %s", d.wait, reprobeEvery)
			}
			if to := d.promote + d.switchTo; to != "" && !strings.Contains(d.reason, to) {
				t.Errorf("reason %q does not name %s", d.reason, to)
			}
			if d.promote+d.switchTo != "" && tc.pods[0].gone && !strings.Contains(d.reason, "deleted") {
				t.Errorf("reason %q does not say the primary's pod is being deleted", d.reason)
			}
		})
	}
}

func TestForgetFleetDropsOnlyThatFleet(t *testing.T) {
	r := &CacheFleetReconciler{}
	web, other := client.ObjectKey{Namespace: "shop", Name: "web"}, client.ObjectKey{Namespace: "shop", Name: "web2"}
	r.lastEpoch.Store(web, int64(3))
	r.lastEpoch.Store(other, int64(5))
	r.down.Store("shop/web/shard-0", time.Now())
	r.down.Store("shop/web2/shard-0", time.Now())
	r.forgetFleet(web)
	if _, ok := r.lastEpoch.Load(web); ok {
		t.Error("the deleted fleet's epoch is remembered")
	}
	if _, ok := r.down.Load("shop/web/shard-0"); ok {
		t.Error("the deleted fleet's down clock is remembered")
	}
	if _, ok := r.lastEpoch.Load(other); !ok {
		t.Error("another fleet's epoch was dropped")
	}
	if _, ok := r.down.Load("shop/web2/shard-0"); !ok {
		t.Error("another fleet (a name with the same prefix) lost its down clock")
	}
}
