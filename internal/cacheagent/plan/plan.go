// Package plan is the serve plan: how a read or write of a key is served, decided from the key's
// rules, once for both executors (the goroutine path's handlers and the event loop's
// forwarder). Executors ask these functions; neither derives a plan from the rules itself.
package plan

import (
	"strconv"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
)

// Get is how a GET the L1 did not answer reads its shard.
type Get uint8

// How a GET reads its shard.
const (
	GetPlain   Get = iota // the shard's reply is the answer; no copy is kept
	GetTracked            // a tracked read: its copy is kept until the shard invalidates it
	GetFill               // GET and PTTL: the value fills the ttl-mode L1 for its lifetime
)

// ForGet decides how a GET is served: from an L1 copy when the plan keeps one, else by the
// shard read planned here, once the L1's admission is asked. tx: inside a transaction the
// client sees the shard's own reply, and nothing is kept. tracker: the client keeps what it
// reads (CLIENT TRACKING). It is served the tracking L1, whose copies the agent drops before
// the client hears of a change (docs/architecture.md, client-side caching), never a ttl-mode
// copy, which may outlive the change the client was told of.
func ForGet(rules *policy.Rules, tx, tracker bool) Get {
	switch {
	case tx || !rules.L1:
		return GetPlain
	case rules.L1Tracking:
		return GetTracked
	case tracker:
		return GetPlain
	default:
		return GetFill
	}
}

// Keeps reports whether the plan keeps a copy, which the L1's admission must take first.
func (p Get) Keeps() bool { return p != GetPlain }

// LoopRunsGet reports whether the event loop executes a GET so planned: it forwards plain and
// tracked reads; a fill (whose copy lives by the value's TTL) and a read-through are the
// goroutine path's.
func LoopRunsGet(rules *policy.Rules, p Get) bool {
	return rules.Origin == nil && p != GetFill
}

// LoopSendsSet reports whether the event loop may send SET key value as the client sent it
// (with the policy's expiry, WriteExpiry): not a value over the key's limit (refused), one the
// agent encodes or that starts with its reserved byte, nor a key whose lease the write ends.
func LoopSendsSet(rules *policy.Rules, val []byte) bool {
	return rules.LeaseTTL <= 0 && !rules.Encoded() &&
		(rules.MaxValueBytes <= 0 || int64(len(val)) <= rules.MaxValueBytes) &&
		(len(val) == 0 || val[0] != codec.ReservedByte)
}

// WriteExpiry is the PX argument a write without an expiry of its own is given: the policy's
// TTL with its jitter, in milliseconds; nil without a policy TTL.
func WriteExpiry(rules *policy.Rules) []byte {
	if rules.TTL <= 0 {
		return nil
	}
	return strconv.AppendInt(nil, rules.WriteTTL(nil).Milliseconds(), 10)
}

// AnnouncesWrites reports whether a write of a key so ruled is announced on the invalidation
// bus: other agents' ttl-mode copies of it are dropped (tracking copies are invalidated by the
// shards).
func AnnouncesWrites(rules *policy.Rules) bool {
	return rules.L1 && !rules.L1Tracking && rules.InvalidateOnWrite
}

// ShareKept decides whether one shard's share of an MGET's misses is read as tracked reads
// whose copies are kept, as GETs of those keys would be: only when every key of the share is
// a tracking-L1 key without an origin that the admission takes (a shard's reads go in one
// lane), the admission asked in order until it refuses one. Otherwise the share is read with
// one MGET, and its tracking-L1 keys count as not admitted (notAdmitted). rulesAt and admit
// take the index of a key in the share.
func ShareKept(n int, rulesAt func(k int) *policy.Rules, admit func(k int) bool) (kept bool, notAdmitted int) {
	tracking, admitted := 0, 0
	for k := range n {
		rl := rulesAt(k)
		if ForGet(rl, false, false) != GetTracked || rl.Origin != nil {
			continue
		}
		if tracking++; admitted == tracking-1 && admit(k) {
			admitted++
		}
	}
	if admitted < n {
		return false, tracking
	}
	return true, 0
}
