package controller

import (
	"errors"
	"strconv"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

func readyShards(n int) []shardObservation {
	out := make([]shardObservation, n)
	for i := range out {
		out[i] = shardObservation{name: shardName(i), exists: true, desiredPods: 2, readyPods: 2, primaryReady: true}
	}
	return out
}

func healthy() observation {
	return observation{shards: readyShards(3), agentsExist: true, desiredAgents: 2, readyAgents: 2, convergedAgents: 2,
		ringPublished: true, ringEpoch: 4, ringChecksum: "c", channel: "ch"}
}

func readyStatus() cachev1alpha1.CacheFleetStatus {
	return computeStatus(cachev1alpha1.CacheFleetStatus{}, 1, healthy())
}

func TestComputeStatus(t *testing.T) {
	tests := []struct {
		name      string
		prev      cachev1alpha1.CacheFleetStatus
		obs       func(*observation)
		phase     cachev1alpha1.FleetPhase
		want      map[string]string // condition type -> "Status/Reason"
		observed  int64
		shardsCol string
	}{
		{"nothing exists yet", cachev1alpha1.CacheFleetStatus{}, func(o *observation) {
			*o = observation{shards: []shardObservation{{name: "shard-0", desiredPods: 1}}}
		}, cachev1alpha1.PhasePending, map[string]string{"Ready": "False/NotAllReady", "RingPublished": "False/NotPublished", "Degraded": "False/AsExpected"}, 1, "0/1"},
		{"all ready", cachev1alpha1.CacheFleetStatus{}, func(*observation) {}, cachev1alpha1.PhaseReady,
			map[string]string{"Ready": "True/AllReady", "ShardsReady": "True/AllReady", "AgentsReady": "True/AllReady", "Progressing": "False/AsExpected", "MonitoringReady": "True/Disabled"}, 1, "3/3"},
		{"primary lost after being ready", readyStatus(), func(o *observation) { o.shards[1].primaryReady = false; o.shards[1].readyPods = 1 },
			cachev1alpha1.PhaseDegraded, map[string]string{"Degraded": "True/PrimaryNotReady", "Ready": "False/NotAllReady", "ShardsReady": "False/NotAllReady"}, 1, "2/3"},
		{"primary never ready is provisioning, not degraded", cachev1alpha1.CacheFleetStatus{}, func(o *observation) { o.shards[1].primaryReady = false },
			cachev1alpha1.PhaseProvisioning, map[string]string{"Degraded": "False/AsExpected"}, 1, "2/3"},
		{"replica down only", readyStatus(), func(o *observation) { o.shards[0].readyPods = 1 },
			cachev1alpha1.PhaseProvisioning, map[string]string{"Degraded": "False/AsExpected", "ShardsReady": "False/NotAllReady"}, 1, "3/3"},
		{"no eligible nodes", cachev1alpha1.CacheFleetStatus{}, func(o *observation) { o.desiredAgents, o.readyAgents = 0, 0 },
			cachev1alpha1.PhaseProvisioning, map[string]string{"AgentsReady": "False/NoEligibleNodes"}, 1, "3/3"},
		{"monitoring wanted without its CRD", cachev1alpha1.CacheFleetStatus{}, func(o *observation) { o.monitoring = monitoringObservation{enabled: true} },
			cachev1alpha1.PhaseReady, map[string]string{"MonitoringReady": "False/CRDNotInstalled", "Ready": "True/AllReady"}, 1, "3/3"},
		{"draining a removed shard", cachev1alpha1.CacheFleetStatus{}, func(o *observation) { o.draining = 1 },
			cachev1alpha1.PhaseReady, map[string]string{"Progressing": "True/Scaling"}, 1, "3/3"},
		{"reconcile error keeps the old observedGeneration", cachev1alpha1.CacheFleetStatus{ObservedGeneration: 1}, func(o *observation) { o.firstErr = errors.New("boom") },
			cachev1alpha1.PhaseProvisioning, map[string]string{"Ready": "False/ReconcileError"}, 1, "3/3"},
		{"invalid spec is observed and failed", readyStatus(), func(o *observation) {
			o.invalidSpec = &specError{"spec.shards.maxMemory", "spec.shards.maxMemory (1Gi) must be below resources.limits.memory (512Mi)"}
		}, cachev1alpha1.PhaseFailed, map[string]string{"Ready": "False/InvalidSpec"}, 2, "3/3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := healthy()
			tt.obs(&obs)
			gen := int64(1)
			if tt.name == "reconcile error keeps the old observedGeneration" || tt.name == "invalid spec is observed and failed" {
				gen = 2
			}
			st := computeStatus(tt.prev, gen, obs)
			if st.Phase != tt.phase {
				t.Errorf("phase %s, want %s", st.Phase, tt.phase)
			}
			for typ, want := range tt.want {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || string(c.Status)+"/"+c.Reason != want {
					t.Errorf("%s = %+v, want %s", typ, c, want)
				}
			}
			if st.ObservedGeneration != tt.observed {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, tt.observed)
			}
			if st.Shards != tt.shardsCol {
				t.Errorf("shards column %q, want %q", st.Shards, tt.shardsCol)
			}
		})
	}
}

