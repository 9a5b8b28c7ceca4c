package readthrough

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// The shard's value decides whether the origin is asked at all; these cases need no shard.
func TestResolveAnswersWhatTheShardHeldWhileItIsFresh(t *testing.T) {
	var asked atomic.Int64
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { asked.Add(1); _, _ = w.Write([]byte("origin")) }))
	defer o.Close()
	var stats Stats
	f := New(&lease.Leases{}, &stats, nil, nil, make(chan struct{}))
	rules := policy.Rules{Name: "items", Prefix: "item:", Origin: &contract.Origin{URL: o.URL + "/{key}", TimeoutMillis: 500, AllowedStatus: []int32{200}},
		StaleWhileRevalidate: time.Minute, StaleIfError: time.Hour, LeaseTTL: time.Second, MaxValueBytes: 1 << 20}
	fresh := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	for _, tc := range []struct {
		name  string
		rules policy.Rules
		raw   string
		want  Answer
	}{
		{"a policy without an origin", policy.Rules{}, "v", Answer{FromShard: true, Outcome: OutcomeHit}},
		{"a value a client wrote", rules, "v", Answer{FromShard: true, Outcome: OutcomeHit}},
		{"a fresh value", rules, codec.Stamp(fresh, "v"), Answer{FromShard: true, Outcome: OutcomeHit, FreshUntil: fresh}},
	} {
		a := f.Resolve(context.Background(), nil, "item:1", tc.rules, tc.raw, true, false)
		if !a.FreshUntil.Equal(tc.want.FreshUntil) || a.FromShard != tc.want.FromShard || a.Outcome != tc.want.Outcome || a.Err != nil {
			t.Errorf("%s: %+v, want %+v", tc.name, *a, tc.want)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the origin was asked %d times for values the shard answers", n)
	}
	// The key's shard is down: the origin answers, nothing is stored, readers share the flight.
	a := f.Resolve(context.Background(), nil, "item:2", rules, "", false, true)
	if a.FromShard || !a.Present || a.Value != "origin" || a.Stored || a.Err != nil {
		t.Errorf("a read while the shard is down: %+v", *a)
	}
	if asked.Load() != 1 || stats.Unstored.Load() != 1 || stats.OK.Load() != 1 {
		t.Errorf("origin asked %d, unstored %d, ok %d; want 1 each", asked.Load(), stats.Unstored.Load(), stats.OK.Load())
	}
}
