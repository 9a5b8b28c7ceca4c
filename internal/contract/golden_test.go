package contract

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestDocumentGolden pins the wire form agents of other versions read: a change here is a
// change of the contract (bump SchemaVersion when it is incompatible).
func TestDocumentGolden(t *testing.T) {
	doc := &Document{
		SchemaVersion: SchemaVersion, Fleet: "web", Namespace: "shop", Algorithm: AlgorithmKetama, VirtualNodes: 160,
		Shards: []Shard{
			{Name: "shard-0", Primary: "web-shard-0-0.web-shards.shop.svc:6379", Replicas: []string{"web-shard-0-1.web-shards.shop.svc:6379"}},
			{Name: "shard-1", Primary: "web-shard-1-0.web-shards.shop.svc:6379"},
		},
		Tiers: Tiers{L1Enabled: true, L1MaxMemoryBytes: 64 << 20, L1MaxTTLMillis: 60000, DefaultTTLMillis: 3600000,
			MinUsableMillis: 5000, MaxValueBytes: 1 << 20},
		Invalidation: Invalidation{Channel: "cachefleet:shop/web", Secret: SecretRef{Name: "web-bus", Key: "key"}},
		Auth:         Auth{Enabled: true, Secret: &SecretRef{Name: "web-auth", Key: "password"}},
		Policies: []Policy{{Name: "sessions", Prefix: "session:", TTLMillis: 1800000, JitterPercent: 10, L1Enabled: true,
			L1TTLMillis: 5000, L1Mode: "ttl", MaxValueBytes: 65536, NegativeTTLMillis: 30000, InvalidateOnWrite: true,
			LeaseTTLMillis: 10000, Compression: "zstd", CompressionMinSize: 1024}},
	}
	doc.Seal(nil)
	got, err := doc.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "document.golden.json")
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got)+"\n" != string(want) {
		t.Errorf("the ring document's wire form changed (go test ./internal/contract -update if intended):\n%s", got)
	}
	back, err := Decode(want)
	if err != nil || back.Checksum != doc.Checksum {
		t.Errorf("the golden document does not decode to itself: %v", err)
	}
}
