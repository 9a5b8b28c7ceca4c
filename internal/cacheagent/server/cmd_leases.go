package server

// The RESP face of stampede protection (package lease): CF.LGET, CF.LSET, CF.LMISS.

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// cmdLGet: CF.LGET key [TIMEOUT ms] -> [value, nil] | [nil, token] (you fill it) | [nil, nil] (timed out)
func cmdLGet(ctx context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	key := str(args[1])
	timeout := 5 * time.Second
	if len(args) == 4 && strings.EqualFold(str(args[2]), "timeout") {
		ms, err := strconv.Atoi(str(args[3]))
		if err != nil || ms < 0 {
			b.local(func(w *resp.Writer) { w.Error("ERR TIMEOUT must be a number of milliseconds") })
			return
		}
		timeout = time.Duration(ms) * time.Millisecond
	} else if len(args) != 2 {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax: CF.LGET key [TIMEOUT ms]") })
		return
	}
	rules := b.rulesFor(args[1])
	if rules.LeaseTTL <= 0 {
		b.local(func(w *resp.Writer) { w.Error("ERR stampede protection is not enabled for this key's policy") })
		return
	}
	timeout = lease.Wait(timeout, rules.LeaseTTL)
	sh := b.r.ShardFor(args[1])
	b.local(func(w *resp.Writer) {
		got, err := s.leases.Get(ctx, s.stopping, sh, key, rules.LeaseTTL, timeout)
		if err != nil {
			reply.WriteErr(w, err)
			return
		}
		var value string
		if got.Value != nil {
			var present bool
			if value, present = reply.Readable(*got.Value); !present {
				s.Stats.L2Hits.Add(1) // a negative hit spares the origin like any other
				w.Error(errAbsent.Error())
				return
			}
		}
		w.Array(2)
		if got.Value != nil {
			w.BulkString(value)
		} else {
			w.Null()
		}
		if got.Token != "" {
			w.BulkString(got.Token)
		} else {
			w.Null()
		}
	})
}

// cmdLSet: CF.LSET key token value [EX s|PX ms] -> +OK, or an error when the lease was
// cancelled (the key was deleted or invalidated) or expired: the fill is refused.
func cmdLSet(ctx context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	key, token, value := str(args[1]), str(args[2]), str(args[3])
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(value)) {
		return
	}
	value = rules.Stored(value)
	ttl := rules.WriteTTL(nil)
	if len(args) == 6 {
		n, err := strconv.ParseInt(str(args[5]), 10, 64)
		switch unit := strings.ToUpper(str(args[4])); {
		case err != nil || n <= 0:
			b.local(func(w *resp.Writer) { w.Error("ERR invalid expire time") })
			return
		case unit == "EX":
			ttl = time.Duration(n) * time.Second
		case unit == "PX":
			ttl = time.Duration(n) * time.Millisecond
		default:
			b.local(func(w *resp.Writer) { w.Error("ERR syntax: CF.LSET key token value [EX s|PX ms]") })
			return
		}
	} else if len(args) != 4 {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax: CF.LSET key token value [EX s|PX ms]") })
		return
	}
	b.local(s.fill(ctx, b.r.ShardFor(args[1]), key, token, value, ttl))
}

// errAbsent answers CF.LGET for a key recorded as absent: clients see it as an error reply
// they can tell from a timeout, and nobody is sent to the origin.
var errAbsent = errors.New("CFNOTFOUND the key is recorded as absent at the origin (negative cache)")

// cmdLMiss: CF.LMISS key token -> +OK: the lease holder found nothing at the origin; the key
// reads as absent for the policy's negativeCacheTTL instead of sending every caller there.
func cmdLMiss(ctx context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	key, token := str(args[1]), str(args[2])
	rules := b.rulesFor(args[1])
	if rules.NegativeTTL <= 0 {
		b.local(func(w *resp.Writer) {
			w.Error("ERR negative caching is not enabled for this key's policy (negativeCacheTTL)")
		})
		return
	}
	b.local(s.fill(ctx, b.r.ShardFor(args[1]), key, token, codec.Absent, rules.NegativeTTL))
}

// fill stores value under key if token still holds the lease, then wakes the waiters here and,
// through the bus, on the other agents.
func (s *Server) fill(ctx context.Context, sh *router.Shard, key, token, value string, ttl time.Duration) func(w *resp.Writer) {
	return func(w *resp.Writer) {
		stored, err := s.leases.Fill(ctx, sh, key, token, value, ttl)
		s.settle(s.Router(), key)
		if err != nil {
			reply.WriteErr(w, err)
			return
		}
		if !stored {
			w.Error("CFLEASE the lease for this key expired or was cancelled by a delete; the value was not stored")
			return
		}
		s.announceOnBus(key) // the fill is settled: only the other agents are told
		if bu := s.bus.Load(); bu != nil {
			go func() { _ = bu.Publish(context.Background(), bus.OpFilled, key) }() // failures are counted by the bus
		}
		w.OK()
	}
}
