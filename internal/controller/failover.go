package controller

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// shardPod is what failover needs to know about one pod of a shard.
type shardPod struct {
	name      string
	ordinal   int
	addr      string // pod IP:port, empty while the pod has none
	ready     bool   // the pod is Ready and its node is Ready
	gone      bool   // the pod does not exist or is being deleted: whatever replaces it starts empty
	reachable bool   // INFO answered
	role      string // "master" or "slave", as INFO replication says
	offset    int64  // master_repl_offset: how much of the shard's history it holds
}

// switchoverWait bounds the wait for a terminating primary's own switchover (its preStop gives
// FAILOVER 5 s and watches it for 7 s).
const switchoverWait = 8 * time.Second

// failoverDecision says which pod to promote and why; promote is empty when nothing is to be done.
type failoverDecision struct {
	promote, reason string
	// wait is how long until the primary has been down for failoverAfter (then decide again).
	wait time.Duration
}

// decideFailover is the whole policy, pure: the primary is replaced at once when its pod is gone
// or being deleted (its replacement starts empty: waiting gains nothing), and when it has been
// unready for failoverAfter (a primary that restarted empty and deferred to a peer holding the
// data stays unready, see shardStartScript). The replacement is the ready, reachable pod holding the most of
// the shard's history (highest replication offset; lowest ordinal on a tie). A shard with no
// such pod keeps its primary: promoting an empty pod would lose more than waiting.
func decideFailover(primary string, pods []shardPod, downFor, failoverAfter time.Duration) failoverDecision {
	var cur *shardPod
	for i := range pods {
		if pods[i].name == primary {
			cur = &pods[i]
		}
	}
	gone := cur == nil || cur.gone
	switch {
	case cur != nil && cur.ready:
		return failoverDecision{}
	case !gone && downFor < failoverAfter:
		return failoverDecision{wait: failoverAfter - downFor}
	case gone && cur != nil && cur.reachable && cur.role == "master" && downFor < switchoverWait:
		// A terminating primary's preStop hands its role over with FAILOVER (no acknowledged
		// write lost); promoting a replica meanwhile could drop its last writes.
		return failoverDecision{wait: 200 * time.Millisecond}
	}
	reason := fmt.Sprintf("primary %s not ready for %s", primary, downFor.Round(100*time.Millisecond))
	if gone {
		reason = fmt.Sprintf("primary pod %s deleted (%s ago)", primary, downFor.Round(100*time.Millisecond))
	}
	if cur != nil && cur.reachable && cur.role == "slave" {
		reason = fmt.Sprintf("primary %s restarted without the shard's data and replicates from a peer", primary)
	}
	var candidates []shardPod
	for _, p := range pods {
		if p.name != primary && p.ready && p.reachable {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		return failoverDecision{}
	}
	best := slices.MaxFunc(candidates, func(a, b shardPod) int {
		return cmp.Or(cmp.Compare(a.offset, b.offset), cmp.Compare(b.ordinal, a.ordinal))
	})
	if !gone && cur.reachable && cur.role == "master" && cur.offset > best.offset {
		return failoverDecision{} // the unready primary still holds more than any replica
	}
	if best.offset == 0 && (cur == nil || cur.role != "slave") {
		// No replica holds anything: promoting an empty one could wipe a primary that is only
		// slow to come back (it would resync from the empty pod once fenced).
		return failoverDecision{}
	}
	return failoverDecision{promote: best.name, reason: fmt.Sprintf("%s; promoting %s (replication offset %d)", reason, best.name, best.offset)}
}

// reconcileFailover checks each shard's primary and promotes a replica where the policy says so.
func (r *CacheFleetReconciler) reconcileFailover(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	if f.Spec.Shards.Replicas == 0 {
		return nil
	}
	after := f.Spec.Shards.FailoverAfter.Duration
	if after <= 0 {
		after = 5 * time.Second
	}
	var password string // read only when a primary is down
	for i := 0; i < int(f.Spec.Shards.Count); i++ {
		shard := shardName(i)
		primary := s.roles[shard]
		pods, err := r.shardPods(ctx, f, i)
		if err != nil {
			return err
		}
		key := f.Namespace + "/" + f.Name + "/" + shard
		downFor := r.downFor(key, pods, primary)
		d := decideFailover(primary, pods, downFor, after)
		if d.wait == 0 && (downFor > 0 || podGone(pods, primary)) {
			// Only now ask Valkey itself: a healthy fleet costs the controller no connections.
			if password, err = r.shardPassword(ctx, f); err != nil {
				return err
			}
			r.probe(ctx, pods, password)
			d = decideFailover(primary, pods, downFor, after)
		}
		if d.wait > 0 {
			s.requeue = minPositive(s.requeue, d.wait)
		}
		if d.promote == "" {
			continue
		}
		if err := r.promote(ctx, f, pods, d.promote, password); err != nil {
			r.event(f, corev1.EventTypeWarning, "FailoverFailed", "Failover", "%s: %s: %v", shard, d.reason, err)
			return fmt.Errorf("failing over %s to %s: %w", shard, d.promote, err)
		}
		s.roles[shard] = d.promote
		s.failedOver = append(s.failedOver, shard)
		r.down.Delete(key)
		logf.FromContext(ctx).Info("Failed over", "shard", shard, "from", primary, "to", d.promote, "reason", d.reason)
		r.event(f, corev1.EventTypeWarning, "Failover", "Failover", "%s: %s", shard, d.reason)
	}
	return nil
}

// forgetFleet drops what the reconciler remembers about a deleted fleet.
func (r *CacheFleetReconciler) forgetFleet(fleet client.ObjectKey) {
	r.lastEpoch.Delete(fleet)
	prefix := fleet.Namespace + "/" + fleet.Name + "/"
	r.down.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			r.down.Delete(k)
		}
		return true
	})
}

