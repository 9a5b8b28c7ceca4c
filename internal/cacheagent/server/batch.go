package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// A batch is the pipelined commands read from one connection in one go. Commands that reach
// shards are grouped per shard and sent with one DoMulti (or DoMultiCache) per shard, so a
// client pipeline of N commands costs one round trip per shard, not N; replies are written in
// the client's order.

type lane uint8

const (
	plainLane lane = iota // DoMulti: writes and uncached reads, in order
	cacheLane             // DoMultiCache: reads served by valkey-go's tracking cache
)

type buildFn func(valkey.Builder) valkey.Completed

type cachedRead struct {
	build func(valkey.Builder) valkey.Cacheable
	ttl   time.Duration
}

// shardWork is one shard's share of a segment: a single lane per segment keeps the order of
// a write and a later cached read of the same key.
type shardWork struct {
	used    bool
	lane    lane
	plain   []buildFn
	cached  []cachedRead
	results []valkey.ValkeyResult
	err     error
}

// part names a job's commands on one shard.
type part struct {
	shard, first, n int
}

// partResult is what a job's finish sees for one part.
type partResult struct {
	shard *router.Shard
	res   []valkey.ValkeyResult
	err   error
	// queued: the shard was down and the part's deletes wait for it (delete class).
	queued bool
}

// class decides, once for every command, what a client sees when a shard it needs is down.
type class uint8

const (
	classLocal  class = iota // answered by the agent itself, or talks to shards on its own
	classRead                // a down shard reads as a miss (the command's own), never an error
	classWrite               // a down shard fails the write: -CFDOWN naming the shard
	classDelete              // a down shard gets the delete queued (replayed first when it returns), counted as done
)

type pending struct {
	local func(w *resp.Writer) // written as is, or
	// an L1 hit: a reply kept by the tracking L1 (written as the shard would), or a ttl-mode
	// copy (a bulk string). Fields, not a local closure: L1 hits are the hot path and a closure
	// costs two allocations. Or
	hit      l1Hit
	kept     router.Kept
	copyVal  []byte
	arrayLen int // of an arrayHead
	// the reply computed from shard parts.
	parts  []part
	finish func(w *resp.Writer, results []partResult)
	class  class
	// miss answers a single-key read (or delete) whose shard is down; nil for multi-key reads,
	// whose finish sees the down shard's keys as missing.
	miss func(w *resp.Writer)
	// keys are each part's keys: queued as deletes when its shard is down (delete class), named
	// in the error of a write that reached some shards and not others (write class).
	keys [][]string

	cmd   *command  // counted when written; nil for unknown commands
	muted bool      // CLIENT REPLY OFF or SKIP: written to nowhere
	start time.Time // when the command was read
	// warm: a GET whose key moved in the last change of ring members (warmup.go).
	warm *warmRead
	// origin: reads of keys whose policy has an origin (readthrough.go).
	origin []*originRead
}

type batch struct {
	mute    *resp.Writer // silent's
	txShard int          // a transaction's shard (placed)
	s       *Server
	r       *router.Router
	work    []shardWork
	replies []pending
	flushes int
	// written are the keys this segment writes; exec fences their L1 copies once the shards
	// have answered and before any reply is written (read-your-writes).
	written []string
	// cmd and class are the command being dispatched and its class, which its jobs take.
	cmd   *command
	class class
	// tx: the batch runs one transaction's commands (all reads go to the shard, in order).
	tx bool
	// tracker: the command being dispatched is a read by a client that keeps what it reads
	// (CLIENT TRACKING), which planGet serves accordingly.
	tracker bool
	// cid is the connection's client id: a NOLOOP client does not hear of its own writes.
	cid int64
	// c is the connection's client, whose output limits exec applies; nil in a transaction.
	c *client
	// warms counts the segment's reads that may look up a previous owner.
	warms int
	// origins counts the segment's reads that may go to an origin.
	origins int
}

