package controller

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// reachProbeTimeout bounds the controller's own probe of a primary the agents report lost: it
// is asked again every reconcile, and the verdict's clock moves in steps of this.
const reachProbeTimeout = time.Second

// watchReachability turns the agents' reports about a shard's primary into the node-loss
// verdict (primaryLost), recorded as an event once per loss; lost and lostFor are what failover
// takes as the primary being down, and for how long. The primary is probed only while an agent
// on another node reports it lost.
func (r *CacheFleetReconciler) watchReachability(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod, reports []reachReport) (lostFor time.Duration, lost bool, err error) {
	now := r.now()
	i := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == primary })
	if i < 0 || !lostElsewhere(reports, pods[i].node, now) {
		r.unreached.Delete(key)
		r.told.Delete(key)
		return 0, false, nil
	}
	s.requeue = minPositive(s.requeue, time.Second) // the reports are fresh evidence: look again soon
	probed := slices.Clone(pods[i : i+1])
	if probed[0].addr != "" {
		password, err := r.shardPassword(ctx, s.fleet)
		if err != nil {
			return 0, false, err
		}
		pctx, cancel := context.WithTimeout(ctx, reachProbeTimeout)
		r.probe(pctx, probed, password)
		cancel()
	}
	if probed[0].reachable {
		r.unreached.Delete(key)
		return 0, false, nil
	}
	since, _ := r.unreached.LoadOrStore(key, now)
	lostFor, lost, reason := primaryLost(pods[i].node, reports, since.(time.Time), now)
	if !lost {
		return 0, false, nil
	}
	if _, done := r.told.LoadOrStore(key, true); !done {
		logf.FromContext(ctx).Info("Primary unreachable", "shard", shard, "pod", primary, "node", pods[i].node, "for", lostFor.String(), "reason", reason)
		r.event(s.fleet, corev1.EventTypeWarning, "PrimaryUnreachable", "Detect", "%s: %s on node %s: %s", shard, primary, pods[i].node, reason)
	}
	return lostFor, true, nil
}
