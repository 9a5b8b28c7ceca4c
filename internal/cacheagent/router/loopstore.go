package router

import (
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/fence"
)

// LoopStore is the tracking L1 of an event loop's own shard connection (the server's
// forwarding): the loop reads keys as tracked reads on a RESP3 connection, keeps the replies
// here and applies that connection's invalidation pushes, in their order among its replies.
// Hits look here as in valkey-go's stores, and the agent's writes fence it the same way.
// Only the loop that owns it keeps and invalidates; anyone may read it.
type LoopStore struct{ ts *trackStore }

// OpenLoopStore adds a loop's store to the shard's; nil when the shard keeps no tracking L1.
func (s *Shard) OpenLoopStore() *LoopStore {
	if s.cfg.CacheBytes <= 0 {
		return nil
	}
	ts := newSharedTrackStore(s.keptCache(), s.cfg.MinUsable)
	ts.onClose = s.dropStore
	s.updateStores(func(l []*trackStore) []*trackStore { return append(l, ts) })
	return &LoopStore{ts: ts}
}

// Ticket is taken before a read of key is sent: a write of the key the agent settles before
// the read's reply comes refuses its Keep.
func (l *LoopStore) Ticket(key string) fence.Ticket { return l.ts.fence.Ticket(key) }

// Keep keeps a GET's reply for at most ttl, and no longer than the key's server TTL (pttl in
// milliseconds; negative for none), unless that leaves it too little time or a write of the key
// came since the ticket.
func (l *LoopStore) Keep(t fence.Ticket, key string, v Kept, ttl time.Duration, pttl int64) {
	now := time.Now().UnixMilli()
	var server int64
	if pttl >= 0 {
		server = now + pttl
	}
	l.ts.mu.Lock()
	l.ts.keep(t, key, trackEntry{cmd: "GET", kept: v, pxat: now + ttl.Milliseconds()}, server, now)
	l.ts.mu.Unlock()
}

// Invalidate drops keys the shard says changed.
func (l *LoopStore) Invalidate(key string) { l.ts.kept.Invalidate(key) }

// InvalidateAll drops everything: the shard was flushed.
func (l *LoopStore) InvalidateAll() { l.ts.kept.InvalidateAll() }

// Close drops everything and leaves the shard's stores: the connection that kept it current
// is gone.
func (l *LoopStore) Close() { l.ts.Close(nil) }
