package server

import (
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestPlanGet(t *testing.T) {
	origin := &contract.Origin{URL: "http://origin"}
	for _, tc := range []struct {
		name     string
		rules    policy.Rules
		bypass   bool
		want     getPlan
		loopRuns bool
	}{
		{"no L1: the shard's reply", policy.Rules{}, false, getPlain, true},
		{"tracking L1: a tracked read", policy.Rules{L1: true, L1Tracking: true}, false, getTracked, true},
		{"ttl-mode L1: a fill", policy.Rules{L1: true}, false, getFill, false},
		{"tracking client: the shard's reply", policy.Rules{L1: true, L1Tracking: true}, true, getPlain, true},
		{"transaction, ttl-mode L1: the shard's reply", policy.Rules{L1: true}, true, getPlain, true},
		{"origin: read through off the loop", policy.Rules{Origin: origin}, false, getPlain, false},
		{"origin, tracking L1", policy.Rules{L1: true, L1Tracking: true, Origin: origin}, false, getTracked, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planGet(&tc.rules, tc.bypass)
			if got != tc.want || loopRunsGet(&tc.rules, got) != tc.loopRuns || got.keeps() != (tc.want != getPlain) {
				t.Errorf("plan %d (loop runs %v), want %d (loop runs %v)", got, loopRunsGet(&tc.rules, got), tc.want, tc.loopRuns)
			}
		})
	}
}

func TestLoopSendsSet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules policy.Rules
		val   string
		want  bool
	}{
		{"plain", policy.Rules{}, "v", true},
		{"empty value", policy.Rules{}, "", true},
		{"with a policy TTL", policy.Rules{TTL: time.Minute}, "v", true},
		{"over the limit: refused off the loop", policy.Rules{MaxValueBytes: 1}, "vv", false},
		{"at the limit", policy.Rules{MaxValueBytes: 2}, "vv", true},
		{"compressed", policy.Rules{Compression: "zstd"}, "v", false},
		{"read through", policy.Rules{Origin: &contract.Origin{}}, "v", false},
		{"lease", policy.Rules{LeaseTTL: time.Second}, "v", false},
		{"reserved first byte", policy.Rules{}, string([]byte{reservedByte}) + "v", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := loopSendsSet(&tc.rules, []byte(tc.val)); got != tc.want {
				t.Errorf("loopSendsSet = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWriteExpiry(t *testing.T) {
	if px := writeExpiry(&policy.Rules{}); px != nil {
		t.Errorf("no policy TTL: PX %q, want none", px)
	}
	if px := writeExpiry(&policy.Rules{TTL: 90 * time.Second}); string(px) != "90000" {
		t.Errorf("PX %q, want 90000", px)
	}
}

func TestShareKept(t *testing.T) {
	tracking := policy.Rules{L1: true, L1Tracking: true}
	ttlMode := policy.Rules{L1: true}
	withOrigin := policy.Rules{L1: true, L1Tracking: true, Origin: &contract.Origin{}}
	for _, tc := range []struct {
		name        string
		rules       []policy.Rules
		admits      []bool // by key; a key not asked must not be
		wantKept    bool
		wantRefused int
		wantAsked   int
	}{
		{"every key tracking and admitted", []policy.Rules{tracking, tracking}, []bool{true, true}, true, 0, 2},
		{"one refused: the share is one MGET, its tracking keys not admitted", []policy.Rules{tracking, tracking, tracking}, []bool{true, false, true}, false, 3, 2},
		{"a ttl-mode key: one MGET", []policy.Rules{tracking, ttlMode}, []bool{true, true}, false, 1, 1},
		{"a key with an origin: one MGET", []policy.Rules{withOrigin, tracking}, []bool{true, true}, false, 1, 1},
		{"no L1: one MGET, nothing refused", []policy.Rules{{}, {}}, nil, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked := 0
			kept, refused := shareKept(len(tc.rules), func(k int) *policy.Rules { return &tc.rules[k] },
				func(k int) bool { asked++; return tc.admits[k] })
			if kept != tc.wantKept || refused != tc.wantRefused || asked != tc.wantAsked {
				t.Errorf("kept %v, %d not admitted, %d asked; want %v, %d, %d", kept, refused, asked, tc.wantKept, tc.wantRefused, tc.wantAsked)
			}
		})
	}
}
