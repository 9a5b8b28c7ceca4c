// Package fence orders cache fills against writes of the same key. A reader takes a Ticket
// before its read leaves for the shard; a writer calls Write after the shard acknowledged the
// write and before the client hears of it. A fill whose ticket predates such a write is not
// kept, and one that got in before the write is dropped by it, so no reply a client sees after
// its write can come from a copy older than that write.
//
// Generations are kept per stripe (a hash of the key), not per key: memory stays fixed, and a
// collision only costs one fill that is not kept.
package fence

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

const stripes = 256

// Fence is safe for concurrent use. The zero value is ready.
type Fence struct {
	stripe [stripes]struct {
		mu  sync.Mutex
		gen uint64
	}
}

// Ticket is a reader's view of a key's generation when its read was issued.
type Ticket struct {
	idx uint8
	gen uint64
}

func index(key string) uint8 { return uint8(xxhash.Sum64String(key)) }

// Ticket records key's generation; take it before the read is sent.
func (f *Fence) Ticket(key string) Ticket {
	i := index(key)
	st := &f.stripe[i]
	st.mu.Lock()
	g := st.gen
	st.mu.Unlock()
	return Ticket{idx: i, gen: g}
}

// Fill runs store only if no write of the ticket's stripe happened since the ticket was taken;
// store runs under the stripe's lock, so a concurrent Write cannot fall between check and store.
func (f *Fence) Fill(t Ticket, store func()) bool {
	st := &f.stripe[t.idx]
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gen != t.gen {
		return false
	}
	store()
	return true
}

// Write advances key's generation: fills whose ticket predates it are refused. The writer
// drops the cached copy after Write returns: a fill that got in before the write has stored by
// then, so the drop sees it. (Dropping outside the lock lets a write advance the fences of
// several stores that share one cache, then drop the copy once.)
func (f *Fence) Write(key string) {
	st := &f.stripe[index(key)]
	st.mu.Lock()
	st.gen++
	st.mu.Unlock()
}

// All advances every generation and runs drop once, for flushes and prefix invalidations.
func (f *Fence) All(drop func()) {
	for i := range f.stripe {
		f.stripe[i].mu.Lock()
		f.stripe[i].gen++
	}
	drop()
	for i := range f.stripe {
		f.stripe[i].mu.Unlock()
	}
}
