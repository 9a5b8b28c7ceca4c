package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Commands on one string key: GET, SET and its variants, INCR, APPEND, STRLEN, GETRANGE,
// SETRANGE. On keys whose policy compresses values, the commands that address bytes inside a
// value answer from the decoded value (STRLEN, GETRANGE) or are refused (APPEND, SETRANGE):
// the stored bytes are not the client's.

func cmdGet(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	rules := b.rulesFor(args[1])
	pc := s.Stats.forPolicy(rules.Name)
	how := plan.ForGet(&rules, b.tx, b.tracker)
	if how.Keeps() && b.answerFromL1(s, args[1], &rules, pc, time.Now()) {
		return
	}
	key := str(args[1])
	if how.Keeps() {
		if !s.admits(b.r, args[1], how == plan.GetTracked) {
			how = plan.GetPlain
		}
		if how != plan.GetTracked {
			s.missL1(pc) // a tracked read's is counted with its reply, which may be the kept copy
		}
	}
	switch how {
	case plan.GetTracked:
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
			reply.Write(w, res, false)
		})
	case plan.GetFill:
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
			v, present := reply.Readable(raw)
			if err != nil || !present {
				reply.Write(w, res, false)
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
			reply.Write(w, r[0].res[0], false)
		})
	}
	b.warmOnMiss(args[1])
	b.readThroughOnMiss(key, &rules, 0, 0, -1, 0)
}

// nullReply is the miss of a single-key read.
func nullReply(w *resp.Writer) { w.Null() }

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
	rest[0] = rules.Stored(rest[0])
	if px := plan.WriteExpiry(&rules); !hasExpiry && px != nil {
		rest = append(rest, "PX", string(px))
	}
	s.announce(b.cid, key)
	cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary("SET").Keys(key).Args(rest...).Build() }}
	if rules.LeaseTTL > 0 {
		// Fresh data written directly: a pending fill is older, refuse it.
		lk := lease.Key(key)
		cmds = append(cmds, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(lk).Build() })
	}
	b.writeJob(ctx, w, args[1], !withGet, cmds...)
}

func cmdSetex(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	key, name := str(args[1]), strings.ToUpper(str(args[0]))
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(args[3])) {
		return
	}
	ttl, val := str(args[2]), rules.Stored(str(args[3]))
	s.announce(b.cid, key)
	b.writeJob(ctx, w, args[1], true, func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Keys(key).Args(ttl, val).Build()
	})
}

func cmdGetex(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key, rest := str(args[1]), strs(args[2:])
	s.announce(b.cid, key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary("GETEX").Keys(key).Args(rest...).Build() })
	b.wrote(key)
	b.jobMiss([]part{p}, nullReply, func(w *resp.Writer, r []partResult) { reply.Write(w, r[0].res[0], false) })
}

func cmdGetdel(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key := str(args[1])
	s.announce(b.cid, key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Getdel().Key(key).Build() })
	b.wrote(key)
	b.jobDeletes([]part{p}, [][]string{{key}}, nullReply, func(w *resp.Writer, r []partResult) {
		reply.Write(w, r[0].res[0], false)
	})
}

// cmdIncr covers INCR, DECR, INCRBY, DECRBY. A counter created by the increment gets the
// policy TTL (PEXPIRE ... NX leaves an existing expiry alone).
func cmdIncr(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key, rest := strings.ToUpper(str(args[0])), str(args[1]), strs(args[2:])
	rules := b.rulesFor(args[1])
	s.announce(b.cid, key)
	cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(key).Args(rest...).Build() }}
	if px := plan.WriteExpiry(&rules); px != nil {
		cmds = append(cmds, func(bd valkey.Builder) valkey.Completed {
			return bd.Arbitrary("PEXPIRE").Keys(key).Args(string(px), "NX").Build()
		})
	}
	b.writeJob(ctx, w, args[1], false, cmds...)
}

// refusedOnCompressed answers commands that address the stored bytes of an encoded value
// (compressed, or stamped with its freshness by a read-through).
func refusedOnCompressed(b *batch, name string, key []byte) bool {
	if !b.rulesFor(key).Encoded() {
		return false
	}
	msg := fmt.Sprintf("ERR %s is not available on keys whose policy compresses values or reads them through an origin (the stored bytes are not the value)", strings.ToUpper(name))
	b.local(func(w *resp.Writer) { w.Error(msg) })
	return true
}

