package server

import (
	"context"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Multi-key and keyspace commands: split by owner shard, answered in the client's order.

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
	s.announce(keys...)
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
				writeResult(w, pr.res[0], false)
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

// cmdMget answers the keys the L1 holds from it, as GET would, and reads the rest from their
// shards: with one MGET per shard, or, where the shard's keys are all tracking-L1 keys the
// admission takes, as tracked reads whose values are copied (mgetCopies).
func cmdMget(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	hits, rest, restPos := b.mgetFromL1(s, args[1:])
	if len(rest) == 0 {
		b.local(func(w *resp.Writer) { s.writeMget(w, make([]*valkey.ValkeyMessage, len(hits)), hits, nil) })
		return
	}
	keys := strs(rest)
	parts, where, copies := b.mgetParts(ctx, w, s, rest, keys)
	job := len(b.replies)
	b.job(parts, func(w *resp.Writer, r []partResult) {
		values, failed := mgetValues(r, copies, where, restPos, len(args)-1)
		if failed != nil {
			writeResult(w, *failed, false)
			return
		}
		s.writeMget(w, values, hits, b.replies[job].origin)
	})
	if !b.r.ReadsThrough {
		return
	}
	for j, positions := range where {
		if copies[j] != nil {
			continue // no key with an origin is copied
		}
		for k, i := range positions {
			rules := b.rulesFor(rest[i])
			b.readThroughOnMiss(keys[i], &rules, j, 0, k, restPos[i])
		}
	}
}

// mgetParts queues the shard reads of an MGET's L1 misses: part j reads the keys at where[j],
// as the tracked reads copies[j] or, where that is nil, as one MGET.
func (b *batch) mgetParts(ctx context.Context, w *resp.Writer, s *Server, rest [][]byte, keys []string) (parts []part, where [][]int, copies [][]cachedRead) {
	shards, positions := b.byShard(rest)
	copies = b.mgetCopies(s, rest, shards, positions, !b.tx && !b.direct)
	for j, i := range shards {
		if !b.laneFree(i, laneOf(copies[j] != nil)) {
			b.exec(ctx, w)
			break
		}
	}
	parts, where = make([]part, len(shards)), make([][]int, len(shards))
	for j, i := range shards {
		where[j] = positions[j]
		if copies[j] != nil {
			parts[j] = b.cached(i, copies[j]...)
			continue
		}
		g := pick(keys, positions[j])
		parts[j] = b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Mget().Key(g...).Build() })
	}
	return parts, where, copies
}

// mgetValues places each part's values at their keys' positions in the reply (nil: a miss, or a
// down shard's key); failed is a shard's error reply, which answers the whole MGET.
func mgetValues(r []partResult, copies [][]cachedRead, where [][]int, restPos []int, n int) (values []*valkey.ValkeyMessage, failed *valkey.ValkeyResult) {
	values = make([]*valkey.ValkeyMessage, n)
	for j, pr := range r {
		if pr.err != nil {
			continue // nils: a down shard reads as misses
		}
		if copies[j] != nil { // a GET's reply per key
			for k, i := range where[j] {
				msg, err := pr.res[k].ToMessage()
				switch {
				case err == nil:
					values[restPos[i]] = &msg
				case !valkey.IsValkeyNil(err) && !wrongType(err): // MGET reads another type as nil
					return nil, &pr.res[k]
				}
			}
			continue
		}
		arr, err := pr.res[0].ToArray()
		if err != nil {
			return nil, &pr.res[0]
		}
		for k, i := range where[j] {
			values[restPos[i]] = &arr[k]
		}
	}
	return values, nil
}

// wrongType reports whether err is a shard's WRONGTYPE error.
func wrongType(err error) bool {
	ve, ok := valkey.IsValkeyErr(err)
	return ok && strings.HasPrefix(ve.Error(), "WRONGTYPE")
}

func laneOf(cached bool) lane {
	if cached {
		return cacheLane
	}
	return plainLane
}

// mgetCopies has each shard of an MGET's L1 misses read as shareKept decides: as tracked reads
// whose values are copied, as GET copies (copies[j]), or with one MGET (nil). Nothing is copied
// for a client that must see the shards' replies (l1 false), nor while the ring is warmed up
// (a moved key's previous owner is read on the full GET path only).
func (b *batch) mgetCopies(s *Server, keys [][]byte, shards []int, positions [][]int, l1 bool) [][]cachedRead {
	copies := make([][]cachedRead, len(shards))
	if !l1 || b.r.Warming() {
		return copies
	}
	rules := make([]policy.Rules, 0, len(keys))
	for j := range shards {
		share := positions[j]
		rules = rules[:0]
		for _, pos := range share {
			rules = append(rules, b.rulesFor(keys[pos]))
		}
		kept, refused := shareKept(len(share), func(k int) *policy.Rules { return &rules[k] },
			func(k int) bool { return b.r.ShardFor(keys[share[k]]).Admit(keys[share[k]]) })
		if !kept {
			s.Stats.L1NotAdmitted.Add(int64(refused))
			continue
		}
		reads := make([]cachedRead, len(share))
		for k, pos := range share {
			key := str(keys[pos])
			reads[k] = cachedRead{build: func(bd valkey.Builder) valkey.Cacheable { return bd.Get().Key(key).Cache() }, ttl: rules[k].L1TTL}
		}
		copies[j] = reads
	}
	return copies
}

// writeMget writes an MGET's reply: each key's L1 hit, origin answer or shard value.
func (s *Server) writeMget(w *resp.Writer, values []*valkey.ValkeyMessage, hits []pending, origin []*originRead) {
	var through map[int]*originRead // keys read through an origin, by position (nil without origins)
	if len(origin) > 0 {
		through = make(map[int]*originRead, len(origin))
		for _, rd := range origin {
			through[rd.pos] = rd
		}
	}
	w.Array(len(values))
	for pos, v := range values {
		if hits != nil && hits[pos].hit != noHit {
			hits[pos].writeLocal(w)
			continue
		}
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
}

// mgetFromL1 looks an MGET's keys up in the L1: hits holds the replies of those it holds, by
// position (nil when none does), and rest the others, at restPos in the reply.
func (b *batch) mgetFromL1(s *Server, keys [][]byte) (hits []pending, rest [][]byte, restPos []int) {
	if b.tx || b.direct { // as for GET: the shard's reply is the only coherent one
		return nil, keys, identity(len(keys))
	}
	now := time.Now()
	for pos, key := range keys {
		rules := b.rulesFor(key)
		if rules.L1 {
			pc := s.Stats.forPolicy(rules.Name)
			if p, ok := b.fromL1(s, key, &rules, pc, now); ok {
				if hits == nil {
					hits = make([]pending, len(keys))
				}
				hits[pos] = p
				continue
			}
			s.missL1(pc)
		}
		rest, restPos = append(rest, key), append(restPos, pos)
	}
	return hits, rest, restPos
}

func identity(n int) []int {
	pos := make([]int, n)
	for i := range pos {
		pos[i] = i
	}
	return pos
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
	parts, partKeys := make([]part, len(shards)), make([][]string, len(shards))
	for j, i := range shards {
		var cmds []buildFn
		for _, pos := range positions[j] {
			p := pairs[pos]
			partKeys[j] = append(partKeys[j], p.k)
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
	b.jobWrites(parts, partKeys, func(w *resp.Writer, r []partResult) {
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
