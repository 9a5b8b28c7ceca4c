package contract

import (
	"fmt"
	"strings"
	"testing"
)

func sampleDoc() *Document {
	d := &Document{
		SchemaVersion: SchemaVersion, Fleet: "f", Namespace: "ns", Algorithm: AlgorithmRendezvous,
		Shards: []Shard{{Name: "shard-0", Primary: "a:6379"}, {Name: "shard-1", Primary: "b:6379"}},
		Policies: []Policy{
			{Name: "short", Prefix: "s"},
			{Name: "sessions", Prefix: "session:"},
			{Name: "sess", Prefix: "sess"},
		},
	}
	SortPolicies(d.Policies)
	return d
}

func TestPolicyForLongestPrefixWins(t *testing.T) {
	d := sampleDoc()
	tests := []struct{ key, want string }{
		{"session:1", "sessions"},
		{"sessx", "sess"},
		{"sx", "short"},
		{"session:", "sessions"},
		{"other", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got := ""
		if p := d.PolicyFor([]byte(tt.key)); p != nil {
			got = p.Name
		}
		if got != tt.want {
			t.Errorf("PolicyFor(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestSealEpoch(t *testing.T) {
	first := sampleDoc()
	first.Seal(nil)
	if first.Epoch != 1 || first.Checksum == "" {
		t.Fatalf("first seal: epoch %d checksum %q", first.Epoch, first.Checksum)
	}
	same := sampleDoc()
	same.Seal(first)
	if same.Epoch != 1 || same.Checksum != first.Checksum {
		t.Errorf("unchanged content moved the epoch: %d", same.Epoch)
	}
	changed := sampleDoc()
	changed.Shards = append(changed.Shards, Shard{Name: "shard-2", Primary: "c:6379"})
	changed.Seal(same)
	if changed.Epoch != 2 || changed.Checksum == same.Checksum {
		t.Errorf("changed content: epoch %d, checksum equal %v", changed.Epoch, changed.Checksum == same.Checksum)
	}
}

func TestDecode(t *testing.T) {
	d := sampleDoc()
	d.Seal(nil)
	data, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if back.Checksum != d.Checksum || len(back.Shards) != 2 || back.Policies[0].Name != "sessions" {
		t.Errorf("round trip lost data: %+v", back)
	}

	tampered := strings.Replace(string(data), "a:6379", "evil:6379", 1)
	bad := map[string]string{
		"not json":     "{",
		"tampered":     tampered,
		"wrong schema": strings.Replace(string(data), `"schemaVersion": 1`, `"schemaVersion": 9`, 1),
		"no shards":    `{"schemaVersion":1,"shards":[]}`,
	}
	for name, in := range bad {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSealAboveNeverLowersTheEpoch(t *testing.T) {
	base := func(shards int) *Document {
		d := &Document{SchemaVersion: SchemaVersion, Fleet: "f", Namespace: "n", Algorithm: AlgorithmRendezvous}
		for i := range shards {
			d.Shards = append(d.Shards, Shard{Name: fmt.Sprintf("shard-%d", i), Primary: "a:1"})
		}
		return d
	}
	prev := base(3)
	prev.Seal(nil)
	prev.Epoch = 7
	for _, c := range []struct {
		name     string
		doc      *Document
		previous *Document
		floor    int64
		want     int64
	}{
		{"first publication", base(3), nil, 0, 1},
		{"unchanged", base(3), prev, 0, 7},
		{"changed", base(4), prev, 0, 8},
		{"previous lost, status remembers 7", base(3), nil, 7, 8},
		{"previous older than status", base(3), prev, 9, 10},
		{"changed, status behind", base(4), prev, 3, 8},
	} {
		c.doc.SealAbove(c.previous, c.floor)
		if c.doc.Epoch != c.want {
			t.Errorf("%s: epoch %d, want %d", c.name, c.doc.Epoch, c.want)
		}
	}
	if got := PeekEpoch([]byte(`{"schemaVersion": 99, "epoch": 12}`)); got != 12 {
		t.Errorf("PeekEpoch of another schema = %d", got)
	}
	if got := PeekEpoch([]byte(`garbage`)); got != 0 {
		t.Errorf("PeekEpoch of garbage = %d", got)
	}
}
