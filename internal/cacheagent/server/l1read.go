package server

import (
	"time"
	"unsafe"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Reads answered from the node L1 (the ttl-mode cache, or a shard's kept tracking copies), and
// the counters of where reads were answered.

// answerFromL1 answers a GET from the L1 when it holds a usable copy (fromL1).
func (b *batch) answerFromL1(s *Server, keyb []byte, rules *policy.Rules, pc *policyCounters, now time.Time) bool {
	p, ok := b.fromL1(s, keyb, rules, pc, now)
	if ok {
		b.replies = append(b.replies, p)
	}
	return ok
}

// fromL1 is lookupL1, counting a hit.
func (b *batch) fromL1(s *Server, keyb []byte, rules *policy.Rules, pc *policyCounters, now time.Time) (pending, bool) {
	p, ok := b.lookupL1(s, keyb, rules, now)
	if ok {
		s.hitL1(pc)
	}
	return p, ok
}

// lookupL1 is the reply a GET of key gets from the L1 at now (a caller that read the clock
// passes it on: a clock read was a few percent of a hit's CPU), when it holds a usable copy.
// The key is looked up through a view of the read buffer, which nothing keeps past the call: a
// hit allocates nothing. A kept miss of a moved key is not answered: its previous owner may hold
// the key.
func (b *batch) lookupL1(s *Server, keyb []byte, rules *policy.Rules, now time.Time) (pending, bool) {
	key := unsafe.String(unsafe.SliceData(keyb), len(keyb)) //nolint:gosec // a view for lookups only, never kept
	if b.writing(key) {
		return pending{}, false
	}
	if !rules.L1Tracking {
		v, ok := s.L1().Get(key)
		if !ok {
			return pending{}, false
		}
		return pending{hit: copyHit, copyVal: v}, true
	}
	k, ok := b.r.ShardFor(keyb).KeptGet(key, now)
	if !ok || !keptAnswers(&k, rules) || (k.Nil && b.r.PreviousOwner(keyb) != nil) {
		return pending{}, false
	}
	return pending{hit: keptHit, kept: k}, true
}

// admits reports whether a read of key that missed the L1 (tracking or ttl mode) should be
// copied (l1.Admission); refused, it is read from the shard as is.
func (s *Server) admits(r *router.Router, key []byte, tracked bool) bool {
	if tracked {
		return s.counted(r.ShardFor(key).Admit(key))
	}
	return s.counted(s.L1().Admit(key))
}

// counted returns admitted, counting a refusal.
func (s *Server) counted(admitted bool) bool {
	if !admitted {
		s.Stats.L1NotAdmitted.Add(1)
	}
	return admitted
}

// keptAnswers reports whether a kept (tracking) read may be answered locally: under a policy
// with an origin, a kept miss or a stale value is not, the origin or a refresh is due.
func keptAnswers(k *router.Kept, rules *policy.Rules) bool {
	if rules.Origin == nil {
		return true
	}
	return !k.Nil && freshFor(k.Val, time.Hour) > 0
}

// freshFor caps an L1 lifetime at an origin-filled value's freshness: L1 holds fresh copies
// only, so a stale value is always seen by the read-through.
func freshFor(raw string, life time.Duration) time.Duration {
	if until, _, stamped := codec.Unstamp(raw); stamped {
		return min(life, max(time.Until(until), 0))
	}
	return life
}

// countL2 counts a shard read, for the agent and, when pc is set, for the key's policy.
func (s *Server) countL2(res valkey.ValkeyResult, pc *policyCounters) {
	s.countRead(valkey.IsValkeyNil(res.Error()), pc)
}

// countRead counts a shard read that found its key, or missed.
func (s *Server) countRead(miss bool, pc *policyCounters) {
	if miss {
		s.Stats.L2Misses.Add(1)
	} else {
		s.Stats.L2Hits.Add(1)
	}
	if pc != nil {
		pc[2+boolIndex(miss)].Add(1)
	}
}

func (s *Server) hitL1(pc *policyCounters) {
	s.Stats.L1Hits.Add(1)
	pc[0].Add(1)
}

func (s *Server) missL1(pc *policyCounters) {
	s.Stats.L1Misses.Add(1)
	pc[1].Add(1)
}