// downFor is how long the primary has been seen not ready (0 while ready). Kept in memory: a
// restarted manager waits one failoverAfter again, which is the safe direction.
func (r *CacheFleetReconciler) downFor(key string, pods []shardPod, primary string) time.Duration {
	for _, p := range pods {
		if p.name == primary && p.ready {
			r.down.Delete(key)
			return 0
		}
	}
	since, _ := r.down.LoadOrStore(key, r.now())
	return r.now().Sub(since.(time.Time))
}

// promote makes pod the shard's primary and points every other reachable pod at it, the old
// primary included: once fenced it can only replicate and never accepts writes again.
func (r *CacheFleetReconciler) promote(ctx context.Context, f *cachev1alpha1.CacheFleet, pods []shardPod, pod, password string) error {
	admin := r.admin()
	var target shardPod
	for _, p := range pods {
		if p.name == pod {
			target = p
		}
	}
	if err := admin.ReplicaOfNoOne(ctx, target.addr, password); err != nil {
		return err
	}
	host := podHost(f, pod)
	for _, p := range pods {
		if p.name == pod || !p.reachable {
			continue
		}
		if err := admin.ReplicaOf(ctx, p.addr, password, host, ValkeyPort); err != nil {
			logf.FromContext(ctx).Info("Could not repoint a shard pod; it follows the new primary when it restarts", "pod", p.name, "error", err.Error())
		}
	}
	return nil
}

// probe asks each pod with an address for its role and replication offset.
func (r *CacheFleetReconciler) probe(ctx context.Context, pods []shardPod, password string) {
	for i := range pods {
		if pods[i].addr == "" {
			continue
		}
		if info, err := r.admin().Replication(ctx, pods[i].addr, password); err == nil {
			pods[i].reachable, pods[i].role, pods[i].offset = true, info.role, info.offset
		}
	}
}

// shardPods reads shard i's pods as Kubernetes sees them: readiness (pod and node) and address.
func (r *CacheFleetReconciler) shardPods(ctx context.Context, f *cachev1alpha1.CacheFleet, i int) ([]shardPod, error) {
	var pods []shardPod
	for o := 0; o <= int(f.Spec.Shards.Replicas); o++ {
		p := shardPod{name: shardPodName(f, i, o), ordinal: o}
		var pod corev1.Pod
		switch err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: p.name}, &pod); {
		case apierrors.IsNotFound(err):
			p.gone = true
			pods = append(pods, p)
			continue
		case err != nil:
			return nil, err
		}
		p.gone = pod.DeletionTimestamp != nil
		p.ready = !p.gone && podReady(&pod) && r.nodeReady(ctx, pod.Spec.NodeName)
		if pod.Status.PodIP != "" { // a terminating pod too: it may be handing its role over
			p.addr = fmt.Sprintf("%s:%d", pod.Status.PodIP, ValkeyPort)
		}
		pods = append(pods, p)
	}
	return pods, nil
}

// nodeReady is false for a node that is gone or not Ready: its pods' Ready condition lags by
// the node monitor's grace period (40 s by default), far beyond failoverAfter.
func (r *CacheFleetReconciler) nodeReady(ctx context.Context, name string) bool {
	if name == "" {
		return false
	}
	var node corev1.Node
	if err := r.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
		return !apierrors.IsNotFound(err) // unknown errors: trust the pod's own condition
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}

func (r *CacheFleetReconciler) shardPassword(ctx context.Context, f *cachev1alpha1.CacheFleet) (string, error) {
	if !f.Spec.Auth.Enabled {
		return "", nil
	}
	ref := f.PasswordSecret()
	var secret corev1.Secret
	if err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: ref.Name}, &secret); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	return string(secret.Data[ref.Key]), nil
}

func (r *CacheFleetReconciler) admin() shardAdmin {
	if r.Admin != nil {
		return r.Admin
	}
	return valkeyAdmin{}
}

func podGone(pods []shardPod, name string) bool {
	for _, p := range pods {
		if p.name == name {
			return p.gone
		}
	}
	return true
}
