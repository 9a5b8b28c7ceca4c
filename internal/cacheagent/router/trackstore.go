package router

import (
	"context"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/fence"
	"github.com/cachefleet/cachefleet/internal/cacheagent/l1"
)

// trackStore is valkey-go's client-side cache store for one shard connection (tracking-mode
// L1). It differs from valkey-go's default store in two ways the fleet needs: a value with less
// than minUsable of its server TTL left is handed to its readers but not kept (it would be
// evicted by expiry before it paid for itself), and memory is bounded by otter's weigher.
// One command per key is kept; the agent only caches GET.
type trackStore struct {
	minUsable int64 // milliseconds

	mu      sync.Mutex
	flights map[string]*trackFlight // nil once closed
	kept    *otter.Cache[string, trackEntry]
	// fence refuses fills whose read was issued before the agent's own write of the key: the
	// shard's invalidation push for that write arrives after the write's reply.
	fence fence.Fence
	// onClose tells the shard the connection is gone.
	onClose func(*trackStore)
}

type trackEntry struct {
	src  *trackStore // the store whose connection tracks the key for this copy
	cmd  string
	msg  valkey.ValkeyMessage // valkey-go's reply, for valkey-go's own lookups
	kept Kept                 // what the agent answers
	pxat int64                // client-side expiry, unix ms
}

// Kept is a kept reply to GET: a value, or that the key does not exist.
type Kept struct {
	Val string
	Nil bool
}

// trackFlight is a read in flight; concurrent readers of the same key wait for it.
type trackFlight struct {
	cmd    string
	pxat   int64
	ticket fence.Ticket
	ch     chan struct{}
	msg    valkey.ValkeyMessage
	err    error
}

func (f *trackFlight) Wait(ctx context.Context) (valkey.ValkeyMessage, error) {
	select {
	case <-ctx.Done():
		return valkey.ValkeyMessage{}, ctx.Err()
	case <-f.ch:
		return f.msg, f.err
	}
}

// trackEntryOverhead approximates an entry's bookkeeping bytes (message struct, map and list).
const trackEntryOverhead = 160

func newTrackStore(maxBytes int, minUsable time.Duration) *trackStore {
	return newSharedTrackStore(newKeptCache(maxBytes, nil), minUsable)
}

// newSharedTrackStore is a store keeping its copies in kept, which a shard's stores share: one
// memory bound for the shard, one lookup per hit. Every copy is of a read its store's
// connection tracks, so that connection's pushes reach it; a push, a fence or a closed store
// drops copies whichever store made them.
func newSharedTrackStore(kept *otter.Cache[string, trackEntry], minUsable time.Duration) *trackStore {
	return &trackStore{minUsable: minUsable.Milliseconds(), flights: map[string]*trackFlight{}, kept: kept}
}

// newKeptCache is a cache of tracked copies bounded to maxBytes; admit, if any, hears of its
// evictions for room.
func newKeptCache(maxBytes int, admit *l1.Admission) *otter.Cache[string, trackEntry] {
	return otter.Must(&otter.Options[string, trackEntry]{
		MaximumWeight: uint64(max(maxBytes, 1)),
		Weigher: func(k string, e trackEntry) uint32 {
			return uint32(min(len(k)+len(e.cmd)+len(e.kept.Val)+trackEntryOverhead, 1<<32-1))
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, trackEntry]) time.Duration {
			return time.Until(time.UnixMilli(e.Value.pxat))
		}),
		Executor:         l1.RunHere,
		OnAtomicDeletion: l1.Watch[trackEntry](admit),
	})
}

