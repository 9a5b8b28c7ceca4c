package controller

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// indexFleetRef indexes CachePolicies by the fleet they name.
const indexFleetRef = "spec.fleetRef.name"

func listFleetPolicies(ctx context.Context, c client.Reader, namespace, fleet string) ([]cachev1alpha1.CachePolicy, error) {
	var list cachev1alpha1.CachePolicyList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{indexFleetRef: fleet}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// resolvePolicies splits one fleet's policies into those that go into the ring and those
// conflicted by an older policy with the same prefix (older by creation time, then name).
// conflicted maps a conflicted policy's name to the name of the policy that owns its prefix.
func resolvePolicies(policies []cachev1alpha1.CachePolicy) (accepted []cachev1alpha1.CachePolicy, conflicted map[string]string) {
	sorted := slices.Clone(policies)
	slices.SortFunc(sorted, func(a, b cachev1alpha1.CachePolicy) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	owner := map[string]string{}
	conflicted = map[string]string{}
	for _, p := range sorted {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		if first, taken := owner[p.Spec.KeyPrefix]; taken {
			conflicted[p.Name] = first
			continue
		}
		owner[p.Spec.KeyPrefix] = p.Name
		accepted = append(accepted, p)
	}
	return accepted, conflicted
}

// CachePolicyReconciler reports whether each policy is part of its fleet's ring.
type CachePolicyReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=cache.cachefleet.io,resources=cachepolicies/status,verbs=get;update;patch

// Reconcile computes the policy's Accepted and Conflicted conditions.
func (r *CachePolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p cachev1alpha1.CachePolicy
	if err := r.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var fleet cachev1alpha1.CacheFleet
	fleetErr := r.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Spec.FleetRef.Name}, &fleet)
	if fleetErr != nil && !apierrors.IsNotFound(fleetErr) {
		return ctrl.Result{}, fleetErr
	}
	in := policyInputs{fleetFound: fleetErr == nil}
	if in.fleetFound {
		peers, err := listFleetPolicies(ctx, r.Client, p.Namespace, p.Spec.FleetRef.Name)
		if err != nil {
			return ctrl.Result{}, err
		}
		_, conflicted := resolvePolicies(peers)
		in.conflictsWith = conflicted[p.Name]
		in.ringEpoch, in.inRing = r.ringCarries(ctx, &fleet, &p)
	}
	status := computePolicyStatus(p.Status, p.Generation, in)
	if equality.Semantic.DeepEqual(p.Status, status) {
		return ctrl.Result{}, nil
	}
	base := p.DeepCopy()
	p.Status = status
	return ctrl.Result{}, client.IgnoreNotFound(r.Status().Patch(ctx, &p, client.MergeFrom(base)))
}

// ringCarries reports the fleet ring's epoch and whether it holds the policy as specified now.
func (r *CachePolicyReconciler) ringCarries(ctx context.Context, f *cachev1alpha1.CacheFleet, p *cachev1alpha1.CachePolicy) (int64, bool) {
	var cm corev1.ConfigMap
	if err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: ringConfigMapName(f)}, &cm); err != nil {
		return 0, false
	}
	doc, err := contract.Decode([]byte(cm.Data[contract.DocumentKey]))
	if err != nil {
		return 0, false
	}
	want := compilePolicy(p)
	for _, got := range doc.Policies {
		if reflect.DeepEqual(got, want) {
			return doc.Epoch, true
		}
	}
	return doc.Epoch, false
}

type policyInputs struct {
	fleetFound    bool
	conflictsWith string
	inRing        bool
	ringEpoch     int64
}

// computePolicyStatus is side-effect free; the applied epoch is kept while the policy's
// generation is unchanged, so it names the epoch that first carried this version.
func computePolicyStatus(prev cachev1alpha1.CachePolicyStatus, generation int64, in policyInputs) cachev1alpha1.CachePolicyStatus {
	st := *prev.DeepCopy()
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: generation})
	}
	switch {
	case !in.fleetFound:
		set(cachev1alpha1.AcceptedCondition, metav1.ConditionFalse, cachev1alpha1.ReasonFleetNotFound, "spec.fleetRef names no CacheFleet in this namespace")
		set(cachev1alpha1.ConflictedCondition, metav1.ConditionFalse, cachev1alpha1.ReasonNoConflict, "")
		st.Phase, st.AppliedRingEpoch = cachev1alpha1.PolicyFleetNotFound, 0
	case in.conflictsWith != "":
		msg := fmt.Sprintf("policy %q already owns this keyPrefix; this policy is left out of the ring", in.conflictsWith)
		set(cachev1alpha1.AcceptedCondition, metav1.ConditionFalse, cachev1alpha1.ReasonPrefixConflict, msg)
		set(cachev1alpha1.ConflictedCondition, metav1.ConditionTrue, cachev1alpha1.ReasonPrefixConflict, msg)
		st.Phase, st.AppliedRingEpoch = cachev1alpha1.PolicyConflicted, 0
	default:
		set(cachev1alpha1.ConflictedCondition, metav1.ConditionFalse, cachev1alpha1.ReasonNoConflict, "")
		if in.inRing {
			set(cachev1alpha1.AcceptedCondition, metav1.ConditionTrue, cachev1alpha1.ReasonAccepted, fmt.Sprintf("in ring epoch %d", in.ringEpoch))
			if st.AppliedRingEpoch == 0 || prev.ObservedGeneration != generation {
				st.AppliedRingEpoch = in.ringEpoch
			}
			st.Phase = cachev1alpha1.PolicyAccepted
		} else {
			set(cachev1alpha1.AcceptedCondition, metav1.ConditionFalse, "Pending", "waiting for the fleet to publish a ring with this policy")
			st.Phase, st.AppliedRingEpoch = cachev1alpha1.PolicyPending, 0
		}
	}
	// kstatus conventions (see ReconcilingCondition): a missing fleet or a taken prefix needs a
	// change by someone; a policy not yet in the ring needs only time.
	accepted := meta.FindStatusCondition(st.Conditions, cachev1alpha1.AcceptedCondition)
	switch st.Phase {
	case cachev1alpha1.PolicyFleetNotFound, cachev1alpha1.PolicyConflicted:
		set(cachev1alpha1.StalledCondition, metav1.ConditionTrue, accepted.Reason, accepted.Message)
		set(cachev1alpha1.ReconcilingCondition, metav1.ConditionFalse, accepted.Reason, "waiting for a change")
	case cachev1alpha1.PolicyPending:
		set(cachev1alpha1.StalledCondition, metav1.ConditionFalse, cachev1alpha1.ReasonAsExpected, "")
		set(cachev1alpha1.ReconcilingCondition, metav1.ConditionTrue, accepted.Reason, accepted.Message)
	default:
		set(cachev1alpha1.StalledCondition, metav1.ConditionFalse, cachev1alpha1.ReasonAsExpected, "")
		set(cachev1alpha1.ReconcilingCondition, metav1.ConditionFalse, accepted.Reason, accepted.Message)
	}
	st.ObservedGeneration = generation
	return st
}
