package ring

import (
	"fmt"
	"github.com/cachefleet/cachefleet/internal/contract"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

func TestHashTag(t *testing.T) {
	tests := []struct{ key, want string }{
		{"plain", "plain"},
		{"{user:42}:cart", "user:42"},
		{"cart:{user:42}", "user:42"},
		{"{}:x", "{}:x"},
		{"{a}{b}", "a"},
		{"open{only", "open{only"},
		{"}{x}", "x"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := string(HashTag([]byte(tt.key))); got != tt.want {
			t.Errorf("HashTag(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func shardNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = "shard-" + strconv.Itoa(i)
	}
	return names
}

// owners computes every key's owner, for keys "key:0" .. "key:n-1".
func owners(r Ring, n int) []int {
	out := make([]int, n)
	buf := make([]byte, 0, 32)
	for i := range out {
		buf = strconv.AppendInt(append(buf[:0], "key:"...), int64(i), 10)
		out[i] = r.Owner(buf)
	}
	return out
}

func peakOverMean(owner []int, shards int) float64 {
	counts := make([]int, shards)
	for _, o := range owner {
		counts[o]++
	}
	peak := 0
	for _, c := range counts {
		peak = max(peak, c)
	}
	return float64(peak) / (float64(len(owner)) / float64(shards))
}

const balanceKeys = 1_000_000

func TestRendezvousBalanceAndMovement(t *testing.T) {
	prev := owners(NewRendezvous(shardNames(3), xxhash.Sum64), balanceKeys)
	for n := 3; n <= 16; n++ {
		cur := prev
		if n > 3 {
			cur = owners(NewRendezvous(shardNames(n), xxhash.Sum64), balanceKeys)
			moved := 0
			for i := range cur {
				if cur[i] != prev[i] {
					moved++
					if cur[i] != n-1 {
						t.Fatalf("%d shards: key %d moved between old shards (%d -> %d)", n, i, prev[i], cur[i])
					}
				}
			}
			frac, limit := float64(moved)/balanceKeys, 1.1/float64(n)
			if frac > limit {
				t.Errorf("adding shard %d moved %.4f of keys, limit %.4f", n, frac, limit)
			}
			t.Logf("%2d shards: moved %.4f (ideal %.4f)", n, frac, 1/float64(n))
		}
		if r := peakOverMean(cur, n); r > 1.05 {
			t.Errorf("%d shards: peak/mean load %.4f > 1.05", n, r)
		} else {
			t.Logf("%2d shards: peak/mean %.4f", n, r)
		}
		prev = cur
	}
}

func TestKetamaBalanceAndMovement(t *testing.T) {
	const keys = 200_000
	before := owners(NewKetama(shardNames(3), 160, xxhash.Sum64), keys)
	after := owners(NewKetama(shardNames(4), 160, xxhash.Sum64), keys)
	moved := 0
	for i := range after {
		if after[i] != before[i] {
			moved++
			if after[i] != 3 {
				t.Fatalf("key %d moved between old shards (%d -> %d)", i, before[i], after[i])
			}
		}
	}
	frac := float64(moved) / keys
	if frac > 1.1/4 {
		t.Errorf("ketama moved %.4f of keys adding a 4th shard, limit %.4f", frac, 1.1/4)
	}
	if r := peakOverMean(after, 4); r > 1.15 {
		t.Errorf("ketama peak/mean %.4f > 1.15", r)
	}
	t.Logf("ketama 3->4: moved %.4f, peak/mean %.4f", frac, peakOverMean(after, 4))
}

// TestPlacementIsPinned fails when a change to hashing would move keys in running fleets: every
// agent and the controller of every version must agree on owners.
func TestPlacementIsPinned(t *testing.T) {
	names := shardNames(5)
	rv, _ := New(contract.AlgorithmRendezvous, names, 0)
	kt, _ := New(contract.AlgorithmKetama, names, 160)
	got := ""
	for _, k := range []string{"a", "user:1", "user:2", "{user:1}:cart", "session:abcdef", "catalog:sku:991"} {
		got += fmt.Sprintf("%s=%d/%d ", k, rv.Owner([]byte(k)), kt.Owner([]byte(k)))
	}
	const want = "a=3/3 user:1=1/2 user:2=0/1 {user:1}:cart=1/2 session:abcdef=2/3 catalog:sku:991=0/4 "
	if got != want {
		t.Errorf("placement changed:\n got  %s\n want %s", got, want)
	}
	if rv.Owner([]byte("{user:1}:cart")) != rv.Owner([]byte("user:1")) {
		t.Error("a hash tag does not land with its plain key")
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	if _, err := New(contract.AlgorithmRendezvous, nil, 0); err == nil {
		t.Error("empty ring accepted")
	}
	if _, err := New("jump", []string{"shard-0"}, 0); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

func BenchmarkOwner(b *testing.B) {
	for _, alg := range []string{contract.AlgorithmRendezvous, contract.AlgorithmKetama} {
		for _, n := range []int{3, 16, 64} {
			r, _ := New(alg, shardNames(n), 160)
			key := []byte("session:0123456789abcdef")
			b.Run(fmt.Sprintf("%s/shards=%d", alg, n), func(b *testing.B) {
				for b.Loop() {
					_ = r.Owner(key)
				}
			})
		}
	}
}
