package controller

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Fencing: a primary takes writes only while a replica that could take over hears them.
//
// Every shard pod starts with Valkey's min-replicas-to-write 1 (valkeyConfig): a primary cut off
// from its replicas refuses writes (-NOREPLICAS) once none has been heard for maxLagSeconds, so
// the writes a failover on the other side would throw away are refused instead of acknowledged.
//
// A fence the controller can see is a fence it may lift. A primary the controller reaches is not
// failed over (the verdict needs the controller's own probe to fail), so while it counts no good
// replica, refusing its writes would stop them for nothing: a replica restarting in a rollout,
// or a replica's node lost. The controller lifts the fence (min-replicas-to-write 0) then, and
// puts it back once the primary counts a good replica again. Only a primary the controller
// cannot reach, the one a failover may replace, stays fenced. The controller learns that a
// primary refuses writes from the agents' reports (package reach), which come through the API
// server: a manager cut off with the primary hears none, and lifts nothing.
//
// A former primary that was cut off when it was replaced cannot be told to follow the new one;
// it is told as soon as it answers again (rejoinStray), and it full-syncs from the new primary,
// dropping what it took before its fence closed.

// fenceSet is what the controller knows of a primary's fence.
type fenceSet uint8

const (
	fenceUnknown fenceSet = iota // not set by this manager on this run of the primary
	fenceOn
	fenceLifted
)

// fenceInput is what the fence decision reads.
type fenceInput struct {
	on bool // spec.shards.fencing.enabled, with replicas
	// couldTakeOver: another pod of the shard is ready and not being deleted (Kubernetes' view).
	couldTakeOver bool
	current       fenceSet
	refused       bool // a fresh agent report: the primary refuses writes
	good          int  // the replicas the primary counts as good; -1: not asked
}

// decideFence is the rule, pure: the fence the primary should have; or ask: read the primary's
// good replicas first, and decide again.
func decideFence(in fenceInput) (want fenceSet, ask bool) {
	switch {
	case !in.on:
		if in.current == fenceOn {
			return fenceLifted, false
		}
		return in.current, false // the config file sets no fence
	case !in.couldTakeOver:
		return fenceLifted, false
	case in.current == fenceOn && !in.refused:
		return fenceOn, false
	case in.good < 0:
		return in.current, true
	case in.good > 0:
		return fenceOn, false
	}
	return fenceLifted, false
}

// couldTakeOver reports whether a pod other than the primary is ready and not being deleted.
func couldTakeOver(primary string, pods []shardPod) bool {
	return slices.ContainsFunc(pods, func(p shardPod) bool {
		return p.name != primary && p.ready && !p.gone
	})
}

// refusedWrites reports whether a fresh agent report says the shard's primary refuses writes.
func refusedWrites(reports []reachReport, now time.Time) bool {
	return slices.ContainsFunc(reports, func(r reachReport) bool {
		return now.Sub(r.renewed) <= reportFresh && !r.refusingSince.IsZero()
	})
}

// keepFence sets the primary's fence as decideFence says, remembered per run of the primary (a
// restarted primary starts fenced from its config file).
func (r *CacheFleetReconciler) keepFence(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod, refused bool) error {
	f := s.fleet
	if f.Spec.Shards.Replicas == 0 {
		return nil
	}
	i := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == primary })
	if i < 0 || pods[i].addr == "" || pods[i].gone || !pods[i].ready {
		return nil // failover's business
	}
	run := fmt.Sprintf("%s/%s/%d", primary, pods[i].uid, pods[i].restarts)
	v, _ := r.fences.Load(key)
	last, _ := v.(fenceState)
	if last.run != run {
		last = fenceState{run: run}
	}
	if r.now().Before(last.retryAt) {
		s.requeue = minPositive(s.requeue, last.retryAt.Sub(r.now()))
		return nil
	}
	in := fenceInput{on: f.Spec.Shards.Fenced(), couldTakeOver: couldTakeOver(primary, pods), current: last.set, refused: refused, good: -1}
	want, ask := decideFence(in)
	if want == last.set && !ask {
		return nil
	}
	password, err := r.shardPassword(ctx, f)
	if err != nil {
		return err
	}
	admin := r.admin()
	if ask {
		info, err := admin.Replication(ctx, pods[i].addr, password)
		if err != nil {
			r.fenceFailed(ctx, s, key, shard, primary, last, err)
			return nil
		}
		in.good = info.goodReplicas(int(f.Spec.Shards.FencingMaxLag()))
		want, _ = decideFence(in)
	}
	if want == fenceLifted && in.couldTakeOver {
		s.requeue = minPositive(s.requeue, 2*time.Second) // the fence goes back once a replica is heard
	}
	if want != last.set {
		if err := admin.SetFence(ctx, pods[i].addr, password, want == fenceOn); err != nil {
			r.fenceFailed(ctx, s, key, shard, primary, last, err)
			return nil
		}
		r.fences.Store(key, fenceState{run: run, set: want})
		logf.FromContext(ctx).Info("Fence set", "shard", shard, "primary", primary, "fenced", want == fenceOn)
		if want == fenceLifted && in.on {
			r.event(f, corev1.EventTypeNormal, "FenceLifted", "Fence", "%s: %s counts no replica that could take over; it takes writes without one", shard, primary)
		}
	}
	if refused && in.good == 0 {
		r.findStrays(ctx, s, key, primary, pods, password)
	}
	return nil
}

