package controller

import (
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// buildServiceMonitor scrapes every agent's /metrics; nil when monitoring is off.
func buildServiceMonitor(f *cachev1alpha1.CacheFleet) *monitoringv1.ServiceMonitor {
	sm := f.Spec.Monitoring.ServiceMonitor
	if !sm.Enabled {
		return nil
	}
	meta := objectMeta(f, agentName(f), ComponentAgent)
	for k, v := range sm.Labels {
		if _, ours := meta.Labels[k]; !ours {
			meta.Labels[k] = v
		}
	}
	ep := monitoringv1.Endpoint{Port: "http", Path: "/metrics", Interval: monitoringv1.Duration(sm.Interval)}
	if f.Spec.Auth.Enabled {
		// An agent with a password answers /metrics only with it, as its other HTTP routes.
		ref := f.PasswordSecret()
		ep.Authorization = &monitoringv1.SafeAuthorization{Type: "Bearer", Credentials: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: ref.Key}}
	}
	return &monitoringv1.ServiceMonitor{
		ObjectMeta: meta,
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector:  metav1.LabelSelector{MatchLabels: selectorLabels(f, ComponentAgent)},
			Endpoints: []monitoringv1.Endpoint{ep},
		},
	}
}
