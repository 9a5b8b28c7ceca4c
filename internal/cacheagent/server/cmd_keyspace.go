package server

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/cacheagent/tags"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Keyspace commands over the whole fleet: SCAN walks the shards one after the other, KEYS and
// DBSIZE gather from all of them. The agent's own keys (lease and tag bookkeeping) are left
// out of SCAN and KEYS: tools that inspect what they find must not meet types the agent does
// not serve. A down shard reads as empty (its keys are missed, never an error).

// scanShardBits: a SCAN cursor is the shard's position in the ring document (high bits) and
// that shard's own cursor (low bits; Valkey's cursors stay far below 2^48). Positions are
// stable across epochs (scale-up appends, scale-in removes the last), so a cursor survives an
// epoch change without skipping keys that did not move.
const scanShardBits = 48

func internalKey(k string) bool {
	return strings.HasPrefix(k, lease.Key("")) || strings.HasPrefix(k, tags.Index(""))
}

func cmdScan(ctx context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	cursor, err := strconv.ParseUint(str(args[1]), 10, 64)
	if err != nil {
		b.local(func(w *resp.Writer) { w.Error("ERR invalid cursor") })
		return
	}
	opts := strs(args[2:])
	pos, shardCursor := int(cursor>>scanShardBits), cursor&(1<<scanShardBits-1)
	shards := b.r.Shards
	b.local(func(w *resp.Writer) {
		var keys []string
		next := uint64(0)
		if pos < len(shards) {
			res, err := shards[pos].Do(ctx, func(bd valkey.Builder) valkey.Completed {
				return bd.Arbitrary("SCAN").Args(strconv.FormatUint(shardCursor, 10)).Args(opts...).Build()
			})
			if err == nil && res.Error() != nil {
				reply.Relay(w, res) // a bad option: the shard's own words
				return
			}
			var c uint64 // a down shard: read as empty, go on with the next
			if err == nil {
				entry, _ := res.AsScanEntry()
				c, keys = entry.Cursor, entry.Elements
			}
			switch {
			case c != 0:
				next = uint64(pos)<<scanShardBits | c
			case pos+1 < len(shards):
				next = uint64(pos+1) << scanShardBits
			}
		}
		keys = dropInternal(keys)
		w.Array(2)
		w.BulkString(strconv.FormatUint(next, 10))
		w.Array(len(keys))
		for _, k := range keys {
			w.BulkString(k)
		}
	})
}

func dropInternal(keys []string) []string {
	out := keys[:0]
	for _, k := range keys {
		if !internalKey(k) {
			out = append(out, k)
		}
	}
	return out
}

// eachShard runs one command on every shard at once; failed shards are left out.
func eachShard(ctx context.Context, shards []*router.Shard, build func(valkey.Builder) valkey.Completed) []valkey.ValkeyResult {
	out := make([]valkey.ValkeyResult, len(shards))
	ok := make([]bool, len(shards))
	var wg sync.WaitGroup
	for i, sh := range shards {
		wg.Go(func() {
			res, err := sh.Do(ctx, build)
			out[i], ok[i] = res, err == nil
		})
	}
	wg.Wait()
	var got []valkey.ValkeyResult
	for i := range out {
		if ok[i] {
			got = append(got, out[i])
		}
	}
	return got
}

func cmdKeys(ctx context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	pattern := str(args[1])
	b.local(func(w *resp.Writer) {
		var keys []string
		for _, res := range eachShard(ctx, b.r.Shards, func(bd valkey.Builder) valkey.Completed { return bd.Keys().Pattern(pattern).Build() }) {
			ks, _ := res.AsStrSlice()
			keys = append(keys, dropInternal(ks)...)
		}
		w.Array(len(keys))
		for _, k := range keys {
			w.BulkString(k)
		}
	})
}

func cmdDbsize(ctx context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, _ [][]byte) {
	b.local(func(w *resp.Writer) {
		var n int64
		for _, res := range eachShard(ctx, b.r.Shards, func(bd valkey.Builder) valkey.Completed { return bd.Dbsize().Build() }) {
			v, _ := res.AsInt64()
			n += v
		}
		w.Int(n)
	})
}

// cmdFlush covers FLUSHALL and FLUSHDB: refused unless the fleet allows it; then every shard
// is emptied, this agent's L1 dropped at once and the other agents' through the bus.
func cmdFlush(ctx context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	name := strings.ToUpper(str(args[0]))
	if len(args) > 2 || (len(args) == 2 && !strings.EqualFold(str(args[1]), "async") && !strings.EqualFold(str(args[1]), "sync")) {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
		return
	}
	if !b.r.Doc.Tiers.AllowFlush {
		msg := "ERR " + name + " is refused by the cachefleet agent: it would empty every shard of the fleet. " +
			"Set spec.tiers.l2.allowFlush: true on the CacheFleet (--allow-flush in static mode) to allow it"
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	rest := strs(args[1:])
	r := b.r
	b.local(func(w *resp.Writer) {
		var failed error
		s.tracking.Flushing()
		for _, sh := range r.Shards {
			if _, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Args(rest...).Build() }); err != nil && failed == nil {
				failed = err
			}
			sh.FenceAll()
		}
		s.L1().Clear()
		s.tracking.InvalidateAll()
		_ = s.broadcast(ctx, bus.OpFlush) // failures are counted by the bus; copies expire with their L1 TTL
		if failed != nil {
			reply.WriteErr(w, failed) // names the shard that was not emptied
			return
		}
		w.OK()
	})
}

// cmdRandomkey asks the shards, in a random order, for a random key until one has a key that
// is the application's (the agent's own lease and tag keys are never answered); nil when none.
func cmdRandomkey(ctx context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, _ [][]byte) {
	shards := b.r.Shards
	b.local(func(w *resp.Writer) {
		for _, i := range rand.Perm(len(shards)) { //nolint:gosec // spreads the asking, not a secret
			for range 8 { // a shard holding mostly internal keys: a few more tries
				res, err := shards[i].Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.Randomkey().Build() })
				k, kerr := res.ToString()
				if err != nil || kerr != nil {
					break // down, or empty
				}
				if !internalKey(k) {
					w.BulkString(k)
					return
				}
			}
		}
		w.Null()
	})
}
