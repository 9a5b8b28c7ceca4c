package controller

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
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
	node      string // the node it is scheduled on
	addr      string // pod IP:port, empty while the pod has none
	ready     bool   // the pod is Ready and its node is Ready
	gone      bool   // the pod does not exist or is being deleted: whatever replaces it starts empty
	reachable bool   // INFO answered
	role      string // "master" or "slave", as INFO replication says
	offset    int64  // master_repl_offset: how much of the shard's history it holds
	uid       string // the pod's UID and its Valkey container's restart count: a change of
	restarts  int32  // restarts in the same pod means the process started again, empty
}

const (
	// switchoverWait bounds the wait for a terminating primary's switchover (the controller's
	// FAILOVER, or its own preStop's, which gives FAILOVER 5 s and watches it for 7 s).
	switchoverWait = 8 * time.Second
	// switchoverTimeout is the FAILOVER TIMEOUT the controller gives a terminating primary: how
	// long writes may stay paused while its replica catches up before the handover is abandoned.
	switchoverTimeout = 2 * time.Second
	// reprobeEvery is how often a down primary is asked again for its role: a primary that
	// restarted empty defers to its replica at once, and is then replaced at once.
	reprobeEvery = 500 * time.Millisecond
)

// failoverDecision says what to do about a shard's primary; everything empty means nothing.
type failoverDecision struct {
	// promote is the pod to make the primary (the old one is gone or holds nothing).
	promote string
	// switchTo is the in-sync replica a terminating primary hands its role to with FAILOVER TO,
	// which pauses writes until the replica has every one: no acknowledged write is lost.
	switchTo string
	reason   string
	// wait is when to look again (the primary may be back, or down for failoverAfter by then).
	wait time.Duration
}

// decideFailover is the whole policy, pure:
//   - a terminating primary (rollout, drain, a deleted pod) that still serves hands its role to
//     its most up-to-date replica with FAILOVER TO at once, without waiting for its preStop;
//   - a primary whose pod is gone is replaced at once (its replacement starts empty);
//   - so is one that restarted empty and deferred to a peer holding the data (it answers as a
//     replica, see shardStartScript): waiting cannot bring its data back;
//   - a primary Kubernetes calls unready but that answers the controller as the primary is kept
//     (its node's kubelet died; its pods still serve);
//   - any other unready primary is replaced once it has been unready for failoverAfter.
//
// The replacement is the ready, reachable pod holding the most of the shard's history (highest
// replication offset; lowest ordinal on a tie). A shard with no such pod keeps its primary:
// promoting an empty pod would lose more than waiting.
func decideFailover(primary string, pods []shardPod, downFor, failoverAfter time.Duration) failoverDecision {
	var cur *shardPod
	for i := range pods {
		if pods[i].name == primary {
			cur = &pods[i]
		}
	}
	gone := cur == nil || cur.gone
	deferred := cur != nil && cur.reachable && cur.role == "slave"
	serving := cur != nil && cur.reachable && cur.role == "master"
	var candidates []shardPod
	for _, p := range pods {
		if p.name != primary && p.ready && p.reachable {
			candidates = append(candidates, p)
		}
	}
	best := shardPod{offset: -1}
	if len(candidates) > 0 {
		best = slices.MaxFunc(candidates, func(a, b shardPod) int {
			return cmp.Or(cmp.Compare(a.offset, b.offset), cmp.Compare(b.ordinal, a.ordinal))
		})
	}
	switch {
	case cur != nil && cur.ready && !deferred:
		return failoverDecision{}
	case !gone && serving:
		// Kubernetes calls it unready, yet it answers as the primary: what failed is its node's
		// kubelet (or the node's link to the API server), and it still serves. Promoting a
		// replica now would throw away the writes it takes meanwhile.
		return failoverDecision{wait: reprobeEvery}
	case !gone && !deferred && downFor < failoverAfter:
		return failoverDecision{wait: min(failoverAfter-downFor, reprobeEvery)}
	case gone && serving && downFor < switchoverWait:
		// Promoting a replica of a primary that still takes writes could drop its last ones:
		// the primary hands over itself, with FAILOVER (the controller's or its preStop's).
		if best.role == "slave" {
			return failoverDecision{switchTo: best.name, wait: reprobeEvery,
				reason: fmt.Sprintf("primary pod %s is being deleted; switching over to %s (replication offset %d)", primary, best.name, best.offset)}
		}
		return failoverDecision{wait: 200 * time.Millisecond}
	}
	var reason string
	switch {
	case gone && deferred:
		reason = fmt.Sprintf("primary pod %s is being deleted and handed its role over", primary)
	case gone:
		reason = fmt.Sprintf("primary pod %s deleted (%s ago)", primary, downFor.Round(100*time.Millisecond))
	case deferred:
		reason = fmt.Sprintf("primary %s restarted without the shard's data and replicates from a peer", primary)
	default:
		reason = fmt.Sprintf("primary %s not ready for %s", primary, downFor.Round(100*time.Millisecond))
	}
	if len(candidates) == 0 {
		return failoverDecision{}
	}
	if !gone && serving && cur.offset > best.offset {
		return failoverDecision{} // the unready primary still holds more than any replica
	}
	if best.offset == 0 && (cur == nil || cur.role != "slave") {
		// No replica holds anything: promoting an empty one could wipe a primary that is only
		// slow to come back (it would resync from the empty pod once fenced).
		return failoverDecision{}
	}
	return failoverDecision{promote: best.name, reason: fmt.Sprintf("%s; promoting %s (replication offset %d)", reason, best.name, best.offset)}
}

