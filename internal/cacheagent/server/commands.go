package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/resp"
)

// handler queues (or answers) one command. args[0] is the command name.
type handler func(s *Server, ctx context.Context, b *batch, c *client, w *resp.Writer, args [][]byte)

type command struct {
	id      int
	arity   int // Valkey convention: exact if > 0, at least -arity if < 0
	noAuth  bool
	handler handler
}

const numCommands = 48

var commandTable = map[string]*command{}

func register(name string, arity int, noAuth bool, h handler) {
	commandTable[name] = &command{id: len(commandTable), arity: arity, noAuth: noAuth, handler: h}
	if len(commandTable) > numCommands {
		panic("raise numCommands")
	}
}

func init() {
	register("ping", -1, true, cmdPing)
	register("echo", 2, false, cmdEcho)
	register("hello", -1, true, cmdHello)
	register("auth", -2, true, cmdAuth)
	register("select", 2, false, cmdSelect)
	register("quit", 1, true, cmdQuit)
	register("client", -2, false, cmdClient)
	register("command", -1, false, cmdCommand)
	register("info", -1, false, cmdInfo)
	register("config", -2, false, cmdConfig)
	register("get", 2, false, cmdGet)
	register("set", -3, false, cmdSet)
	register("setex", 4, false, cmdSetex)
	register("psetex", 4, false, cmdSetex)
	register("getdel", 2, false, cmdGetdel)
	register("getex", -2, false, cmdGetex)
	register("del", -2, false, cmdDel)
	register("unlink", -2, false, cmdDel)
	register("exists", -2, false, cmdExists)
	register("mget", -2, false, cmdMget)
	register("mset", -3, false, cmdMset)
	register("expire", -3, false, cmdExpire)
	register("pexpire", -3, false, cmdExpire)
	register("persist", 2, false, cmdExpire)
	register("ttl", 2, false, cmdTTL)
	register("pttl", 2, false, cmdTTL)
	register("type", 2, false, cmdTTL)
	register("cf.invalidate", -3, false, cmdInvalidate)
	register("cf.lget", -2, false, cmdLGet)
	register("cf.set", -5, false, cmdTagSet)
	register("cf.lset", -4, false, cmdLSet)
	register("cf.lmiss", 3, false, cmdLMiss)
	register("incr", 2, false, cmdIncr)
	register("decr", 2, false, cmdIncr)
	register("incrby", 3, false, cmdIncr)
	register("decrby", 3, false, cmdIncr)
}

// dispatch looks up and runs one command, counting its result when its reply is written.
func (s *Server) dispatch(ctx context.Context, b *batch, c *client, w *resp.Writer, args [][]byte) {
	c.lower = append(c.lower[:0], args[0]...)
	for i, ch := range c.lower {
		if 'A' <= ch && ch <= 'Z' {
			c.lower[i] = ch + 32
		}
	}
	cmd := commandTable[string(c.lower)]
	if cmd == nil {
		msg := unknownCommand(args)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	if (cmd.arity > 0 && len(args) != cmd.arity) || (cmd.arity < 0 && len(args) < -cmd.arity) {
		msg := fmt.Sprintf("ERR wrong number of arguments for '%s' command", c.lower)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		s.Stats.requests[cmd.id][1].Add(1)
		return
	}
	if !c.authed && !cmd.noAuth {
		b.local(func(w *resp.Writer) { w.Error("NOAUTH Authentication required.") })
		s.Stats.requests[cmd.id][1].Add(1)
		return
	}
	start, flushes := len(b.replies), b.flushes
	cmd.handler(s, ctx, b, c, w, args)
	if b.flushes != flushes {
		start = 0 // the handler flushed earlier commands: everything queued now is its own
	}
	// Tag the replies this command queued, so exec counts their result and latency.
	t0 := time.Now()
	for i := start; i < len(b.replies); i++ {
		b.replies[i].cmd, b.replies[i].start = cmd, t0
	}
}

func unknownCommand(args [][]byte) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "ERR unknown command '%s', with args beginning with: ", truncate(args[0]))
	for _, a := range args[1:min(len(args), 4)] {
		fmt.Fprintf(&sb, "'%s' ", truncate(a))
	}
	return strings.TrimSpace(sb.String())
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

func str(b []byte) string { return string(b) }

func strs(args [][]byte) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = string(a)
	}
	return out
}

