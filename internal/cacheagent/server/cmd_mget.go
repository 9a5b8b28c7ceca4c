package server

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// MGET, MSET and MSETNX on the goroutine path: split by owner shard (groupByShard), each
// shard's share read or written in one part, the replies combined in the client's order.

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
			reply.Write(w, *failed, false)
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
	copies = b.mgetCopies(s, rest, shards, positions, !b.tx)
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
		kept, refused := plan.ShareKept(len(share), func(k int) *policy.Rules { return &rules[k] },
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
			rd.ans.Write(w, rd.rules)
			continue
		}
		if v == nil || v.IsNil() {
			s.Stats.L2Misses.Add(1)
			w.Null()
			continue
		}
		s.Stats.L2Hits.Add(1)
		reply.WriteMessage(w, v, false)
	}
}

// mgetFromL1 looks an MGET's keys up in the L1: hits holds the replies of those it holds, by
// position (nil when none does), and rest the others, at restPos in the reply.
func (b *batch) mgetFromL1(s *Server, keys [][]byte) (hits []pending, rest [][]byte, restPos []int) {
	if b.tx { // as for GET: the shard's reply is the only coherent one
		return nil, keys, identity(len(keys))
	}
	now := time.Now()
	for pos, key := range keys {
		rules := b.rulesFor(key)
		if plan.ForGet(&rules, false, b.tracker).Keeps() {
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
		pairs[j] = pair{str(keys[j]), rules.Stored(str(args[2+2*j])), rules.WriteTTL(nil)}
		s.announce(b.cid, pairs[j].k)
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
					reply.Write(w, res, false)
					return
				}
			}
		}
		w.OK()
	})
}

// cmdMsetnx sets all or none, so its keys must share a shard.
func cmdMsetnx(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	if len(args)%2 != 1 {
		b.local(func(w *resp.Writer) { w.Error("ERR wrong number of arguments for 'msetnx' command") })
		return
	}
	var keys, values, ttls []string
	shard := -1
	for i := 1; i < len(args); i += 2 {
		rules := b.rulesFor(args[i])
		if s.oversize(b, rules, str(args[i]), len(args[i+1])) {
			return
		}
		if j := b.r.Index(args[i]); shard < 0 {
			shard = j
		} else if j != shard {
			msg := crossShard(str(args[i]), keys[0])
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
		keys = append(keys, str(args[i]))
		values = append(values, rules.Stored(str(args[i+1])))
		ttls = append(ttls, strconv.FormatInt(rules.WriteTTL(nil).Milliseconds(), 10))
	}
	s.announce(b.cid, keys...)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed {
		return bd.Eval().Script(msetnxScript).Numkeys(int64(len(keys))).Key(keys...).Arg(append(values, ttls...)...).Build()
	})
	b.wrote(keys...)
	b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.Relay(w, r[0].res[0]) })
}

// msetnxScript: MSETNX, then each key's policy TTL (ARGV: values, then TTLs in ms).
const msetnxScript = `
local n = #KEYS
local args = {}
for i = 1, n do args[2*i-1] = KEYS[i]; args[2*i] = ARGV[i] end
if redis.call('MSETNX', unpack(args)) == 0 then return 0 end
for i = 1, n do
  local ttl = tonumber(ARGV[n+i])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1`