func (b *batch) reset(r *router.Router) {
	b.r = r
	if cap(b.work) < len(r.Shards) {
		b.work = make([]shardWork, len(r.Shards))
	}
	b.work = b.work[:len(r.Shards)]
	for i := range b.work {
		b.work[i] = shardWork{plain: b.work[i].plain[:0], cached: b.work[i].cached[:0]}
	}
	b.replies = b.replies[:0]
	b.written = b.written[:0]
	b.warms = 0
	b.origins = 0
}

// wrote registers keys written by work just queued in this segment.
func (b *batch) wrote(keys ...string) { b.written = append(b.written, keys...) }

// writing reports whether the segment holds a write of key not yet executed.
func (b *batch) writing(key string) bool {
	for _, k := range b.written {
		if k == key {
			return true
		}
	}
	return false
}

func (b *batch) local(f func(w *resp.Writer)) {
	b.replies = append(b.replies, pending{local: f})
}

type l1Hit uint8

const (
	noHit     l1Hit = iota
	keptHit         // kept
	copyHit         // copyVal
	arrayHead       // the header of an MGET's array of L1 hits, the arrayLen replies after it (inline.go)
)

// writeLocal writes a reply the agent answered itself; false for one that waits on shards.
func (p *pending) writeLocal(w *resp.Writer) bool {
	switch {
	case p.local != nil:
		p.local(w)
	case p.hit == keptHit:
		if v, present := reply.Readable(p.kept.Val); present && !p.kept.Nil {
			w.BulkString(v)
		} else {
			w.Null()
		}
	case p.hit == copyHit:
		w.Bulk(p.copyVal)
	case p.hit == arrayHead:
		w.Array(p.arrayLen)
	default:
		return false
	}
	return true
}

// laneFree reports whether shard i can take work on lane l in the current segment.
func (b *batch) laneFree(i int, l lane) bool {
	w := &b.work[i]
	return !w.used || w.lane == l
}

// plain queues commands for shard i; the caller must have checked laneFree.
func (b *batch) plain(i int, cmds ...buildFn) part {
	i = b.placed(i)
	w := &b.work[i]
	w.used, w.lane = true, plainLane
	p := part{shard: i, first: len(w.plain), n: len(cmds)}
	w.plain = append(w.plain, cmds...)
	return p
}

func (b *batch) cached(i int, reads ...cachedRead) part {
	i = b.placed(i)
	w := &b.work[i]
	w.used, w.lane = true, cacheLane
	p := part{shard: i, first: len(w.cached), n: len(reads)}
	w.cached = append(w.cached, reads...)
	return p
}

// placed is the shard a part goes to: i, except in a transaction, which runs every command on
// its shard (queueTx checked the keys); a command naming no key runs there too.
func (b *batch) placed(i int) int {
	if b.tx {
		return b.txShard
	}
	return i
}

// job queues a reply computed from shard parts; what a down shard means comes from the
// command's class (onShardDown), so finish only sees parts that answered, except in multi-key
// reads (their down parts read as missing keys) and deletes (queued parts).
func (b *batch) job(parts []part, finish func(w *resp.Writer, results []partResult)) {
	b.replies = append(b.replies, pending{parts: parts, finish: finish, class: b.class})
}

// jobMiss is job for a single-key read or delete: miss answers it when the shard is down.
func (b *batch) jobMiss(parts []part, miss func(w *resp.Writer), finish func(w *resp.Writer, results []partResult)) {
	b.replies = append(b.replies, pending{parts: parts, finish: finish, class: b.class, miss: miss})
}

// jobDeletes is job for a delete: keys[i] are part i's keys, queued when its shard is down.
func (b *batch) jobDeletes(parts []part, keys [][]string, miss func(w *resp.Writer), finish func(w *resp.Writer, results []partResult)) {
	b.replies = append(b.replies, pending{parts: parts, finish: finish, class: b.class, miss: miss, keys: keys})
}

// jobWrites is job for a write over several shards: keys[i] are part i's keys, named in the
// error when some parts were written and others not (partialWrite).
func (b *batch) jobWrites(parts []part, keys [][]string, finish func(w *resp.Writer, results []partResult)) {
	b.replies = append(b.replies, pending{parts: parts, finish: finish, class: b.class, keys: keys})
}

