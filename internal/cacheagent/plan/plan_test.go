package plan

import (
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestPlanGet(t *testing.T) {
	origin := &contract.Origin{URL: "http://origin"}
	for _, tc := range []struct {
		name        string
		rules       policy.Rules
		tx, tracker bool
		want        Get
		loopRuns    bool
	}{
		{"no L1: the shard's reply", policy.Rules{}, false, false, GetPlain, true},
		{"tracking L1: a tracked read", policy.Rules{L1: true, L1Tracking: true}, false, false, GetTracked, true},
		{"ttl-mode L1: a fill", policy.Rules{L1: true}, false, false, GetFill, false},
		{"tracking client, tracking L1: served by it", policy.Rules{L1: true, L1Tracking: true}, false, true, GetTracked, true},
		{"tracking client, ttl-mode L1: the shard's reply", policy.Rules{L1: true}, false, true, GetPlain, true},
		{"tracking client, no L1", policy.Rules{}, false, true, GetPlain, true},
		{"transaction, tracking L1: the shard's reply", policy.Rules{L1: true, L1Tracking: true}, true, false, GetPlain, true},
		{"transaction, ttl-mode L1: the shard's reply", policy.Rules{L1: true}, true, false, GetPlain, true},
		{"origin: read through off the loop", policy.Rules{Origin: origin}, false, false, GetPlain, false},
		{"origin, tracking L1", policy.Rules{L1: true, L1Tracking: true, Origin: origin}, false, false, GetTracked, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ForGet(&tc.rules, tc.tx, tc.tracker)
			if got != tc.want || LoopRunsGet(&tc.rules, got) != tc.loopRuns || got.Keeps() != (tc.want != GetPlain) {
				t.Errorf("plan %d (loop runs %v), want %d (loop runs %v)", got, LoopRunsGet(&tc.rules, got), tc.want, tc.loopRuns)
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
		{"reserved first byte", policy.Rules{}, string([]byte{codec.ReservedByte}) + "v", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LoopSendsSet(&tc.rules, []byte(tc.val)); got != tc.want {
				t.Errorf("LoopSendsSet = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWriteExpiry(t *testing.T) {
	if px := WriteExpiry(&policy.Rules{}); px != nil {
		t.Errorf("no policy TTL: PX %q, want none", px)
	}
	if px := WriteExpiry(&policy.Rules{TTL: 90 * time.Second}); string(px) != "90000" {
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
			kept, refused := ShareKept(len(tc.rules), func(k int) *policy.Rules { return &tc.rules[k] },
				func(k int) bool { asked++; return tc.admits[k] })
			if kept != tc.wantKept || refused != tc.wantRefused || asked != tc.wantAsked {
				t.Errorf("kept %v, %d not admitted, %d asked; want %v, %d, %d", kept, refused, asked, tc.wantKept, tc.wantRefused, tc.wantAsked)
			}
		})
	}
}
