package server

import (
	"context"
	"fmt"

	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// What every write does besides sending its command: the size limit, the bus announcement, the
// L1 fence (settle) and the key's lease.

// settle makes the agent's own writes of keys visible to its next reads: it drops the L1 copies
// (both modes) and refuses fills whose read was issued before. Call it after the shard
// acknowledged (or failed) the write and before the client's reply: the shard's own
// invalidation push for a tracked key arrives only after the write's reply.
func (s *Server) settle(r *router.Router, keys ...string) { s.settleBy(r, 0, keys...) }

// settleBy is settle for a write by client by, whose tracking clients hear of it at once; the
// shard's watchers report it too, a little later.
func (s *Server) settleBy(r *router.Router, by int64, keys ...string) {
	l1 := s.L1()
	for _, k := range keys {
		l1.Delete(k)
		if r != nil {
			r.ShardFor([]byte(k)).Fence(k)
		}
	}
	// Told only now: a tracking client that reads the key again on the push must not find
	// the old copy (shardChanged keeps the same order).
	s.tracking.Invalidate(by, keys...)
}

// announce tells, for policies that invalidate ttl-mode copies on write, the other agents that
// keys are being written by client by (0: none), and the tracking table that the write is
// leaving. This agent's own copies are dropped by settle once the shard has answered (before
// that, a reader may see the old value, as it may on the shard).
func (s *Server) announce(by int64, keys ...string) {
	s.tracking.Writing(by, keys...) // its tracking clients hear of it once (tracking.Table)
	s.announceOnBus(keys...)
}

// announceOnBus is announce's message to the other agents.
func (s *Server) announceOnBus(keys ...string) {
	r, bus := s.Router(), s.bus.Load()
	if bus == nil || r == nil {
		return
	}
	for _, k := range keys {
		if rules := policy.For(r.Doc, []byte(k)); plan.AnnouncesWrites(&rules) {
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
	b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.Write(w, r[0].res[0], status) })
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
