package controller

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	cachev1alpha1 "github.com/cachefleet/cachefleet/api/v1alpha1"
)

// The manager's own metrics, next to controller-runtime's (reconcile counts and durations,
// work queue): what a platform team watches about the fleets rather than about the controller.

var (
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cachefleet_reconcile_errors_total",
		Help: "Failed reconcile phases of CacheFleets, by phase.",
	}, []string{"phase"})
	epochConvergence = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cachefleet_epoch_convergence_seconds",
		Help:    "Time from publishing a ring epoch to every scheduled agent reporting it.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
	})
	descFleets = prometheus.NewDesc("cachefleet_fleets", "CacheFleets by status phase.", []string{"phase"}, nil)
)

// fleetsCollector counts fleets by phase from the manager's cache at scrape time, so the
// gauge is right after restarts and deletions without bookkeeping.
type fleetsCollector struct{ reader client.Reader }

func (c fleetsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descFleets }

func (c fleetsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list cachev1alpha1.CacheFleetList
	if err := c.reader.List(ctx, &list); err != nil {
		return
	}
	counts := map[cachev1alpha1.FleetPhase]int{}
	for _, p := range []cachev1alpha1.FleetPhase{cachev1alpha1.PhasePending, cachev1alpha1.PhaseProvisioning,
		cachev1alpha1.PhaseReady, cachev1alpha1.PhaseDegraded, cachev1alpha1.PhaseFailed} {
		counts[p] = 0 // every phase is exported, zero included, so alerts can compare
	}
	for _, f := range list.Items {
		counts[f.Status.Phase]++
	}
	for p, n := range counts {
		name := string(p)
		if name == "" {
			name = "Unknown"
		}
		ch <- prometheus.MustNewConstMetric(descFleets, prometheus.GaugeValue, float64(n), name)
	}
}

var registerOnce sync.Once

// registerMetrics adds the manager's metrics to controller-runtime's registry (served on the
// manager's metrics endpoint).
func registerMetrics(reader client.Reader) {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(reconcileErrors, epochConvergence, fleetsCollector{reader: reader})
	})
}

// convergence remembers when each fleet's latest epoch was published, until its agents report it.
type convergence struct {
	mu      sync.Mutex
	pending map[string]epochStart // fleet namespace/name -> its latest epoch
}

type epochStart struct {
	epoch     int64
	at        time.Time
	converged bool // reported once; the same epoch is not timed again
}

// observe is called with every computed status: a new epoch starts a clock, and the first
// status in which every desired agent reports it stops the clock and returns the time.
func (c *convergence) observe(fleet string, st cachev1alpha1.CacheFleetStatus, now time.Time) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		c.pending = map[string]epochStart{}
	}
	if st.RingEpoch == 0 {
		return 0, false
	}
	p, ok := c.pending[fleet]
	switch {
	case ok && p.epoch > st.RingEpoch, ok && p.epoch == st.RingEpoch && p.converged:
		return 0, false
	case !ok || p.epoch != st.RingEpoch:
		p = epochStart{epoch: st.RingEpoch, at: now}
	}
	if st.DesiredAgents > 0 && st.ConvergedAgents >= st.DesiredAgents {
		p.converged = true
		c.pending[fleet] = p
		// First seen converged (a manager restart): its publish time is unknown, so untimed.
		return now.Sub(p.at), ok
	}
	c.pending[fleet] = p
	return 0, false
}

func (c *convergence) forget(fleet string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, fleet)
}
