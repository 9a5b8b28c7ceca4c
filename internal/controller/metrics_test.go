package controller

import (
	"fmt"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

func TestEpochConvergenceClock(t *testing.T) {
	var c convergence
	t0 := time.Unix(1000, 0)
	st := cachev1alpha1.CacheFleetStatus{RingEpoch: 3, DesiredAgents: 4, ConvergedAgents: 1}
	if _, done := c.observe("ns/f", st, t0); done {
		t.Fatal("converged with 1 of 4 agents")
	}
	st.ConvergedAgents = 4
	if took, done := c.observe("ns/f", st, t0.Add(7*time.Second)); !done || took != 7*time.Second {
		t.Errorf("took %v (done %v), want 7s from the first sight of epoch 3", took, done)
	}
	if _, done := c.observe("ns/f", st, t0.Add(9*time.Second)); done {
		t.Error("a converged epoch seen again was timed again")
	}
	// A fleet first seen already converged (after a manager restart) is not timed.
	if _, done := c.observe("ns/other", st, t0); done {
		t.Error("an epoch converged before the manager saw it was timed")
	}
	// A new epoch restarts the clock.
	st = cachev1alpha1.CacheFleetStatus{RingEpoch: 4, DesiredAgents: 4, ConvergedAgents: 0}
	c.observe("ns/f", st, t0.Add(20*time.Second))
	st.ConvergedAgents = 4
	if took, _ := c.observe("ns/f", st, t0.Add(23*time.Second)); took != 3*time.Second {
		t.Errorf("epoch 4 took %v, want 3s", took)
	}
}

// TestFleetsByPhaseMetric: the manager's registry exports fleets by phase, counted from the
// API server's objects (envtest), every phase present.
func TestFleetsByPhaseMetric(t *testing.T) {
	ns := newNamespace(t)
	createFleet(t, newFleet(ns, "metrics", nil))
	eventually(t, "the fleet counted under its phase", func() error {
		phase := getFleet(t, ns, "metrics").Status.Phase
		if phase == "" {
			return fmt.Errorf("no phase yet")
		}
		families, err := metrics.Registry.Gather()
		if err != nil {
			return err
		}
		seen := map[string]float64{}
		for _, mf := range families {
			if mf.GetName() != "cachefleet_fleets" {
				continue
			}
			for _, m := range mf.GetMetric() {
				seen[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		for _, p := range []string{"Pending", "Provisioning", "Ready", "Degraded", "Failed"} {
			if _, ok := seen[p]; !ok {
				return fmt.Errorf("phase %s not exported: %v", p, seen)
			}
		}
		if seen[string(phase)] < 1 {
			return fmt.Errorf("fleet in phase %s not counted: %v", phase, seen)
		}
		return nil
	})
}