var pingCmd = func(b valkey.Builder) valkey.Completed { return b.Ping().Build() }

// ---- connection commands, answered by the agent itself ----

func cmdPing(_ *Server, _ context.Context, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	if len(args) > 1 {
		msg := str(args[1])
		b.local(func(w *resp.Writer) { w.BulkString(msg) })
		return
	}
	b.local(func(w *resp.Writer) { w.Simple("PONG") })
}

func cmdEcho(_ *Server, _ context.Context, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	msg := str(args[1])
	b.local(func(w *resp.Writer) { w.BulkString(msg) })
}

func cmdSelect(_ *Server, _ context.Context, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	if str(args[1]) != "0" {
		b.local(func(w *resp.Writer) {
			w.Error("ERR DB index is out of range: a cachefleet agent serves database 0 only")
		})
		return
	}
	b.local(func(w *resp.Writer) { w.OK() })
}

func cmdQuit(_ *Server, _ context.Context, b *batch, c *client, _ *resp.Writer, _ [][]byte) {
	c.quit = true
	b.local(func(w *resp.Writer) { w.OK() })
}

func (s *Server) checkPassword(user, pass string) bool {
	return (user == "" || user == "default") && s.cfg.Password != "" && pass == s.cfg.Password
}

func cmdAuth(s *Server, _ context.Context, b *batch, c *client, _ *resp.Writer, args [][]byte) {
	if len(args) > 3 {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
		return
	}
	if s.cfg.Password == "" {
		b.local(func(w *resp.Writer) {
			w.Error("ERR AUTH <password> called without any password configured for the default user.")
		})
		return
	}
	user, pass := "", str(args[len(args)-1])
	if len(args) == 3 {
		user = str(args[1])
	}
	if !s.checkPassword(user, pass) {
		b.local(func(w *resp.Writer) { w.Error("WRONGPASS invalid username-password pair or user is disabled.") })
		return
	}
	c.authed = true
	b.local(func(w *resp.Writer) { w.OK() })
}

func cmdHello(s *Server, _ context.Context, b *batch, c *client, w *resp.Writer, args [][]byte) {
	proto := w.Proto
	rest := args[1:]
	if len(rest) > 0 {
		v, err := strconv.Atoi(str(rest[0]))
		if err != nil || v < 2 || v > 3 {
			b.local(func(w *resp.Writer) { w.Error("NOPROTO unsupported protocol version") })
			return
		}
		proto, rest = v, rest[1:]
	}
	for len(rest) > 0 {
		opt := strings.ToLower(str(rest[0]))
		switch {
		case opt == "auth" && len(rest) >= 3:
			if !s.checkPassword(str(rest[1]), str(rest[2])) {
				b.local(func(w *resp.Writer) { w.Error("WRONGPASS invalid username-password pair or user is disabled.") })
				return
			}
			c.authed = true
			rest = rest[3:]
		case opt == "setname" && len(rest) >= 2:
			c.name = str(rest[1])
			rest = rest[2:]
		default:
			b.local(func(w *resp.Writer) { w.Error("ERR Syntax error in HELLO option '" + opt + "'") })
			return
		}
	}
	if !c.authed {
		b.local(func(w *resp.Writer) {
			w.Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		})
		return
	}
	id := c.id
	b.local(func(w *resp.Writer) {
		w.Proto = proto
		w.Map(7)
		w.BulkString("server")
		w.BulkString("cachefleet")
		w.BulkString("version")
		w.BulkString("7.2.0")
		w.BulkString("proto")
		w.Int(int64(proto))
		w.BulkString("id")
		w.Int(id)
		w.BulkString("mode")
		w.BulkString("standalone")
		w.BulkString("role")
		w.BulkString("master")
		w.BulkString("modules")
		w.Array(0)
	})
}

