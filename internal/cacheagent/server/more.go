package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// More commands caches use: string variants, hashes and scripts. Most are forwarded to the
// key's shard and their reply relayed as the shard gave it; the agent adds what its policies
// add elsewhere: the policy TTL on a key a write creates, the size limit, the L1 fence.
// Hash fields are never compressed and never kept in L1. On keys whose policy compresses
// values, the commands that address bytes inside a value answer from the decoded value (STRLEN,
// GETRANGE) or are refused (APPEND, SETRANGE): the stored bytes are not the client's.

// arbitrary builds name args... on key's shard.
func arbitrary(name, key string, rest []string) buildFn {
	return func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(key).Args(rest...).Build() }
}

// forwardRead relays a read; a down shard answers miss.
func forwardRead(miss func(w *resp.Writer)) handler {
	return func(ctx context.Context, _ *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
		name, key := strings.ToUpper(str(args[0])), str(args[1])
		i := b.shardOf(ctx, w, args[1], plainLane)
		p := b.plain(i, arbitrary(name, key, strs(args[2:])))
		b.jobMiss([]part{p}, miss, func(w *resp.Writer, r []partResult) { relay(w, r[0].res[0]) })
	}
}

// forwardWrite relays a write. values picks the arguments held against the size limit;
// creates says the command may create the key, which then gets the policy TTL.
func forwardWrite(values func(args [][]byte) [][]byte, creates bool) handler {
	return func(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
		name, key := strings.ToUpper(str(args[0])), str(args[1])
		rules := b.rulesFor(args[1])
		if values != nil {
			for _, v := range values(args) {
				if s.oversize(b, rules, key, len(v)) {
					return
				}
			}
		}
		cmds := []buildFn{arbitrary(name, key, strs(args[2:]))}
		if px := writeExpiry(&rules); creates && px != nil {
			cmds = append(cmds, arbitrary("PEXPIRE", key, []string{string(px), "NX"}))
		}
		s.announce(key)
		i := b.shardOf(ctx, w, args[1], plainLane)
		p := b.plain(i, cmds...)
		b.wrote(key)
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { relay(w, r[0].res[0]) })
	}
}

// Which arguments are values, for the size limit.
func argsFrom(i int) func([][]byte) [][]byte { return func(a [][]byte) [][]byte { return a[i:] } }
func everyOther(from int) func([][]byte) [][]byte {
	return func(a [][]byte) [][]byte {
		var out [][]byte
		for i := from; i < len(a); i += 2 {
			out = append(out, a[i])
		}
		return out
	}
}

func intReply(n int64) func(w *resp.Writer) { return func(w *resp.Writer) { w.Int(n) } }
func emptyArray(w *resp.Writer)             { w.Array(0) }
func emptyMap(w *resp.Writer)               { w.Map(0) }
func emptyBulk(w *resp.Writer)              { w.BulkString("") }

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
	set := []string{stored(rules, str(args[2])), option}
	if px := writeExpiry(&rules); px != nil {
		set = append(set, "PX", string(px))
	}
	s.announce(key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, arbitrary("SET", key, set))
	b.wrote(key)
	b.job([]part{p}, func(w *resp.Writer, r []partResult) { finish(w, r[0].res[0]) })
}

// cmdSetnx: SET key value NX; answers 1 or 0 as SETNX does.
func cmdSetnx(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	setWith(ctx, s, b, w, args, "NX", func(w *resp.Writer, r valkey.ValkeyResult) {
		if err := r.Error(); err != nil && !valkey.IsValkeyNil(err) {
			relay(w, r)
			return
		}
		w.Int(int64(boolIndex(r.Error() == nil)))
	})
}

// cmdGetset: SET key value GET (GETSET drops an expiry; the policy TTL replaces it, as for SET).
func cmdGetset(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	setWith(ctx, s, b, w, args, "GET", func(w *resp.Writer, r valkey.ValkeyResult) { writeResult(w, r, false) })
}

var (
	appendWrite   = forwardWrite(argsFrom(2), true)
	setrangeWrite = forwardWrite(nil, true)
	strlenRead    = forwardRead(intReply(0))
	getrangeRead  = forwardRead(emptyBulk)
)

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
	if err == nil && off >= 0 && s.oversize(b, b.rulesFor(args[1]), str(args[1]), int(off)+len(args[3])) {
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
		v, present := readable(raw)
		if err != nil || !present {
			if valkey.IsValkeyNil(r[0].res[0].Error()) || !present {
				miss(w)
				return
			}
			relay(w, r[0].res[0])
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
		values = append(values, stored(rules, str(args[i+1])))
		ttls = append(ttls, strconv.FormatInt(rules.WriteTTL(nil).Milliseconds(), 10))
	}
	s.announce(keys...)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed {
		return bd.Eval().Script(msetnxScript).Numkeys(int64(len(keys))).Key(keys...).Arg(append(values, ttls...)...).Build()
	})
	b.wrote(keys...)
	b.job([]part{p}, func(w *resp.Writer, r []partResult) { relay(w, r[0].res[0]) })
}

