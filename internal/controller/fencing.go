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
// The controller lifts the fence (min-replicas-to-write 0) while no other pod of the shard could
// be promoted: none is ready, or the ready ones are being deleted or do not answer. Such a pod
// cannot take over (decideFailover promotes only ready, reachable pods), so a write the primary
// takes meanwhile cannot be thrown away by a promotion, and refusing it would stop writes for
// nothing: a replica's restart in a rollout, or a replica's node lost. The fence is put back as
// soon as a replica could take over again. The agents report a primary that refuses writes
// (package reach); only then are the other pods probed: a replica whose node is cut off still
// counts as ready for Kubernetes for its node's grace period.
//
// A former primary that was cut off when it was replaced cannot be told to follow the new one;
// it is told as soon as it answers again (rejoinStray), and it full-syncs from the new primary,
// dropping what it took before its fence closed.

// fenceWanted is the rule: fenced when fencing is on and another pod of the shard could take
// over from the primary.
func fenceWanted(on bool, primary string, pods []shardPod) bool {
	return on && slices.ContainsFunc(pods, func(p shardPod) bool {
		return p.name != primary && p.ready && !p.gone && !p.unreached
	})
}

// refusedWrites reports whether a fresh agent report says the shard's primary refuses writes.
func refusedWrites(reports []reachReport, now time.Time) bool {
	return slices.ContainsFunc(reports, func(r reachReport) bool {
		return now.Sub(r.renewed) <= reportFresh && !r.refusingSince.IsZero()
	})
}

// keepFence sets the primary's fence as fenceWanted says, when it differs from what this manager
// last set on the primary's current run (a restarted primary starts fenced from its config).
func (r *CacheFleetReconciler) keepFence(ctx context.Context, s *fleetScope, key, shard, primary string, pods []shardPod, refused bool) error {
	f := s.fleet
	if f.Spec.Shards.Replicas == 0 {
		return nil
	}
	i := slices.IndexFunc(pods, func(p shardPod) bool { return p.name == primary })
	if i < 0 || pods[i].addr == "" || pods[i].gone || !pods[i].ready {
		return nil // failover's business
	}
	on := f.Spec.Shards.Fenced()
	want := fenceWanted(on, primary, pods)
	if want && refused {
		// The primary counts no replica: the ready ones may be cut off, or strays (rejoinStray).
		password, err := r.shardPassword(ctx, f)
		if err != nil {
			return err
		}
		others := slices.DeleteFunc(slices.Clone(pods), func(p shardPod) bool { return p.name == primary })
		pctx, cancel := context.WithTimeout(ctx, reachProbeTimeout)
		r.probe(pctx, others, password)
		cancel()
		for _, o := range others {
			if o.reachable && o.role == "master" {
				r.strays.Store(key, o.name) // rejoined at the next look
				s.requeue = minPositive(s.requeue, 100*time.Millisecond)
			}
			markProbed(pods, o)
		}
		want = fenceWanted(on, primary, pods)
	}
	state := fmt.Sprintf("%s/%s/%d/%t", primary, pods[i].uid, pods[i].restarts, want)
	v, known := r.fences.Load(key)
	last, _ := v.(fenceState)
	switch {
	case known && last.set == state:
		return nil
	case !known && !on:
		return nil // fencing off, which the config file already says
	case last.want == state && r.now().Before(last.retryAt):
		s.requeue = minPositive(s.requeue, last.retryAt.Sub(r.now()))
		return nil
	}
	password, err := r.shardPassword(ctx, f)
	if err != nil {
		return err
	}
	if err := r.admin().SetFence(ctx, pods[i].addr, password, want); err != nil {
		// Tried again later, backing off: other shards' failover must not wait behind a dial.
		fails := 1
		if last.want == state {
			fails = last.fails + 1
		}
		wait := min(time.Second<<min(fails-1, 5), 30*time.Second)
		r.fences.Store(key, fenceState{set: last.set, want: state, fails: fails, retryAt: r.now().Add(wait)})
		s.requeue = minPositive(s.requeue, wait)
		logf.FromContext(ctx).Info("Could not set a primary's fence", "shard", shard, "primary", primary, "fenced", want, "retryIn", wait.String(), "error", err.Error())
		return nil
	}
	r.fences.Store(key, fenceState{set: state})
	if on {
		logf.FromContext(ctx).Info("Fence set", "shard", shard, "primary", primary, "fenced", want)
		if !want {
			r.event(f, corev1.EventTypeNormal, "FenceLifted", "Fence", "%s: no replica could take over from %s; it takes writes without one", shard, primary)
		}
	}
	return nil
}

// fenceState is what keepFence last set on a shard's primary ("primary/uid/restarts/fenced"),
// and the one it failed to set, to try again at retryAt.
type fenceState struct {
	set, want string
	fails     int
	retryAt   time.Time
}

// markProbed copies what a probe found about one pod into pods.
func markProbed(pods []shardPod, probed shardPod) {
	for i := range pods {
		if pods[i].name == probed.name {
			pods[i] = probed
		}
	}
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
