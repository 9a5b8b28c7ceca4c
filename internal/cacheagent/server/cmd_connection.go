package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/pubsub"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Connection and server commands, answered by the agent itself.

var pingCmd = func(b valkey.Builder) valkey.Completed { return b.Ping().Build() }

// ---- connection commands, answered by the agent itself ----

func cmdPing(_ context.Context, _ *Server, b *batch, c *client, _ *resp.Writer, args [][]byte) {
	if len(args) > 2 {
		b.local(func(w *resp.Writer) { w.Error("ERR wrong number of arguments for 'ping' command") })
		return
	}
	if c.subscribed.Load() && c.proto.Load() < 3 { // a subscribed RESP2 connection: a pub/sub-shaped pong
		msg := ""
		if len(args) > 1 {
			msg = str(args[1])
		}
		b.local(func(w *resp.Writer) {
			w.Array(2)
			w.BulkString("pong")
			w.BulkString(msg)
		})
		return
	}
	if len(args) > 1 {
		msg := str(args[1])
		b.local(func(w *resp.Writer) { w.BulkString(msg) })
		return
	}
	b.local(func(w *resp.Writer) { w.Simple("PONG") })
}

func cmdEcho(_ context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	msg := str(args[1])
	b.local(func(w *resp.Writer) { w.BulkString(msg) })
}

// cmdSelect: an agent serves database 0 only; other indexes answer as Valkey does for an index
// past its last database.
func cmdSelect(_ context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	db, err := strconv.ParseInt(str(args[1]), 10, 64)
	if err != nil {
		b.local(func(w *resp.Writer) { w.Error("ERR value is not an integer or out of range") })
		return
	}
	if db != 0 {
		b.local(func(w *resp.Writer) { w.Error("ERR DB index is out of range") })
		return
	}
	b.local(func(w *resp.Writer) { w.OK() })
}

func cmdQuit(_ context.Context, _ *Server, b *batch, c *client, _ *resp.Writer, _ [][]byte) {
	c.quit = true
	b.local(func(w *resp.Writer) { w.OK() })
}

// checkPassword compares in constant time, over digests so the length does not leak either.
func (s *Server) checkPassword(user, pass string) bool {
	want := s.password()
	if want == "" {
		return false
	}
	got, exp := sha256.Sum256([]byte(pass)), sha256.Sum256([]byte(want))
	userOK := user == "" || user == "default"
	return subtle.ConstantTimeCompare(got[:], exp[:]) == 1 && userOK
}

