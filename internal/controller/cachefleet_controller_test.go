package controller

import (
	"context"
	"fmt"
	ctrl "sigs.k8s.io/controller-runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func get[T client.Object](t *testing.T, ns, name string, obj T) T {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatalf("get %T %s/%s: %v", obj, ns, name, err)
	}
	return obj
}

func exists(ns, name string, obj client.Object) error {
	return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
}

func readRing(t *testing.T, ns, fleet string) *contract.Document {
	t.Helper()
	cm := get(t, ns, fleet+"-ring", &corev1.ConfigMap{})
	doc, err := contract.Decode([]byte(cm.Data[contract.DocumentKey]))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func condition(f *cachev1alpha1.CacheFleet, t string) string {
	c := meta.FindStatusCondition(f.Status.Conditions, t)
	if c == nil {
		return "<none>"
	}
	return string(c.Status) + "/" + c.Reason
}

func waitForChildren(t *testing.T, ns, name string, shards int) {
	t.Helper()
	eventually(t, "children created", func() error {
		if err := exists(ns, name+"-agent", &appsv1.DaemonSet{}); err != nil {
			return err
		}
		for i := 0; i < shards; i++ {
			if err := exists(ns, fmt.Sprintf("%s-shard-%d", name, i), &appsv1.StatefulSet{}); err != nil {
				return err
			}
		}
		return exists(ns, name+"-ring", &corev1.ConfigMap{})
	})
}

func TestFleetCreatesWiredChildren(t *testing.T) {
	ns := newNamespace(t)
	f := createFleet(t, newFleet(ns, "web", nil))
	waitForChildren(t, ns, "web", 3)

	owned := []client.Object{
		get(t, ns, "web-auth", &corev1.Secret{}),
		get(t, ns, "web-bus", &corev1.Secret{}),
		get(t, ns, "web-shards", &corev1.Service{}),
		get(t, ns, "web-shards-config", &corev1.ConfigMap{}),
		get(t, ns, "web-ring", &corev1.ConfigMap{}),
		get(t, ns, "web-shards", &networkingv1.NetworkPolicy{}),
		get(t, ns, "web-agent", &corev1.ServiceAccount{}),
		get(t, ns, "web-agent", &rbacv1.Role{}),
		get(t, ns, "web-agent", &rbacv1.RoleBinding{}),
		get(t, ns, "web-agent", &appsv1.DaemonSet{}),
		get(t, ns, "web-agent", &corev1.Service{}),
	}
	for i := 0; i < 3; i++ {
		owned = append(owned,
			get(t, ns, fmt.Sprintf("web-shard-%d", i), &appsv1.StatefulSet{}),
			get(t, ns, fmt.Sprintf("web-shard-%d", i), &policyv1.PodDisruptionBudget{}))
	}
	for _, o := range owned {
		if !metav1.IsControlledBy(o, f) {
			t.Errorf("%T %s has no controller reference to the fleet: %v", o, o.GetName(), o.GetOwnerReferences())
		}
		l := o.GetLabels()
		if l[LabelPartOf] != "cachefleet" || l[LabelInstance] != "web" || l[LabelManagedBy] == "" || l[LabelComponent] == "" {
			t.Errorf("%T %s lacks the common labels: %v", o, o.GetName(), l)
		}
	}

	if pw := get(t, ns, "web-auth", &corev1.Secret{}).Data["password"]; len(pw) < 32 {
		t.Errorf("generated password too short: %d bytes", len(pw))
	}
	sts := get(t, ns, "web-shard-1", &appsv1.StatefulSet{})
	if *sts.Spec.Replicas != 2 || sts.Spec.ServiceName != "web-shards" {
		t.Errorf("shard StatefulSet: replicas %d, service %q", *sts.Spec.Replicas, sts.Spec.ServiceName)
	}
	pod := sts.Spec.Template.Spec
	if c := pod.Containers[0].SecurityContext; !*c.ReadOnlyRootFilesystem || *c.AllowPrivilegeEscalation || c.Capabilities.Drop[0] != "ALL" {
		t.Errorf("shard container not restricted: %+v", c)
	}
	if pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil {
		t.Error("replicas are not kept off the primary's node")
	}
	if conf := get(t, ns, "web-shards-config", &corev1.ConfigMap{}).Data["valkey.conf"]; !strings.Contains(conf, "maxmemory 402653184\n") {
		t.Errorf("maxmemory is not 75%% of 512Mi:\n%s", conf)
	}
	if svc := get(t, ns, "web-agent", &corev1.Service{}); *svc.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal {
		t.Error("agent Service does not keep traffic on the node")
	}
	role := get(t, ns, "web-agent", &rbacv1.Role{})
	if got := role.Rules[0].ResourceNames; len(got) != 1 || got[0] != "web-ring" {
		t.Errorf("agent Role reads configmaps %v, want only web-ring", got)
	}
	doc := readRing(t, ns, "web")
	if doc.Epoch != 1 || len(doc.Shards) != 3 || doc.Shards[2].Primary != "web-shard-2-0.web-shards."+ns+".svc:6379" || len(doc.Shards[2].Replicas) != 1 {
		t.Errorf("ring document: %+v", doc)
	}

	eventually(t, "status provisioning", func() error {
		f := getFleet(t, ns, "web")
		if f.Status.Phase != cachev1alpha1.PhaseProvisioning || f.Status.RingEpoch != 1 || f.Status.Shards != "0/3" ||
			condition(f, cachev1alpha1.RingPublishedCondition) != "True/Created" ||
			condition(f, cachev1alpha1.MonitoringReadyCondition) != "True/Disabled" {
			return fmt.Errorf("status %+v", f.Status)
		}
		return nil
	})
}

// markReady writes what kube-controller-manager and the kubelet would: ready StatefulSets,
// ready primary pods and a ready DaemonSet.
func markReady(t *testing.T, ns, name string, shards, pods int32, agents int32) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < int(shards); i++ {
		sts := get(t, ns, fmt.Sprintf("%s-shard-%d", name, i), &appsv1.StatefulSet{})
		sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: pods, ReadyReplicas: pods, AvailableReplicas: pods}
		if err := k8s.Status().Update(ctx, sts); err != nil {
			t.Fatal(err)
		}
		setPrimaryReady(t, ns, name, i, true)
	}
	ds := get(t, ns, name+"-agent", &appsv1.DaemonSet{})
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: agents, CurrentNumberScheduled: agents, NumberReady: agents, NumberAvailable: agents}
	if err := k8s.Status().Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
}

