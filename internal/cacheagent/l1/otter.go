package l1

import (
	"math/rand/v2"

	"github.com/maypok86/otter/v2"
)

// How the agent's caches (this L1 and the router's tracked copies) use otter on the hit path.

// recordEvery: one lookup in recordEvery tells otter's eviction policy of the read. Recording
// a read costs a frequency-sketch update and an LRU move, random memory both; on a 100k-key
// keyspace that was a fifth of a lookup's cost, for under a point of hit rate on Zipf reads
// (TestSampledReadsKeepTheHitRate). Otter's read buffer is lossy for the same reason: the
// policy needs the hot keys' share of reads, not every read.
const recordEvery = 8

// Lookup returns key's value if present and not expired, telling the eviction policy of one
// read in recordEvery.
func Lookup[V any](c *otter.Cache[string, V], key string) (V, bool) {
	if rand.Uint32()%recordEvery == 0 { //nolint:gosec // a sample, not a secret
		return c.GetIfPresent(key)
	}
	e, ok := c.GetEntryQuietly(key)
	return e.Value, ok
}

// RunHere is the executor of otter's maintenance: the goroutine whose read or write filled a
// buffer drains it. The default starts a goroutine per drain, and on the agent's hit path the
// new goroutine's wake-up, the idle thread it starts and that thread's search for work cost
// more than the drain (hot GETs: 11.3-11.8 µs of CPU each before, 8.45-8.75 µs after).
func RunHere(fn func()) { fn() }