func cmdAuth(_ context.Context, s *Server, b *batch, c *client, _ *resp.Writer, args [][]byte) {
	if len(args) > 3 {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
		return
	}
	if s.password() == "" {
		b.local(func(w *resp.Writer) {
			w.Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
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

func cmdHello(_ context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	proto := w.Proto
	rest := args[1:]
	if len(rest) > 0 {
		v, err := strconv.ParseInt(str(rest[0]), 10, 64)
		if err != nil {
			b.local(func(w *resp.Writer) { w.Error("ERR Protocol version is not an integer or out of range") })
			return
		}
		if v < 2 || v > 3 {
			b.local(func(w *resp.Writer) { w.Error("NOPROTO unsupported protocol version") })
			return
		}
		proto, rest = int(v), rest[1:]
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
			name := str(rest[1])
			c.name.Store(&name)
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
	c.proto.Store(int32(proto))
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

// clientArity is the argument count of each CLIENT subcommand the agent serves (Valkey's
// convention: at least -n when negative).
var clientArity = map[string]int{"setname": 3, "getname": 2, "id": 2, "setinfo": 4, "list": -2, "info": 2,
	"tracking": -3, "caching": 3, "getredir": 2, "trackinginfo": 2, "reply": 3}

func cmdClient(_ context.Context, s *Server, b *batch, c *client, _ *resp.Writer, args [][]byte) {
	sub := strings.ToLower(str(args[1]))
	if want, ok := clientArity[sub]; !ok || (want > 0 && want != len(args)) || len(args) < -want {
		msg := fmt.Sprintf("ERR unknown subcommand '%s'. Try CLIENT HELP.", truncate(args[1]))
		if ok {
			msg = fmt.Sprintf("ERR wrong number of arguments for 'client|%s' command", sub)
		}
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	switch sub {
	case "reply":
		clientReply(b, c, args)
	case "setname":
		if !validClientName(args[2]) {
			b.local(func(w *resp.Writer) {
				w.Error("ERR Client names cannot contain spaces, newlines or special characters.")
			})
			return
		}
		name := str(args[2])
		c.name.Store(&name)
		b.local(func(w *resp.Writer) { w.OK() })
	case "getname":
		name := loadString(&c.name)
		b.local(func(w *resp.Writer) {
			if name == "" {
				w.Null()
			} else {
				w.BulkString(name)
			}
		})
	case "id":
		id := c.id
		b.local(func(w *resp.Writer) { w.Int(id) })
	case "setinfo":
		v := str(args[3])
		switch strings.ToLower(str(args[2])) {
		case "lib-name":
			c.libName.Store(&v)
		case "lib-ver":
			c.libVer.Store(&v)
		default:
			msg := fmt.Sprintf("ERR Unrecognized option '%s'", truncate(args[2]))
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
		b.local(func(w *resp.Writer) { w.OK() })
	case "list":
		clientListWith(s, b, args)
	case "info":
		b.local(func(w *resp.Writer) { w.Verbatim(c.describe(time.Now())) })
	case "tracking":
		s.clientTracking(b, c, args)
	case "caching":
		s.clientCaching(b, c, args)
	case "getredir":
		s.clientGetredir(b, c)
	case "trackinginfo":
		s.clientTrackinginfo(b, c)
	}
}

// describe is the connection's CLIENT LIST line, with Valkey's fields in Valkey's order.
// Fields of a server's own buffers (qbuf, rbs, omem ...) are the agent's nearest: 0 where it
// keeps none per client.
func (c *client) describe(now time.Time) string {
	last := time.Unix(0, c.lastAt.Load())
	redir := int64(-1)
	flags := ""
	if c.subscribed.Load() {
		flags += "P"
	}
	if c.multi.Load() >= 0 {
		flags += "x"
	}
	if c.blocked.Load() {
		flags += "b"
	}
	if t := c.trackFlags.Load(); t != nil {
		flags += *t
		redir = c.redirect.Load()
	}
	if flags == "" {
		flags = "N"
	}
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=%d name=%s age=%d idle=%d flags=%s db=0 sub=%d psub=%d ssub=%d multi=%d "+
		"watch=%d qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s "+
		"user=default redir=%d resp=%d lib-name=%s lib-ver=%s tot-net-in=0 tot-net-out=0 tot-cmds=%d\n",
		c.id, c.addr, c.laddr, c.fd, loadString(&c.name), int(now.Sub(c.created).Seconds()), int(now.Sub(last).Seconds()), flags,
		c.subs.counts[pubsub.Channel].Load(), c.subs.counts[pubsub.Pattern].Load(), c.subs.counts[pubsub.ShardChannel].Load(),
		c.multi.Load(), c.watched.Load(), loadString(&c.lastCmd), redir, c.proto.Load(), loadString(&c.libName),
		loadString(&c.libVer), c.commands.Load())
}

// clientList describes this agent's connections that keep, oldest first.
func (s *Server) clientList(keep func(*client) bool) string {
	s.mu.Lock()
	clients := make([]*client, 0, len(s.conns))
	for _, c := range s.conns {
		if c != nil && keep(c) {
			clients = append(clients, c)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(clients, func(a, b *client) int { return cmp.Compare(a.id, b.id) })
	now := time.Now()
	var sb strings.Builder
	for _, c := range clients {
		sb.WriteString(c.describe(now))
	}
	return sb.String()
}

// clientListWith is CLIENT LIST [TYPE normal|pubsub|replica|primary] [ID id ...], as Valkey
// words it: an agent has no replica or primary connections to list.
func clientListWith(s *Server, b *batch, args [][]byte) {
	fail := func(msg string) { b.local(func(w *resp.Writer) { w.Error(msg) }) }
	keep := func(*client) bool { return true }
	switch {
	case len(args) == 2:
	case len(args) == 4 && strings.EqualFold(str(args[2]), "type"):
		switch t := strings.ToLower(str(args[3])); t {
		case "normal", "pubsub":
			keep = func(c *client) bool { return c.subscribed.Load() == (t == "pubsub") }
		case "slave", "replica", "master", "primary":
			keep = func(*client) bool { return false }
		default:
			fail(fmt.Sprintf("ERR Unknown client type '%s'", str(args[3])))
			return
		}
	case len(args) > 3 && strings.EqualFold(str(args[2]), "id"):
		var ids []int64
		for _, a := range args[3:] {
			id, err := strconv.ParseInt(str(a), 10, 64)
			if err != nil {
				fail("ERR Invalid client ID")
				return
			}
			ids = append(ids, id)
		}
		b.local(func(w *resp.Writer) { // in the order asked, as Valkey
			var sb strings.Builder
			now := time.Now()
			for _, id := range ids {
				if c := s.clientByID(id); c != nil {
					sb.WriteString(c.describe(now))
				}
			}
			w.Verbatim(sb.String())
		})
		return
	default:
		fail("ERR syntax error")
		return
	}
	b.local(func(w *resp.Writer) { w.Verbatim(s.clientList(keep)) })
}

// validClientName: printable ASCII without spaces, as Valkey requires.
func validClientName(name []byte) bool {
	for _, ch := range name {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}

// cmdCommand answers enough for redis-cli and client libraries that probe at start.
func cmdCommand(_ context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
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
func cmdConfig(_ context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	if strings.EqualFold(str(args[1]), "get") {
		b.local(func(w *resp.Writer) { w.Map(0) })
		return
	}
	// Built now: args are views into the read buffer, reused by the next pipelined command.
	msg := "ERR CONFIG " + strings.ToUpper(truncate(args[1])) + " is not supported by the cachefleet agent"
	b.local(func(w *resp.Writer) { w.Error(msg) })
}

// started is when this agent process started (INFO uptime).
var started = time.Now()

// infoSections renders INFO's sections in order; INFO answers those asked for (any case),
// every one for "all", "everything" or none, nothing for an unknown one (as Valkey).
var infoSections = []struct {
	name   string
	render func(s *Server, sb *strings.Builder)
}{
	{"server", func(s *Server, sb *strings.Builder) {
		up := time.Since(started)
		fmt.Fprintf(sb, "# Server\r\nredis_version:7.2.4\r\nserver_name:cachefleet-agent\r\nvalkey_version:8.0.1\r\n"+
			"redis_mode:standalone\r\nos:%s %s\r\narch_bits:64\r\nprocess_id:%d\r\nuptime_in_seconds:%d\r\nuptime_in_days:%d\r\n",
			runtime.GOOS, runtime.GOARCH, os.Getpid(), int(up.Seconds()), int(up.Hours()/24))
	}},
	{"clients", func(s *Server, sb *strings.Builder) {
		fmt.Fprintf(sb, "# Clients\r\nconnected_clients:%d\r\nblocked_clients:%d\r\n", s.Stats.Clients.Load(), s.Stats.BlockedClients.Load())
	}},
	{"persistence", func(s *Server, sb *strings.Builder) { s.shardsInfo(sb, "Persistence") }},
	{"stats", func(s *Server, sb *strings.Builder) {
		st := s.Stats
		fmt.Fprintf(sb, "# Stats\r\nl1_hits:%d\r\nl1_misses:%d\r\nl2_hits:%d\r\nl2_misses:%d\r\noversize_rejected:%d\r\n",
			st.L1Hits.Load(), st.L1Misses.Load(), st.L2Hits.Load(), st.L2Misses.Load(), st.OversizeRejected.Load())
	}},
	{"cachefleet", func(s *Server, sb *strings.Builder) {
		r := s.Router()
		if r == nil {
			return
		}
		fmt.Fprintf(sb, "# Cachefleet\r\nring_epoch:%d\r\nring_algorithm:%s\r\nshards:%d\r\n", r.Doc.Epoch, r.Doc.Algorithm, len(r.Shards))
		for i, sh := range r.Shards {
			fmt.Fprintf(sb, "shard%d:name=%s,addr=%s,breaker=%d,pending_deletes=%d\r\n", i, sh.Name(), sh.Addr(), sh.BreakerState(), sh.Pending())
		}
	}},
	{"keyspace", func(s *Server, sb *strings.Builder) { s.shardsInfo(sb, "Keyspace") }},
}

// shardsInfo renders an INFO section about the data as the fleet's: every shard's section,
// counts summed (db0:keys=...,expires=... too), times and in-progress flags their largest, other
// values the first shard's. A shard that does not answer is left out.
func (s *Server) shardsInfo(sb *strings.Builder, section string) {
	r := s.Router()
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShardTimeout)
	defer cancel()
	var order []string
	merged := map[string]string{}
	for _, res := range eachShard(ctx, r.Shards, func(bd valkey.Builder) valkey.Completed { return bd.Info().Section(section).Build() }) {
		text, _ := res.ToString()
		text = strings.TrimPrefix(text, "txt:") // a RESP3 verbatim string's format
		for _, line := range strings.Split(text, "\r\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || strings.HasPrefix(line, "#") {
				continue
			}
			prev, seen := merged[k]
			if !seen {
				order = append(order, k)
				merged[k] = v
				continue
			}
			merged[k] = mergeInfo(k, prev, v)
		}
	}
	fmt.Fprintf(sb, "# %s\r\n", section)
	for _, k := range order {
		fmt.Fprintf(sb, "%s:%s\r\n", k, merged[k])
	}
}

// mergeInfo merges two shards' values of an INFO field (see shardsInfo).
func mergeInfo(field, a, b string) string {
	if strings.Contains(a, "=") { // db0:keys=1,expires=0,avg_ttl=0
		pa, pb := strings.Split(a, ","), strings.Split(b, ",")
		if len(pa) != len(pb) {
			return a
		}
		for i := range pa {
			ka, va, _ := strings.Cut(pa[i], "=")
			_, vb, _ := strings.Cut(pb[i], "=")
			pa[i] = ka + "=" + mergeInfo(ka, va, vb)
		}
		return strings.Join(pa, ",")
	}
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	switch {
	case errA != nil || errB != nil:
		return a
	case strings.HasSuffix(field, "_time") || strings.HasSuffix(field, "_in_progress") || strings.HasSuffix(field, "_ttl") || field == "loading":
		return strconv.FormatInt(max(x, y), 10)
	}
	return strconv.FormatInt(x+y, 10)
}

func cmdInfo(_ context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	want := map[string]bool{}
	for _, a := range args[1:] {
		want[strings.ToLower(str(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var sb strings.Builder
	for _, sec := range infoSections {
		if all || want[sec.name] {
			if sb.Len() > 0 {
				sb.WriteString("\r\n")
			}
			sec.render(s, &sb)
		}
	}
	info := sb.String()
	b.local(func(w *resp.Writer) { w.Verbatim(info) })
}

// clientReply is CLIENT REPLY ON|OFF|SKIP: OFF silences every reply until ON, SKIP the next
// command's; neither answers itself, as in Valkey. Pushes (messages, invalidations) still go.
func clientReply(b *batch, c *client, args [][]byte) {
	switch strings.ToLower(str(args[2])) {
	case "on":
		c.replyOff, c.skipNext = false, false
		b.local(func(w *resp.Writer) { w.OK() })
	case "off":
		c.replyOff = true
	case "skip":
		c.skipNext = !c.replyOff
	default:
		b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
	}
}
