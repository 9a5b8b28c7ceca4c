package server

import (
	"context"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Hashes, and the generic forwarding most commands caches use: forwarded to the key's shard and
// their reply relayed as the shard gave it, with what the agent's policies add elsewhere: the
// policy TTL on a key a write creates, the size limit, the L1 fence. Hash fields are never
// compressed and never kept in L1.

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
		b.jobMiss([]part{p}, miss, func(w *resp.Writer, r []partResult) { reply.Relay(w, r[0].res[0]) })
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
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.Relay(w, r[0].res[0]) })
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

func emptyArray(w *resp.Writer) { w.Array(0) }

func emptyMap(w *resp.Writer) { w.Map(0) }

func emptyBulk(w *resp.Writer) { w.BulkString("") }

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
