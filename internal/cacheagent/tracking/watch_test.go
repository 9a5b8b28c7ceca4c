package tracking_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/cacheagent/tracking"
	"github.com/cachefleet/cachefleet/internal/contract"
)

type changes struct {
	mu   sync.Mutex
	keys []string
	all  int // nil reports
}

func (c *changes) on(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if keys == nil {
		c.all++
		return
	}
	c.keys = append(c.keys, keys...)
}

func (c *changes) snapshot() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.keys), c.all
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatcherSeesEveryChangeAndReportsBlindness: changes made directly on a real shard (a
// write, a delete, an expiry) reach the watcher; a shard restart is reported as "everything
// changed" when the connection drops and again once the watcher follows the new process.
func TestWatcherSeesEveryChangeAndReportsBlindness(t *testing.T) {
	shard := tu.StartRedis(t, "pw")
	var ch changes
	w := tracking.Watch(tracking.WatchOptions{Addr: shard.Addr(), Password: "pw", Every: 50 * time.Millisecond}, ch.on)
	defer w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !w.WaitFollowing(ctx) {
		t.Fatal("watcher did not follow a running shard")
	}
	if _, all := ch.snapshot(); all != 1 {
		t.Errorf("%d 'everything changed' reports at start, want 1 (before it followed, it was blind)", all)
	}
	for _, cmd := range [][]string{{"SET", "a", "1"}, {"DEL", "a"}, {"SET", "b", "1", "PX", "20"}} {
		if _, err := shard.Do(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "a, a, b and b's expiry", func() bool {
		keys, _ := ch.snapshot()
		return slices.Equal(keys, []string{"a", "a", "b", "b"})
	})

	shard.Stop()
	// A failed PING may mark the watcher blind before the connection's close reaches it.
	eventually(t, "the loss reported as 'everything changed'", func() bool {
		_, all := ch.snapshot()
		return !w.Following() && all >= 2
	})
	_, before := ch.snapshot()
	shard.Start()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if !w.WaitFollowing(ctx2) {
		t.Fatal("watcher did not follow the restarted shard")
	}
	if _, after := ch.snapshot(); after <= before {
		t.Errorf("following again was not reported as 'everything changed' (%d -> %d)", before, after)
	}
	if _, err := shard.Do("SET", "c", "1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a change after the restart", func() bool {
		keys, _ := ch.snapshot()
		return slices.Contains(keys, "c")
	})
}

// TestWatchersFollowTheRing: one watcher per shard, kept while its shard stays, replaced when
// the shard's address changes, none started by a ring change while nobody tracks.
func TestWatchersFollowTheRing(t *testing.T) {
	a, b := tu.StartRedis(t, ""), tu.StartRedis(t, "")
	var ch changes
	ws := tracking.NewWatchers(func() string { return "" }, ch.on)
	defer ws.Stop()
	ws.Follow([]contract.Shard{{Name: "shard-0", Primary: a.Addr()}})
	time.Sleep(200 * time.Millisecond) // a watcher would have reported "everything changed" by now
	if _, all := ch.snapshot(); all != 0 {
		t.Fatal("a ring change started a watcher while nobody tracks")
	}
	first := ws.Ensure([]contract.Shard{{Name: "shard-0", Primary: a.Addr()}})
	if again := ws.Ensure([]contract.Shard{{Name: "shard-0", Primary: a.Addr()}}); again[0] != first[0] {
		t.Error("a second Ensure started another watcher for the same shard")
	}
	ws.Follow([]contract.Shard{{Name: "shard-0", Primary: b.Addr()}}) // the shard moved (a failover)
	moved := ws.Ensure([]contract.Shard{{Name: "shard-0", Primary: b.Addr()}})
	if moved[0] == first[0] {
		t.Fatal("the watcher of the old address was kept")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !moved[0].WaitFollowing(ctx) {
		t.Fatal("the new watcher does not follow its shard")
	}
	if _, err := b.Do("SET", "k", "1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the change on the new address", func() bool {
		keys, _ := ch.snapshot()
		return slices.Contains(keys, "k")
	})
}
