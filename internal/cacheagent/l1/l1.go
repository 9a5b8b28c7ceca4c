// Package l1 is the agent's local cache for keys in `ttl` mode: bounded by memory, each entry
// with its own expiry (never later than its remaining L2 TTL). Eviction and expiry come from
// otter; this package fixes the entry shape and the accounting.
package l1

import (
	"strings"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/cachefleet/cachefleet/internal/cacheagent/fence"
)

// entryOverhead approximates the bookkeeping bytes of one entry, so many small values cannot
// exceed the bound that their payload alone would respect.
const entryOverhead = 96

type entry struct {
	value     []byte
	expiresAt time.Time
}

// Cache is safe for concurrent use. Fills are fenced against deletes: a value read from L2
// before a delete of its key (a write, an invalidation) is not kept.
type Cache struct {
	c     *otter.Cache[string, entry]
	fence fence.Fence
	admit *Admission
}

// New returns a cache holding at most maxBytes of keys, values and overhead.
func New(maxBytes int64) *Cache {
	admit := NewAdmissionFor(maxBytes)
	c := otter.Must(&otter.Options[string, entry]{
		MaximumWeight: uint64(max(maxBytes, 1)),
		Weigher: func(k string, e entry) uint32 {
			return uint32(min(len(k)+len(e.value)+entryOverhead, 1<<32-1))
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, entry]) time.Duration {
			return time.Until(e.Value.expiresAt)
		}),
		Executor:         RunHere,
		OnAtomicDeletion: Watch[entry](admit),
	})
	return &Cache{c: c, admit: admit}
}

// Admit reports whether a read of key that missed should fill the cache (Admission).
func (c *Cache) Admit(key []byte) bool { return c.admit.Admit(key) }

// Get returns the value of key if present and not expired.
func (c *Cache) Get(key string) ([]byte, bool) {
	e, ok := Lookup(c.c, key)
	if !ok || !time.Now().Before(e.expiresAt) {
		return nil, false
	}
	return e.value, true
}

// Ticket is taken before reading key from L2; Fill needs it.
func (c *Cache) Ticket(key string) fence.Ticket { return c.fence.Ticket(key) }

// Fill stores a copy of value for ttl unless key was deleted since the ticket was taken.
// Values whose ttl is not positive are not stored.
func (c *Cache) Fill(t fence.Ticket, key string, value []byte, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	e := entry{value: append([]byte(nil), value...), expiresAt: time.Now().Add(ttl)}
	return c.fence.Fill(t, func() { c.c.Set(key, e) })
}

// Set stores a copy of value for ttl, unfenced (for values that did not come from a read).
func (c *Cache) Set(key string, value []byte, ttl time.Duration) {
	c.Fill(c.Ticket(key), key, value, ttl)
}

// Delete removes key and refuses fills of it whose read was issued before.
func (c *Cache) Delete(key string) {
	c.fence.Write(key)
	if _, ok := c.c.GetEntryQuietly(key); ok { // a lookup, not a bucket lock, for the usual absent key
		c.c.Invalidate(key)
	}
}

// DeletePrefix removes every key starting with prefix and returns how many it removed.
func (c *Cache) DeletePrefix(prefix string) int {
	n := 0
	c.fence.All(func() {
		for k := range c.c.Keys() {
			if strings.HasPrefix(k, prefix) {
				c.c.Invalidate(k)
				n++
			}
		}
	})
	return n
}

// Clear removes everything.
func (c *Cache) Clear() { c.fence.All(c.c.InvalidateAll) }

// Len is the approximate number of entries.
func (c *Cache) Len() int { return c.c.EstimatedSize() }

// Weight is the approximate number of bytes held.
func (c *Cache) Weight() uint64 { return c.c.WeightedSize() }
