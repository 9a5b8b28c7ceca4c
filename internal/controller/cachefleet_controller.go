package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// DrainTimeout bounds how long a removed shard's StatefulSet waits for every agent to report the
// ring epoch without it; after that it is deleted anyway (a dead agent must not block scale-in).
const DrainTimeout = 2 * time.Minute

// monitoringRetry is how often a fleet that wants a ServiceMonitor re-checks for its CRD.
const monitoringRetry = 5 * time.Minute

// CacheFleetReconciler reconciles a CacheFleet into shards, ring, agents and monitoring.
type CacheFleetReconciler struct {
	client.Client
	Recorder   events.EventRecorder
	AgentImage string
	// DrainTimeout overrides the package default (tests shorten it).
	DrainTimeout time.Duration
	// Now is the clock; tests move it to cross the drain timeout.
	Now func() time.Time

	// Admin talks to shard pods for failover; nil means Valkey over the network.
	Admin shardAdmin

	converge  convergence // epoch publish times, for cachefleet_epoch_convergence_seconds
	down      sync.Map    // "namespace/fleet/shard" -> when its primary was first seen not ready
	lastEpoch sync.Map    // fleet key -> the last epoch this manager published
	// primaryRun: "namespace/fleet/shard" -> "<pod UID>/<restart count>" of its primary's Valkey
	primaryRun sync.Map
	// unreached: "namespace/fleet/shard" -> when the controller's probe first failed to reach a
	// primary that agents on other nodes report lost; told: the verdict's event was recorded.
	unreached, told sync.Map
	// fences: "namespace/fleet/shard" -> the fence last set on its primary (fencing.go);
	// strays: -> a former primary that was cut off when it was replaced, to rejoin as a replica.
	fences, strays sync.Map
}

// fleetScope carries one reconcile's state between phases.
type fleetScope struct {
	fleet       *cachev1alpha1.CacheFleet
	policies    []cachev1alpha1.CachePolicy
	doc         *contract.Document
	publishedAt time.Time
	roles       shardRoles // each shard's primary pod
	failedOver  []string   // shards whose primary this reconcile replaced
	obs         observation
	requeue     time.Duration
}

