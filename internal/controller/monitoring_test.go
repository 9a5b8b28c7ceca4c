package controller

import (
	"context"
	"fmt"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// TestServiceMonitorWithAndWithoutItsCRD starts without the monitoring.coreos.com CRD, then
// installs it (generated from prometheus-operator's types into test/crds).
func TestServiceMonitorWithAndWithoutItsCRD(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "mon", func(f *cachev1alpha1.CacheFleet) {
		f.Spec.Monitoring.ServiceMonitor = cachev1alpha1.ServiceMonitorSpec{Enabled: true, Interval: "15s", Labels: map[string]string{"release": "prom"}}
	}))
	waitForChildren(t, ns, "mon", 3)
	eventually(t, "CRDNotInstalled reported", func() error {
		f := getFleet(t, ns, "mon")
		if got := condition(f, cachev1alpha1.MonitoringReadyCondition); got != "False/CRDNotInstalled" {
			return fmt.Errorf("MonitoringReady %s", got)
		}
		if f.Status.Phase == cachev1alpha1.PhaseFailed || f.Status.ObservedGeneration != f.Generation {
			return fmt.Errorf("a missing optional CRD failed the fleet: %+v", f.Status)
		}
		return nil
	})

	// Installing the CRD alone must bring the ServiceMonitor: the controller watches CRDs.
	installServiceMonitorCRD(t)
	eventually(t, "ServiceMonitor created", func() error {
		sm := &monitoringv1.ServiceMonitor{}
		if err := exists(ns, "mon-agent", sm); err != nil {
			return err
		}
		if sm.Labels["release"] != "prom" || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Interval != "15s" {
			return fmt.Errorf("ServiceMonitor %+v", sm)
		}
		if got := condition(getFleet(t, ns, "mon"), cachev1alpha1.MonitoringReadyCondition); got != "True/Created" {
			return fmt.Errorf("MonitoringReady %s", got)
		}
		return nil
	})
	if !metav1.IsControlledBy(get(t, ns, "mon-agent", &monitoringv1.ServiceMonitor{}), getFleet(t, ns, "mon")) {
		t.Error("ServiceMonitor is not owned by the fleet")
	}

	f := getFleet(t, ns, "mon")
	f.Spec.Monitoring.ServiceMonitor.Enabled = false
	if err := k8s.Update(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ServiceMonitor removed when disabled", func() error {
		if err := exists(ns, "mon-agent", &monitoringv1.ServiceMonitor{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
}
