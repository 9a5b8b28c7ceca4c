package server

import (
	"context"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
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

// forwardRead relays a read to the shard of its keys (the table row's key spec), which must
// all share one (a {hashtag}); a down shard answers miss.
func forwardRead(miss func(w *resp.Writer)) handler {
	return func(ctx context.Context, _ *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
		_, i, ok := b.oneShard(ctx, w, args)
		if !ok {
			return
		}
		p, shape := b.plain(i, relayed(args)), b.cmd.replyShape(args)
		b.jobMiss([]part{p}, miss, func(w *resp.Writer, r []partResult) { reply.RelayShaped(w, r[0].res[0], shape) })
	}
}

// created names the key a write may create, which then gets the policy TTL: by its position
// among the command's keys.
type created int

const (
	createsNothing created = -1
	createsFirst   created = 0 // LPUSH key, SADD key, a STORE command's destination
	createsSecond  created = 1 // LMOVE src dst, SMOVE src dst
)

// forwardWrite relays a write to the shard of its keys, which must all share one. values
// picks the arguments held against the first key's size limit; creates names the key the
// command may create. Every key is fenced and announced, as any write's.
func forwardWrite(values func(args [][]byte) [][]byte, creates created) handler {
	return func(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
		keys, i, ok := b.oneShard(ctx, w, args)
		if !ok {
			return
		}
		cmds := []buildFn{relayed(args)}
		if len(keys) > 0 {
			key := keys[0]
			rules := b.rulesFor([]byte(key))
			if values != nil {
				for _, v := range values(args) {
					if s.oversize(b, rules, key, len(v)) {
						return
					}
				}
			}
			if creates != createsNothing && int(creates) < len(keys) {
				made := keys[creates]
				madeRules := b.rulesFor([]byte(made))
				if px := plan.WriteExpiry(&madeRules); px != nil {
					cmds = append(cmds, arbitrary("PEXPIRE", made, []string{string(px), "NX"}))
				}
			}
			s.announce(b.cid, keys...)
		}
		p, shape := b.plain(i, cmds...), b.cmd.replyShape(args)
		b.wrote(keys...)
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.RelayShaped(w, r[0].res[0], shape) })
	}
}

// relayed sends the client's command as it came.
func relayed(args [][]byte) buildFn {
	name, rest := strings.ToUpper(str(args[0])), strs(args[1:])
	return func(bd valkey.Builder) valkey.Completed { return bd.Arbitrary(name).Args(rest...).Build() }
}

// oneShard finds the shard a command runs on: its keys' (its table row's key spec), which must
// share one, or, for a command that names none (a numkeys of 0, a HELP subcommand), the ring's
// first shard, which answers it as Valkey does. false: a key on another shard, the client is
// answered with the cross-shard error.
func (b *batch) oneShard(ctx context.Context, w *resp.Writer, args [][]byte) (keys []string, shard int, ok bool) {
	keys = b.cmd.keys.of(args)
	if len(keys) == 0 {
		return nil, b.laneTaken(ctx, w, keylessShard, plainLane), true
	}
	shard = b.r.Index([]byte(keys[0]))
	for _, k := range keys[1:] {
		if b.r.Index([]byte(k)) != shard {
			msg := crossShard(k, keys[0])
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return nil, 0, false
		}
	}
	return keys, b.laneTaken(ctx, w, shard, plainLane), true
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

// emptyScan is a finished scan that found nothing (SSCAN, ZSCAN, HSCAN of a missing key).
func emptyScan(w *resp.Writer) {
	w.Array(2)
	w.BulkString("0")
	w.Array(0)
}

// onStoredBytes refuses h where a key's policy stores values other than as written
// (compressed, or stamped by a read-through): commands on bits or parts of the stored bytes
// would act on the encoding, not the value.
func onStoredBytes(h handler) handler {
	return func(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
		for _, k := range b.cmd.keys.of(args) {
			if refusedOnCompressed(b, str(args[0]), []byte(k)) {
				return
			}
		}
		h(ctx, s, b, c, w, args)
	}
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