func cmdClient(_ *Server, _ context.Context, b *batch, c *client, _ *resp.Writer, args [][]byte) {
	sub := strings.ToLower(str(args[1]))
	switch {
	case sub == "setname" && len(args) == 3:
		c.name = str(args[2])
		b.local(func(w *resp.Writer) { w.OK() })
	case sub == "getname" && len(args) == 2:
		name := c.name
		b.local(func(w *resp.Writer) {
			if name == "" {
				w.Null()
			} else {
				w.BulkString(name)
			}
		})
	case sub == "id" && len(args) == 2:
		id := c.id
		b.local(func(w *resp.Writer) { w.Int(id) })
	case sub == "setinfo" && len(args) == 4:
		if strings.EqualFold(str(args[2]), "lib-name") {
			c.libName = str(args[3])
		}
		b.local(func(w *resp.Writer) { w.OK() })
	default:
		msg := fmt.Sprintf("ERR unknown subcommand or wrong number of arguments for '%s'. Try CLIENT HELP.", sub)
		b.local(func(w *resp.Writer) { w.Error(msg) })
	}
}

// cmdCommand answers enough for redis-cli and client libraries that probe at start.
func cmdCommand(_ *Server, _ context.Context, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	sub := ""
	if len(args) > 1 {
		sub = strings.ToLower(str(args[1]))
	}
	switch sub {
	case "count":
		b.local(func(w *resp.Writer) { w.Int(int64(len(commandTable))) })
	case "docs":
		b.local(func(w *resp.Writer) { w.Map(0) })
	default:
		b.local(func(w *resp.Writer) { w.Array(0) })
	}
}

// cmdConfig answers CONFIG GET with nothing (tools such as redis-benchmark probe it); the
// agent's configuration comes from the ring, not from clients.
func cmdConfig(_ *Server, _ context.Context, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	if strings.EqualFold(str(args[1]), "get") {
		b.local(func(w *resp.Writer) { w.Map(0) })
		return
	}
	b.local(func(w *resp.Writer) {
		w.Error("ERR CONFIG " + strings.ToUpper(str(args[1])) + " is not supported by the cachefleet agent")
	})
}

func cmdInfo(s *Server, _ context.Context, b *batch, _ *client, _ *resp.Writer, _ [][]byte) {
	st := s.Stats
	r := s.Router()
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Server\r\nredis_version:7.2.0\r\ncachefleet_agent:1\r\nredis_mode:standalone\r\n")
	fmt.Fprintf(&sb, "# Clients\r\nconnected_clients:%d\r\n", st.Clients.Load())
	fmt.Fprintf(&sb, "# Stats\r\nl1_hits:%d\r\nl1_misses:%d\r\nl2_hits:%d\r\nl2_misses:%d\r\noversize_rejected:%d\r\n",
		st.L1Hits.Load(), st.L1Misses.Load(), st.L2Hits.Load(), st.L2Misses.Load(), st.OversizeRejected.Load())
	if r != nil {
		fmt.Fprintf(&sb, "# Ring\r\nring_epoch:%d\r\nring_algorithm:%s\r\nshards:%d\r\n", r.Doc.Epoch, r.Doc.Algorithm, len(r.Shards))
		for i, sh := range r.Shards {
			fmt.Fprintf(&sb, "shard%d:name=%s,addr=%s,breaker=%d,pending_deletes=%d\r\n", i, sh.Name(), sh.Addr(), sh.BreakerState(), sh.Pending())
		}
	}
	info := sb.String()
	b.local(func(w *resp.Writer) { w.Verbatim(info) })
}

// ---- data commands ----

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

func cmdGet(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key := str(args[1])
	rules := b.rulesFor(args[1])
	switch {
	case rules.L1 && rules.L1Tracking:
		i := b.shardOf(ctx, w, args[1], cacheLane)
		p := b.cached(i, cachedRead{build: func(bd valkey.Builder) valkey.Cacheable { return bd.Get().Key(key).Cache() }, ttl: rules.L1TTL})
		b.job([]part{p}, func(w *resp.Writer, r []partResult) {
			if r[0].err != nil {
				s.Stats.L2Misses.Add(1)
				w.Null() // a down shard reads as a miss, never an error
				return
			}
			res := r[0].res[0]
			if res.IsCacheHit() {
				s.Stats.L1Hits.Add(1)
			} else {
				s.Stats.L1Misses.Add(1)
				s.countL2(res)
			}
			writeResult(w, res, false)
		})
	case rules.L1:
		l1 := s.L1()
		if v, ok := l1.Get(key); ok {
			s.Stats.L1Hits.Add(1)
			b.local(func(w *resp.Writer) { w.Bulk(v) })
			return
		}
		s.Stats.L1Misses.Add(1)
		i := b.shardOf(ctx, w, args[1], plainLane)
		p := b.plain(i,
			func(bd valkey.Builder) valkey.Completed { return bd.Get().Key(key).Build() },
			func(bd valkey.Builder) valkey.Completed { return bd.Pttl().Key(key).Build() })
		b.job([]part{p}, func(w *resp.Writer, r []partResult) {
			if r[0].err != nil {
				w.Null()
				return
			}
			res := r[0].res[0]
			s.countL2(res)
			v, err := res.ToString()
			if err != nil || v == codec.Absent {
				writeResult(w, res, false)
				return
			}
			v = readable(v)
			if pttl, err := r[0].res[1].AsInt64(); err == nil {
				l1.Set(key, []byte(v), rules.L1Lifetime(pttl))
			}
			w.BulkString(v)
		})
	default:
		i := b.shardOf(ctx, w, args[1], plainLane)
		p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Get().Key(key).Build() })
		b.job([]part{p}, func(w *resp.Writer, r []partResult) {
			if r[0].err != nil {
				s.Stats.L2Misses.Add(1)
				w.Null()
				return
			}
			s.countL2(r[0].res[0])
			writeResult(w, r[0].res[0], false)
		})
	}
}

