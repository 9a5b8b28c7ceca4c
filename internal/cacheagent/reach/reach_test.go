package reach

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestProberReportsALostPrimaryUntilItAnswers: a stopped shard is lost from the first failed
// probe, keeps that time while it stays down, and is reached again from its first answer;
// each change is signalled once.
func TestProberReportsALostPrimaryUntilItAnswers(t *testing.T) {
	up, down := tu.StartRedis(t, "pw"), tu.StartRedis(t, "pw")
	var changes atomic.Int32
	p := &Prober{
		Targets: func() ([]Target, string) {
			return []Target{{Shard: "shard-0", Addr: up.Addr()}, {Shard: "shard-1", Addr: down.Addr()}}, "pw"
		},
		Changed: func() { changes.Add(1) },
	}
	ctx := context.Background()
	p.Once(ctx, time.Second)
	if lost := p.Lost(); len(lost) != 0 || changes.Load() != 0 {
		t.Fatalf("lost %v, %d changes, with both shards up", lost, changes.Load())
	}
	down.Stop()
	p.Once(ctx, time.Second)
	first := p.Lost()["shard-1"]
	if first.IsZero() || len(p.Lost()) != 1 || changes.Load() != 1 {
		t.Fatalf("lost %v, %d changes, after shard-1 stopped", p.Lost(), changes.Load())
	}
	p.Once(ctx, time.Second)
	if got := p.Lost()["shard-1"]; !got.Equal(first) || changes.Load() != 1 {
		t.Errorf("still down: since %v (was %v), %d changes", got, first, changes.Load())
	}
	down.Start()
	p.Once(ctx, time.Second)
	if lost := p.Lost(); len(lost) != 0 || changes.Load() != 2 {
		t.Errorf("lost %v, %d changes, once it answers again", lost, changes.Load())
	}
}

// TestProberForgetsShardsThatLeftTheRing: a lost shard removed from the ring is no longer
// reported, and that is a change.
func TestProberForgetsShardsThatLeftTheRing(t *testing.T) {
	var changes atomic.Int32
	targets := []Target{{Shard: "shard-0", Addr: "a"}, {Shard: "shard-1", Addr: "b"}}
	p := &Prober{
		Targets: func() ([]Target, string) { return targets, "" },
		Changed: func() { changes.Add(1) },
		probe: func(_ context.Context, tg Target, _ string, _ time.Duration) error {
			if tg.Shard == "shard-1" {
				return context.DeadlineExceeded
			}
			return nil
		},
	}
	p.Once(context.Background(), time.Second)
	targets = targets[:1]
	p.Once(context.Background(), time.Second)
	if lost := p.Lost(); len(lost) != 0 || changes.Load() != 2 {
		t.Errorf("lost %v, %d changes, after the lost shard left", lost, changes.Load())
	}
}
