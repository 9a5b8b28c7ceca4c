// Package controller reconciles CacheFleets and CachePolicies.
package controller

import (
	"context"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// DefaultAgentImage is the agent image for fleets whose spec.agent.image is empty.
const DefaultAgentImage = "ghcr.io/cachefleet/agent:v0.1.0"

// Options configures the controllers.
type Options struct {
	MaxConcurrentReconciles int
	AgentImage              string
	// DrainTimeout bounds the wait for agents before a removed shard is deleted (default 2m).
	DrainTimeout time.Duration
}

// AddToScheme registers every type the controllers read or write.
func AddToScheme(s *runtime.Scheme) error {
	for _, add := range []func(*runtime.Scheme) error{cachev1alpha1.AddToScheme, monitoringv1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(s); err != nil {
			return err
		}
	}
	return nil
}

// CacheByObject limits the manager's informers for high-cardinality kinds to cachefleet's own
// objects, so memory does not grow with every Secret, Pod or Lease in the cluster.
func CacheByObject() map[client.Object]cache.ByObject {
	ours := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelPartOf: "cachefleet"})}
	return map[client.Object]cache.ByObject{
		&corev1.Secret{}:                ours,
		&corev1.ConfigMap{}:             ours,
		&corev1.Pod{}:                   ours,
		&corev1.Service{}:               ours,
		&corev1.ServiceAccount{}:        ours,
		&appsv1.StatefulSet{}:           ours,
		&appsv1.DaemonSet{}:             ours,
		&coordinationv1.Lease{}:         ours,
		&rbacv1.Role{}:                  ours,
		&rbacv1.RoleBinding{}:           ours,
		&policyv1.PodDisruptionBudget{}: ours,
		&networkingv1.NetworkPolicy{}:   ours,
	}
}

// Setup registers the controllers with the manager.
func Setup(mgr ctrl.Manager, opts Options) error {
	if opts.AgentImage == "" {
		opts.AgentImage = DefaultAgentImage
	}
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &cachev1alpha1.CachePolicy{}, indexFleetRef, func(o client.Object) []string {
		return []string{o.(*cachev1alpha1.CachePolicy).Spec.FleetRef.Name}
	}); err != nil {
		return err
	}
	copts := controller.Options{MaxConcurrentReconciles: max(opts.MaxConcurrentReconciles, 1)}
	registerMetrics(mgr.GetClient())

	fleets := &CacheFleetReconciler{
		Client:       mgr.GetClient(),
		Recorder:     mgr.GetEventRecorder("cachefleet-controller"),
		AgentImage:   opts.AgentImage,
		DrainTimeout: opts.DrainTimeout,
	}
	err := ctrl.NewControllerManagedBy(mgr).
		For(&cachev1alpha1.CacheFleet{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		// Shard pods are owned by their StatefulSet; map them to the fleet to see primaries fail.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(byFleetLabel)).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(byFleetLabel)).
		Watches(&cachev1alpha1.CachePolicy{}, handler.EnqueueRequestsFromMapFunc(policyToFleet)).
		// Installing the ServiceMonitor CRD re-reconciles fleets that want monitoring at once
		// (metadata only: CRDs are large and there are many).
		WatchesMetadata(&apiextensionsv1.CustomResourceDefinition{}, handler.EnqueueRequestsFromMapFunc(
			func(ctx context.Context, o client.Object) []reconcile.Request {
				if o.GetName() != serviceMonitorCRDName {
					return nil
				}
				return fleetsWantingMonitoring(ctx, mgr.GetClient())
			})).
		WithOptions(copts).
		Named("cachefleet").
		Complete(fleets)
	if err != nil {
		return err
	}

	policies := &CachePolicyReconciler{Client: mgr.GetClient()}
	peers := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		fleet := o.GetName()
		switch t := o.(type) {
		case *cachev1alpha1.CachePolicy:
			fleet = t.Spec.FleetRef.Name
		case *corev1.ConfigMap:
			fleet = t.Labels[LabelFleet]
			if t.Labels[LabelComponent] != ComponentRing {
				return nil
			}
		}
		list, err := listFleetPolicies(ctx, mgr.GetClient(), o.GetNamespace(), fleet)
		if err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list))
		for _, p := range list {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&cachev1alpha1.CachePolicy{}).
		// Conflicts depend on a policy's peers, and acceptance on the fleet and its ring.
		Watches(&cachev1alpha1.CachePolicy{}, peers).
		Watches(&cachev1alpha1.CacheFleet{}, peers).
		Watches(&corev1.ConfigMap{}, peers).
		WithOptions(copts).
		Named("cachepolicy").
		Complete(policies)
}

const serviceMonitorCRDName = "servicemonitors.monitoring.coreos.com"

func fleetsWantingMonitoring(ctx context.Context, c client.Client) []reconcile.Request {
	var fleets cachev1alpha1.CacheFleetList
	if err := c.List(ctx, &fleets); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for _, f := range fleets.Items {
		if f.Spec.Monitoring.ServiceMonitor.Enabled {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&f)})
		}
	}
	return reqs
}

func byFleetLabel(_ context.Context, o client.Object) []reconcile.Request {
	fleet := o.GetLabels()[LabelFleet]
	if fleet == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: o.GetNamespace(), Name: fleet}}}
}

func policyToFleet(_ context.Context, o client.Object) []reconcile.Request {
	p := o.(*cachev1alpha1.CachePolicy)
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: p.Namespace, Name: p.Spec.FleetRef.Name}}}
}
