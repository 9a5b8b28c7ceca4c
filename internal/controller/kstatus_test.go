package controller

import (
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// kstatusOf is what Argo CD, Flux and kpt compute from an object's status (kstatus).
func kstatusOf(t *testing.T, obj runtime.Object) status.Status {
	t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

// TestFleetHealthAsKstatusSeesIt: every phase of a CacheFleet reads as what it is, with no
// custom health rule: Ready is Current, an invalid spec Failed, everything else InProgress.
func TestFleetHealthAsKstatusSeesIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		prev  cachev1alpha1.CacheFleetStatus
		gen   int64
		obs   func(*observation)
		phase cachev1alpha1.FleetPhase
		want  status.Status
	}{
		{"ready", cachev1alpha1.CacheFleetStatus{}, 1, func(*observation) {}, cachev1alpha1.PhaseReady, status.CurrentStatus},
		{"nothing created yet", cachev1alpha1.CacheFleetStatus{}, 1, func(o *observation) {
			*o = observation{shards: []shardObservation{{name: "shard-0", desiredPods: 1}}}
		}, cachev1alpha1.PhasePending, status.InProgressStatus},
		{"provisioning", cachev1alpha1.CacheFleetStatus{}, 1, func(o *observation) { o.readyAgents = 1 }, cachev1alpha1.PhaseProvisioning, status.InProgressStatus},
		{"degraded", readyStatus(), 1, func(o *observation) { o.shards[0].primaryReady = false }, cachev1alpha1.PhaseDegraded, status.InProgressStatus},
		{"draining a removed shard", cachev1alpha1.CacheFleetStatus{}, 1, func(o *observation) { o.draining = 1 }, cachev1alpha1.PhaseReady, status.InProgressStatus},
		{"reconcile error on a new generation", readyStatus(), 2, func(o *observation) { o.firstErr = errors.New("boom") }, cachev1alpha1.PhaseReady, status.InProgressStatus},
		{"invalid spec", readyStatus(), 2, func(o *observation) {
			o.invalidSpec = &specError{"spec.shards.maxMemory", "spec.shards.maxMemory must be below resources.limits.memory"}
		}, cachev1alpha1.PhaseFailed, status.FailedStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := healthy()
			tc.obs(&obs)
			f := &cachev1alpha1.CacheFleet{ObjectMeta: metav1.ObjectMeta{Name: "f", Namespace: "ns", Generation: tc.gen}}
			f.Status = computeStatus(tc.prev, tc.gen, obs)
			if tc.name != "reconcile error on a new generation" && f.Status.Phase != tc.phase {
				t.Fatalf("phase %s, want %s", f.Status.Phase, tc.phase)
			}
			if got := kstatusOf(t, f); got != tc.want {
				t.Errorf("kstatus %s, want %s (conditions %+v)", got, tc.want, f.Status.Conditions)
			}
			for _, c := range f.Status.Conditions {
				if c.ObservedGeneration != tc.gen {
					t.Errorf("condition %s observedGeneration %d, want %d", c.Type, c.ObservedGeneration, tc.gen)
				}
			}
		})
	}
}

func TestPolicyHealthAsKstatusSeesIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   policyInputs
		want status.Status
	}{
		{"accepted", policyInputs{fleetFound: true, inRing: true, ringEpoch: 3}, status.CurrentStatus},
		{"waiting for the ring", policyInputs{fleetFound: true, ringEpoch: 3}, status.InProgressStatus},
		{"prefix taken", policyInputs{fleetFound: true, conflictsWith: "other"}, status.FailedStatus},
		{"fleet missing", policyInputs{}, status.FailedStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Generation: 1}}
			p.Status = computePolicyStatus(cachev1alpha1.CachePolicyStatus{}, 1, tc.in)
			if got := kstatusOf(t, p); got != tc.want {
				t.Errorf("kstatus %s, want %s (conditions %+v)", got, tc.want, p.Status.Conditions)
			}
		})
	}
}
