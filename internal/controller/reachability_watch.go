package controller

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// watchReachability turns the agents' reports about a shard's primary into the node-loss
// verdict (primaryLost) and records it as an event, once per loss, with the time it has held.
// The primary is probed only while an agent on another node reports it lost. The verdict does
// not fail the shard over yet: failover still waits for Kubernetes to see the pod unready.
func (r *CacheFleetReconciler) watchReachability(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod, reports []reachReport) error {
	now := r.now()
	i := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == primary })
	if i < 0 || !lostElsewhere(reports, pods[i].node, now) {
		r.unreached.Delete(key)
		r.told.Delete(key)
		return nil
	}
	s.requeue = minPositive(s.requeue, time.Second) // the reports are fresh evidence: look again soon
	probed := slices.Clone(pods[i : i+1])
	if probed[0].addr != "" {
		password, err := r.shardPassword(ctx, s.fleet)
		if err != nil {
			return err
		}
		r.probe(ctx, probed, password)
	}
	if probed[0].reachable {
		r.unreached.Delete(key)
		return nil
	}
	since, _ := r.unreached.LoadOrStore(key, now)
	lostFor, lost, reason := primaryLost(pods[i].node, reports, since.(time.Time), now)
	if !lost {
		return nil
	}
	if _, done := r.told.LoadOrStore(key, true); !done {
		logf.FromContext(ctx).Info("Primary unreachable", "shard", shard, "pod", primary, "node", pods[i].node, "for", lostFor.String(), "reason", reason)
		r.event(s.fleet, corev1.EventTypeWarning, "PrimaryUnreachable", "Detect", "%s: %s on node %s: %s", shard, primary, pods[i].node, reason)
	}
	return nil
}