// onShardDown is the one place that decides what a down shard means for a command, by its
// class. It reports whether it has written the reply.
func (s *Server) onShardDown(p *pending, results []partResult, w *resp.Writer) bool {
	down := -1
	for i := range results {
		if results[i].err != nil {
			down = i
			break
		}
	}
	if down < 0 {
		return false
	}
	switch p.class {
	case classRead:
		if p.miss != nil { // a single-key read: a miss, never an error
			s.Stats.L2Misses.Add(1)
			p.miss(w)
			return true
		}
		return false // multi-key reads: finish reads the down parts' keys as missing
	case classDelete:
		for i := range results {
			if results[i].err != nil {
				results[i].shard.QueueDelete(p.keys[i]...)
				results[i].queued = true
			}
		}
		if p.miss != nil { // GETDEL: the value cannot be returned, the delete is not lost
			p.miss(w)
			return true
		}
		return false
	default: // write
		if len(results) > 1 && len(p.keys) == len(results) {
			w.Error(partialWrite(results, p.keys))
			return true
		}
		reply.WriteErr(w, results[down].err)
		return true
	}
}

// partialWrite is the error of a write over several shards of which some were down: a
// cross-shard MSET is not atomic (as in Valkey Cluster, where it is refused outright), so the
// client is told exactly which keys were written and which were not, to retry those.
func partialWrite(results []partResult, keys [][]string) string {
	var written, lost []string
	var cause error
	for i := range results {
		if results[i].err != nil {
			lost = append(lost, keys[i]...)
			if cause == nil {
				cause = results[i].err
			}
			continue
		}
		written = append(written, keys[i]...)
	}
	return fmt.Sprintf("%s; written: %s; not written: %s", cause, quoteKeys(written), quoteKeys(lost))
}

// quoteKeys lists keys for an error, the first 20.
func quoteKeys(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	var sb strings.Builder
	for i, k := range keys {
		if i == 20 {
			fmt.Fprintf(&sb, " and %d more", len(keys)-20)
			break
		}
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "'%s'", truncate([]byte(k)))
	}
	return sb.String()
}

// exec runs the queued shard work and writes every reply so far, in order.
func (b *batch) exec(ctx context.Context, w *resp.Writer) {
	if len(b.written) > 0 && b.r.Warming() {
		b.s.dropPrevious(ctx, b.r, b.written)
	}
	var active []int
	for i := range b.work {
		if b.work[i].used {
			active = append(active, i)
		}
	}
	run := func(i int) {
		sw := &b.work[i]
		sh := b.r.Shards[i]
		if sw.lane == cacheLane {
			sw.results, sw.err = sh.DoMultiCache(ctx, func(bd valkey.Builder) []valkey.CacheableTTL {
				out := make([]valkey.CacheableTTL, len(sw.cached))
				for j, c := range sw.cached {
					out[j] = valkey.CT(c.build(bd), c.ttl)
				}
				return out
			})
			return
		}
		b.runPlain(ctx, i)
	}
	switch len(active) {
	case 0:
	case 1:
		run(active[0])
	default:
		var wg sync.WaitGroup
		for _, i := range active[1:] {
			wg.Go(func() { run(i) })
		}
		run(active[0])
		wg.Wait()
	}
	if b.warms > 0 {
		b.warmUp(ctx)
	}
	if b.origins > 0 {
		b.readThrough(ctx)
	}
	if len(b.written) > 0 {
		b.s.settleBy(b.r, b.cid, b.written...)
	}
	if b.c != nil {
		held := b.heldBytes()
		b.c.adaptBatch(held, len(b.replies), b.s.cfg.MaxBatch)
		disconnect, within := b.s.cfg.Output.verdict(held)
		if !disconnect && held > 0 {
			disconnect = !b.s.holdOutput(b.c, held)
		}
		if disconnect {
			b.s.Stats.OutputLimitClosed.Add(1)
			b.c.quit, b.c.overLimit = true, true
			b.reset(b.r)
			b.flushes++
			return
		}
		if within > 0 {
			_ = b.c.nc.SetWriteDeadline(time.Now().Add(within))
			b.c.deadlineSet = true
		}
	}
	b.writeReplies(w)
	b.reset(b.r)
	b.flushes++
}

