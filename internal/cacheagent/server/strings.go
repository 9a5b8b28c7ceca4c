package server

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Commands on one string key: GET, SET and its variants, INCR.

// rulesFor returns the policy rules for key in the batch's ring.
func (b *batch) rulesFor(key []byte) policy.Rules { return policy.For(b.r.Doc, key) }

// shardOf returns the owner's index, flushing the segment first if the lane is taken.
func (b *batch) shardOf(ctx context.Context, w *resp.Writer, key []byte, l lane) int {
	i := b.r.Index(key)
	if !b.laneFree(i, l) {
		b.exec(ctx, w)
	}
	return i
}

func cmdGet(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	rules := b.rulesFor(args[1])
	pc := s.Stats.forPolicy(rules.Name)
	plan := planGet(&rules, b.tx || b.direct) // a tracking client: the shard's reply is the only coherent one
	if plan.keeps() && b.answerFromL1(s, args[1], &rules, pc, time.Now()) {
		return
	}
	key := str(args[1])
	if plan.keeps() {
		if !s.admits(b.r, args[1], plan == getTracked) {
			plan = getPlain
		}
		if plan != getTracked {
			s.missL1(pc) // a tracked read's is counted with its reply, which may be the kept copy
		}
	}
	switch plan {
	case getTracked:
		i := b.shardOf(ctx, w, args[1], cacheLane)
		p := b.cached(i, cachedRead{build: func(bd valkey.Builder) valkey.Cacheable { return bd.Get().Key(key).Cache() }, ttl: rules.L1TTL})
		b.jobMiss([]part{p}, nullReply, func(w *resp.Writer, r []partResult) {
			res := r[0].res[0]
			if res.IsCacheHit() {
				s.hitL1(pc)
			} else {
				s.missL1(pc)
				s.countL2(res, pc)
			}
			writeResult(w, res, false)
		})
	case getFill:
		l1 := s.L1()
		ticket := l1.Ticket(key) // before the read leaves: a write acknowledged after refuses the fill
		fillRules := rules       // a copy for the fill below: capturing rules would put it on the heap for every GET
		i := b.shardOf(ctx, w, args[1], plainLane)
		p := b.plain(i,
			func(bd valkey.Builder) valkey.Completed { return bd.Get().Key(key).Build() },
			func(bd valkey.Builder) valkey.Completed { return bd.Pttl().Key(key).Build() })
		b.jobMiss([]part{p}, nullReply, func(w *resp.Writer, r []partResult) {
			res := r[0].res[0]
			s.countL2(res, pc)
			raw, err := res.ToString()
			v, present := readable(raw)
			if err != nil || !present {
				writeResult(w, res, false)
				return
			}
			if pttl, err := r[0].res[1].AsInt64(); err == nil {
				l1.Fill(ticket, key, []byte(v), freshFor(raw, fillRules.L1Lifetime(pttl)))
			}
			w.BulkString(v)
		})
	default:
		i := b.shardOf(ctx, w, args[1], plainLane)
		p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Get().Key(key).Build() })
		b.jobMiss([]part{p}, nullReply, func(w *resp.Writer, r []partResult) {
			s.countL2(r[0].res[0], pc)
			writeResult(w, r[0].res[0], false)
		})
	}
	b.warmOnMiss(args[1])
	b.readThroughOnMiss(key, &rules, 0, 0, -1, 0)
}

// answerFromL1 answers a GET from the L1 when it holds a usable copy (fromL1).
func (b *batch) answerFromL1(s *Server, keyb []byte, rules *policy.Rules, pc *policyCounters, now time.Time) bool {
	p, ok := b.fromL1(s, keyb, rules, pc, now)
	if ok {
		b.replies = append(b.replies, p)
	}
	return ok
}

// fromL1 is lookupL1, counting a hit.
func (b *batch) fromL1(s *Server, keyb []byte, rules *policy.Rules, pc *policyCounters, now time.Time) (pending, bool) {
	p, ok := b.lookupL1(s, keyb, rules, now)
	if ok {
		s.hitL1(pc)
	}
	return p, ok
}