func (s *Server) countL2(res valkey.ValkeyResult) {
	if valkey.IsValkeyNil(res.Error()) {
		s.Stats.L2Misses.Add(1)
	} else {
		s.Stats.L2Hits.Add(1)
	}
}

// forget drops the agent's own ttl-mode copy of keys that are being written and, for
// policies that invalidate on write, tells the other agents to drop theirs.
func (s *Server) forget(keys ...string) {
	l1 := s.L1()
	r := s.Router()
	bus := s.bus.Load()
	for _, k := range keys {
		l1.Delete(k)
		if bus != nil && r != nil {
			if rules := policy.For(r.Doc, []byte(k)); rules.L1 && !rules.L1Tracking && rules.InvalidateOnWrite {
				bus.DeleteAsync(k)
			}
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
	b.job([]part{p}, func(w *resp.Writer, r []partResult) {
		if r[0].err != nil {
			writeErr(w, r[0].err)
			return
		}
		writeResult(w, r[0].res[0], status)
	})
}

func cmdSet(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
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
	if !hasExpiry && rules.TTL > 0 {
		rest = append(rest, "PX", strconv.FormatInt(rules.WriteTTL(nil).Milliseconds(), 10))
	}
	s.forget(key)
	cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary("SET").Keys(key).Args(rest...).Build() }}
	if rules.LeaseTTL > 0 {
		// Fresh data written directly: a pending fill is older, refuse it.
		lk := leaseKey(key)
		cmds = append(cmds, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(lk).Build() })
	}
	b.writeJob(ctx, w, args[1], !withGet, cmds...)
}

// leaseKeys are the lease keys of those keys whose policy uses stampede protection.
func (b *batch) leaseKeys(keys []string) []string {
	var out []string
	for _, k := range keys {
		if policy.For(b.r.Doc, []byte(k)).LeaseTTL > 0 {
			out = append(out, leaseKey(k))
		}
	}
	return out
}

func cmdSetex(s *Server, ctx context.Context, b *batch, c *client, w *resp.Writer, args [][]byte) {
	key, name := str(args[1]), strings.ToUpper(str(args[0]))
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(args[3])) {
		return
	}
	ttl, val := str(args[2]), stored(rules, str(args[3]))
	s.forget(key)
	b.writeJob(ctx, w, args[1], true, func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Keys(key).Args(ttl, val).Build()
	})
}

func cmdGetex(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key, rest := str(args[1]), strs(args[2:])
	s.forget(key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary("GETEX").Keys(key).Args(rest...).Build() })
	b.job([]part{p}, func(w *resp.Writer, r []partResult) {
		if r[0].err != nil {
			w.Null()
			return
		}
		writeResult(w, r[0].res[0], false)
	})
}

func cmdGetdel(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key := str(args[1])
	s.forget(key)
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Getdel().Key(key).Build() })
	b.job([]part{p}, func(w *resp.Writer, r []partResult) {
		if r[0].err != nil {
			r[0].shard.QueueDelete(key) // the value cannot be returned, but the delete is not lost
			w.Null()
			return
		}
		writeResult(w, r[0].res[0], false)
	})
}

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

