package policy

import (
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

func doc() *contract.Document {
	d := &contract.Document{
		Tiers: contract.Tiers{L1Enabled: true, L1MaxTTLMillis: 60_000, DefaultTTLMillis: 3_600_000, MinUsableMillis: 5_000, MaxValueBytes: 1 << 20},
		Policies: []contract.Policy{
			{Name: "sessions", Prefix: "session:", TTLMillis: 1_800_000, JitterPercent: 10, L1Enabled: true, L1Mode: "tracking", L1TTLMillis: 120_000, MaxValueBytes: 1024, InvalidateOnWrite: true},
			{Name: "catalog", Prefix: "catalog:", L1Enabled: true, L1Mode: "ttl", L1TTLMillis: 20_000, Compression: "zstd", CompressionMinSize: 1024, NegativeTTLMillis: 30_000},
			{Name: "nol1", Prefix: "raw:", L1Enabled: false, L1Mode: "tracking"},
		},
	}
	contract.SortPolicies(d.Policies)
	return d
}

func TestFor(t *testing.T) {
	d := doc()
	tests := []struct {
		key  string
		want Rules
	}{
		{"other", Rules{TTL: time.Hour, MaxValueBytes: 1 << 20, L1: true, L1Tracking: true, L1TTL: time.Minute, MinUsable: 5 * time.Second, InvalidateOnWrite: true}},
		// A policy's L1 TTL above the fleet's maximum is capped.
		{"session:1", Rules{Name: "sessions", TTL: 30 * time.Minute, JitterPercent: 10, MaxValueBytes: 1024, L1: true, L1Tracking: true, L1TTL: time.Minute, MinUsable: 5 * time.Second, InvalidateOnWrite: true}},
		// Unset fields fall back to the fleet.
		{"catalog:9", Rules{Name: "catalog", TTL: time.Hour, MaxValueBytes: 1 << 20, L1: true, L1TTL: 20 * time.Second, MinUsable: 5 * time.Second, Compression: "zstd", CompressionMinSize: 1024, NegativeTTL: 30 * time.Second}},
		{"raw:x", Rules{Name: "nol1", TTL: time.Hour, MaxValueBytes: 1 << 20, L1: false, L1Tracking: true, L1TTL: time.Minute, MinUsable: 5 * time.Second}},
	}
	for _, tt := range tests {
		if got := For(d, []byte(tt.key)); got != tt.want {
			t.Errorf("For(%q) =\n %+v\nwant\n %+v", tt.key, got, tt.want)
		}
	}
	d.Tiers.L1Enabled = false
	if For(d, []byte("catalog:1")).L1 {
		t.Error("a policy turned L1 on although the fleet has it off")
	}
}

func TestOriginRules(t *testing.T) {
	o := &contract.Origin{URL: "http://o/{key}", TimeoutMillis: 2000, AllowedStatus: []int32{200}}
	d := doc()
	d.Policies = append(d.Policies,
		contract.Policy{Name: "items", Prefix: "item:", L1Enabled: true, L1Mode: "tracking", Origin: o, StaleWhileRevalidateMillis: 30_000, StaleIfErrorMillis: 3_600_000},
		contract.Policy{Name: "slow", Prefix: "slow:", Origin: o, LeaseTTLMillis: 10_000})
	contract.SortPolicies(d.Policies)
	r := For(d, []byte("item:1"))
	if r.Origin != o || r.Prefix != "item:" || r.StaleWhileRevalidate != 30*time.Second || r.StaleIfError != time.Hour || r.StaleWindow() != time.Hour {
		t.Errorf("origin rules = %+v", r)
	}
	// A fetch holds the key's lease for longer than the origin may take to answer.
	if r.LeaseTTL != 3*time.Second || r.OriginTimeout() != 2*time.Second {
		t.Errorf("lease %v, origin timeout %v; want 3s and 2s", r.LeaseTTL, r.OriginTimeout())
	}
	if got := For(d, []byte("slow:1")).LeaseTTL; got != 10*time.Second {
		t.Errorf("a longer stampede lease is kept: got %v", got)
	}
	if r := For(d, []byte("catalog:1")); r.Origin != nil || r.OriginTimeout() != 0 || r.StaleWindow() != 0 {
		t.Errorf("a policy without an origin got origin rules: %+v", r)
	}
}

func TestWriteTTLJitter(t *testing.T) {
	r := Rules{TTL: 100 * time.Second, JitterPercent: 10}
	if got := r.WriteTTL(func(n int64) int64 { return 0 }); got != 100*time.Second {
		t.Errorf("lowest = %v", got)
	}
	if got := r.WriteTTL(func(n int64) int64 { return n - 1 }); got != 110*time.Second {
		t.Errorf("highest = %v", got)
	}
	for i := 0; i < 1000; i++ {
		if got := r.WriteTTL(nil); got < 100*time.Second || got > 110*time.Second {
			t.Fatalf("jittered TTL %v out of [100s, 110s]", got)
		}
	}
	if got := (Rules{TTL: time.Minute}).WriteTTL(nil); got != time.Minute {
		t.Errorf("no jitter: %v", got)
	}
}

func TestL1Lifetime(t *testing.T) {
	r := Rules{L1: true, L1TTL: 60 * time.Second, MinUsable: 5 * time.Second}
	tests := []struct {
		pttl int64
		want time.Duration
	}{
		{-1, 60 * time.Second},      // no expiry in L2: L1 TTL
		{-2, 0},                     // gone
		{300_000, 60 * time.Second}, // L2 outlives L1 TTL
		{30_000, 30 * time.Second},  // never outlive L2
		{4_999, 0},                  // under the minimum usable TTL: not kept
		{5_000, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := r.L1Lifetime(tt.pttl); got != tt.want {
			t.Errorf("L1Lifetime(%d) = %v, want %v", tt.pttl, got, tt.want)
		}
	}
	if (Rules{L1: false, L1TTL: time.Minute}).L1Lifetime(-1) != 0 {
		t.Error("L1 off but a lifetime was given")
	}
}