// lookupL1 is the reply a GET of key gets from the L1 at now (a caller that read the clock
// passes it on: a clock read was a few percent of a hit's CPU), when it holds a usable copy.
// The key is looked up through a view of the read buffer, which nothing keeps past the call: a
// hit allocates nothing. A kept miss of a moved key is not answered: its previous owner may hold
// the key.
func (b *batch) lookupL1(s *Server, keyb []byte, rules *policy.Rules, now time.Time) (pending, bool) {
	key := unsafe.String(unsafe.SliceData(keyb), len(keyb)) //nolint:gosec // a view for lookups only, never kept
	if b.writing(key) {
		return pending{}, false
	}
	if !rules.L1Tracking {
		v, ok := s.L1().Get(key)
		if !ok {
			return pending{}, false
		}
		return pending{hit: copyHit, copyVal: v}, true
	}
	k, ok := b.r.ShardFor(keyb).KeptGet(key, now)
	if !ok || !keptAnswers(&k, rules) || (k.Nil && b.r.PreviousOwner(keyb) != nil) {
		return pending{}, false
	}
	return pending{hit: keptHit, kept: k}, true
}

// admits reports whether a read of key that missed the L1 (tracking or ttl mode) should be
// copied (l1.Admission); refused, it is read from the shard as is.
func (s *Server) admits(r *router.Router, key []byte, tracked bool) bool {
	if tracked {
		return s.counted(r.ShardFor(key).Admit(key))
	}
	return s.counted(s.L1().Admit(key))
}

// counted returns admitted, counting a refusal.
func (s *Server) counted(admitted bool) bool {
	if !admitted {
		s.Stats.L1NotAdmitted.Add(1)
	}
	return admitted
}

// keptAnswers reports whether a kept (tracking) read may be answered locally: under a policy
// with an origin, a kept miss or a stale value is not, the origin or a refresh is due.
func keptAnswers(k *router.Kept, rules *policy.Rules) bool {
	if rules.Origin == nil {
		return true
	}
	return !k.Nil && freshFor(k.Val, time.Hour) > 0
}

// freshFor caps an L1 lifetime at an origin-filled value's freshness: L1 holds fresh copies
// only, so a stale value is always seen by the read-through.
func freshFor(raw string, life time.Duration) time.Duration {
	if until, _, stamped := codec.Unstamp(raw); stamped {
		return min(life, max(time.Until(until), 0))
	}
	return life
}

// nullReply is the miss of a single-key read.
func nullReply(w *resp.Writer) { w.Null() }

// countL2 counts a shard read, for the agent and, when pc is set, for the key's policy.
func (s *Server) countL2(res valkey.ValkeyResult, pc *policyCounters) {
	s.countRead(valkey.IsValkeyNil(res.Error()), pc)
}

// countRead counts a shard read that found its key, or missed.
func (s *Server) countRead(miss bool, pc *policyCounters) {
	if miss {
		s.Stats.L2Misses.Add(1)
	} else {
		s.Stats.L2Hits.Add(1)
	}
	if pc != nil {
		pc[2+boolIndex(miss)].Add(1)
	}
}

func (s *Server) hitL1(pc *policyCounters) {
	s.Stats.L1Hits.Add(1)
	pc[0].Add(1)
}

func (s *Server) missL1(pc *policyCounters) {
	s.Stats.L1Misses.Add(1)
	pc[1].Add(1)
}

// settle makes the agent's own writes of keys visible to its next reads: it drops the L1 copies
// (both modes) and refuses fills whose read was issued before. Call it after the shard
// acknowledged (or failed) the write and before the client's reply: the shard's own
// invalidation push for a tracked key arrives only after the write's reply.
func (s *Server) settle(r *router.Router, keys ...string) { s.settleBy(r, 0, keys...) }

// settleBy is settle for a write by client by, whose tracking clients hear of it at once; the
// shard's watchers report it too, a little later.
func (s *Server) settleBy(r *router.Router, by int64, keys ...string) {
	s.tracking.Invalidate(by, keys...)
	l1 := s.L1()
	for _, k := range keys {
		l1.Delete(k)
		if r != nil {
			r.ShardFor([]byte(k)).Fence(k)
		}
	}
}

// announce tells the other agents, for policies that invalidate ttl-mode copies on write,
// that keys are being written. This agent's own copies are dropped by settle once the shard
// has answered (before that, a reader may see the old value, as it may on the shard).
func (s *Server) announce(keys ...string) {
	r, bus := s.Router(), s.bus.Load()
	if bus == nil || r == nil {
		return
	}
	for _, k := range keys {
		if rules := policy.For(r.Doc, []byte(k)); announcesWrites(&rules) {
			bus.DeleteAsync(k)
		}
	}
}