// reconcileFailover watches each shard's primary: detection, failover, a former primary's
// rejoin, and the fence.
func (r *CacheFleetReconciler) reconcileFailover(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	if f.Spec.Shards.Replicas == 0 {
		return nil
	}
	var leases coordinationv1.LeaseList
	if err := r.List(ctx, &leases, client.InNamespace(f.Namespace), client.MatchingLabels{LabelFleet: f.Name, LabelComponent: ComponentAgent}); err != nil {
		return err
	}
	for i := 0; i < int(f.Spec.Shards.Count); i++ {
		if err := r.watchShard(ctx, s, i, leases.Items); err != nil {
			return err
		}
	}
	return nil
}

// watchShard is one shard's turn of reconcileFailover.
func (r *CacheFleetReconciler) watchShard(ctx context.Context, s *fleetScope, i int, leases []coordinationv1.Lease) error {
	shard := shardName(i)
	primary := s.roles[shard]
	pods, err := r.shardPods(ctx, s.fleet, i)
	if err != nil {
		return err
	}
	key := s.fleet.Namespace + "/" + s.fleet.Name + "/" + shard
	reports := reportsFor(leases, shard)
	d, password, err := r.decidePrimary(ctx, s, key, shard, primary, pods, reports)
	if err != nil {
		return err
	}
	if d.promote != "" {
		if err := r.failOver(ctx, s, key, shard, primary, pods, d, password); err != nil {
			return err
		}
	}
	if err := r.rejoinStray(ctx, s, key, shard, s.roles[shard], pods); err != nil {
		return err
	}
	return r.keepFence(ctx, s, key, shard, s.roles[shard], pods, refusedWrites(reports, r.now()))
}

// decidePrimary turns what Kubernetes, the agents and Valkey say about a shard's primary into
// decideFailover's verdict, handing a terminating primary's role over on the way; password is
// the shards' when it had to be read.
func (r *CacheFleetReconciler) decidePrimary(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod, reports []reachReport) (d failoverDecision, password string, err error) {
	f := s.fleet
	after := f.Spec.Shards.FailoverAfter.Duration
	if after <= 0 {
		after = 5 * time.Second
	}
	lostFor, lost, err := r.watchReachability(ctx, s, key, shard, primary, pods, reports)
	if err != nil {
		return d, "", err
	}
	if lost {
		// The fleet cannot reach it: as down as Kubernetes would call it once the node's grace
		// period ran out, and down since the verdict's conditions first held. Just probed in
		// vain, it is not dialled again below (a dial there waits 2 s).
		markLost(pods, primary)
	}
	downFor := max(r.downFor(key, pods, primary), lostFor)
	restarted := r.restarted(key, pods, primary)
	d = decideFailover(primary, pods, downFor, after)
	if downFor > 0 || restarted || podGone(pods, primary) {
		// Only now ask Valkey itself: a healthy fleet costs the controller no connections. A
		// primary that restarted answers as a replica once it deferred to a peer.
		if password, err = r.shardPassword(ctx, f); err != nil {
			return d, "", err
		}
		r.probe(ctx, pods, password)
		d = decideFailover(primary, pods, downFor, after)
	}
	if d.switchTo != "" {
		if err := r.switchover(ctx, f, pods, primary, d, password); err != nil {
			r.event(f, corev1.EventTypeWarning, "SwitchoverFailed", "Failover", "%s: %s: %v", shard, d.reason, err)
		}
		r.probe(ctx, pods, password)
		d = decideFailover(primary, pods, downFor, after)
	}
	if d.wait > 0 {
		s.requeue = minPositive(s.requeue, d.wait)
	}
	return d, password, nil
}