func setPrimaryReady(t *testing.T, ns, fleet string, shard int, ready bool) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s-shard-%d-0", fleet, shard)
	pod := &corev1.Pod{}
	if err := exists(ns, name, pod); apierrors.IsNotFound(err) {
		pod = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
				LabelPartOf: "cachefleet", LabelFleet: fleet, LabelComponent: ComponentShard, LabelShard: shardName(shard)}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "valkey", Image: "valkey"}}},
		}
		if err := k8s.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

func waitPhase(t *testing.T, ns, name string, phase cachev1alpha1.FleetPhase, extra func(*cachev1alpha1.CacheFleet) error) {
	t.Helper()
	eventually(t, "phase "+string(phase), func() error {
		f := getFleet(t, ns, name)
		if f.Status.Phase != phase {
			return fmt.Errorf("phase %q, conditions %+v", f.Status.Phase, f.Status.Conditions)
		}
		if extra != nil {
			return extra(f)
		}
		return nil
	})
}

func TestFleetReadyThenDegradedThenRecovered(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", nil))
	waitForChildren(t, ns, "web", 3)
	markReady(t, ns, "web", 3, 2, 2)
	waitPhase(t, ns, "web", cachev1alpha1.PhaseReady, func(f *cachev1alpha1.CacheFleet) error {
		if f.Status.Shards != "3/3" || f.Status.Agents != "2/2" || condition(f, cachev1alpha1.ReadyCondition) != "True/AllReady" ||
			f.Status.ObservedGeneration != f.Generation {
			return fmt.Errorf("ready status incomplete: %+v", f.Status)
		}
		return nil
	})

	setPrimaryReady(t, ns, "web", 1, false)
	waitPhase(t, ns, "web", cachev1alpha1.PhaseDegraded, func(f *cachev1alpha1.CacheFleet) error {
		c := meta.FindStatusCondition(f.Status.Conditions, cachev1alpha1.DegradedCondition)
		if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "shard-1") || f.Status.Shards != "2/3" {
			return fmt.Errorf("degraded condition %+v, shards %s", c, f.Status.Shards)
		}
		return nil
	})

	setPrimaryReady(t, ns, "web", 1, true)
	waitPhase(t, ns, "web", cachev1alpha1.PhaseReady, nil)
}

