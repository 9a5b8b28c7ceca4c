package server

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Warm-up of moved keys. After a change of ring members, a GET that misses on a key's new
// owner is looked up on its previous owner while the ring document's warm-up window lasts: the
// value found is answered and moved to the new owner with its remaining TTL by the previous
// owner itself (MIGRATE without REPLACE, so a value written on the new owner since is never
// overwritten; moved, not copied, so no old copy is left behind to resurface if the ring later
// shrinks back). Every write of a moved key first deletes it on the previous owner, and that
// delete is acknowledged before the write is sent: a move is then either already done (and the
// write supersedes it) or finds nothing to move, so nothing stale comes back.

// warmRead is a GET that looks up the key's previous owner if its new owner misses.
type warmRead struct {
	from *router.Shard
	key  string
	// res is what the previous owner answered (GET, PTTL), when it held the key.
	res []valkey.ValkeyResult
}

// WarmupStats count the lookups on previous owners by result.
type WarmupStats struct {
	// Moved: found and moved to the new owner. Absent: not on the previous owner either.
	// Raced: moved meanwhile by another read, and found on the new owner on a second look.
	// Superseded: the new owner got the key meanwhile (the miss is answered, the old copy
	// deleted). Unmoved: found and answered, but the move failed. Dropped: previous copies
	// deleted for writes.
	Moved, Absent, Raced, Superseded, Unmoved, Dropped atomic.Int64
}

// warmOnMiss marks the job just queued: if its read of key misses, the previous owner is asked.
// A transaction reads only its own shard.
func (b *batch) warmOnMiss(key []byte) {
	if b.tx {
		return
	}
	if prev := b.r.PreviousOwner(key); prev != nil {
		b.replies[len(b.replies)-1].warm = &warmRead{from: prev, key: string(key)}
		b.warms++
	}
}

// warmUp looks up, on their previous owners, the keys of marked reads that missed: one
// pipeline per previous owner, in parallel.
func (b *batch) warmUp(ctx context.Context) {
	var missed []*warmRead
	for i := range b.replies {
		p := &b.replies[i]
		if p.warm == nil {
			continue
		}
		pt := p.parts[0]
		sw := &b.work[pt.shard]
		if sw.err != nil || !valkey.IsValkeyNil(sw.results[pt.first].Error()) {
			p.warm = nil
			continue
		}
		missed = append(missed, p.warm)
	}
	runPerShard(missed, func(rd *warmRead) (*router.Shard, bool) { return rd.from, rd.from != nil }, func(from *router.Shard, reads []*warmRead) {
		b.s.moveBack(ctx, b.r, from, reads)
	})
}

// moveBack reads keys on their previous owner and has it move each found one to its owner.
func (s *Server) moveBack(ctx context.Context, r *router.Router, from *router.Shard, reads []*warmRead) {
	timeout := strconv.FormatInt(max(s.cfg.ShardTimeout.Milliseconds(), 1), 10)
	var auth []string
	if pw := s.password(); pw != "" {
		auth = []string{"AUTH", pw}
	}
	res, err := from.DoMulti(ctx, func(bd valkey.Builder) []valkey.Completed {
		out := make([]valkey.Completed, 0, 3*len(reads))
		for _, rd := range reads {
			host, port, _ := net.SplitHostPort(r.ShardFor([]byte(rd.key)).Addr())
			migrate := append([]string{host, port, rd.key, "0", timeout}, auth...)
			out = append(out, bd.Get().Key(rd.key).Build(), bd.Pttl().Key(rd.key).Build(),
				bd.Arbitrary("MIGRATE").Args(migrate...).Build())
		}
		return out
	})
	if err != nil || len(res) != 3*len(reads) {
		return // the previous owner is unavailable: the miss stands
	}
	var obsolete []string
	var gone []*warmRead
	for i, rd := range reads {
		get, pttl, migrate := res[3*i], res[3*i+1], res[3*i+2]
		if valkey.IsValkeyNil(get.Error()) {
			gone = append(gone, rd)
			continue
		}
		switch reply, err := migrate.ToString(); {
		case err == nil && (reply == "OK" || reply == "NOKEY"): // NOKEY: expired since the GET
			s.Stats.Warmup.Moved.Add(1)
		case err != nil && strings.HasPrefix(err.Error(), "BUSYKEY"):
			s.Stats.Warmup.Superseded.Add(1) // the new owner's value is newer: keep the miss
			obsolete = append(obsolete, rd.key)
			continue
		default:
			s.Stats.Warmup.Unmoved.Add(1)
		}
		if get.Error() == nil { // another type is moved, but the GET's miss stands
			rd.res = []valkey.ValkeyResult{get, pttl}
		}
	}
	if len(obsolete) > 0 {
		_, _ = from.Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(obsolete...).Build() })
	}
	s.rereadMoved(ctx, r, gone)
}

// rereadMoved reads again, on their new owner, keys their previous owner no longer held: a
// concurrent reader may have just moved them there (without this, the second of two readers
// of a moved key would miss).
func (s *Server) rereadMoved(ctx context.Context, r *router.Router, reads []*warmRead) {
	runPerShard(reads, func(rd *warmRead) (*router.Shard, bool) { sh := r.ShardFor([]byte(rd.key)); return sh, sh != nil }, func(to *router.Shard, rds []*warmRead) {
		res, err := to.DoMulti(ctx, func(bd valkey.Builder) []valkey.Completed {
			out := make([]valkey.Completed, 0, 2*len(rds))
			for _, rd := range rds {
				out = append(out, bd.Get().Key(rd.key).Build(), bd.Pttl().Key(rd.key).Build())
			}
			return out
		})
		for i, rd := range rds {
			if err != nil || len(res) != 2*len(rds) || res[2*i].Error() != nil {
				s.Stats.Warmup.Absent.Add(1)
				continue
			}
			s.Stats.Warmup.Raced.Add(1)
			rd.res = []valkey.ValkeyResult{res[2*i], res[2*i+1]}
		}
	})
}

// dropPrevious deletes, on their previous owners, the moved keys about to be written, and
// waits for it (see the package comment above); a previous owner that is down gets the delete
// queued, as any delete.
func (s *Server) dropPrevious(ctx context.Context, r *router.Router, keys []string) {
	runPerShard(keys, func(k string) (*router.Shard, bool) { sh := r.PreviousOwner([]byte(k)); return sh, sh != nil }, func(sh *router.Shard, ks []string) {
		if _, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(ks...).Build() }); err != nil {
			sh.QueueDelete(ks...)
		}
		s.Stats.Warmup.Dropped.Add(int64(len(ks)))
	})
}
