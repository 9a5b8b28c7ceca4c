package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/pubsub"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Pub/sub through the agent: SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBEs keep a
// client's subscriptions here and in the agent's hub (package pubsub), which holds them on
// the shards; PUBLISH and SPUBLISH go to the channel's shard (pubsub.Home). Messages are queued for the
// client and written after the replies of the batch being answered, like invalidations.
// __redis__:invalidate is the agent's own channel (the REDIRECT target of a RESP2 tracking
// client) and never reaches a shard.

// subscriptions are a connection's names by kind. The connection's goroutine changes them;
// counts are atomics for CLIENT LIST on other goroutines.
type subscriptions struct {
	names  [pubsub.NumKinds]map[string]struct{}
	counts [pubsub.NumKinds]atomic.Int32
	sink   *subscriber
}

// subscriber receives a client's messages from the hub.
type subscriber struct {
	s *Server
	c *client
}

// Deliver queues m for the client; a client whose queue passes the hard output limit (Valkey's
// pub/sub class: 32 MiB) is disconnected, as Valkey does.
func (k *subscriber) Deliver(m pubsub.Message) {
	q := &k.c.pushes
	size := int64(len(m.Pattern) + len(m.Channel) + len(m.Payload) + 32)
	q.mu.Lock()
	if q.cutOff {
		q.mu.Unlock()
		return
	}
	over := q.msgBytes+size > k.s.cfg.Output.HardBytes && k.s.cfg.Output.HardBytes > 0
	if over {
		q.cutOff, q.msgs, q.msgBytes = true, nil, 0
	} else {
		q.msgs = append(q.msgs, m)
		q.msgBytes += size
	}
	q.mu.Unlock()
	if over {
		k.s.Stats.OutputLimitClosed.Add(1)
		k.c.nc.Close()
		return
	}
	k.s.wakePusher(k.c)
}

var kindNames = [pubsub.NumKinds]struct{ on, off string }{
	pubsub.Channel:      {"subscribe", "unsubscribe"},
	pubsub.Pattern:      {"psubscribe", "punsubscribe"},
	pubsub.ShardChannel: {"ssubscribe", "sunsubscribe"},
}

// count is the number a (un)subscribe reply carries: Valkey counts channels and patterns
// together, shard channels apart.
func (ss *subscriptions) count(kind pubsub.Kind) int64 {
	if kind == pubsub.ShardChannel {
		return int64(len(ss.names[pubsub.ShardChannel]))
	}
	return int64(len(ss.names[pubsub.Channel]) + len(ss.names[pubsub.Pattern]))
}

func (ss *subscriptions) total() int {
	return len(ss.names[pubsub.Channel]) + len(ss.names[pubsub.Pattern]) + len(ss.names[pubsub.ShardChannel])
}

// sinkFor is the client's subscriber, made on its first subscription.
func (s *Server) sinkFor(c *client) *subscriber {
	if c.subs.sink == nil {
		c.subs.sink = &subscriber{s: s, c: c}
		for k := range c.subs.names {
			c.subs.names[k] = map[string]struct{}{}
		}
	}
	return c.subs.sink
}

