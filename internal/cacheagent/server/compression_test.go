package server_test

import (
	"strings"
	"testing"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// withPolicy gives agent a ring with one more policy.
func withPolicy(t testing.TB, a *agent, p contract.Policy) {
	t.Helper()
	doc := *a.srv.Router().Doc
	doc.Policies = append([]contract.Policy{p}, doc.Policies...)
	contract.SortPolicies(doc.Policies)
	doc.Seal(a.srv.Router().Doc)
	if err := a.srv.SetRing(&doc); err != nil {
		t.Fatal(err)
	}
}

func TestCompressedPolicyStoresLessAndReadsBackWhatWasWritten(t *testing.T) {
	shards := twoShards(t)
	for _, mode := range []string{"tracking", "ttl"} {
		t.Run(mode, func(t *testing.T) {
			a := startAgent(t, shards, defaults())
			withPolicy(t, a, contract.Policy{Name: "blobs", Prefix: "blob:", L1Enabled: true, L1Mode: mode,
				MaxValueBytes: 64 << 10, Compression: codec.Zstd, CompressionMinSize: 1024})
			c := a.dial(t)
			value := strings.Repeat(`{"sku":"A-1","name":"blue mug","price":12.5},`, 92)
			key := "blob:" + mode
			if got := c.do("SET", key, value); got != "OK" {
				t.Fatalf("SET = %q", got)
			}
			raw, err := shards[a.srv.Router().Index([]byte(key))].Do("GET", key)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(raw, codec.Marker) || len(raw)*4 > len(value) {
				t.Errorf("the shard holds %d bytes for a %d-byte value: not compressed", len(raw), len(value))
			}
			hits := a.srv.Stats.L1Hits.Load()
			for i := range 2 { // the second read is served by the L1
				if got := c.do("GET", key); got != value {
					t.Fatalf("GET #%d returned %d bytes, want the %d written", i+1, len(got), len(value))
				}
			}
			if got := a.srv.Stats.L1Hits.Load(); got != hits+1 {
				t.Errorf("L1 hits %d -> %d over two reads, want one", hits, got)
			}
			if got := c.do("MGET", key, "blob:missing"); got != "["+value+" (nil)]" {
				t.Errorf("MGET returned %d bytes", len(got))
			}
			if got := c.do("SET", "blob:n", "41"); got != "OK" {
				t.Fatal(got)
			}
			if got := c.do("INCR", "blob:n"); got != "42" {
				t.Errorf("INCR on a small value under a compressed policy = %q (small values stay as written)", got)
			}
			if got := c.do("SET", key, "other", "GET"); got != value {
				t.Errorf("SET GET returned %d bytes of the old value, want %d", len(got), len(value))
			}
			c.do("SET", key, value)
			if got := c.do("GETDEL", key); got != value {
				t.Errorf("GETDEL returned %d bytes", len(got))
			}
		})
	}
}
