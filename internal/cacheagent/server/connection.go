package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/resp"
)

// Connection and server commands, answered by the agent itself.

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

func cmdAuth(s *Server, _ context.Context, b *batch, c *client, _ *resp.Writer, args [][]byte) {
	if len(args) > 3 {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax error") })
		return
	}
	if s.password() == "" {
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