// +kubebuilder:rbac:groups=cache.cachefleet.io,resources=cachefleets,verbs=get;list;watch
// +kubebuilder:rbac:groups=cache.cachefleet.io,resources=cachefleets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cache.cachefleet.io,resources=cachepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets;daemonsets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets;serviceaccounts,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs the phases in order and writes the status once, at the end.
func (r *CacheFleetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	fleet := &cachev1alpha1.CacheFleet{}
	if err := r.Get(ctx, req.NamespacedName, fleet); err != nil {
		if apierrors.IsNotFound(err) {
			r.converge.forget(req.String())
			r.forgetFleet(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !fleet.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // children go with the owner references
	}
	s := &fleetScope{fleet: fleet}
	before := fleet.Status.DeepCopy()

	defer func() {
		if s.obs.firstErr == nil {
			s.obs.firstErr = retErr
		}
		s.obs.primaries, s.obs.failedOver, s.obs.now = s.roles.list(), len(s.failedOver), metav1.NewTime(r.now())
		status := computeStatus(*before, fleet.Generation, s.obs)
		r.recordTransitions(fleet, before, &status)
		if took, done := r.converge.observe(req.String(), status, r.now()); done {
			epochConvergence.Observe(took.Seconds())
		}
		if equality.Semantic.DeepEqual(*before, status) {
			return
		}
		patchBase := fleet.DeepCopy()
		fleet.Status = status
		if err := r.Status().Patch(ctx, fleet, client.MergeFrom(patchBase)); err != nil && !apierrors.IsNotFound(err) {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
	}()

	// The spec is checked first. A spec that cannot work stops the phases that build from it,
	// not those that keep the running fleet safe (its Secrets, its primaries).
	invalid := validateSpec(fleet)
	phases := []struct {
		name, doing string // name labels cachefleet_reconcile_errors_total
		run         func(context.Context, *fleetScope) error
		fromSpec    bool // builds children from the spec: not run on an invalid one
	}{
		{"secrets", "creating the generated Secrets", r.reconcileSecrets, false},
		{"roles", "reading the shards' roles", r.readRoles, false},
		{"failover", "checking the shards' primaries", r.reconcileFailover, false},
		{"roles-publish", "publishing the shards' roles", r.publishRoles, false},
		{"shards", "reconciling shards", r.reconcileShards, true},
		{"ring", "publishing the ring", r.reconcileRing, true},
		{"agents", "reconciling agents", r.reconcileAgents, true},
		{"monitoring", "reconciling monitoring", r.reconcileMonitoring, true},
		{"drain", "draining removed shards", r.reconcileDrainedShards, true},
		{"observe", "observing children", r.observe, true},
	}
	var errs []error
	for _, phase := range phases {
		if phase.fromSpec && invalid != nil {
			// Retrying cannot help: report it and wait for the spec to change.
			s.obs.invalidSpec = invalid
			logf.FromContext(ctx).Info("Fleet spec cannot work", "field", invalid.field, "reason", invalid.msg)
			return ctrl.Result{}, nil
		}
		err := phase.run(ctx, s)
		if err == nil {
			continue
		}
		reconcileErrors.WithLabelValues(phase.name).Inc()
		errs = append(errs, fmt.Errorf("%s: %w", phase.doing, err))
		if errors.Is(err, errStop) {
			break
		}
	}
	if err := kerrors.NewAggregate(errs); err != nil {
		s.obs.firstErr = errs[0]
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// errStop ends the phase list: later phases depend on what failed.
var errStop = errors.New("stopping this reconcile")

func (r *CacheFleetReconciler) drainTimeout() time.Duration {
	if r.DrainTimeout > 0 {
		return r.DrainTimeout
	}
	return DrainTimeout
}

func (r *CacheFleetReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *CacheFleetReconciler) applyAndRecord(ctx context.Context, f *cachev1alpha1.CacheFleet, obj client.Object) error {
	res, err := apply(ctx, r.Client, obj)
	if err != nil {
		return err
	}
	kind := fmt.Sprintf("%T", obj)[1:]
	switch res {
	case created:
		logf.FromContext(ctx).Info("Created child", "kind", kind, "object", klog.KObj(obj))
		r.event(f, corev1.EventTypeNormal, "Created", "Create", "Created %s %s", kind, obj.GetName())
	case updated:
		logf.FromContext(ctx).Info("Updated child", "kind", kind, "object", klog.KObj(obj))
	}
	return nil
}

func (r *CacheFleetReconciler) event(f *cachev1alpha1.CacheFleet, eventType, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(f, nil, eventType, reason, action, note, args...)
	}
}

// reconcileSecrets creates the generated password and signing key once; never rewrites them.
func (r *CacheFleetReconciler) reconcileSecrets(ctx context.Context, s *fleetScope) error {
	for _, g := range generatedSecrets(s.fleet) {
		var existing corev1.Secret
		err := r.Get(ctx, client.ObjectKey{Namespace: s.fleet.Namespace, Name: g.ref.Name}, &existing)
		if err == nil {
			continue
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		token, err := randomToken()
		if err != nil {
			return err
		}
		secret := buildSecret(s.fleet, g, token)
		if err := r.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Secret %s: %w", secret.Name, err)
		}
		r.event(s.fleet, corev1.EventTypeNormal, "Created", "Create", "Created Secret %s", secret.Name)
	}
	return nil
}

// reconcileShards makes one StatefulSet (and PDB) per desired shard, the headless Service, the
// Valkey config and the NetworkPolicy.
func (r *CacheFleetReconciler) reconcileShards(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	objs := []client.Object{buildShardsConfig(f), buildShardsService(f), buildNetworkPolicy(f)}
	for i := 0; i < int(f.Spec.Shards.Count); i++ {
		objs = append(objs, buildShardStatefulSet(f, i))
		if pdb := buildShardPDB(f, i); pdb != nil {
			objs = append(objs, pdb)
		} else if err := r.deleteIfExists(ctx, f, newPDB(f, i)); err != nil {
			return err
		}
	}
	for _, o := range objs {
		if err := r.applyAndRecord(ctx, f, o); err != nil {
			return err
		}
	}
	return nil
}

// reconcileRing publishes the ring document; the epoch moves only when its content changes.
func (r *CacheFleetReconciler) reconcileRing(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	policies, err := listFleetPolicies(ctx, r.Client, f.Namespace, f.Name)
	if err != nil {
		return err
	}
	accepted, _ := resolvePolicies(policies)
	s.policies = accepted

	var previous *contract.Document
	// Epochs only grow, even when the published document is unreadable: above the status and
	// above what this manager published (the cached status may lag its own last write).
	floor := f.Status.RingEpoch
	if last, ok := r.lastEpoch.Load(client.ObjectKeyFromObject(f)); ok {
		floor = max(floor, last.(int64))
	}
	s.publishedAt = r.now()
	var cm corev1.ConfigMap
	switch err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: ringConfigMapName(f)}, &cm); {
	case err == nil:
		if prev, derr := contract.Decode([]byte(cm.Data[contract.DocumentKey])); derr == nil {
			previous = prev
			if t, perr := time.Parse(time.RFC3339Nano, cm.Annotations[AnnotationPublishedAt]); perr == nil {
				s.publishedAt = t
			}
		} else {
			floor = max(floor, contract.PeekEpoch([]byte(cm.Data[contract.DocumentKey])))
			logf.FromContext(ctx).Info("Replacing unreadable ring document", "error", derr.Error(), "aboveEpoch", floor)
		}
	case !apierrors.IsNotFound(err):
		return err
	}
	doc := buildRingDocument(f, accepted, s.roles)
	ready, err := r.primariesReady(ctx, f, s.roles)
	if err != nil {
		return err
	}
	if s.obs.joining = holdBackJoiningShards(doc, previous, func(sh string) bool { return ready[sh] }); len(s.obs.joining) > 0 {
		s.requeue = minPositive(s.requeue, 2*time.Second) // pod readiness also wakes us; this bounds the wait
	}
	carryWarming(doc, previous, r.now(), warmUpWindow(f))
	if doc.Warming != nil { // the warm-up ends with a document without it
		s.requeue = minPositive(s.requeue, time.UnixMilli(doc.Warming.UntilMillis).Sub(r.now())+time.Second)
	}
	doc.SealAbove(previous, floor)
	r.lastEpoch.Store(client.ObjectKeyFromObject(f), doc.Epoch)
	if previous == nil || previous.Epoch != doc.Epoch {
		s.publishedAt = r.now()
	}
	desired, err := buildRingConfigMap(f, doc, s.publishedAt)
	if err != nil {
		return err
	}
	if err := r.applyAndRecord(ctx, f, desired); err != nil {
		return err
	}
	if previous != nil && previous.Epoch != doc.Epoch {
		r.event(f, corev1.EventTypeNormal, "RingPublished", "Publish", "Published ring epoch %d (%d shards, %d policies)",
			doc.Epoch, len(doc.Shards), len(doc.Policies))
		if len(previous.Shards) != len(doc.Shards) {
			r.event(f, corev1.EventTypeNormal, "Scaled", "Scale", "Scaled from %d to %d shards", len(previous.Shards), len(doc.Shards))
		}
	}
	s.doc = doc
	s.obs.ringPublished = true
	s.obs.ringEpoch, s.obs.ringChecksum, s.obs.channel = doc.Epoch, doc.Checksum, f.InvalidationChannel()
	return nil
}

// primariesReady reports, by shard name, whether the shard's primary pod is ready.
func (r *CacheFleetReconciler) primariesReady(ctx context.Context, f *cachev1alpha1.CacheFleet, roles shardRoles) (map[string]bool, error) {
	ready := map[string]bool{}
	roles = roles.withDefaults(f)
	for i := 0; i < int(f.Spec.Shards.Count); i++ {
		var pod corev1.Pod
		err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: roles[shardName(i)]}, &pod)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
		ready[shardName(i)] = err == nil && podReady(&pod)
	}
	return ready, nil
}

