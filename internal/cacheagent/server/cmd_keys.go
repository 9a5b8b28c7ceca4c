package server

import (
	"context"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Commands on keys of any type: DEL, UNLINK, EXISTS (split by owner shard, answered in the
// client's order), EXPIRE and its variants, TTL, PTTL, TYPE.

// groupKeys splits keys by owner shard, keeping for each shard the positions of its keys.
func (b *batch) groupKeys(ctx context.Context, w *resp.Writer, keys [][]byte) (shards []int, positions [][]int) {
	shards, positions = b.byShard(keys)
	for _, i := range shards {
		if !b.laneFree(i, plainLane) {
			b.exec(ctx, w)
			break
		}
	}
	return shards, positions
}

// byShard groups keys by owner shard (groupByShard).
func (b *batch) byShard(keys [][]byte) (shards []int, positions [][]int) {
	return groupByShard(len(keys), nil, func(k int) (int, bool) { return b.r.Index(keys[k]), true })
}

// partPerShard queues one command per owner shard, built from that shard's keys, for a read of
// every key in args. where[j] holds the positions in args of part j's keys.
func (b *batch) partPerShard(ctx context.Context, w *resp.Writer, args [][]byte, build func(valkey.Builder, []string) valkey.Completed) (keys []string, where [][]int, parts []part) {
	keys = strs(args)
	shards, positions := b.groupKeys(ctx, w, args)
	parts, where = make([]part, len(shards)), make([][]int, len(shards))
	for j, i := range shards {
		g := pick(keys, positions[j])
		where[j] = positions[j]
		parts[j] = b.plain(i, func(bd valkey.Builder) valkey.Completed { return build(bd, g) })
	}
	return keys, where, parts
}

func pick(keys []string, positions []int) []string {
	out := make([]string, len(positions))
	for j, p := range positions {
		out[j] = keys[p]
	}
	return out
}

func cmdDel(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name := strings.ToUpper(str(args[0]))
	keys := strs(args[1:])
	s.announce(b.cid, keys...)
	shards, positions := b.groupKeys(ctx, w, args[1:])
	parts := make([]part, len(shards))
	groups := make([][]string, len(shards))
	for j, i := range shards {
		groups[j] = pick(keys, positions[j])
		g := groups[j]
		cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(g...).Build() }}
		if leases := b.leaseKeys(g); len(leases) > 0 {
			// A delete cancels pending fill leases, so a late, stale fill is refused.
			cmds = append(cmds, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(leases...).Build() })
		}
		parts[j] = b.plain(i, cmds...)
	}
	b.wrote(keys...)
	b.jobDeletes(parts, groups, nil, func(w *resp.Writer, r []partResult) {
		var n int64
		for j, pr := range r {
			if pr.queued { // replayed before the shard serves anything else: counted as deleted
				n += int64(len(groups[j]))
				continue
			}
			v, err := pr.res[0].AsInt64()
			if err != nil {
				reply.Write(w, pr.res[0], false)
				return
			}
			n += v
		}
		w.Int(n)
	})
}

func cmdExists(ctx context.Context, _ *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	_, _, parts := b.partPerShard(ctx, w, args[1:], func(bd valkey.Builder, g []string) valkey.Completed { return bd.Exists().Key(g...).Build() })
	b.job(parts, func(w *resp.Writer, r []partResult) {
		var n int64
		for _, pr := range r {
			if pr.err == nil {
				v, _ := pr.res[0].AsInt64()
				n += v
			}
		}
		w.Int(n)
	})
}

// cmdExpire covers EXPIRE, PEXPIRE and PERSIST: writes that change a key's lifetime.
func cmdExpire(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key, rest := strings.ToUpper(str(args[0])), str(args[1]), strs(args[2:])
	if rules := b.rulesFor(args[1]); len(rest) == 2 && strings.EqualFold(rest[1], "NX") && plan.WriteExpiry(&rules) != nil {
		// The key's TTL may be the policy's, not the application's own: NX ("only if it has no
		// TTL") then applies as LT (only if shorter than the TTL it has), so INCR then EXPIRE
		// NX still bounds a counter's window.
		rest = []string{rest[0], "LT"}
	}
	s.announce(b.cid, key)
	b.writeJob(ctx, w, args[1], false, func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Keys(key).Args(rest...).Build()
	})
}

// cmdTTL covers TTL, PTTL and TYPE: reads that answer as for a missing key when the shard is down.
func cmdTTL(ctx context.Context, _ *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key := strings.ToUpper(str(args[0])), str(args[1])
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(key).Build() })
	miss := func(w *resp.Writer) { w.Int(-2) } // a down shard reads as a missing key
	if name == "TYPE" {
		miss = func(w *resp.Writer) { w.Simple("none") }
	}
	b.jobMiss([]part{p}, miss, func(w *resp.Writer, r []partResult) { reply.Write(w, r[0].res[0], name == "TYPE") })
}