// Flight returns a kept value, or the read in flight to wait for, or neither: then the caller
// reads from the shard and reports back with Update or Cancel.
func (s *trackStore) Flight(key, cmd string, ttl time.Duration, now time.Time) (valkey.ValkeyMessage, valkey.CacheEntry) {
	if msg, ok := s.Kept(key, cmd, now); ok {
		return msg, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flights == nil {
		return valkey.ValkeyMessage{}, nil
	}
	if f := s.flights[key]; f != nil {
		if f.cmd == cmd {
			return valkey.ValkeyMessage{}, f
		}
		return valkey.ValkeyMessage{}, nil // another command's read owns the key: read uncached
	}
	s.flights[key] = &trackFlight{cmd: cmd, pxat: now.Add(ttl).UnixMilli(), ch: make(chan struct{}), ticket: s.fence.Ticket(key)}
	return valkey.ValkeyMessage{}, nil
}

// Kept returns the kept reply of cmd on key, if it is still fresh: valkey-go's lookup, of its
// own copies only (a loop's have no valkey-go message).
func (s *trackStore) Kept(key, cmd string, now time.Time) (valkey.ValkeyMessage, bool) {
	if e, ok := fresh(s.kept, key, cmd, now); ok && e.src == s {
		return e.msg, true
	}
	return valkey.ValkeyMessage{}, false
}

func fresh(kept *otter.Cache[string, trackEntry], key, cmd string, now time.Time) (trackEntry, bool) {
	if e, ok := l1.Lookup(kept, key); ok && e.cmd == cmd && e.pxat > now.UnixMilli() {
		return e, true
	}
	return trackEntry{}, false
}

// Update keeps the reply unless it expires too soon, wakes the waiting readers, and returns the
// client-side expiry: the requested TTL, shortened to the server's.
func (s *trackStore) Update(key, cmd string, msg valkey.ValkeyMessage) int64 {
	s.mu.Lock()
	f := s.flights[key]
	if f == nil || f.cmd != cmd {
		s.mu.Unlock()
		return 0
	}
	delete(s.flights, key)
	pxat := f.pxat
	if val, err := msg.ToString(); err == nil || msg.IsNil() { // a GET's reply is one or the other
		pxat = s.keep(f.ticket, key, trackEntry{cmd: cmd, msg: msg, kept: Kept{Val: val, Nil: msg.IsNil()}, pxat: pxat}, msg.CachePXAT(), time.Now().UnixMilli())
	}
	s.mu.Unlock()
	f.msg = msg
	close(f.ch)
	return pxat
}

// keep keeps e unless it expires too soon after now (its expiry shortened to the server's, all
// unix ms, when that is sooner) or the agent wrote the key since t; it returns the expiry.
// Call it with s.mu held: a closed store keeps nothing.
func (s *trackStore) keep(t fence.Ticket, key string, e trackEntry, server, now int64) int64 {
	if server > 0 && server < e.pxat {
		e.pxat = server
	}
	e.src = s
	if s.flights != nil && e.pxat-now >= max(s.minUsable, 1) {
		s.fence.Fill(t, func() { s.kept.Set(key, e) })
	}
	return e.pxat
}

// Cancel fails the readers of a read that did not complete.
func (s *trackStore) Cancel(key, cmd string, err error) {
	s.mu.Lock()
	f := s.flights[key]
	if f == nil || f.cmd != cmd {
		s.mu.Unlock()
		return
	}
	delete(s.flights, key)
	s.mu.Unlock()
	f.err = err
	close(f.ch)
}

// Delete applies the shard's invalidations; nil keys means all. Reads in flight are left to
// complete: their reply is newer than the invalidation (valkey-go's store does the same).
func (s *trackStore) Delete(keys []valkey.ValkeyMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keys == nil {
		s.kept.InvalidateAll()
		return
	}
	for _, k := range keys {
		if key, err := k.ToString(); err == nil {
			s.kept.Invalidate(key)
		}
	}
}

// Fence drops the kept copies of keys the agent has written, before the write's reply reaches
// the client, and refuses fills of them whose read was issued before. Flights need no care:
// valkey-go resolves them in the connection's reply order, so one sent before the write has
// completed before the write's reply is delivered, and one sent after it reads the new value.
func (s *trackStore) Fence(keys ...string) {
	for _, key := range keys {
		s.fence.Write(key)
		dropKept(s.kept, key)
	}
}

// dropKept drops key's copy, looking first: most written keys have none, and a lookup takes no
// lock where an Invalidate locks the key's bucket.
func dropKept(c *otter.Cache[string, trackEntry], key string) {
	if _, ok := c.GetEntryQuietly(key); ok {
		c.Invalidate(key)
	}
}

// FenceAll drops every kept copy and refuses every earlier read's fill (a flush of the shard).
func (s *trackStore) FenceAll() { s.fence.All(s.kept.InvalidateAll) }

// Close drops everything and fails the reads in flight; the connection is gone.
func (s *trackStore) Close(err error) {
	s.mu.Lock()
	flights := s.flights
	s.flights = nil
	s.kept.InvalidateAll()
	s.mu.Unlock()
	if s.onClose != nil {
		s.onClose(s)
	}
	for _, f := range flights {
		f.err = err
		close(f.ch)
	}
}
