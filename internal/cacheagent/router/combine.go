package router

import (
	"runtime"
	"sync"

	"github.com/valkey-io/valkey-go"
)

// Requests for one shard from many client connections travel together (group commit): while
// one round is in flight, the requests that arrive wait, and the next round sends them all in
// one pipeline. A lone request goes at once; under load, rounds grow with the round trip, so
// the shard connection sees one write and one read per round instead of one per request.
// That is the batching an event loop gets by reading every ready client before writing to a
// shard, without moving the agent off goroutines. Each request's commands stay contiguous and
// in order, so a transaction (MULTI ... EXEC) sent by one client is not interleaved.

// roundReq is one caller's pipeline in a round: plain commands (C = valkey.Completed) or
// reads through the tracking cache (C = valkey.CacheableTTL).
type roundReq[C any] struct {
	build func(valkey.Builder) []C
	n     int // commands it built in the round
	// readOnly: every command it built reads; such a request is safe to send again when the
	// connection closed under it.
	readOnly bool
	res      []valkey.ValkeyResult
	err      error
	done     chan struct{} // closed when res and err are set, or when lead is
	lead     bool          // this request runs the next round
}

type multiReq = roundReq[valkey.Completed]

type combiner[C any] struct {
	mu    sync.Mutex
	busy  bool // a round is in flight, or being handed over
	queue []*roundReq[C]
}

// submit returns when r has its results: run executes a round, with r leading it or not.
func (cb *combiner[C]) submit(r *roundReq[C], run func(round []*roundReq[C])) {
	cb.mu.Lock()
	if cb.busy {
		r.done = make(chan struct{})
		cb.queue = append(cb.queue, r)
		cb.mu.Unlock()
		<-r.done
		if !r.lead {
			return
		}
		cb.mu.Lock()
	} else {
		cb.busy = true
		// Let the connections whose requests are already read join this round, as an event
		// loop reads every ready client before it writes to a shard: a lone lead still goes at
		// once, a busy agent sends one pipeline where it sent one per client. The second yield
		// covers the scheduler's occasional turn to the global queue, where the first one lands.
		cb.mu.Unlock()
		runtime.Gosched()
		runtime.Gosched()
		cb.mu.Lock()
	}
	round := append([]*roundReq[C]{r}, cb.queue...)
	cb.queue = nil
	cb.mu.Unlock()

	run(round)

	cb.mu.Lock()
	var next *roundReq[C]
	if len(cb.queue) > 0 {
		next, cb.queue = cb.queue[0], cb.queue[1:]
		next.lead = true
	} else {
		cb.busy = false
	}
	cb.mu.Unlock()
	for _, q := range round[1:] {
		close(q.done)
	}
	if next != nil {
		close(next.done)
	}
}

// split hands each request of a round its share of the results.
func split[C any](round []*roundReq[C], res []valkey.ValkeyResult, err error) {
	off := 0
	for _, r := range round {
		r.err = err
		if off+r.n <= len(res) {
			r.res = res[off : off+r.n : off+r.n]
		}
		off += r.n
	}
}
