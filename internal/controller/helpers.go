package controller

import (
	"context"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// newPDB is an empty PodDisruptionBudget with shard i's name, for lookups and deletes.
func newPDB(f *cachev1alpha1.CacheFleet, i int) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: shardStatefulSetName(f, i)}}
}

// deleteIfExists deletes obj when it exists and the fleet controls it.
func (r *CacheFleetReconciler) deleteIfExists(ctx context.Context, f *cachev1alpha1.CacheFleet, obj client.Object) error {
	if err := r.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, f) {
		return nil
	}
	if err := r.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// shardIndex parses "shard-<i>".
func shardIndex(name string) (int, bool) {
	n, ok := strings.CutPrefix(name, "shard-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil && i >= 0
}

// leaseLiveness is how long after its last renewal a Lease still counts when it states no duration.
const leaseLiveness = 30 * time.Second

// countConverged counts live agent Leases that report serving epoch.
func countConverged(leases []coordinationv1.Lease, epoch int64, now time.Time) int32 {
	var n int32
	for i := range leases {
		l := &leases[i]
		if l.Annotations[AnnotationRingEpoch] != strconv.FormatInt(epoch, 10) || l.Spec.RenewTime == nil {
			continue
		}
		ttl := leaseLiveness
		if l.Spec.LeaseDurationSeconds != nil {
			ttl = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		if now.Sub(l.Spec.RenewTime.Time) <= ttl {
			n++
		}
	}
	return n
}
