package server

import (
	"context"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/resp"
)

// Multi-key and keyspace commands: split by owner shard, answered in the client's order.

// groupKeys splits keys by owner shard, keeping for each shard the positions of its keys.
func (b *batch) groupKeys(ctx context.Context, w *resp.Writer, keys [][]byte) (shards []int, positions map[int][]int) {
	positions = map[int][]int{}
	for pos, k := range keys {
		i := b.r.Index(k)
		if _, seen := positions[i]; !seen {
			shards = append(shards, i)
		}
		positions[i] = append(positions[i], pos)
	}
	for _, i := range shards {
		if !b.laneFree(i, plainLane) {
			b.exec(ctx, w)
			break
		}
	}
	return shards, positions
}

// perShard queues one command per owner shard, built from that shard's keys, for a read of
// every key in args. where[j] holds the positions in args of part j's keys.
func (b *batch) perShard(ctx context.Context, w *resp.Writer, args [][]byte, build func(valkey.Builder, []string) valkey.Completed) (keys []string, where [][]int, parts []part) {
	keys = strs(args)
	shards, positions := b.groupKeys(ctx, w, args)
	parts, where = make([]part, len(shards)), make([][]int, len(shards))
	for j, i := range shards {
		g := pick(keys, positions[i])
		where[j] = positions[i]
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
	s.announce(keys...)
	shards, positions := b.groupKeys(ctx, w, args[1:])
	parts := make([]part, len(shards))
	groups := make([][]string, len(shards))
	for j, i := range shards {
		groups[j] = pick(keys, positions[i])
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
				writeResult(w, pr.res[0], false)
				return
			}
			n += v
		}
		w.Int(n)
	})
}

func cmdExists(ctx context.Context, _ *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	_, _, parts := b.perShard(ctx, w, args[1:], func(bd valkey.Builder, g []string) valkey.Completed { return bd.Exists().Key(g...).Build() })
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

func cmdMget(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	keys, where, parts := b.perShard(ctx, w, args[1:], func(bd valkey.Builder, g []string) valkey.Completed { return bd.Mget().Key(g...).Build() })
	job := len(b.replies)
	b.job(parts, func(w *resp.Writer, r []partResult) {
		values := make([]*valkey.ValkeyMessage, len(keys))
		for j, pr := range r {
			if pr.err != nil {
				continue // nils: a down shard reads as misses
			}
			arr, err := pr.res[0].ToArray()
			if err != nil {
				writeResult(w, pr.res[0], false)
				return
			}
			for k, pos := range where[j] {
				values[pos] = &arr[k]
			}
		}
		var through map[int]*originRead // keys read through an origin, by position (nil without origins)
		if reads := b.replies[job].origin; len(reads) > 0 {
			through = make(map[int]*originRead, len(reads))
			for _, rd := range reads {
				through[rd.pos] = rd
			}
		}
		w.Array(len(values))
		for pos, v := range values {
			if rd := through[pos]; rd != nil && rd.ans != nil {
				s.Stats.L2Misses.Add(1)
				writeAnswer(w, rd.ans, rd.rules)
				continue
			}
			if v == nil || v.IsNil() {
				s.Stats.L2Misses.Add(1)
				w.Null()
				continue
			}
			s.Stats.L2Hits.Add(1)
			writeMessage(w, v, false)
		}
	})
	if !b.r.ReadsThrough {
		return
	}
	for j, positions := range where {
		for k, pos := range positions {
			rules := b.rulesFor(args[1+pos])
			b.readThroughOnMiss(keys[pos], &rules, j, 0, k, pos)
		}
	}
}

// cmdMset writes each pair with its policy TTL (MSET itself cannot set one). Pairs on a down
// shard fail the command with that shard named; pairs on other shards are written.
func cmdMset(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	if len(args)%2 != 1 {
		b.local(func(w *resp.Writer) { w.Error("ERR wrong number of arguments for 'mset' command") })
		return
	}
	var keys [][]byte
	for i := 1; i < len(args); i += 2 {
		if s.oversize(b, b.rulesFor(args[i]), str(args[i]), len(args[i+1])) {
			return
		}
		keys = append(keys, args[i])
	}
	type pair struct {
		k, v string
		ttl  time.Duration
	}
	pairs := make([]pair, len(keys))
	for j := range keys {
		rules := b.rulesFor(keys[j])
		pairs[j] = pair{str(keys[j]), stored(rules, str(args[2+2*j])), rules.WriteTTL(nil)}
		s.announce(pairs[j].k)
	}
	shards, positions := b.groupKeys(ctx, w, keys)
	parts := make([]part, len(shards))
	for j, i := range shards {
		var cmds []buildFn
		for _, pos := range positions[i] {
			p := pairs[pos]
			cmds = append(cmds, func(bd valkey.Builder) valkey.Completed {
				if p.ttl <= 0 {
					return bd.Set().Key(p.k).Value(p.v).Build()
				}
				return bd.Set().Key(p.k).Value(p.v).Px(p.ttl).Build()
			})
		}
		parts[j] = b.plain(i, cmds...)
	}
	for _, p := range pairs {
		b.wrote(p.k)
	}
	b.job(parts, func(w *resp.Writer, r []partResult) {
		for _, pr := range r {
			for _, res := range pr.res {
				if res.Error() != nil {
					writeResult(w, res, false)
					return
				}
			}
		}
		w.OK()
	})
}

// cmdExpire covers EXPIRE, PEXPIRE and PERSIST: writes that change a key's lifetime.
func cmdExpire(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key, rest := strings.ToUpper(str(args[0])), str(args[1]), strs(args[2:])
	s.announce(key)
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
	b.jobMiss([]part{p}, miss, func(w *resp.Writer, r []partResult) { writeResult(w, r[0].res[0], name == "TYPE") })
}
