package l1

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"

	"github.com/maypok86/otter/v2"
)

// Admission decides which missed keys a full L1 copies: those read twice within a window of
// about as many reads as the L1 holds entries (a doorkeeper, as in TinyLFU). Under a keyspace
// larger than the L1, most misses are the long tail's one-off reads: copying each meant a
// tracked read (more commands to the shard), a fill and an eviction, and the copy was evicted
// unread. Those go to the shard as plain reads; a key read again in the window is copied.
// While the L1 has never evicted it copies everything, as there is room.
type Admission struct {
	evicted atomic.Bool // the L1 has evicted a copy for room: it is full
	words   []atomic.Uint64
	mask    uint64 // of a bit's index
	window  int64
	seen    atomic.Int64 // reads remembered in this window
	seed    maphash.Seed
}

// NewAdmission remembers the keys of about window reads: a Bloom filter of 8 bits per key and
// two hashes (5% of one-off reads taken for repeats), cleared when full.
func NewAdmission(window int) *Admission {
	window = max(window, 1024)
	nbits := uint64(1) << bits.Len64(uint64(8*window-1))
	return &Admission{words: make([]atomic.Uint64, nbits/64), mask: nbits - 1, window: int64(window), seed: maphash.MakeSeed()}
}

// admissionEntryBytes is what a copy is taken to weigh when sizing an admission's window: a
// 64-byte value with its key and overhead.
const admissionEntryBytes = 256

// NewAdmissionFor is the admission of a cache bounded to maxBytes.
func NewAdmissionFor(maxBytes int64) *Admission {
	return NewAdmission(int(min(maxBytes/admissionEntryBytes, 1<<26)))
}

// Evicted tells the admission that the L1 evicted a copy to make room.
func (a *Admission) Evicted() { a.evicted.Store(true) }

// Watch is an otter OnAtomicDeletion that tells a of the cache's evictions for room; nil for a
// nil a.
func Watch[V any](a *Admission) func(otter.DeletionEvent[string, V]) {
	if a == nil {
		return nil
	}
	return func(e otter.DeletionEvent[string, V]) {
		if e.Cause == otter.CauseOverflow {
			a.Evicted()
		}
	}
}

// bitsOf is where key's two bits are: their words and masks.
func (a *Admission) bitsOf(key []byte) (wi *atomic.Uint64, bi uint64, wj *atomic.Uint64, bj uint64) {
	h := maphash.Bytes(a.seed, key)
	i, j := h&a.mask, (h>>32)&a.mask
	return &a.words[i/64], uint64(1) << (i % 64), &a.words[j/64], uint64(1) << (j % 64)
}

// Admit reports whether a read of key that missed the L1 should be copied: the L1 has room,
// or the key was read since the window began. A key it refuses is remembered.
func (a *Admission) Admit(key []byte) bool {
	if !a.evicted.Load() {
		return true
	}
	wi, bi, wj, bj := a.bitsOf(key)
	if wi.Load()&bi != 0 && wj.Load()&bj != 0 {
		return true
	}
	// The window turns before this key is remembered, so that the read ending it counts in the
	// next window as any other read does.
	if a.seen.Add(1) > a.window {
		a.seen.Store(1)
		for k := range a.words { // racing readers may see some bits gone: a repeat read plainly once more
			a.words[k].Store(0)
		}
	}
	wi.Or(bi)
	wj.Or(bj)
	return false
}