// cmdEval covers EVAL and EVALSHA: the script runs on the shard that owns all its keys.
func cmdEval(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	name := strings.ToUpper(str(args[0]))
	n, err := strconv.Atoi(str(args[2]))
	switch {
	case err != nil || n < 0:
		b.local(func(w *resp.Writer) { w.Error("ERR value is not an integer or out of range") })
		return
	case n > len(args)-3:
		b.local(func(w *resp.Writer) { w.Error("ERR Number of keys can't be greater than number of args") })
		return
	case n == 0:
		msg := fmt.Sprintf("ERR %s with no keys cannot be routed by the cachefleet agent: a script runs on the shard that owns its keys; pass them as KEYS (numkeys > 0), all on one shard", name)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	keys := strs(args[3 : 3+n])
	shard := b.r.Index(args[3])
	for _, k := range keys[1:] {
		if b.r.Index([]byte(k)) != shard {
			msg := crossShard(k, keys[0])
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
	}
	script, rest := str(args[1]), strs(args[3+n:])
	s.announce(keys...)
	build := func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Args(script, strconv.Itoa(n)).Keys(keys...).Args(rest...).Build()
	}
	if b.tx {
		i := b.shardOf(ctx, w, args[3], plainLane)
		p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return build(bd) })
		b.wrote(keys...) // a script may write any of its keys
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { relay(w, r[0].res[0]) })
		return
	}
	// Outside a transaction a script runs on a connection of its own, after what the client
	// sent before it: a script that loops holds that connection only, and the shard answers
	// everyone else BUSY (as Valkey does) instead of their requests queueing behind it. It runs
	// as the shard's script user, which may not flush, reconfigure or migrate (router.ScriptUser).
	b.exec(ctx, w)
	r, sh := b.r, b.r.Shards[shard]
	b.local(func(w *resp.Writer) {
		res, err := sh.RunScript(ctx, build)
		s.settleBy(r, c.id, keys...)
		if err != nil {
			writeErr(w, err)
			return
		}
		relay(w, res)
	})
	b.exec(ctx, w)
}

// scriptKill sends SCRIPT KILL to every shard on a connection of its own, past the breaker (a
// shard busy with a script looks down to it) and the pool (a busy shard refuses new pooled
// connections): OK when one killed a script, the first UNKILLABLE otherwise, else NOTBUSY.
func scriptKill(ctx context.Context, shards []*router.Shard, w *resp.Writer) {
	var unkillable string
	for _, sh := range shards {
		reply, err := sh.Command(ctx, "SCRIPT", "KILL")
		switch text := strings.TrimSpace(string(reply)); {
		case err != nil:
		case text == "+OK":
			w.OK()
			return
		case strings.HasPrefix(text, "-UNKILLABLE") && unkillable == "":
			unkillable = text[1:]
		}
	}
	if unkillable != "" {
		w.Error(unkillable)
		return
	}
	w.Error("NOTBUSY No scripts in execution right now.")
}

// cmdScript: SCRIPT LOAD goes to every shard (EVALSHA then works wherever its keys are).
func cmdScript(ctx context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	if strings.EqualFold(str(args[1]), "kill") && len(args) == 2 {
		shards := b.r.Shards
		b.local(func(w *resp.Writer) { scriptKill(ctx, shards, w) })
		return
	}
	if !strings.EqualFold(str(args[1]), "load") || len(args) != 3 {
		msg := fmt.Sprintf("ERR unknown subcommand '%s'. Try SCRIPT HELP.", truncate(args[1]))
		if strings.EqualFold(str(args[1]), "load") {
			msg = "ERR wrong number of arguments for 'script|load' command"
		}
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	script := str(args[2])
	shards := b.r.Shards
	b.local(func(w *resp.Writer) {
		var sha valkey.ValkeyResult
		for _, sh := range shards {
			res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.ScriptLoad().Script(script).Build() })
			if err != nil {
				writeErr(w, err) // loaded elsewhere, not there: say which shard
				return
			}
			sha = res
		}
		relay(w, sha)
	})
}

// cmdHmget: a down shard answers as Valkey does for a missing hash: one nil per field.
func cmdHmget(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	fields := len(args) - 2
	forwardRead(func(w *resp.Writer) {
		w.Array(fields)
		for range fields {
			w.Null()
		}
	})(ctx, s, b, c, w, args)
}