// oversize refuses a value over the key's limit; nothing is stored.
func (s *Server) oversize(b *batch, rules policy.Rules, key string, size int) bool {
	if rules.MaxValueBytes <= 0 || int64(size) <= rules.MaxValueBytes {
		return false
	}
	s.Stats.OversizeRejected.Add(1)
	msg := fmt.Sprintf("ERR value of %d bytes for key '%s' exceeds the limit of %d bytes", size, truncate([]byte(key)), rules.MaxValueBytes)
	b.local(func(w *resp.Writer) { w.Error(msg) })
	return true
}

// writeJob forwards one write command to key's shard: errors name the shard when it is down.
func (b *batch) writeJob(ctx context.Context, w *resp.Writer, key []byte, status bool, cmds ...buildFn) {
	i := b.shardOf(ctx, w, key, plainLane)
	p := b.plain(i, cmds...)
	b.wrote(string(key))
	b.job([]part{p}, func(w *resp.Writer, r []partResult) { writeResult(w, r[0].res[0], status) })
}

func cmdSet(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key := str(args[1])
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(args[2])) {
		return
	}
	hasExpiry, withGet := false, false
	for i := 3; i < len(args); i++ {
		switch strings.ToUpper(str(args[i])) {
		case "EX", "PX", "EXAT", "PXAT":
			if i+1 >= len(args) {
				b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
				return
			}
			hasExpiry = true
			i++
		case "KEEPTTL":
			hasExpiry = true
		case "GET":
			withGet = true
		case "NX", "XX":
		default:
			b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
			return
		}
	}
	rest := strs(args[2:])
	rest[0] = stored(rules, rest[0])
	if px := writeExpiry(&rules); !hasExpiry && px != nil {
		rest = append(rest, "PX", string(px))
	}
	s.announce(key)
	cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary("SET").Keys(key).Args(rest...).Build() }}
	if rules.LeaseTTL > 0 {
		// Fresh data written directly: a pending fill is older, refuse it.
		lk := lease.Key(key)
		cmds = append(cmds, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(lk).Build() })
	}
	b.writeJob(ctx, w, args[1], !withGet, cmds...)
}

// leaseKeys are the lease keys of those keys whose policy uses stampede protection.
func (b *batch) leaseKeys(keys []string) []string {
	var out []string
	for _, k := range keys {
		if policy.For(b.r.Doc, []byte(k)).LeaseTTL > 0 {
			out = append(out, lease.Key(k))
		}
	}
	return out
}

func cmdSetex(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	key, name := str(args[1]), strings.ToUpper(str(args[0]))
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(args[3])) {
		return
	}
	ttl, val := str(args[2]), stored(rules, str(args[3]))
	s.announce(key)
	b.writeJob(ctx, w, args[1], true, func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Keys(key).Args(ttl, val).Build()
	})
}

func cmdGetex(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key, rest := str(args[1]), strs(args[2:])
	s.announce(key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary("GETEX").Keys(key).Args(rest...).Build() })
	b.wrote(key)
	b.jobMiss([]part{p}, nullReply, func(w *resp.Writer, r []partResult) { writeResult(w, r[0].res[0], false) })
}

func cmdGetdel(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key := str(args[1])
	s.announce(key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Getdel().Key(key).Build() })
	b.wrote(key)
	b.jobDeletes([]part{p}, [][]string{{key}}, nullReply, func(w *resp.Writer, r []partResult) {
		writeResult(w, r[0].res[0], false)
	})
}

// cmdIncr covers INCR, DECR, INCRBY, DECRBY. A counter created by the increment gets the
// policy TTL (PEXPIRE ... NX leaves an existing expiry alone).
func cmdIncr(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key, rest := strings.ToUpper(str(args[0])), str(args[1]), strs(args[2:])
	rules := b.rulesFor(args[1])
	s.announce(key)
	cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(key).Args(rest...).Build() }}
	if px := writeExpiry(&rules); px != nil {
		cmds = append(cmds, func(bd valkey.Builder) valkey.Completed {
			return bd.Arbitrary("PEXPIRE").Keys(key).Args(string(px), "NX").Build()
		})
	}
	b.writeJob(ctx, w, args[1], false, cmds...)
}
