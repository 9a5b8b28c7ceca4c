package server_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// TestHitsAreCountedPerPolicy: GET reads are counted by tier under the policy of their key
// (the dashboard's hit rate per policy), and under "default" for keys no policy matches.
func TestHitsAreCountedPerPolicy(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	withPolicy(t, a, contract.Policy{Name: "sessions", Prefix: "sess:", L1Enabled: true, L1Mode: "ttl",
		L1TTLMillis: 60_000, TTLMillis: 3_600_000, MaxValueBytes: 1024})
	c := a.dial(t)
	c.do("SET", "sess:1", "v")
	c.do("GET", "sess:1") // L1 miss, L2 hit (fills L1)
	c.do("GET", "sess:1") // L1 hit
	c.do("GET", "sess:missing")
	c.do("GET", "other")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.srv.Collector())
	for _, tc := range []struct {
		metric, policy, tier string
		want                 float64
	}{
		{"cachefleet_agent_policy_hits_total", "sessions", "l1", 1},
		{"cachefleet_agent_policy_hits_total", "sessions", "l2", 1},
		{"cachefleet_agent_policy_misses_total", "sessions", "l2", 1},
		{"cachefleet_agent_policy_misses_total", "default", "l2", 1},
	} {
		got := 0.0
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range families {
			if mf.GetName() != tc.metric {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["policy"] == tc.policy && labels["tier"] == tc.tier {
					got = m.GetCounter().GetValue()
				}
			}
		}
		if got != tc.want {
			t.Errorf("%s{policy=%q,tier=%q} = %v, want %v", tc.metric, tc.policy, tc.tier, got, tc.want)
		}
	}
}
