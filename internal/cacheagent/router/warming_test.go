package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

func layout(names ...string) *contract.Document {
	d := &contract.Document{SchemaVersion: contract.SchemaVersion, Algorithm: contract.AlgorithmRendezvous}
	for _, n := range names {
		d.Shards = append(d.Shards, contract.Shard{Name: n, Primary: "127.0.0.1:1"})
	}
	return d
}

func TestPreviousOwner(t *testing.T) {
	cases := []struct {
		name          string
		previous, now []string
		until         time.Duration
		// wantLookups: some keys have a previous owner to ask (their owner changed and the
		// previous one is still a member).
		wantLookups bool
	}{
		{"scale-up within the window", []string{"a", "b", "c"}, []string{"a", "b", "c", "d"}, time.Minute, true},
		{"scale-up after the window", []string{"a", "b", "c"}, []string{"a", "b", "c", "d"}, -time.Second, false},
		{"scale-in: the previous owner left", []string{"a", "b", "c", "d"}, []string{"a", "b", "c"}, time.Minute, false},
		{"same members", []string{"a", "b"}, []string{"a", "b"}, time.Minute, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := layout(tc.now...)
			doc.Warming = &contract.Warming{Algorithm: contract.AlgorithmRendezvous, Members: tc.previous,
				UntilMillis: time.Now().Add(tc.until).UnixMilli()}
			r, err := New(doc, nil, func(sh contract.Shard) ShardConfig { return ShardConfig{Name: sh.Name, Addr: sh.Primary} })
			if err != nil {
				t.Fatal(err)
			}
			before, err := New(layout(tc.previous...), nil, func(sh contract.Shard) ShardConfig { return ShardConfig{Name: sh.Name, Addr: sh.Primary} })
			if err != nil {
				t.Fatal(err)
			}
			lookups := 0
			for i := range 1000 {
				key := []byte(fmt.Sprint("key:", i))
				prev := r.PreviousOwner(key)
				if prev == nil {
					continue
				}
				lookups++
				if prev.Name() != before.ShardFor(key).Name() {
					t.Fatalf("%s: previous owner %s, but the previous layout placed it on %s", key, prev.Name(), before.ShardFor(key).Name())
				}
				if prev == r.ShardFor(key) {
					t.Fatalf("%s: previous owner is its owner", key)
				}
			}
			if got := lookups > 0; got != tc.wantLookups {
				t.Fatalf("%d of 1000 keys have a previous owner to ask; want some: %v", lookups, tc.wantLookups)
			}
			if r.Warming() != (tc.until > 0) {
				t.Fatalf("Warming() = %v", r.Warming())
			}
		})
	}
}
