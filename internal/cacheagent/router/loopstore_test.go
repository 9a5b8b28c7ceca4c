package router

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkLoopStoreKeep: a tracked read's fill of a new key into a full store, as in a loop
// forwarding misses of a keyspace larger than the L1.
func BenchmarkLoopStoreKeep(b *testing.B) {
	sh := NewShard(ShardConfig{Name: "s", CacheBytes: 1 << 20})
	st := sh.OpenLoopStore()
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	v := Kept{Val: string(make([]byte, 64))}
	b.ResetTimer()
	for i := range b.N {
		k := keys[i&(len(keys)-1)]
		st.Keep(st.Ticket(k), k, v, time.Minute, -1)
	}
}

func TestALoopStoreKeepsUntilItsTTLOrAnInvalidation(t *testing.T) {
	sh := NewShard(ShardConfig{Name: "s", CacheBytes: 1 << 20, MinUsable: 10 * time.Millisecond})
	st := sh.OpenLoopStore()
	now := time.Now()
	st.Keep(st.Ticket("a"), "a", Kept{Val: "1"}, time.Minute, -1)
	st.Keep(st.Ticket("b"), "b", Kept{Nil: true}, time.Minute, 50) // the server's TTL is shorter
	st.Keep(st.Ticket("c"), "c", Kept{Val: "3"}, time.Minute, 5)   // too little left to keep
	t1 := st.Ticket("d")
	sh.Fence("d") // the agent wrote d after the read was sent
	st.Keep(t1, "d", Kept{Val: "old"}, time.Minute, -1)
	for key, want := range map[string]bool{"a": true, "b": true, "c": false, "d": false} {
		if _, ok := sh.KeptGet(key, now); ok != want {
			t.Errorf("KeptGet(%q) kept = %v, want %v", key, ok, want)
		}
	}
	if k, _ := sh.KeptGet("b", now); !k.Nil {
		t.Errorf("b kept as %+v, want a miss", k)
	}
	if _, ok := sh.KeptGet("b", now.Add(100*time.Millisecond)); ok {
		t.Error("b outlived its server TTL")
	}
	st.Invalidate("a")
	if _, ok := sh.KeptGet("a", now); ok {
		t.Error("a survived its invalidation")
	}
	st.Keep(st.Ticket("a"), "a", Kept{Val: "1"}, time.Minute, -1)
	if _, ok := newSharedTrackStore(sh.keptCache(), 0).Kept("a", "GET", now); ok {
		t.Error("valkey-go's store answers a loop's copy, which has no valkey-go message")
	}
	other := sh.OpenLoopStore() // another loop's, sharing the shard's cache
	other.Close()
	if _, ok := sh.KeptGet("a", now); ok {
		t.Error("a copy survived a store's close: the shard's stores share one cache, a close drops it all")
	}
	st.Close()
	st.Keep(st.Ticket("a"), "a", Kept{Val: "1"}, time.Minute, -1)
	if _, ok := sh.KeptGet("a", now); ok {
		t.Error("a closed store still keeps")
	}
}

// BenchmarkShardFence: the agent's write of a key no store keeps (a SET of a key not read
// through the L1), with three stores (connections) on the shard.
func BenchmarkShardFence(b *testing.B) {
	sh := NewShard(ShardConfig{Name: "s", CacheBytes: 1 << 20})
	for range 3 {
		sh.OpenLoopStore()
	}
	keys := make([]string, 1<<10)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	b.ResetTimer()
	for i := range b.N {
		sh.Fence(keys[i&(len(keys)-1)])
	}
}