func TestComputeStatusKeepsTransitionTimes(t *testing.T) {
	first := readyStatus()
	again := computeStatus(first, 1, healthy())
	a := meta.FindStatusCondition(first.Conditions, "Ready").LastTransitionTime
	b := meta.FindStatusCondition(again.Conditions, "Ready").LastTransitionTime
	if !a.Equal(&b) {
		t.Errorf("an unchanged condition moved its transition time: %v -> %v", a, b)
	}
}

func TestResolvePolicies(t *testing.T) {
	at := func(sec int64) metav1.Time { return metav1.NewTime(time.Unix(sec, 0)) }
	p := func(name, prefix string, created int64) cachev1alpha1.CachePolicy {
		c := cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: at(created)}}
		c.Spec.KeyPrefix = prefix
		return c
	}
	deleting := p("gone", "a:", 0)
	deleting.DeletionTimestamp = ptrTo(at(5))
	accepted, conflicted := resolvePolicies([]cachev1alpha1.CachePolicy{
		p("newer", "a:", 20), p("older", "a:", 10), p("b", "b:", 30), p("same-time-z", "c:", 40), p("same-time-a", "c:", 40), deleting,
	})
	names := map[string]bool{}
	for _, a := range accepted {
		names[a.Name] = true
	}
	if len(accepted) != 3 || !names["older"] || !names["b"] || !names["same-time-a"] {
		t.Errorf("accepted %v", names)
	}
	if conflicted["newer"] != "older" || conflicted["same-time-z"] != "same-time-a" || len(conflicted) != 2 {
		t.Errorf("conflicted %v", conflicted)
	}
}

func TestComputePolicyStatus(t *testing.T) {
	tests := []struct {
		name    string
		prev    cachev1alpha1.CachePolicyStatus
		gen     int64
		in      policyInputs
		phase   string
		applied int64
	}{
		{"fleet missing", cachev1alpha1.CachePolicyStatus{}, 1, policyInputs{}, "FleetNotFound", 0},
		{"conflicted", cachev1alpha1.CachePolicyStatus{}, 1, policyInputs{fleetFound: true, conflictsWith: "x"}, "Conflicted", 0},
		{"waiting for the ring", cachev1alpha1.CachePolicyStatus{AppliedRingEpoch: 3, ObservedGeneration: 1}, 2, policyInputs{fleetFound: true, ringEpoch: 3}, "Pending", 0},
		{"in the ring", cachev1alpha1.CachePolicyStatus{}, 1, policyInputs{fleetFound: true, inRing: true, ringEpoch: 3}, "Accepted", 3},
		{"later epochs keep the first", cachev1alpha1.CachePolicyStatus{AppliedRingEpoch: 3, ObservedGeneration: 1}, 1, policyInputs{fleetFound: true, inRing: true, ringEpoch: 7}, "Accepted", 3},
		{"new generation takes the new epoch", cachev1alpha1.CachePolicyStatus{AppliedRingEpoch: 3, ObservedGeneration: 1}, 2, policyInputs{fleetFound: true, inRing: true, ringEpoch: 7}, "Accepted", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := computePolicyStatus(tt.prev, tt.gen, tt.in)
			if string(st.Phase) != tt.phase || st.AppliedRingEpoch != tt.applied || st.ObservedGeneration != tt.gen {
				t.Errorf("got phase %s applied %d gen %d; want %s %d %d", st.Phase, st.AppliedRingEpoch, st.ObservedGeneration, tt.phase, tt.applied, tt.gen)
			}
		})
	}
}

func TestCountConverged(t *testing.T) {
	now := time.Unix(1000, 0)
	lease := func(epoch int64, renewedAgo time.Duration, dur *int32) coordinationv1.Lease {
		l := coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationRingEpoch: strconv.FormatInt(epoch, 10)}}}
		l.Spec.RenewTime = &metav1.MicroTime{Time: now.Add(-renewedAgo)}
		l.Spec.LeaseDurationSeconds = dur
		return l
	}
	noRenew := lease(5, 0, nil)
	noRenew.Spec.RenewTime = nil
	leases := []coordinationv1.Lease{
		lease(5, time.Second, nil),                 // counts
		lease(5, 29*time.Second, nil),              // counts (default 30s)
		lease(5, 31*time.Second, nil),              // expired
		lease(5, 50*time.Second, ptrTo[int32](60)), // counts: own duration
		lease(4, time.Second, nil),                 // old epoch
		noRenew,                                    // never renewed
	}
	if got := countConverged(leases, 5, now); got != 3 {
		t.Errorf("countConverged = %d, want 3", got)
	}
}

func TestShardIndex(t *testing.T) {
	for in, want := range map[string]int{"shard-0": 0, "shard-17": 17, "shard-": -1, "x-1": -1, "shard--1": -1} {
		got, ok := shardIndex(in)
		if (want < 0 && ok) || (want >= 0 && (!ok || got != want)) {
			t.Errorf("shardIndex(%q) = %d, %v", in, got, ok)
		}
	}
}