func pick(keys []string, positions []int) []string {
	out := make([]string, len(positions))
	for j, p := range positions {
		out[j] = keys[p]
	}
	return out
}

func cmdDel(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name := strings.ToUpper(str(args[0]))
	keys := strs(args[1:])
	s.forget(keys...)
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
	b.job(parts, func(w *resp.Writer, r []partResult) {
		var n int64
		for j, pr := range r {
			if pr.err != nil {
				// Replayed before the shard serves anything else; counted as deleted.
				pr.shard.QueueDelete(groups[j]...)
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

func cmdExists(_ *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	keys := strs(args[1:])
	shards, positions := b.groupKeys(ctx, w, args[1:])
	parts := make([]part, len(shards))
	for j, i := range shards {
		g := pick(keys, positions[i])
		parts[j] = b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Exists().Key(g...).Build() })
	}
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

func cmdMget(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	keys := strs(args[1:])
	shards, positions := b.groupKeys(ctx, w, args[1:])
	parts := make([]part, len(shards))
	for j, i := range shards {
		g := pick(keys, positions[i])
		parts[j] = b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Mget().Key(g...).Build() })
	}
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
			for k, pos := range positions[shards[j]] {
				values[pos] = &arr[k]
			}
		}
		w.Array(len(values))
		for _, v := range values {
			if v == nil || v.IsNil() {
				s.Stats.L2Misses.Add(1)
				w.Null()
				continue
			}
			s.Stats.L2Hits.Add(1)
			writeMessage(w, v, false)
		}
	})
}

// cmdMset writes each pair with its policy TTL (MSET itself cannot set one). Pairs on a down
// shard fail the command with that shard named; pairs on other shards are written.
func cmdMset(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
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
		s.forget(pairs[j].k)
	}
	shards, positions := b.groupKeys(ctx, w, keys)
	parts := make([]part, len(shards))
	for j, i := range shards {
		var cmds []buildFn
		for _, pos := range positions[i] {
			p := pairs[pos]
			cmds = append(cmds, func(bd valkey.Builder) valkey.Completed {
				return bd.Set().Key(p.k).Value(p.v).Px(p.ttl).Build()
			})
		}
		parts[j] = b.plain(i, cmds...)
	}
	b.job(parts, func(w *resp.Writer, r []partResult) {
		for _, pr := range r {
			if pr.err != nil {
				writeErr(w, pr.err)
				return
			}
			for _, res := range pr.res {
				if err := res.Error(); err != nil {
					writeErr(w, err)
					return
				}
			}
		}
		w.OK()
	})
}

// cmdExpire covers EXPIRE, PEXPIRE and PERSIST: writes that change a key's lifetime.
func cmdExpire(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key, rest := strings.ToUpper(str(args[0])), str(args[1]), strs(args[2:])
	s.forget(key)
	b.writeJob(ctx, w, args[1], false, func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Keys(key).Args(rest...).Build()
	})
}

// cmdTTL covers TTL, PTTL and TYPE: reads that answer as for a missing key when the shard is down.
func cmdTTL(_ *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key := strings.ToUpper(str(args[0])), str(args[1])
	i := b.shardOf(ctx, w, args[1], plainLane)
	p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(key).Build() })
	b.job([]part{p}, func(w *resp.Writer, r []partResult) {
		if r[0].err != nil {
			if name == "TYPE" {
				w.Simple("none")
			} else {
				w.Int(-2)
			}
			return
		}
		writeResult(w, r[0].res[0], name == "TYPE")
	})
}

// cmdIncr covers INCR, DECR, INCRBY, DECRBY. A counter created by the increment gets the
// policy TTL (PEXPIRE ... NX leaves an existing expiry alone).
func cmdIncr(s *Server, ctx context.Context, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	name, key, rest := strings.ToUpper(str(args[0])), str(args[1]), strs(args[2:])
	rules := b.rulesFor(args[1])
	s.forget(key)
	cmds := []buildFn{func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Keys(key).Args(rest...).Build() }}
	if rules.TTL > 0 {
		px := strconv.FormatInt(rules.WriteTTL(nil).Milliseconds(), 10)
		cmds = append(cmds, func(bd valkey.Builder) valkey.Completed {
			return bd.Arbitrary("PEXPIRE").Keys(key).Args(px, "NX").Build()
		})
	}
	b.writeJob(ctx, w, args[1], false, cmds...)
}