// subscribe is SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE: the hub confirms every name on its shards
// before the client is answered, so a PUBLISH after the reply reaches it.
func subscribe(kind pubsub.Kind) handler {
	return func(ctx context.Context, s *Server, b *batch, c *client, _ *resp.Writer, args [][]byte) {
		names := strs(args[1:])
		if kind != pubsub.Pattern {
			if msg := s.refuseReserved(names...); msg != "" {
				b.local(func(w *resp.Writer) { w.Error(msg) })
				return
			}
		}
		sink := s.sinkFor(c)
		var shared []string
		for _, n := range names {
			if kind != pubsub.Channel || n != invalidateChannel {
				shared = append(shared, n)
			}
		}
		if len(c.subs.names[kind])+len(shared) > maxSubscriptions {
			msg := fmt.Sprintf("ERR a client may hold at most %d subscriptions of a kind through the cachefleet agent", maxSubscriptions)
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
		if len(shared) > 0 {
			if err := s.pubsub.Subscribe(ctx, sink, kind, shared); err != nil {
				msg := err.Error()
				b.local(func(w *resp.Writer) { w.Error(msg) })
				return
			}
		}
		counts := make([]int64, len(names))
		for i, n := range names {
			c.subs.names[kind][n] = struct{}{}
			counts[i] = c.subs.count(kind)
		}
		c.subs.counts[kind].Store(int32(len(c.subs.names[kind])))
		c.subscribed.Store(c.subs.total() > 0)
		b.local(func(w *resp.Writer) {
			for i, n := range names {
				w.Push(3)
				w.BulkString(kindNames[kind].on)
				w.BulkString(n)
				w.Int(counts[i])
			}
		})
	}
}

// refuseReserved is the error for a client naming the fleet's invalidation bus channel, "" when
// none does: its messages are the agents' (signed; a client could read the keys written or make
// every agent check forgeries).
func (s *Server) refuseReserved(channels ...string) string {
	for _, ch := range channels {
		if s.pubsub.Reserved(ch) {
			return fmt.Sprintf("ERR '%s' is the fleet's invalidation channel, which only its agents use", truncate([]byte(ch)))
		}
	}
	return ""
}

// maxSubscriptions bounds what one client makes the agent hold, per kind (Valkey bounds them
// by the client's memory).
const maxSubscriptions = 1 << 16

// unsubscribe is UNSUBSCRIBE, PUNSUBSCRIBE or SUNSUBSCRIBE; with no names, every name of the kind.
func unsubscribe(kind pubsub.Kind) handler {
	return func(_ context.Context, s *Server, b *batch, c *client, _ *resp.Writer, args [][]byte) {
		if !c.subscribed.Load() {
			msg := fmt.Sprintf("NOSUB '%s' command executed not in subscribed mode", kindNames[kind].off)
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
		names := strs(args[1:])
		if len(names) == 0 {
			names = slices.Sorted(func(yield func(string) bool) {
				for n := range c.subs.names[kind] {
					if !yield(n) {
						return
					}
				}
			})
		}
		counts := make([]int64, len(names))
		for i, n := range names {
			delete(c.subs.names[kind], n)
			counts[i] = c.subs.count(kind)
		}
		s.pubsub.Unsubscribe(c.subs.sink, kind, names)
		c.subs.counts[kind].Store(int32(len(c.subs.names[kind])))
		c.subscribed.Store(c.subs.total() > 0)
		left := c.subs.count(kind)
		b.local(func(w *resp.Writer) {
			if len(names) == 0 { // nothing of the kind to leave: one reply without a name
				w.Push(3)
				w.BulkString(kindNames[kind].off)
				w.Null()
				w.Int(left)
				return
			}
			for i, n := range names {
				w.Push(3)
				w.BulkString(kindNames[kind].off)
				w.BulkString(n)
				w.Int(counts[i])
			}
		})
	}
}

// unsubscribeAll ends a closing connection's subscriptions.
func (s *Server) unsubscribeAll(c *client) {
	if c.subs.sink == nil {
		return
	}
	for kind, names := range c.subs.names {
		s.pubsub.Unsubscribe(c.subs.sink, pubsub.Kind(kind), slices.Collect(func(yield func(string) bool) {
			for n := range names {
				if !yield(n) {
					return
				}
			}
		}))
	}
}

// publish is PUBLISH or SPUBLISH: sent to the channel's shard; the shard's count of receivers
// is turned into the fleet's (pubsub.Hub.Receivers).
func publish(kind pubsub.Kind) handler {
	return func(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
		channel := str(args[1])
		if msg := s.refuseReserved(channel); msg != "" {
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
		i := b.shardOf(ctx, w, args[1], plainLane) // pubsub.Home
		sh := b.r.Shards[i]
		p := b.plain(i, relayed(args))
		b.job([]part{p}, func(w *resp.Writer, r []partResult) {
			n, err := r[0].res[0].AsInt64()
			if err != nil {
				reply.Write(w, r[0].res[0], false)
				return
			}
			w.Int(s.pubsub.Receivers(kind, sh, channel, n))
		})
	}
}

// cmdPubsub: PUBSUB CHANNELS and SHARDCHANNELS list every shard's channels once; NUMSUB and
// SHARDNUMSUB ask each channel's shard; NUMPAT is the most any shard holds (every agent holds
// its patterns on every shard). Anything else is the first shard's to answer (HELP, errors).
func cmdPubsub(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	sub := strings.ToLower(str(args[1]))
	kind := pubsub.Channel
	if strings.HasPrefix(sub, "shard") {
		kind, sub = pubsub.ShardChannel, strings.TrimPrefix(sub, "shard")
	}
	switch {
	case sub == "channels" && len(args) <= 3:
		b.local(func(w *resp.Writer) {
			var names []string
			for _, res := range eachShard(ctx, b.r.Shards, relayed(args)) {
				arr, _ := res.AsStrSlice()
				for _, n := range arr {
					if !slices.Contains(names, n) && !s.pubsub.Reserved(n) {
						names = append(names, n)
					}
				}
			}
			w.Array(len(names))
			for _, n := range names {
				w.BulkString(n)
			}
		})
	case sub == "numsub":
		channels := strs(args[2:])
		subcommand := strings.ToUpper(str(args[1]))
		b.local(func(w *resp.Writer) {
			counts := make(map[string]int64, len(channels))
			var mu sync.Mutex
			runPerShard(channels, func(ch string) (*router.Shard, bool) { return pubsub.Home(b.r, ch), true },
				func(sh *router.Shard, group []string) {
					res, _ := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
						return bd.Arbitrary("PUBSUB", subcommand).Args(group...).Build()
					})
					arr, _ := res.ToArray() // [ch n ch n ...]; a shard that failed counts 0
					mu.Lock()
					defer mu.Unlock()
					for j := 0; j+1 < len(arr); j += 2 {
						ch, _ := arr[j].ToString()
						n, _ := arr[j+1].AsInt64()
						counts[ch] = s.pubsub.Subscribers(kind, sh, ch, n)
					}
				})
			w.Array(2 * len(channels))
			for _, ch := range channels {
				w.BulkString(ch)
				w.Int(counts[ch])
			}
		})
	case sub == "numpat" && kind == pubsub.Channel && len(args) == 2:
		b.local(func(w *resp.Writer) {
			var most int64
			for _, res := range eachShard(ctx, b.r.Shards, relayed(args)) {
				n, _ := res.AsInt64()
				most = max(most, n)
			}
			w.Int(most)
		})
	default:
		forwardRead(nil)(ctx, s, b, c, w, args)
	}
}

// writeMessages writes queued messages in the client's protocol (pushes in RESP3, arrays in
// RESP2); the caller holds the client's writer.
func writeMessages(w *resp.Writer, msgs []pubsub.Message) {
	for _, m := range msgs {
		switch m.Kind {
		case pubsub.Pattern:
			w.Push(4)
			w.BulkString("pmessage")
			w.BulkString(m.Pattern)
		case pubsub.ShardChannel:
			w.Push(3)
			w.BulkString("smessage")
		default:
			w.Push(3)
			w.BulkString("message")
		}
		w.BulkString(m.Channel)
		w.BulkString(m.Payload)
	}
}