// setWith sends SET key value <option> with the policy TTL (the compressed value where the
// policy says so), and finish answers from its reply. SETNX and GETSET are SETs underneath, so
// the policies apply to them as to SET.
func setWith(ctx context.Context, s *Server, b *batch, w *resp.Writer, args [][]byte, option string, finish func(w *resp.Writer, r valkey.ValkeyResult)) {
	key := str(args[1])
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(args[2])) {
		return
	}
	set := []string{rules.Stored(str(args[2])), option}
	if px := plan.WriteExpiry(&rules); px != nil {
		set = append(set, "PX", string(px))
	}
	s.announce(b.cid, key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, arbitrary("SET", key, set))
	b.wrote(key)
	b.job([]part{p}, func(w *resp.Writer, r []partResult) { finish(w, r[0].res[0]) })
}

// cmdSetnx: SET key value NX; answers 1 or 0 as SETNX does.
func cmdSetnx(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	setWith(ctx, s, b, w, args, "NX", func(w *resp.Writer, r valkey.ValkeyResult) {
		if err := r.Error(); err != nil && !valkey.IsValkeyNil(err) {
			reply.Relay(w, r)
			return
		}
		w.Int(int64(boolIndex(r.Error() == nil)))
	})
}

// cmdGetset: SET key value GET (GETSET drops an expiry; the policy TTL replaces it, as for SET).
func cmdGetset(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	setWith(ctx, s, b, w, args, "GET", func(w *resp.Writer, r valkey.ValkeyResult) { reply.Write(w, r, false) })
}

func cmdAppend(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	if !refusedOnCompressed(b, "append", args[1]) {
		appendWrite(ctx, s, b, c, w, args)
	}
}

func cmdSetrange(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	if refusedOnCompressed(b, "setrange", args[1]) {
		return
	}
	off, err := strconv.ParseInt(str(args[2]), 10, 64)
	if rules := b.rulesFor(args[1]); err == nil && off >= 0 && len(args[3]) > 0 && rules.MaxValueBytes > 0 && off+int64(len(args[3])) > rules.MaxValueBytes {
		// Valkey's words for a string grown past proto-max-bulk-len; the limit here is the policy's.
		s.Stats.OversizeRejected.Add(1)
		msg := fmt.Sprintf("ERR string exceeds maximum allowed size (the limit of %d bytes for key '%s')", rules.MaxValueBytes, truncate(args[1]))
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	setrangeWrite(ctx, s, b, c, w, args)
}

// decodedGet reads key's value and gives the decoded value (encoded policies) to answer.
func decodedGet(ctx context.Context, b *batch, w *resp.Writer, key []byte, miss func(w *resp.Writer), answer func(w *resp.Writer, v string)) {
	k := str(key)
	i := b.shardOf(ctx, w, key, plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Get().Key(k).Build() })
	b.jobMiss([]part{p}, miss, func(w *resp.Writer, r []partResult) {
		raw, err := r[0].res[0].ToString()
		v, present := reply.Readable(raw)
		if err != nil || !present {
			if valkey.IsValkeyNil(r[0].res[0].Error()) || !present {
				miss(w)
				return
			}
			reply.Relay(w, r[0].res[0])
			return
		}
		answer(w, v)
	})
}

func cmdStrlen(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	if !b.rulesFor(args[1]).Encoded() {
		strlenRead(ctx, s, b, c, w, args)
		return
	}
	decodedGet(ctx, b, w, args[1], intReply(0), func(w *resp.Writer, v string) { w.Int(int64(len(v))) })
}

func cmdGetrange(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	start, err1 := strconv.ParseInt(str(args[2]), 10, 64)
	end, err2 := strconv.ParseInt(str(args[3]), 10, 64)
	if !b.rulesFor(args[1]).Encoded() || err1 != nil || err2 != nil {
		getrangeRead(ctx, s, b, c, w, args) // the shard answers (and words any error)
		return
	}
	decodedGet(ctx, b, w, args[1], emptyBulk, func(w *resp.Writer, v string) { w.BulkString(substr(v, start, end)) })
}

// substr is GETRANGE's slice: negative offsets count from the end, the range is inclusive.
func substr(v string, start, end int64) string {
	n := int64(len(v))
	if start < 0 {
		start = max(n+start, 0)
	}
	if end < 0 {
		end = n + end
	}
	end = min(end, n-1)
	if start > end || n == 0 {
		return ""
	}
	return v[start : end+1]
}

var (
	appendWrite   = forwardWrite(argsFrom(2), createsFirst)
	setrangeWrite = forwardWrite(nil, createsFirst)
	strlenRead    = forwardRead(intReply(0))
	getrangeRead  = forwardRead(emptyBulk)
)
