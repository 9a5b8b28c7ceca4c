package controller

import (
	"context"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
			s.requeue = minPositive(s.requeue, monitoringRetry)
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
