package router

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"
)

func TestTrackStoreStaysWithinItsBound(t *testing.T) {
	const bound = 64 << 10
	s := newTrackStore(bound, 0)
	now := time.Now()
	for i := range 10_000 {
		k := fmt.Sprintf("key-%d", i)
		if _, e := s.Flight(k, "GET", time.Minute, now); e != nil {
			t.Fatalf("%s: a first read must go to the shard", k)
		}
		s.Update(k, "GET", valkey.ValkeyMessage{})
	}
	if len(s.flights) != 0 {
		t.Errorf("%d flights left after every read completed", len(s.flights))
	}
	if w := s.kept.WeightedSize(); w > bound || w == 0 {
		t.Errorf("kept %d bytes, bound %d", w, bound)
	}
}

func TestTrackStoreSharesOneReadAndFailsItsWaiters(t *testing.T) {
	s := newTrackStore(1<<20, 0)
	now := time.Now()
	s.Flight("k", "GET", time.Minute, now)
	_, waiter := s.Flight("k", "GET", time.Minute, now)
	if waiter == nil {
		t.Fatal("a second reader of a key in flight must wait for the first read")
	}
	boom := errors.New("connection reset")
	s.Cancel("k", "GET", boom)
	if _, err := waiter.Wait(context.Background()); !errors.Is(err, boom) {
		t.Errorf("waiter got %v, want the read's error", err)
	}
	s.Flight("k2", "GET", time.Minute, now)
	_, waiter = s.Flight("k2", "GET", time.Minute, now)
	s.Close(boom)
	if _, err := waiter.Wait(context.Background()); !errors.Is(err, boom) {
		t.Errorf("waiter after Close got %v", err)
	}
	if v, e := s.Flight("k3", "GET", time.Minute, now); e != nil || v.IsCacheHit() {
		t.Error("a closed store must send reads to the shard")
	}
}

func TestTrackStoreDropsWhatTheShardInvalidates(t *testing.T) {
	s := newTrackStore(1<<20, 0)
	now := time.Now()
	for _, k := range []string{"a", "b"} {
		s.Flight(k, "GET", time.Minute, now)
		s.Update(k, "GET", valkey.ValkeyMessage{})
	}
	if _, ok := s.kept.GetIfPresent("a"); !ok {
		t.Fatal("a was not kept")
	}
	s.Delete(nil)
	if s.kept.EstimatedSize() != 0 {
		t.Errorf("%d entries left after a flush-all invalidation", s.kept.EstimatedSize())
	}
}

// TestTrackStoreFenceDropsCopiesOfOwnWrites: the shard's invalidation push for the agent's own
// write arrives after the write's reply, so the agent fences the key itself in between. A copy
// kept before the fence is dropped, and a read issued before the fence is not kept.
func TestTrackStoreFenceDropsCopiesOfOwnWrites(t *testing.T) {
	s := newTrackStore(1<<20, 0)
	now := time.Now()
	s.Flight("kept", "GET", time.Minute, now)
	s.Update("kept", "GET", valkey.ValkeyMessage{})
	s.Flight("racing", "GET", time.Minute, now) // read issued before the write is acknowledged
	s.Fence("kept", "racing")
	if _, ok := s.kept.GetIfPresent("kept"); ok {
		t.Error("a copy kept before the agent's write survived the fence")
	}
	s.Update("racing", "GET", valkey.ValkeyMessage{})
	if _, ok := s.kept.GetIfPresent("racing"); ok {
		t.Error("a read issued before the write was kept after it")
	}
	s.Flight("racing", "GET", time.Minute, time.Now())
	s.Update("racing", "GET", valkey.ValkeyMessage{})
	if _, ok := s.kept.GetIfPresent("racing"); !ok {
		t.Error("a read issued after the write was not kept")
	}
}

// TestKeptAnswersOnlyFreshCopiesOfTheSameCommand: the agent's direct L1 lookup sees what
// valkey-go would: the command's own copy, not after a fence, not past its expiry.
func TestKeptAnswersOnlyFreshCopiesOfTheSameCommand(t *testing.T) {
	s := newTrackStore(1<<20, 0)
	now := time.Now()
	s.Flight("k", "GET", time.Minute, now)
	s.Update("k", "GET", valkey.ValkeyMessage{})
	if _, ok := s.Kept("k", "GET", now); !ok {
		t.Fatal("a kept GET is not found")
	}
	if _, ok := s.Kept("k", "STRLEN", now); ok {
		t.Error("another command's lookup found the GET's copy")
	}
	if _, ok := s.Kept("k", "GET", now.Add(2*time.Minute)); ok {
		t.Error("an expired copy was answered")
	}
	s.Fence("k")
	if _, ok := s.Kept("k", "GET", now); ok {
		t.Error("a copy fenced by a write was answered")
	}
}
