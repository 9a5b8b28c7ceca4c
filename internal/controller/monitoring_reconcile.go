package controller

import (
	"context"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var serviceMonitorGK = schema.GroupKind{Group: monitoringv1.SchemeGroupVersion.Group, Kind: monitoringv1.ServiceMonitorsKind}

// serviceMonitorInstalled asks discovery (through the REST mapper) whether the ServiceMonitor
// CRD is served. It is optional: without it monitoring is reported, not retried in a loop.
func (r *CacheFleetReconciler) serviceMonitorInstalled() (bool, error) {
	_, err := r.RESTMapper().RESTMapping(serviceMonitorGK, monitoringv1.SchemeGroupVersion.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// serviceMonitorCRDExists reads the CRD's metadata (from the watch's cache).
func (r *CacheFleetReconciler) serviceMonitorCRDExists(ctx context.Context) bool {
	crd := &metav1.PartialObjectMetadata{}
	crd.SetGroupVersionKind(apiextensionsv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	return r.Get(ctx, client.ObjectKey{Name: serviceMonitorCRDName}, crd) == nil
}

// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;list;watch

// reconcileMonitoring creates, updates or deletes the agents' ServiceMonitor.
func (r *CacheFleetReconciler) reconcileMonitoring(ctx context.Context, s *fleetScope) error {
	f := s.fleet
	desired := buildServiceMonitor(f)
	s.obs.monitoring.enabled = desired != nil
	installed, err := r.serviceMonitorInstalled()
	if err != nil {
		return err
	}
	s.obs.monitoring.crdInstalled = installed
	if !installed {
		if desired != nil {
			// The CRD object can exist a moment before discovery serves its API: check again
			// soon then; otherwise the CRD watch (or a slow retry) brings us back.
			retry := monitoringRetry
			if r.serviceMonitorCRDExists(ctx) {
				retry = 2 * time.Second
			}
			s.requeue = minPositive(s.requeue, retry)
		}
		return nil
	}
	if desired == nil {
		return r.deleteIfExists(ctx, f, &monitoringv1.ServiceMonitor{ObjectMeta: metav1.ObjectMeta{Namespace: f.Namespace, Name: agentName(f)}})
	}
	if err := r.applyAndRecord(ctx, f, desired); err != nil {
		return err
	}
	s.obs.monitoring.present = true
	return nil
}
