package controller

import (
	"fmt"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// Node loss, detected by the fleet instead of the kubelet's heartbeat. A node that drops off
// the network is marked NotReady only after the node monitor's grace period (about 40-55 s),
// and only then do its pods turn unready. The agents talk to every shard on every request and
// notice a lost primary within a second or two; primaryLost turns what they report, and the
// controller's own probe, into a verdict that counts as the primary being down.
//
// Why a majority of agents on other nodes, and the controller too: an agent that cannot reach a
// primary may be the one cut off (its node lost its link), and so may the controller. A
// primary is lost only when the controller cannot reach it and most of the agents that can
// speak (fresh reports) from nodes other than the primary's cannot either. The agent on the
// primary's own node is not asked: it shares the primary's fate. Where no agent on another node
// has reported, there is no evidence beyond the controller's, and Kubernetes' signal (the pod
// turning unready) decides as before. What a wrong verdict could still do (both sides taking
// writes) is bounded by fencing: a primary cut off from its replicas stops taking writes.

// reachReport is one agent's view of a shard's primary, from its Lease.
type reachReport struct {
	node      string    // the agent's node
	renewed   time.Time // the report's time: older than reportFresh, it is no evidence
	lostSince time.Time // since when the agent cannot reach the primary; zero: it can
	// refusingSince: since when the primary refuses the agent's writes for want of a replica.
	refusingSince time.Time
}

// reportFresh: an agent reports on every change and renews its Lease every 10 s; a report older
// than the Lease's own duration comes from an agent that may itself be cut off.
const reportFresh = 30 * time.Second

// reportsFor reads each agent Lease's view of shard's primary (agents that do not name their
// node, from before they reported, are left out).
func reportsFor(leases []coordinationv1.Lease, shard string) []reachReport {
	var out []reachReport
	for i := range leases {
		l := &leases[i]
		node := l.Annotations[contract.AnnotationNode]
		if node == "" || l.Spec.RenewTime == nil {
			continue
		}
		out = append(out, reachReport{node: node, renewed: l.Spec.RenewTime.Time,
			lostSince:     contract.ParseShardTimes(l.Annotations[contract.AnnotationUnreachable])[shard],
			refusingSince: contract.ParseShardTimes(l.Annotations[contract.AnnotationRefusingWrites])[shard]})
	}
	return out
}

// lostElsewhere reports whether a fresh report from another node than primaryNode says the
// primary is lost: only then does the controller probe it (a healthy fleet costs no connections).
func lostElsewhere(reports []reachReport, primaryNode string, now time.Time) bool {
	return slices.ContainsFunc(reports, func(r reachReport) bool {
		return r.node != primaryNode && now.Sub(r.renewed) <= reportFresh && !r.lostSince.IsZero()
	})
}

// primaryLost decides whether the primary on primaryNode is lost, at now, given the agents'
// reports and since when the controller's probe has failed (zero: it answers). lostFor is how
// long every condition has held, for failoverAfter's clock.
func primaryLost(primaryNode string, reports []reachReport, probeLostSince, now time.Time) (lostFor time.Duration, lost bool, reason string) {
	if probeLostSince.IsZero() {
		return 0, false, ""
	}
	voters, since := 0, []time.Time{}
	for _, r := range reports {
		if r.node == primaryNode || now.Sub(r.renewed) > reportFresh {
			continue
		}
		voters++
		if !r.lostSince.IsZero() {
			since = append(since, r.lostSince)
		}
	}
	majority := voters/2 + 1
	if voters == 0 || len(since) < majority {
		return 0, false, ""
	}
	slices.SortFunc(since, func(a, b time.Time) int { return a.Compare(b) })
	// A majority has held since the majority-th earliest loss; the verdict since the later of
	// that and the controller's own.
	from := since[majority-1]
	if probeLostSince.After(from) {
		from = probeLostSince
	}
	lostFor = max(now.Sub(from), 0)
	return lostFor, true, fmt.Sprintf("primary unreachable from %d of %d agents on other nodes and from the controller for %s",
		len(since), voters, lostFor.Round(100*time.Millisecond))
}