// writeReplies writes the batch's replies in order (a silenced one to nowhere), counting each.
func (b *batch) writeReplies(w *resp.Writer) {
	var results []partResult
	now := time.Now() // one clock read for the replies written together
	for i := range b.replies {
		p := &b.replies[i]
		pw := w
		if p.muted {
			pw = b.silent(w.Proto)
		}
		errorsBefore := pw.Errors
		if !p.writeLocal(pw) {
			results = b.replyFrom(p, results, pw)
		}
		if p.cmd != nil {
			b.s.Stats.count(p.cmd, pw.Errors > errorsBefore)
			b.s.Stats.latency.Observe(now.Sub(p.start).Seconds())
		}
	}
}

// silent is a writer to nowhere, for the replies CLIENT REPLY silences.
func (b *batch) silent(proto int) *resp.Writer {
	if b.mute == nil {
		b.mute = resp.NewWriter(bufio.NewWriterSize(io.Discard, 512))
	}
	b.mute.Proto = proto
	return b.mute
}

// buildAll builds a lane's commands for one pipeline.
func buildAll(cmds []buildFn) func(valkey.Builder) []valkey.Completed {
	return func(bd valkey.Builder) []valkey.Completed {
		out := make([]valkey.Completed, len(cmds))
		for j, f := range cmds {
			out[j] = f(bd)
		}
		return out
	}
}

// runPlain sends shard i's plain lane as one pipeline.
func (b *batch) runPlain(ctx context.Context, i int) {
	sw := &b.work[i]
	sw.results, sw.err = b.r.Shards[i].DoMulti(ctx, buildAll(sw.plain))
	if sw.err == nil && !b.tx {
		if from := firstReadOnly(sw.results); from >= 0 {
			b.resendToNewPrimary(ctx, i, sw, from)
		}
	}
}

// replyFrom writes a job's reply from what its parts got (or, for a warmed read, from what its
// key's previous owner held); results is scratch space, returned for reuse.
func (b *batch) replyFrom(p *pending, results []partResult, w *resp.Writer) []partResult {
	results = b.results(*p, results[:0])
	if p.warm != nil && p.warm.res != nil {
		results[0].res = p.warm.res[:len(results[0].res)]
	}
	if len(p.origin) == 1 && p.origin[0].elem < 0 && p.origin[0].ans != nil { // a GET read through
		rd := p.origin[0]
		b.s.Stats.L2Misses.Add(1)
		rd.ans.Write(w, rd.rules)
		return results
	}
	if !b.s.onShardDown(p, results, w) {
		p.finish(w, results)
	}
	return results
}

// results collects what a job's parts got from their shards.
func (b *batch) results(p pending, results []partResult) []partResult {
	for _, pt := range p.parts {
		sw := &b.work[pt.shard]
		pr := partResult{shard: b.r.Shards[pt.shard], err: sw.err}
		if sw.err == nil {
			pr.res = sw.results[pt.first : pt.first+pt.n]
		}
		results = append(results, pr)
	}
	return results
}

// boolIndex is 1 for true: the error column of a request counter.
func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rulesFor returns the policy rules for key in the batch's ring.
func (b *batch) rulesFor(key []byte) policy.Rules { return policy.For(b.r.Doc, key) }

// shardOf returns the owner's index, flushing the segment first if the lane is taken.
func (b *batch) shardOf(ctx context.Context, w *resp.Writer, key []byte, l lane) int {
	return b.laneTaken(ctx, w, b.r.Index(key), l)
}

// laneTaken returns shard i, flushing the segment first if its lane l is taken.
func (b *batch) laneTaken(ctx context.Context, w *resp.Writer, i int, l lane) int {
	if !b.laneFree(i, l) {
		b.exec(ctx, w)
	}
	return i
}