// reconcileAgents makes the agent identity, its least-privilege Role, the DaemonSet and the
// node-local Service.
func (r *CacheFleetReconciler) reconcileAgents(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	for _, o := range []client.Object{
		buildAgentServiceAccount(f), buildAgentRole(f, s.doc), buildAgentRoleBinding(f),
		buildAgentDaemonSet(f, r.AgentImage), buildAgentService(f),
	} {
		if err := r.applyAndRecord(ctx, f, o); err != nil {
			return err
		}
	}
	return nil
}

// reconcileDrainedShards deletes StatefulSets of shards the ring no longer holds, once every
// agent serves that ring (or DrainTimeout after it was published).
func (r *CacheFleetReconciler) reconcileDrainedShards(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	var list appsv1.StatefulSetList
	if err := r.List(ctx, &list, client.InNamespace(f.Namespace), client.MatchingLabels(selectorLabels(f, ComponentShard))); err != nil {
		return err
	}
	var removed []appsv1.StatefulSet
	for _, sts := range list.Items {
		if !metav1.IsControlledBy(&sts, f) {
			continue
		}
		if idx, ok := shardIndex(sts.Labels[LabelShard]); ok && idx >= int(f.Spec.Shards.Count) {
			removed = append(removed, sts)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	converged, desired, err := r.agentConvergence(ctx, s)
	if err != nil {
		return err
	}
	waited, limit := r.now().Sub(s.publishedAt), r.drainTimeout()
	if converged < desired && waited < limit {
		s.obs.draining = len(removed)
		s.requeue = minPositive(s.requeue, min(limit-waited, 10*time.Second))
		return nil
	}
	for i := range removed {
		sts := &removed[i]
		if err := r.Delete(ctx, sts, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		idx, _ := shardIndex(sts.Labels[LabelShard])
		if err := r.deleteIfExists(ctx, f, newPDB(f, idx)); err != nil {
			return err
		}
		logf.FromContext(ctx).Info("Deleted drained shard", "statefulSet", klog.KObj(sts), "convergedAgents", converged, "desiredAgents", desired, "waited", waited.Round(time.Second))
		r.event(f, corev1.EventTypeNormal, "ShardRemoved", "Delete", "Deleted StatefulSet %s after %d/%d agents left it", sts.Name, converged, desired)
	}
	return nil
}

// agentConvergence counts agents whose live Lease reports the current epoch, against the agents
// the DaemonSet wants.
func (r *CacheFleetReconciler) agentConvergence(ctx context.Context, s *fleetScope) (converged, desired int32, err error) {
	var ds appsv1.DaemonSet
	if err := r.Get(ctx, client.ObjectKey{Namespace: s.fleet.Namespace, Name: agentName(s.fleet)}, &ds); err != nil {
		return 0, 0, client.IgnoreNotFound(err)
	}
	converged, err = r.convergedAgents(ctx, s)
	return converged, ds.Status.DesiredNumberScheduled, err
}

// convergedAgents counts the live agent Leases that report the published epoch.
func (r *CacheFleetReconciler) convergedAgents(ctx context.Context, s *fleetScope) (int32, error) {
	var leases coordinationv1.LeaseList
	if err := r.List(ctx, &leases, client.InNamespace(s.fleet.Namespace), client.MatchingLabels{LabelFleet: s.fleet.Name, LabelComponent: ComponentAgent}); err != nil {
		return 0, err
	}
	return countConverged(leases.Items, s.doc.Epoch, r.now()), nil
}

// observe reads the workloads' status into the observation.
func (r *CacheFleetReconciler) observe(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	s.obs.shards = nil
	primaries := s.roles.withDefaults(f)
	for i := 0; i < int(f.Spec.Shards.Count); i++ {
		o := shardObservation{name: shardName(i), desiredPods: 1 + f.Spec.Shards.Replicas}
		var sts appsv1.StatefulSet
		err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: shardStatefulSetName(f, i)}, &sts)
		if err == nil {
			o.exists, o.readyPods = true, sts.Status.ReadyReplicas
			if sts.Status.ObservedGeneration < sts.Generation {
				o.readyPods = 0 // status is about an older spec
			}
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		var pod corev1.Pod
		err = r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: primaries[shardName(i)]}, &pod)
		if err == nil {
			o.primaryReady = podReady(&pod)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		s.obs.shards = append(s.obs.shards, o)
	}
	var ds appsv1.DaemonSet
	switch err := r.Get(ctx, client.ObjectKey{Namespace: f.Namespace, Name: agentName(f)}, &ds); {
	case err == nil:
		s.obs.agentsExist = true
		s.obs.desiredAgents, s.obs.readyAgents = ds.Status.DesiredNumberScheduled, ds.Status.NumberReady
	case !apierrors.IsNotFound(err):
		return err
	}
	if s.doc != nil {
		converged, err := r.convergedAgents(ctx, s)
		if err != nil {
			return err
		}
		s.obs.convergedAgents = converged
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	if !p.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// recordTransitions emits events when the fleet turns Degraded or recovers.
func (r *CacheFleetReconciler) recordTransitions(f *cachev1alpha1.CacheFleet, before, after *cachev1alpha1.CacheFleetStatus) {
	was := meta.IsStatusConditionTrue(before.Conditions, cachev1alpha1.DegradedCondition)
	is := meta.IsStatusConditionTrue(after.Conditions, cachev1alpha1.DegradedCondition)
	switch {
	case !was && is:
		c := meta.FindStatusCondition(after.Conditions, cachev1alpha1.DegradedCondition)
		r.event(f, corev1.EventTypeWarning, "Degraded", "Observe", "%s", c.Message)
	case was && !is:
		r.event(f, corev1.EventTypeNormal, "Recovered", "Observe", "Every shard has a ready primary again")
	}
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 {
		return b
	}
	return min(a, b)
}
