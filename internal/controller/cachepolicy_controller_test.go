package controller

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func createPolicy(t *testing.T, ns, name, fleet, prefix string, ttl time.Duration) {
	t.Helper()
	p := &cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	p.Spec.FleetRef.Name = fleet
	p.Spec.KeyPrefix = prefix
	p.Spec.TTL = &metav1.Duration{Duration: ttl}
	p.Spec.InvalidateOnWrite = true
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

func policyStatus(t *testing.T, ns, name string) cachev1alpha1.CachePolicyStatus {
	t.Helper()
	return get(t, ns, name, &cachev1alpha1.CachePolicy{}).Status
}

func waitPolicy(t *testing.T, ns, name, phase string, check func(cachev1alpha1.CachePolicyStatus) error) {
	t.Helper()
	eventually(t, name+" "+phase, func() error {
		st := policyStatus(t, ns, name)
		if string(st.Phase) != phase {
			return fmt.Errorf("phase %q, conditions %+v", st.Phase, st.Conditions)
		}
		if check != nil {
			return check(st)
		}
		return nil
	})
}

func TestPoliciesAcceptedConflictedAndFleetMissing(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", nil))
	waitForChildren(t, ns, "web", 3)

	createPolicy(t, ns, "sessions", "web", "session:", 30*time.Minute)
	waitPolicy(t, ns, "sessions", "Accepted", func(st cachev1alpha1.CachePolicyStatus) error {
		doc := readRing(t, ns, "web")
		if st.AppliedRingEpoch != doc.Epoch || len(doc.Policies) != 1 || doc.Policies[0].TTLMillis != 30*60*1000 {
			return fmt.Errorf("applied epoch %d, ring epoch %d, policies %+v", st.AppliedRingEpoch, doc.Epoch, doc.Policies)
		}
		return nil
	})
	epochWithSessions := readRing(t, ns, "web").Epoch

	time.Sleep(1100 * time.Millisecond) // creation timestamps have second resolution
	createPolicy(t, ns, "sessions-copy", "web", "session:", time.Minute)
	waitPolicy(t, ns, "sessions-copy", "Conflicted", func(st cachev1alpha1.CachePolicyStatus) error {
		if !meta.IsStatusConditionTrue(st.Conditions, cachev1alpha1.ConflictedCondition) ||
			meta.IsStatusConditionTrue(st.Conditions, cachev1alpha1.AcceptedCondition) {
			return fmt.Errorf("conditions %+v", st.Conditions)
		}
		return nil
	})
	if doc := readRing(t, ns, "web"); len(doc.Policies) != 1 || doc.Policies[0].Name != "sessions" || doc.Epoch != epochWithSessions {
		t.Errorf("the conflicted policy changed the ring: epoch %d, %+v", doc.Epoch, doc.Policies)
	}
	if st := policyStatus(t, ns, "sessions"); st.Phase != "Accepted" {
		t.Errorf("the older policy lost its prefix: %+v", st)
	}

	createPolicy(t, ns, "orphan", "nope", "x:", time.Minute)
	waitPolicy(t, ns, "orphan", cachev1alpha1.ReasonFleetNotFound, nil)

	// A live change reaches the ring and the policy's applied epoch.
	p := get(t, ns, "sessions", &cachev1alpha1.CachePolicy{})
	base := p.DeepCopy()
	p.Spec.TTL = &metav1.Duration{Duration: time.Hour}
	if err := k8s.Patch(context.Background(), p, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, ns, "sessions", "Accepted", func(st cachev1alpha1.CachePolicyStatus) error {
		doc := readRing(t, ns, "web")
		if doc.Epoch != epochWithSessions+1 || doc.Policies[0].TTLMillis != 3600_000 || st.AppliedRingEpoch != doc.Epoch {
			return fmt.Errorf("ring epoch %d ttl %d, applied %d", doc.Epoch, doc.Policies[0].TTLMillis, st.AppliedRingEpoch)
		}
		return nil
	})

	// Deleting the owner of the prefix hands it to the conflicted policy.
	if err := k8s.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	waitPolicy(t, ns, "sessions-copy", "Accepted", nil)
}

// TestOriginPolicyReachesTheRingAndTheAgentsRole: a read-through policy is published with its
// origin and stale windows, and the agents may read its headers Secret, until it goes away.
func TestOriginPolicyReachesTheRingAndTheAgentsRole(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", nil))
	waitForChildren(t, ns, "web", 3)
	p := &cachev1alpha1.CachePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "items"}}
	p.Spec = cachev1alpha1.CachePolicySpec{FleetRef: cachev1alpha1.FleetReference{Name: "web"}, KeyPrefix: "item:",
		StaleWhileRevalidate: &metav1.Duration{Duration: time.Minute}, StaleIfError: &metav1.Duration{Duration: time.Hour},
		Origin: &cachev1alpha1.Origin{URL: "http://catalog.shop.svc:8080/items/{key}", HeadersFrom: &cachev1alpha1.SecretName{Name: "catalog-auth"}}}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	canRead := func() []string {
		return get(t, ns, "web-agent", &rbacv1.Role{}).Rules[1].ResourceNames
	}
	eventually(t, "origin published, headers Secret readable", func() error {
		doc := readRing(t, ns, "web")
		if len(doc.Policies) != 1 || doc.Policies[0].Origin == nil {
			return fmt.Errorf("policies %+v", doc.Policies)
		}
		got := doc.Policies[0]
		want := contract.Origin{URL: "http://catalog.shop.svc:8080/items/{key}", TimeoutMillis: 2000, HeadersSecret: "catalog-auth", AllowedStatus: []int32{200}}
		if !reflect.DeepEqual(*got.Origin, want) || got.StaleWhileRevalidateMillis != 60_000 || got.StaleIfErrorMillis != 3_600_000 {
			return fmt.Errorf("published %+v origin %+v", got, *got.Origin)
		}
		if !slices.Contains(canRead(), "catalog-auth") {
			return fmt.Errorf("agents may read %v", canRead())
		}
		return nil
	})
	if err := k8s.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "headers Secret no longer readable", func() error {
		if slices.Contains(canRead(), "catalog-auth") {
			return fmt.Errorf("agents may still read %v", canRead())
		}
		return nil
	})
}
