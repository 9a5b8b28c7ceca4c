package controller

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// shardObservation is what the cluster says about one desired shard.
type shardObservation struct {
	name         string
	exists       bool
	desiredPods  int32
	readyPods    int32
	primaryReady bool
}

// observation is everything the status is computed from; gathered once per reconcile.
type observation struct {
	shards          []shardObservation
	draining        int      // StatefulSets of removed shards still waiting for agents to converge
	joining         []string // new shards kept out of the ring until their primary is ready
	primaries       []cachev1alpha1.ShardPrimary
	failedOver      int // primaries replaced by this reconcile
	now             metav1.Time
	agentsExist     bool
	desiredAgents   int32
	readyAgents     int32
	convergedAgents int32
	ringPublished   bool
	ringEpoch       int64
	ringChecksum    string
	channel         string
	monitoring      monitoringObservation
	// firstErr is the first error of a failed reconcile (retried); invalidSpec a spec that can
	// never work (not retried until the spec changes).
	firstErr    error
	invalidSpec *specError
}

type monitoringObservation struct {
	enabled, crdInstalled, present bool
}

// shardReadiness counts shards with a ready primary and names those without one, and those
// with pods not all ready.
func shardReadiness(shards []shardObservation) (ready int32, notReadyPods, noPrimary []string) {
	for _, s := range shards {
		if s.primaryReady {
			ready++
		} else {
			noPrimary = append(noPrimary, s.name)
		}
		if !s.exists || s.readyPods < s.desiredPods {
			notReadyPods = append(notReadyPods, s.name)
		}
	}
	return ready, notReadyPods, noPrimary
}

// computeStatus derives the status from the previous one and the observation. Side-effect free:
// conditions keep their transition time unless their status changes.
func computeStatus(prev cachev1alpha1.CacheFleetStatus, generation int64, obs observation) cachev1alpha1.CacheFleetStatus {
	st := *prev.DeepCopy()
	set := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: generation})
	}

	st.DesiredShards = int32(len(obs.shards))
	var notReadyPods, noPrimary []string
	st.ReadyShards, notReadyPods, noPrimary = shardReadiness(obs.shards)
	st.Shards = fmt.Sprintf("%d/%d", st.ReadyShards, st.DesiredShards)
	st.DesiredAgents, st.ReadyAgents, st.ConvergedAgents = obs.desiredAgents, obs.readyAgents, obs.convergedAgents
	st.Agents = fmt.Sprintf("%d/%d", obs.readyAgents, obs.desiredAgents)
	st.RingEpoch, st.RingChecksum, st.InvalidationChannel = obs.ringEpoch, obs.ringChecksum, obs.channel
	recordFailovers(&st, obs)

	shardsReady := len(notReadyPods) == 0 && len(obs.shards) > 0
	if shardsReady {
		set(cachev1alpha1.ShardsReadyCondition, true, cachev1alpha1.ReasonAllReady, fmt.Sprintf("%d shards ready", len(obs.shards)))
	} else {
		set(cachev1alpha1.ShardsReadyCondition, false, cachev1alpha1.ReasonNotAllReady, "shards with pods not ready: "+list(notReadyPods))
	}

	agentsReady := obs.agentsExist && obs.desiredAgents > 0 && obs.readyAgents >= obs.desiredAgents
	switch {
	case agentsReady:
		set(cachev1alpha1.AgentsReadyCondition, true, cachev1alpha1.ReasonAllReady,
			fmt.Sprintf("%d agents ready, %d on ring epoch %d", obs.readyAgents, obs.convergedAgents, obs.ringEpoch))
	case obs.agentsExist && obs.desiredAgents == 0:
		set(cachev1alpha1.AgentsReadyCondition, false, "NoEligibleNodes", "no node is eligible to run an agent")
	default:
		set(cachev1alpha1.AgentsReadyCondition, false, cachev1alpha1.ReasonNotAllReady,
			fmt.Sprintf("%d of %d agents ready", obs.readyAgents, obs.desiredAgents))
	}

	if obs.ringPublished {
		set(cachev1alpha1.RingPublishedCondition, true, cachev1alpha1.ReasonCreated, fmt.Sprintf("epoch %d published", obs.ringEpoch))
	} else {
		set(cachev1alpha1.RingPublishedCondition, false, "NotPublished", "the ring document is not published yet")
	}

	m := obs.monitoring
	switch {
	case !m.enabled:
		set(cachev1alpha1.MonitoringReadyCondition, true, cachev1alpha1.ReasonDisabled, "monitoring is disabled")
	case !m.crdInstalled:
		set(cachev1alpha1.MonitoringReadyCondition, false, cachev1alpha1.ReasonCRDNotInstalled,
			"the monitoring.coreos.com ServiceMonitor CRD is not installed")
	case m.present:
		set(cachev1alpha1.MonitoringReadyCondition, true, cachev1alpha1.ReasonCreated, "ServiceMonitor in place")
	default:
		set(cachev1alpha1.MonitoringReadyCondition, false, "NotCreated", "ServiceMonitor not created yet")
	}

	// Degraded needs a fleet that has been up: a primary that never started is provisioning.
	wasUp := meta.IsStatusConditionTrue(prev.Conditions, cachev1alpha1.ReadyCondition) ||
		meta.IsStatusConditionTrue(prev.Conditions, cachev1alpha1.DegradedCondition)
	degraded := wasUp && len(noPrimary) > 0
	if degraded {
		set(cachev1alpha1.DegradedCondition, true, cachev1alpha1.ReasonPrimaryNotReady,
			"shards without a ready primary (reads answer from L1 or miss): "+list(noPrimary))
	} else {
		set(cachev1alpha1.DegradedCondition, false, cachev1alpha1.ReasonAsExpected, "every shard has a ready primary or is starting")
	}

	busy, reason, msg := progressing(obs, shardsReady, agentsReady)
	set(cachev1alpha1.ProgressingCondition, busy, reason, msg)

	failed := obs.firstErr != nil || obs.invalidSpec != nil
	ready := shardsReady && agentsReady && obs.ringPublished && len(noPrimary) == 0 && !failed
	switch {
	case obs.invalidSpec != nil:
		set(cachev1alpha1.ReadyCondition, false, cachev1alpha1.ReasonInvalidSpec, obs.invalidSpec.Error())
	case obs.firstErr != nil:
		set(cachev1alpha1.ReadyCondition, false, cachev1alpha1.ReasonReconcileError, obs.firstErr.Error()+" (retrying)")
	case ready:
		set(cachev1alpha1.ReadyCondition, true, cachev1alpha1.ReasonAllReady, "shards, agents and ring are ready")
	default:
		set(cachev1alpha1.ReadyCondition, false, cachev1alpha1.ReasonNotAllReady, "see ShardsReady, AgentsReady and RingPublished")
	}

	readyCond := meta.FindStatusCondition(st.Conditions, cachev1alpha1.ReadyCondition)
	switch {
	case obs.invalidSpec != nil:
		set(cachev1alpha1.StalledCondition, true, cachev1alpha1.ReasonInvalidSpec, obs.invalidSpec.Error())
		set(cachev1alpha1.ReconcilingCondition, false, cachev1alpha1.ReasonInvalidSpec, "waiting for the spec to change")
	case ready && obs.draining == 0:
		set(cachev1alpha1.StalledCondition, false, cachev1alpha1.ReasonAsExpected, "")
		set(cachev1alpha1.ReconcilingCondition, false, cachev1alpha1.ReasonAllReady, "up to date")
	case ready:
		set(cachev1alpha1.StalledCondition, false, cachev1alpha1.ReasonAsExpected, "")
		set(cachev1alpha1.ReconcilingCondition, true, cachev1alpha1.ReasonScaling, fmt.Sprintf("%d removed shards wait for agents to leave them", obs.draining))
	default:
		reason, msg := readyCond.Reason, readyCond.Message
		switch {
		case degraded:
			reason, msg = cachev1alpha1.ReasonPrimaryNotReady, "shards without a ready primary: "+list(noPrimary)
		case obs.firstErr == nil:
			msg = waitingFor(obs, shardsReady, agentsReady, notReadyPods)
		}
		set(cachev1alpha1.StalledCondition, false, cachev1alpha1.ReasonAsExpected, "")
		set(cachev1alpha1.ReconcilingCondition, true, reason, msg)
	}

	switch {
	case degraded:
		st.Phase = cachev1alpha1.PhaseDegraded
	case ready:
		st.Phase = cachev1alpha1.PhaseReady
	case obs.invalidSpec != nil, failed && !anyShardExists(obs.shards):
		st.Phase = cachev1alpha1.PhaseFailed
	case !anyShardExists(obs.shards):
		st.Phase = cachev1alpha1.PhasePending
	default:
		st.Phase = cachev1alpha1.PhaseProvisioning
	}
	// A spec that can never work was fully observed; a transient error leaves the generation
	// unobserved so GitOps tools keep waiting.
	if obs.firstErr == nil {
		st.ObservedGeneration = generation
	}
	return st
}

