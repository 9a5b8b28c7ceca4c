package reach

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// TestProberReportsALostPrimaryUntilItAnswers: a stopped shard is lost from the first failed
// probe, keeps that time while it stays down, and is reached again from its first answer;
// each change is signalled once.
func TestProberReportsALostPrimaryUntilItAnswers(t *testing.T) {
	up, down := tu.StartRedis(t, "pw"), tu.StartRedis(t, "pw")
	var changes atomic.Int32
	p := &Prober{
		Targets: func() ([]contract.Shard, string) {
			return []contract.Shard{{Name: "shard-0", Primary: up.Addr()}, {Name: "shard-1", Primary: down.Addr()}}, "pw"
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
	targets := []contract.Shard{{Name: "shard-0", Primary: "a"}, {Name: "shard-1", Primary: "b"}}
	p := &Prober{
		Targets: func() ([]contract.Shard, string) { return targets, "" },
		Changed: func() { changes.Add(1) },
		probe: func(_ context.Context, sh contract.Shard, _ string, _ time.Duration) (bool, error) {
			if sh.Name == "shard-1" {
				return false, context.DeadlineExceeded
			}
			return false, nil
		},
	}
	p.Once(context.Background(), time.Second)
	targets = targets[:1]
	p.Once(context.Background(), time.Second)
	if lost := p.Lost(); len(lost) != 0 || changes.Load() != 2 {
		t.Errorf("lost %v, %d changes, after the lost shard left", lost, changes.Load())
	}
}

// TestProberReportsAPrimaryThatRefusesWrites: a primary fenced for want of a replica (Valkey's
// min-replicas-to-write) answers, so it is reached, and it is reported refusing writes until a
// replica is heard again, or the fence is lifted; each change is signalled once.
func TestProberReportsAPrimaryThatRefusesWrites(t *testing.T) {
	primary := tu.StartRedis(t, "pw")
	if _, err := primary.Do("CONFIG", "SET", "min-replicas-to-write", "1", "min-replicas-max-lag", "2"); err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int32
	p := &Prober{
		Targets: func() ([]contract.Shard, string) {
			return []contract.Shard{{Name: "shard-0", Primary: primary.Addr()}}, "pw"
		},
		Changed: func() { changes.Add(1) },
	}
	ctx := context.Background()
	p.Once(ctx, time.Second)
	if _, refused := p.Refusing()["shard-0"]; !refused || len(p.Lost()) != 0 || changes.Load() != 1 {
		t.Fatalf("refusing %v, lost %v, %d changes, for a fenced primary without replicas", p.Refusing(), p.Lost(), changes.Load())
	}
	if got, _ := primary.Do("SET", "k", "v"); !strings.HasPrefix(got, "ERR:NOREPLICAS") {
		t.Fatalf("the fenced primary answered a write %q", got)
	}
	replica := tu.StartReplica(t, primary)
	deadline := time.Now().Add(10 * time.Second)
	for len(p.Refusing()) != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		p.Once(ctx, time.Second)
	}
	if refusing := p.Refusing(); len(refusing) != 0 || changes.Load() != 2 {
		t.Fatalf("refusing %v, %d changes, once a replica (%s) is heard", refusing, changes.Load(), replica.Addr())
	}
}