// fenceFailed backs off: other shards' failover must not wait behind a primary that does not
// answer (that is failover's business).
func (r *CacheFleetReconciler) fenceFailed(ctx context.Context, s *fleetScope, key, shard, primary string, last fenceState, err error) {
	last.fails++
	wait := min(time.Second<<min(last.fails-1, 5), 30*time.Second)
	last.retryAt = r.now().Add(wait)
	r.fences.Store(key, last)
	s.requeue = minPositive(s.requeue, wait)
	logf.FromContext(ctx).Info("Could not set a primary's fence", "shard", shard, "primary", primary, "retryIn", wait.String(), "error", err.Error())
}

// findStrays probes the shard's other pods for one answering as a primary beside the shard's (a
// former primary cut off when it was replaced, while another manager led), to be rejoined.
func (r *CacheFleetReconciler) findStrays(ctx context.Context, s *fleetScope, key, primary string, pods []shardPod, password string) {
	others := slices.DeleteFunc(slices.Clone(pods), func(p shardPod) bool { return p.name == primary })
	pctx, cancel := context.WithTimeout(ctx, reachProbeTimeout)
	r.probe(pctx, others, password)
	cancel()
	for _, o := range others {
		if o.reachable && o.role == "master" {
			r.strays.Store(key, o.name) // rejoined at the next look
			s.requeue = minPositive(s.requeue, 100*time.Millisecond)
		}
	}
}

// fenceState is what keepFence last set on a run of a shard's primary ("primary/uid/restarts"),
// and, after failures to talk to it, when to try again.
type fenceState struct {
	run     string
	set     fenceSet
	fails   int
	retryAt time.Time
}

// rejoinStray tells a former primary that was cut off when it was replaced (or any pod found
// answering as a primary beside the shard's) to replicate from the shard's primary, once it
// answers again. Until then it cannot take over, so it does not hold the fence. Only a primary
// that is ready and answers as one is followed: a primary that restarted empty defers to the
// peer holding the data instead (shardStartScript), and that peer must not be told to follow it.
func (r *CacheFleetReconciler) rejoinStray(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod) error {
	v, ok := r.strays.Load(key)
	if !ok {
		return nil
	}
	stray := v.(string)
	si := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == stray })
	pi := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == primary })
	if si < 0 || pods[si].gone || stray == primary {
		r.strays.Delete(key) // replaced: its new pod starts as a replica of the primary
		return nil
	}
	if pi < 0 || !pods[pi].ready || pods[si].addr == "" {
		markLost(pods, stray)
		s.requeue = minPositive(s.requeue, time.Second)
		return nil
	}
	password, err := r.shardPassword(ctx, s.fleet)
	if err != nil {
		return err
	}
	probed := []shardPod{pods[pi], pods[si]}
	pctx, cancel := context.WithTimeout(ctx, reachProbeTimeout)
	r.probe(pctx, probed, password)
	cancel()
	switch {
	case !probed[1].reachable:
		markLost(pods, stray)
		s.requeue = minPositive(s.requeue, time.Second)
		return nil
	case probed[1].role != "master":
		r.strays.Delete(key)
		return nil
	case probed[0].role != "master":
		return nil // the shard's primary is not serving as one: failover's business first
	}
	if err := r.admin().ReplicaOf(ctx, pods[si].addr, password, podHost(s.fleet, primary), ValkeyPort); err != nil {
		markLost(pods, stray)
		s.requeue = minPositive(s.requeue, time.Second)
		logf.FromContext(ctx).Info("Could not tell a former primary to follow the new one", "shard", shard, "pod", stray, "primary", primary, "error", err.Error())
		return nil
	}
	r.strays.Delete(key)
	markLost(pods, stray) // not ready until it has synced
	logf.FromContext(ctx).Info("Former primary rejoined", "shard", shard, "pod", stray, "primary", primary)
	r.event(s.fleet, corev1.EventTypeNormal, "Rejoined", "Failover", "%s: former primary %s answers again; it now replicates from %s", shard, stray, primary)
	return nil
}