// failOver promotes d.promote in place of primary. A primary it could not tell to follow the new
// one (cut off) is remembered, to be told once it answers again (rejoinStray).
func (r *CacheFleetReconciler) failOver(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod, d failoverDecision, password string) error {
	f := s.fleet
	if err := r.promote(ctx, f, pods, d.promote, password); err != nil {
		r.event(f, corev1.EventTypeWarning, "FailoverFailed", "Failover", "%s: %s: %v", shard, d.reason, err)
		return fmt.Errorf("failing over %s to %s: %w", shard, d.promote, err)
	}
	if i := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == primary }); i >= 0 && !pods[i].gone && !pods[i].reachable {
		r.strays.Store(key, primary)
		markLost(pods, primary)
	}
	s.roles[shard] = d.promote
	s.failedOver = append(s.failedOver, shard)
	r.down.Delete(key)
	logf.FromContext(ctx).Info("Failed over", "shard", shard, "from", primary, "to", d.promote, "reason", d.reason)
	r.event(f, corev1.EventTypeWarning, "Failover", "Failover", "%s: %s", shard, d.reason)
	return nil
}

// forgetFleet drops what the reconciler remembers about a deleted fleet.
func (r *CacheFleetReconciler) forgetFleet(fleet client.ObjectKey) {
	r.lastEpoch.Delete(fleet)
	prefix := fleet.Namespace + "/" + fleet.Name + "/"
	for _, m := range []*sync.Map{&r.down, &r.primaryRun, &r.unreached, &r.told, &r.fences, &r.strays} {
		m.Range(func(k, _ any) bool {
			if strings.HasPrefix(k.(string), prefix) {
				m.Delete(k)
			}
			return true
		})
	}
}

// markLost counts pod as not ready and not to be probed.
func markLost(pods []shardPod, pod string) {
	for i := range pods {
		if pods[i].name == pod {
			pods[i].ready, pods[i].addr = false, ""
		}
	}
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

// restarted says whether the primary's Valkey container started again in the same pod since the
// last look: it came back empty, so it is asked for its role even if Kubernetes calls it ready.
func (r *CacheFleetReconciler) restarted(key string, pods []shardPod, primary string) bool {
	for _, p := range pods {
		if p.name != primary || p.uid == "" {
			continue
		}
		seen := p.uid + "/" + strconv.Itoa(int(p.restarts))
		last, loaded := r.primaryRun.Swap(key, seen)
		return loaded && last.(string) != seen && strings.HasPrefix(last.(string), p.uid+"/")
	}
	return false
}

// switchover asks a terminating primary to hand its role to an in-sync replica (FAILOVER TO,
// which waits for the replica to hold every write) and waits until it has. Its preStop would
// do the same, but only once the kubelet runs it, up to seconds after the delete.
func (r *CacheFleetReconciler) switchover(ctx context.Context, f *cachev1alpha1.CacheFleet, pods []shardPod, primary string, d failoverDecision, password string) error {
	var from, to shardPod
	for _, p := range pods {
		switch p.name {
		case primary:
			from = p
		case d.switchTo:
			to = p
		}
	}
	host, port, err := net.SplitHostPort(to.addr)
	if err != nil {
		return err
	}
	logf.FromContext(ctx).Info("Switching over", "from", primary, "to", d.switchTo, "reason", d.reason)
	return r.admin().Switchover(ctx, from.addr, password, host, port, switchoverTimeout)
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

// probe asks each pod with an address for its role and replication offset, all at once: a pod
// on a dead node costs the dial timeout, and the others should not wait behind it.
func (r *CacheFleetReconciler) probe(ctx context.Context, pods []shardPod, password string) {
	var wg sync.WaitGroup
	for i := range pods {
		if pods[i].addr == "" {
			continue
		}
		wg.Go(func() {
			if info, err := r.admin().Replication(ctx, pods[i].addr, password); err == nil {
				pods[i].reachable, pods[i].role, pods[i].offset = true, info.role, info.offset
			}
		})
	}
	wg.Wait()
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
		p.uid, p.node = string(pod.UID), pod.Spec.NodeName
		for _, c := range pod.Status.ContainerStatuses {
			if c.Name == shardContainerName {
				p.restarts = c.RestartCount
			}
		}
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
