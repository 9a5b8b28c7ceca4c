package server

import (
	"context"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// A planned switchover (the controller's FAILOVER TO) demotes a shard's primary a moment before
// the agent has the ring naming its successor; the demoted node refuses the writes sent
// meanwhile with READONLY, and has run none of them. Those writes are held until the new ring
// arrives (at most the shard timeout) and sent to the new primary, so an application sees a
// slower write rather than an error.

const switchoverPoll = 5 * time.Millisecond

// firstReadOnly is the index of the first READONLY reply, or -1.
func firstReadOnly(res []valkey.ValkeyResult) int {
	for i := range res {
		if ve, ok := valkey.IsValkeyErr(res[i].Error()); ok && strings.HasPrefix(ve.Error(), "READONLY") {
			return i
		}
	}
	return -1
}

// resendToNewPrimary sends shard i's commands from the first READONLY reply on to the shard's
// new primary, once the agent's ring names one, and puts their replies in place. Every command
// after a refused write goes again, reads included, so a read pipelined after a write still sees
// it; the commands before ran on the node while it was still the primary.
func (b *batch) resendToNewPrimary(ctx context.Context, i int, sw *shardWork, from int) {
	old := b.r.Shards[i]
	if old.Demoted() {
		return
	}
	next := b.s.successor(old)
	if next == nil {
		old.MarkDemoted()
		return
	}
	cmds := sw.plain[from:]
	res, err := next.DoMulti(ctx, buildAll(cmds))
	if err != nil || len(res) != len(cmds) {
		return // the READONLY replies stand: none of those writes ran on the old node
	}
	copy(sw.results[from:], res)
	next.Stats.SwitchoverResends.Add(int64(len(cmds)))
}

// successor waits up to the shard timeout for a ring in which old's shard has another address.
func (s *Server) successor(old *router.Shard) *router.Shard {
	deadline := time.Now().Add(s.cfg.ShardTimeout)
	for {
		for _, sh := range s.router.Load().Shards {
			if sh.Name() == old.Name() && sh.Addr() != old.Addr() {
				return sh
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(switchoverPoll)
	}
}