// TestScaleUpIsTwoPhase: a new shard enters the ring only once its primary is ready, so no key
// moves to a shard that cannot answer; the existing shards are not rewritten.
func TestScaleUpIsTwoPhase(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", nil))
	waitForChildren(t, ns, "web", 3)
	markReady(t, ns, "web", 3, 2, 2)
	waitPhase(t, ns, "web", cachev1alpha1.PhaseReady, nil)
	before := map[string]string{}
	for i := 0; i < 3; i++ {
		before[fmt.Sprint(i)] = get(t, ns, fmt.Sprintf("web-shard-%d", i), &appsv1.StatefulSet{}).ResourceVersion
	}
	epoch := readRing(t, ns, "web").Epoch

	scale(t, ns, "web", 4)
	waitForChildren(t, ns, "web", 4)
	setPrimaryReady(t, ns, "web", 3, false)
	eventually(t, "the fleet waits for shard-3", func() error {
		f := getFleet(t, ns, "web")
		c := meta.FindStatusCondition(f.Status.Conditions, cachev1alpha1.ReadyCondition)
		if f.Status.ObservedGeneration != f.Generation || c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("ready condition %+v", c)
		}
		if !strings.Contains(allMessages(f), "shard-3") {
			return fmt.Errorf("no condition names shard-3: %+v", f.Status.Conditions)
		}
		return nil
	})
	for range 8 { // the ring must hold still while shard-3 is not ready
		if doc := readRing(t, ns, "web"); len(doc.Shards) != 3 || doc.Epoch != epoch {
			t.Fatalf("ring has %d shards at epoch %d before shard-3's primary is ready", len(doc.Shards), doc.Epoch)
		}
		time.Sleep(250 * time.Millisecond)
	}

	markReady(t, ns, "web", 4, 2, 2)
	eventually(t, "ring with 4 shards", func() error {
		if doc := readRing(t, ns, "web"); len(doc.Shards) != 4 || doc.Epoch != epoch+1 {
			return fmt.Errorf("ring has %d shards at epoch %d", len(doc.Shards), doc.Epoch)
		}
		return nil
	})
	// The layout the keys were written under stays published for the warm-up window.
	w := readRing(t, ns, "web").Warming
	if w == nil || w.Epoch != epoch || !slices.Equal(w.Members, []string{"shard-0", "shard-1", "shard-2"}) {
		t.Fatalf("warming after the scale-up = %+v, want the 3-shard layout of epoch %d", w, epoch)
	}
	if left := time.Until(time.UnixMilli(w.UntilMillis)); left < DefaultWarmUpWindow-time.Minute || left > DefaultWarmUpWindow {
		t.Fatalf("warm-up window ends in %s, want about %s", left, DefaultWarmUpWindow)
	}
	waitPhase(t, ns, "web", cachev1alpha1.PhaseReady, nil)
	for i := 0; i < 3; i++ {
		if rv := get(t, ns, fmt.Sprintf("web-shard-%d", i), &appsv1.StatefulSet{}).ResourceVersion; rv != before[fmt.Sprint(i)] {
			t.Errorf("shard %d was rewritten by a scale-up", i)
		}
	}
}

func allMessages(f *cachev1alpha1.CacheFleet) string {
	var b strings.Builder
	for _, c := range f.Status.Conditions {
		b.WriteString(c.Message + "\n")
	}
	return b.String()
}

