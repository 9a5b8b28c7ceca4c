package server

// The read-through step: a GET or MGET of a key whose policy has an origin is sent to the
// key's shard as usual and marked (readThroughOnMiss); once the shards have answered,
// readThrough hands what came back to the readthrough package, which answers it, refreshes it
// or fetches it from the origin. A transaction's reads are the shard's alone and never go to
// the origin.

import (
	"context"
	"sync"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/readthrough"
)

// maxParallelFetches bounds the origin requests one batch (an MGET of many cold keys) runs at once.
const maxParallelFetches = 32

// originRead is a read of a key under a policy with an origin, marked on its job.
type originRead struct {
	key   string
	rules policy.Rules
	// Where the stored value is in the job's results: part, index in the part, and element
	// of an array reply (MGET), or -1.
	part, index, elem int
	// pos is the key's position in a multi-key read.
	pos int
	// What the shard answered: raw value, found, or down.
	raw         string
	found, down bool
	ans         *readthrough.Answer
}

// readThroughOnMiss marks the job just queued: its read of key may go to the origin. rules is
// a pointer so the reads of keys without an origin (the hot path) copy nothing.
func (b *batch) readThroughOnMiss(key string, rules *policy.Rules, part, index, elem, pos int) {
	if b.tx || rules.Origin == nil {
		return
	}
	p := &b.replies[len(b.replies)-1]
	p.origin = append(p.origin, &originRead{key: key, rules: *rules, part: part, index: index, elem: elem, pos: pos})
	b.origins++
}

// readThrough decides the marked reads of the segment, fetching from origins in parallel.
func (b *batch) readThrough(ctx context.Context) {
	var reads []*originRead
	var results []partResult
	for i := range b.replies {
		p := &b.replies[i]
		if len(p.origin) == 0 {
			continue
		}
		results = b.results(*p, results[:0])
		if p.warm != nil && p.warm.res != nil {
			results[0].res = p.warm.res[:len(results[0].res)]
		}
		for _, rd := range p.origin {
			if b.writing(rd.key) || !rd.observe(results[rd.part]) {
				continue // the pipeline writes the key, or the shard answered an error: as read
			}
			reads = append(reads, rd)
		}
	}
	sem := make(chan struct{}, maxParallelFetches)
	var wg sync.WaitGroup
	for _, rd := range reads {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if a := b.s.rt.Resolve(ctx, b.r, rd.key, rd.rules, rd.raw, rd.found, rd.down); !a.FromShard {
				rd.ans = a
			}
		})
	}
	wg.Wait()
}

// observe records what the shard answered for the read; false when it answered an error (or
// another type), which stands.
func (rd *originRead) observe(pr partResult) bool {
	if pr.err != nil {
		rd.down = true
		return true
	}
	res := pr.res[rd.index]
	if rd.elem >= 0 {
		arr, err := res.ToArray()
		if err != nil || rd.elem >= len(arr) {
			return false
		}
		if arr[rd.elem].IsNil() {
			return true
		}
		raw, err := arr[rd.elem].ToString()
		rd.raw, rd.found = raw, err == nil
		return err == nil
	}
	raw, err := res.ToString()
	if valkey.IsValkeyNil(err) {
		return true
	}
	rd.raw, rd.found = raw, err == nil
	return err == nil
}
