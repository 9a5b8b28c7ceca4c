package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestPlanGet(t *testing.T) {
	origin := &contract.Origin{URL: "http://origin"}
	for _, tc := range []struct {
		name        string
		rules       policy.Rules
		tx, tracker bool
		want        getPlan
		loopRuns    bool
	}{
		{"no L1: the shard's reply", policy.Rules{}, false, false, getPlain, true},
		{"tracking L1: a tracked read", policy.Rules{L1: true, L1Tracking: true}, false, false, getTracked, true},
		{"ttl-mode L1: a fill", policy.Rules{L1: true}, false, false, getFill, false},
		{"tracking client, tracking L1: served by it", policy.Rules{L1: true, L1Tracking: true}, false, true, getTracked, true},
		{"tracking client, ttl-mode L1: the shard's reply", policy.Rules{L1: true}, false, true, getPlain, true},
		{"tracking client, no L1", policy.Rules{}, false, true, getPlain, true},
		{"transaction, tracking L1: the shard's reply", policy.Rules{L1: true, L1Tracking: true}, true, false, getPlain, true},
		{"transaction, ttl-mode L1: the shard's reply", policy.Rules{L1: true}, true, false, getPlain, true},
		{"origin: read through off the loop", policy.Rules{Origin: origin}, false, false, getPlain, false},
		{"origin, tracking L1", policy.Rules{L1: true, L1Tracking: true, Origin: origin}, false, false, getTracked, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planGet(&tc.rules, tc.tx, tc.tracker)
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

func TestKeySpecs(t *testing.T) {
	args := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, a := range s {
			out[i] = []byte(a)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		spec keySpec
		args [][]byte
		want string
	}{
		{"one key", oneKey, args("GET", "k"), "[k]"},
		{"two keys", twoKeys, args("LMOVE", "a", "b", "LEFT", "RIGHT"), "[a b]"},
		{"all keys", allKeys, args("DEL", "a", "b", "c"), "[a b c]"},
		{"pairs", keyValuePairs, args("MSET", "a", "1", "b", "2"), "[a b]"},
		{"after the operation", keysAfterOne, args("BITOP", "AND", "d", "s1", "s2"), "[d s1 s2]"},
		{"a subcommand's key", subcommandKey, args("OBJECT", "ENCODING", "k"), "[k]"},
		{"a subcommand without one", subcommandKey, args("OBJECT", "HELP"), "[]"},
		{"script keys", scriptKeys, args("EVAL", "s", "2", "a", "b", "arg"), "[a b]"},
		{"script without keys", scriptKeys, args("EVAL", "s", "0", "arg"), "[]"},
		{"numkeys over the arguments", scriptKeys, args("EVAL", "s", "3", "a"), "[]"},
		{"numkeys not a number", numkeysFirst, args("ZUNION", "x", "a"), "[]"},
		{"numkeys first", numkeysFirst, args("ZUNION", "2", "a", "b", "WEIGHTS", "1", "2"), "[a b]"},
		{"destination and numkeys", destAndNumkeys, args("ZUNIONSTORE", "d", "2", "a", "b"), "[d a b]"},
		{"sort stores", sortKeys, args("SORT", "l", "BY", "w_*", "STORE", "dst"), "[l dst]"},
		{"sort reads", sortKeys, args("SORT", "l", "ALPHA"), "[l]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(tc.spec.of(tc.args)); got != tc.want {
				t.Errorf("keys %s, want %s", got, tc.want)
			}
		})
	}
}