// waitingFor names what a fleet that is not ready yet waits for, for the Reconciling condition.
func waitingFor(obs observation, shardsReady, agentsReady bool, notReadyPods []string) string {
	var parts []string
	if !shardsReady {
		parts = append(parts, "shards with pods not ready: "+list(notReadyPods))
	}
	if !agentsReady {
		parts = append(parts, fmt.Sprintf("%d of %d agents ready", obs.readyAgents, obs.desiredAgents))
	}
	if !obs.ringPublished {
		parts = append(parts, "the ring is not published yet")
	}
	if len(parts) == 0 {
		return "waiting for shards and agents"
	}
	return "waiting for " + strings.Join(parts, "; ")
}

func anyShardExists(shards []shardObservation) bool {
	for _, s := range shards {
		if s.exists {
			return true
		}
	}
	return false
}

func list(names []string) string {
	const most = 8
	if len(names) > most {
		return strings.Join(names[:most], ", ") + fmt.Sprintf(" and %d more", len(names)-most)
	}
	return strings.Join(names, ", ")
}

// progressing says whether the fleet is on its way somewhere, and where.
func progressing(obs observation, shardsReady, agentsReady bool) (bool, string, string) {
	switch {
	case len(obs.joining) > 0:
		return true, cachev1alpha1.ReasonScaling, "new shards enter the ring together once all their primaries are ready: " + list(obs.joining)
	case obs.draining > 0:
		return true, cachev1alpha1.ReasonScaling, fmt.Sprintf("%d removed shards wait for agents to leave them", obs.draining)
	case !shardsReady || !agentsReady:
		return true, cachev1alpha1.ReasonNotAllReady, "waiting for shards and agents"
	default:
		return false, cachev1alpha1.ReasonAsExpected, "up to date"
	}
}

// recordFailovers publishes the shards' primaries and counts the failovers of this reconcile.
func recordFailovers(st *cachev1alpha1.CacheFleetStatus, obs observation) {
	if obs.primaries != nil {
		st.Primaries = obs.primaries
	}
	if obs.failedOver > 0 {
		st.Failovers += int32(obs.failedOver)
		st.LastFailoverTime = obs.now.DeepCopy()
	}
}