func scale(t *testing.T, ns, name string, count int32) {
	t.Helper()
	f := getFleet(t, ns, name)
	base := f.DeepCopy()
	f.Spec.Shards.Count = count
	if err := k8s.Patch(context.Background(), f, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

func renewLease(t *testing.T, ns, fleet, node string, epoch int64) {
	t.Helper()
	ctx := context.Background()
	l := &coordinationv1.Lease{}
	err := exists(ns, agentLeaseName(fleet, node), l)
	l.Name, l.Namespace = agentLeaseName(fleet, node), ns
	l.Labels = map[string]string{LabelPartOf: "cachefleet", LabelFleet: fleet, LabelComponent: ComponentAgent}
	l.Annotations = map[string]string{AnnotationRingEpoch: strconv.FormatInt(epoch, 10)}
	l.Spec.HolderIdentity = ptrTo(node)
	l.Spec.LeaseDurationSeconds = ptrTo[int32](30)
	l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	if apierrors.IsNotFound(err) {
		err = k8s.Create(ctx, l)
	} else if err == nil {
		err = k8s.Update(ctx, l)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestScaleDownWaitsForAgentsToConverge(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", func(f *cachev1alpha1.CacheFleet) { f.Spec.Shards.Count = 4 }))
	waitForChildren(t, ns, "web", 4)
	markReady(t, ns, "web", 4, 2, 2)
	epoch := readRing(t, ns, "web").Epoch
	renewLease(t, ns, "web", "node-a", epoch)
	renewLease(t, ns, "web", "node-b", epoch)

	scale(t, ns, "web", 3)
	eventually(t, "ring drops shard-3 first", func() error {
		if doc := readRing(t, ns, "web"); len(doc.Shards) != 3 || doc.Epoch != epoch+1 {
			return fmt.Errorf("ring has %d shards at epoch %d", len(doc.Shards), doc.Epoch)
		}
		return nil
	})
	// One agent still serves the old ring: the StatefulSet must stay.
	renewLease(t, ns, "web", "node-a", epoch+1)
	eventually(t, "fleet reports draining", func() error {
		f := getFleet(t, ns, "web")
		if c := meta.FindStatusCondition(f.Status.Conditions, cachev1alpha1.ProgressingCondition); c == nil || c.Reason != cachev1alpha1.ReasonScaling {
			return fmt.Errorf("progressing %+v", c)
		}
		if f.Status.ConvergedAgents != 1 {
			return fmt.Errorf("converged agents %d, want 1", f.Status.ConvergedAgents)
		}
		return nil
	})
	if err := exists(ns, "web-shard-3", &appsv1.StatefulSet{}); err != nil {
		t.Fatalf("shard-3 deleted before every agent left it: %v", err)
	}
	renewLease(t, ns, "web", "node-b", epoch+1)
	eventually(t, "shard-3 deleted once agents converged", func() error {
		sts := &appsv1.StatefulSet{}
		if err := exists(ns, "web-shard-3", sts); err == nil && sts.DeletionTimestamp.IsZero() {
			return fmt.Errorf("still there")
		} else if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
}

func TestScaleDownGivesUpWaitingAfterTheDrainTimeout(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", func(f *cachev1alpha1.CacheFleet) { f.Spec.Shards.Count = 2 }))
	waitForChildren(t, ns, "web", 2)
	markReady(t, ns, "web", 2, 2, 3) // three agents that never report
	scale(t, ns, "web", 1)
	start := time.Now()
	eventually(t, "shard-1 deleted after the drain timeout", func() error {
		sts := &appsv1.StatefulSet{}
		if err := exists(ns, "web-shard-1", sts); err == nil && sts.DeletionTimestamp.IsZero() {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if waited := time.Since(start); waited < testDrain-time.Second {
		t.Errorf("deleted after %v, before the %v drain timeout", waited, testDrain)
	}
}

func TestMaxMemoryAboveTheLimitIsReported(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "big", func(f *cachev1alpha1.CacheFleet) {
		q := mustQuantity("1Gi")
		f.Spec.Shards.MaxMemory = &q
	}))
	eventually(t, "Ready=False naming the field, phase Failed, generation observed", func() error {
		f := getFleet(t, ns, "big")
		c := meta.FindStatusCondition(f.Status.Conditions, cachev1alpha1.ReadyCondition)
		if c == nil || c.Reason != cachev1alpha1.ReasonInvalidSpec || c.Message != "spec.shards.maxMemory (1Gi) must be below resources.limits.memory (512Mi), leaving room for replication buffers" {
			return fmt.Errorf("Ready %+v", c)
		}
		if f.Status.Phase != cachev1alpha1.PhaseFailed || f.Status.ObservedGeneration != f.Generation {
			return fmt.Errorf("phase %s, observedGeneration %d of %d", f.Status.Phase, f.Status.ObservedGeneration, f.Generation)
		}
		return nil
	})
	// A spec that can never work is not an error to retry with backoff forever.
	r := &CacheFleetReconciler{Client: k8s, AgentImage: "agent:test"}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: "big"}})
	if err != nil || res != (ctrl.Result{}) {
		t.Errorf("Reconcile of an invalid spec = %+v, %v; want no error and no requeue", res, err)
	}
	if err := exists(ns, "big-shard-0", &appsv1.StatefulSet{}); err == nil {
		t.Error("shards were created with maxmemory above the container limit")
	}
}

// TestEpochNeverGoesBack: when the published ring document cannot be read (a schema change,
// a hand edit), the controller republishes above every epoch it published, never at 1: agents
// refuse an older epoch, or worse, accept a rollback.
func TestEpochNeverGoesBack(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "web", nil))
	waitForChildren(t, ns, "web", 3)
	scale(t, ns, "web", 4)
	waitForChildren(t, ns, "web", 4)
	markReady(t, ns, "web", 4, 2, 2) // a new shard joins the ring once its primary is ready
	eventually(t, "epoch 2 published and in status", func() error {
		if e := readRing(t, ns, "web").Epoch; e != 2 || getFleet(t, ns, "web").Status.RingEpoch != 2 {
			return fmt.Errorf("ring epoch %d, status %d", e, getFleet(t, ns, "web").Status.RingEpoch)
		}
		return nil
	})
	for _, garbage := range []string{`{"schemaVersion": 99, "epoch": 2}`, `not json at all`} {
		// The last published epoch, read before corrupting: the controller may republish as soon
		// as it sees the garbage, before this test could read anything after it.
		before := readRing(t, ns, "web").Epoch
		cm := get(t, ns, "web-ring", &corev1.ConfigMap{})
		cm.Data[contract.DocumentKey] = garbage
		if err := k8s.Update(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
		scale(t, ns, "web", getFleet(t, ns, "web").Spec.Shards.Count) // a no-op change wakes the reconciler
		eventually(t, "ring republished above the last epoch", func() error {
			cm := get(t, ns, "web-ring", &corev1.ConfigMap{})
			doc, err := contract.Decode([]byte(cm.Data[contract.DocumentKey]))
			if err != nil {
				return err
			}
			if doc.Epoch <= before {
				return fmt.Errorf("republished at epoch %d after %d", doc.Epoch, before)
			}
			return nil
		})
	}
}

// TestEpochNeverRepeatsWhenTheCachedStatusLags: the reconciler reads the fleet from its cache,
// whose status may be one write behind. An unreadable ring must still be republished above the
// last epoch this manager published, not above the lagging status (which would repeat or lower it).
func TestEpochNeverRepeatsWhenTheCachedStatusLags(t *testing.T) {
	ns := newNamespace(t)
	f := defaultedFleet()
	f.Namespace, f.Name, f.UID = ns, "lagging", "uid-lagging" // never created: the suite's manager leaves it alone
	r := &CacheFleetReconciler{Client: k8s}
	ctx := context.Background()
	publish := func() int64 {
		t.Helper()
		s := &fleetScope{fleet: f}
		if err := r.reconcileRing(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s.doc.Epoch
	}
	publish()
	f.Spec.Tiers.L2.DefaultTTL.Duration *= 2 // new content: a new epoch; f.Status still says 0
	last := publish()
	cm := get(t, ns, "lagging-ring", &corev1.ConfigMap{})
	cm.Data[contract.DocumentKey] = "not json at all"
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if got := publish(); got <= last {
		t.Errorf("republished at epoch %d after publishing %d (status said %d)", got, last, f.Status.RingEpoch)
	}
}
