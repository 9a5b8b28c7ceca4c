package server

// Read-through. A GET or MGET of a key whose policy has an origin is sent to the key's shard as
// usual; once the shards have answered, readThrough looks at what came back:
//
//   - a value without a freshness stamp (written by a client) or with one still in the future
//     is answered as is;
//   - a value stale by less than staleWhileRevalidate is answered at once, and one agent of
//     the fleet refreshes it in the background (the key's lease decides which);
//   - a value stale by less than staleIfError, or a missing key, is fetched from the origin by
//     one reader of the fleet (the lease; readers on this agent share one flight), the others
//     wait to be woken; a stale value is answered when the fetch fails or outlasts the
//     origin's timeout.
//
// A transaction's reads are the shard's alone and never go to the origin.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/origin"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// failureMemory is how long an origin failure is answered to the fleet's other readers of the
// key before the origin is asked again: a failing origin gets at most one request per key per
// failureMemory, not one per reader.
const failureMemory = time.Second

// maxParallelFetches bounds the origin requests one batch (an MGET of many cold keys) runs at once.
const maxParallelFetches = 32

// maxRefreshes bounds the background refreshes one agent runs at once. A TTL boundary that
// makes many keys stale together is refreshed as a steady trickle instead of a burst that
// takes the CPU from the readers; a stale read finding no free slot leaves the refresh to the
// next reader (the value is answered either way).
const maxRefreshes = 64

// readThrough is the agent's read-through state.
type readThrough struct {
	client     *origin.Client
	flights    singleflight.Group // one fetch per key on this agent
	refreshing sync.Map           // keys with a background refresh under way here
	refreshes  chan struct{}      // slots for background refreshes
}

// OriginStats count read-through.
type OriginStats struct {
	// Requests by result: ok, not_found, and the origin.Kind* errors.
	OK, NotFound, Status, Timeout, Unreachable, TooLarge, BreakerOpen, Misconfigured atomic.Int64
	// Refreshes are background refreshes this agent sent to the origin (stale-while-revalidate).
	Refreshes atomic.Int64
	// Stale answers by reason.
	StaleRevalidate, StaleError atomic.Int64
	// Coalesced readers: sharing this agent's flight, or answered by another agent's fetch.
	CoalescedAgent, CoalescedFleet atomic.Int64
	// Unstored: fetched while the key's shard was down, answered without storing.
	Unstored atomic.Int64
}

// Cache-Status outcomes (RFC 9211) of a read-through.
const (
	outcomeHit        = "hit"
	outcomeRevalidate = "stale-while-revalidate"
	outcomeStaleError = "stale-if-error"
	outcomeMiss       = "miss"
)

// answer is what a read-through decided for one key.
type answer struct {
	// fromShard: the shard's (or L1's) value stands and is answered as read.
	fromShard bool
	value     string
	present   bool
	err       error
	// For Cache-Status.
	outcome    string
	collapsed  bool // answered by another reader's fetch
	fwdStatus  int  // the origin's status, when this reader's flight asked it
	stored     bool
	freshUntil time.Time
}

// originRead is a read of a key under a policy with an origin, marked on its job.
type originRead struct {
	key   string
	rules policy.Rules
	// Where the stored value is in the job's results: part, index in the part, and element
	// of an array reply (MGET), or -1.
	part, index, elem int
	// pos is the key's position in a multi-key read.
	pos int
	// What the shard answered: raw value, found, or down.
	raw         string
	found, down bool
	ans         *answer
}

// readThroughOnMiss marks the job just queued: its read of key may go to the origin. rules is
// a pointer so the reads of keys without an origin (the hot path) copy nothing.
func (b *batch) readThroughOnMiss(key string, rules *policy.Rules, part, index, elem, pos int) {
	if b.tx || rules.Origin == nil {
		return
	}
	p := &b.replies[len(b.replies)-1]
	p.origin = append(p.origin, &originRead{key: key, rules: *rules, part: part, index: index, elem: elem, pos: pos})
	b.origins++
}

// readThrough decides the marked reads of the segment, fetching from origins in parallel.
func (b *batch) readThrough(ctx context.Context) {
	var reads []*originRead
	var results []partResult
	for i := range b.replies {
		p := &b.replies[i]
		if len(p.origin) == 0 {
			continue
		}
		results = b.results(*p, results[:0])
		if p.warm != nil && p.warm.res != nil {
			results[0].res = p.warm.res[:len(results[0].res)]
		}
		for _, rd := range p.origin {
			if b.writing(rd.key) || !rd.observe(results[rd.part]) {
				continue // the pipeline writes the key, or the shard answered an error: as read
			}
			reads = append(reads, rd)
		}
	}
	sem := make(chan struct{}, maxParallelFetches)
	var wg sync.WaitGroup
	for _, rd := range reads {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if a := b.s.resolve(ctx, b.r, rd.key, rd.rules, rd.raw, rd.found, rd.down); !a.fromShard {
				rd.ans = a
			}
		})
	}
	wg.Wait()
}

// observe records what the shard answered for the read; false when it answered an error (or
// another type), which stands.
func (rd *originRead) observe(pr partResult) bool {
	if pr.err != nil {
		rd.down = true
		return true
	}
	res := pr.res[rd.index]
	if rd.elem >= 0 {
		arr, err := res.ToArray()
		if err != nil || rd.elem >= len(arr) {
			return false
		}
		if arr[rd.elem].IsNil() {
			return true
		}
		raw, err := arr[rd.elem].ToString()
		rd.raw, rd.found = raw, err == nil
		return err == nil
	}
	raw, err := res.ToString()
	if valkey.IsValkeyNil(err) {
		return true
	}
	rd.raw, rd.found = raw, err == nil
	return err == nil
}

// resolve decides a read of key under rules given what its shard held (raw, found) or that
// its shard is down.
func (s *Server) resolve(ctx context.Context, r *router.Router, key string, rules policy.Rules, raw string, found, down bool) *answer {
	if rules.Origin == nil {
		return &answer{fromShard: true, outcome: outcomeHit}
	}
	now := time.Now()
	if found {
		until, _, stamped := codec.Unstamp(raw)
		if !stamped || now.Before(until) {
			return &answer{fromShard: true, outcome: outcomeHit, freshUntil: until}
		}
		switch age := now.Sub(until); {
		case age < rules.StaleWhileRevalidate:
			s.Stats.Origin.StaleRevalidate.Add(1)
			s.revalidate(r, key, rules)
			return &answer{fromShard: true, outcome: outcomeRevalidate, freshUntil: until}
		case age < rules.StaleIfError:
			a := s.fetch(ctx, r, key, rules, true, down)
			if a.err != nil {
				s.Stats.Origin.StaleError.Add(1)
				return &answer{fromShard: true, outcome: outcomeStaleError, freshUntil: until, fwdStatus: a.fwdStatus}
			}
			return a
		}
		// Past both windows (the shard's clock is behind this agent's): a miss.
	}
	return s.fetch(ctx, r, key, rules, false, down)
}

// fetch answers key from the origin through this agent's flight for it. A reader with a stale
// value to fall back on waits no longer than the origin's timeout; one without waits for the
// lease holder's fetch.
func (s *Server) fetch(ctx context.Context, r *router.Router, key string, rules policy.Rules, haveStale, down bool) *answer {
	flight := key
	if down {
		flight = "\x00down\x00" + key
	}
	var leader atomic.Bool
	ch := s.rt.flights.DoChan(flight, func() (any, error) {
		leader.Store(true)
		if down {
			return s.fetchUnstored(key, rules), nil
		}
		return s.fetchLeased(r, key, rules), nil
	})
	wait := rules.LeaseTTL + time.Second
	if haveStale {
		wait = rules.OriginTimeout()
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case res := <-ch:
		a := *res.Val.(*answer)
		if !leader.Load() {
			s.Stats.Origin.CoalescedAgent.Add(1)
			a.collapsed, a.fwdStatus = true, 0
		}
		return &a
	case <-timer.C:
		return &answer{outcome: outcomeMiss, err: fmt.Errorf("origin fetch of this key did not finish within %s", wait)}
	case <-ctx.Done():
		return &answer{outcome: outcomeMiss, err: ctx.Err()}
	}
}

// fetchLeased fetches key under its fleet-wide lease: the holder asks the origin, the others
// wait for its settlement and answer what it stored (or the failure it recorded).
func (s *Server) fetchLeased(r *router.Router, key string, rules policy.Rules) *answer {
	ctx, cancel := context.WithTimeout(context.Background(), rules.LeaseTTL+time.Second)
	defer cancel()
	sh := r.ShardFor([]byte(key))
	token := lease.NewToken()
	deadline := time.Now().Add(rules.LeaseTTL)
	for waited := false; ; waited = true {
		woken := s.leases.Park(key)
		c, err := s.leases.Claim(ctx, sh, key, token, rules.LeaseTTL, time.Now())
		if err != nil || c.State != lease.Busy {
			s.leases.Unpark(key, woken)
		}
		switch {
		case err != nil: // the shard failed meanwhile: the origin still answers
			return s.fetchUnstored(key, rules)
		case c.State == lease.Granted:
			return s.fetchAndSettle(ctx, r, sh, key, token, rules, true)
		case c.State == lease.Fresh:
			if waited {
				s.Stats.Origin.CoalescedFleet.Add(1)
			}
			v, present := reply.Readable(c.Value)
			until, _, _ := codec.Unstamp(c.Value)
			return &answer{value: v, present: present, outcome: outcomeMiss, collapsed: true, freshUntil: until}
		case c.State == lease.Failed:
			s.Stats.Origin.CoalescedFleet.Add(1)
			return &answer{outcome: outcomeMiss, collapsed: true, err: errors.New(c.Failure)}
		}
		s.leases.Stats.Waits.Add(1)
		wait := min(time.Until(deadline), 250*time.Millisecond) // woken by the holder or the bus; this is the safety net
		if wait <= 0 {
			s.leases.Unpark(key, woken)
			return &answer{outcome: outcomeMiss, err: fmt.Errorf("another agent's origin fetch of this key did not finish within %s", rules.LeaseTTL)}
		}
		select {
		case <-woken:
		case <-time.After(wait):
			s.leases.Unpark(key, woken)
		case <-s.stopping:
			s.leases.Unpark(key, woken)
			return &answer{outcome: outcomeMiss, err: errors.New("the agent is shutting down")}
		}
	}
}

// fetchAndSettle asks the origin as the lease holder and settles the lease with what it said.
// wake tells the other agents' waiters through the bus; a background refresh has none (its
// readers were answered the stale value), so it spares the bus a message per key.
func (s *Server) fetchAndSettle(ctx context.Context, r *router.Router, sh *router.Shard, key, token string, rules policy.Rules, wake bool) *answer {
	res, err := s.rt.client.Fetch(ctx, rules.Origin, key[len(rules.Prefix):], rules.MaxValueBytes)
	s.countOrigin(err, res)
	a := &answer{outcome: outcomeMiss, fwdStatus: res.Status}
	var settle lease.Settlement
	switch {
	case err != nil:
		a.err = err
		if oe := (*origin.Error)(nil); errors.As(err, &oe) {
			a.fwdStatus = oe.Status
		}
		settle = lease.Fail(err.Error(), failureMemory)
	case !res.Found:
		settle = lease.Delete()
		if rules.NegativeTTL > 0 {
			settle = lease.Store(codec.Absent, rules.NegativeTTL)
		}
	default:
		ttl := rules.WriteTTL(nil)
		a.value, a.present, a.freshUntil = string(res.Body), true, time.Now().Add(ttl)
		settle = lease.Store(codec.Stamp(a.freshUntil, stored(rules, a.value)), ttl+rules.StaleWindow())
	}
	a.stored, _ = s.leases.Settle(ctx, sh, key, token, settle)
	a.stored = a.stored && err == nil
	s.settle(r, key)
	if bu := s.bus.Load(); bu != nil && wake {
		go func() { _ = bu.Publish(context.WithoutCancel(ctx), bus.OpFilled, key) }() // failures are counted by the bus
	}
	return a
}

// fetchUnstored asks the origin for a key whose shard is down: the answer is returned, and
// nothing is stored (there is nowhere to).
func (s *Server) fetchUnstored(key string, rules policy.Rules) *answer {
	s.Stats.Origin.Unstored.Add(1)
	res, err := s.rt.client.Fetch(context.Background(), rules.Origin, key[len(rules.Prefix):], rules.MaxValueBytes)
	s.countOrigin(err, res)
	if err != nil {
		return &answer{outcome: outcomeMiss, err: err}
	}
	return &answer{outcome: outcomeMiss, value: string(res.Body), present: res.Found, fwdStatus: res.Status}
}

// revalidate refreshes a stale key in the background, unless a refresh of it is already under
// way here or another reader of the fleet holds its lease (or its value was refreshed since).
func (s *Server) revalidate(r *router.Router, key string, rules policy.Rules) {
	if _, busy := s.rt.refreshing.LoadOrStore(key, struct{}{}); busy {
		return
	}
	select {
	case s.rt.refreshes <- struct{}{}:
	default:
		s.rt.refreshing.Delete(key)
		return
	}
	go func() {
		defer func() { <-s.rt.refreshes; s.rt.refreshing.Delete(key) }()
		ctx, cancel := context.WithTimeout(context.Background(), rules.LeaseTTL+time.Second)
		defer cancel()
		sh := r.ShardFor([]byte(key))
		token := lease.NewToken()
		c, err := s.leases.Claim(ctx, sh, key, token, rules.LeaseTTL, time.Now())
		if err != nil || c.State != lease.Granted {
			return
		}
		s.Stats.Origin.Refreshes.Add(1)
		s.fetchAndSettle(ctx, r, sh, key, token, rules, false)
	}()
}

func (s *Server) countOrigin(err error, res origin.Result) {
	st := &s.Stats.Origin
	var oe *origin.Error
	switch {
	case err == nil && res.Found:
		st.OK.Add(1)
	case err == nil:
		st.NotFound.Add(1)
	case !errors.As(err, &oe):
		st.Unreachable.Add(1)
	case oe.Kind == origin.KindStatus:
		st.Status.Add(1)
	case oe.Kind == origin.KindTimeout:
		st.Timeout.Add(1)
	case oe.Kind == origin.KindTooLarge:
		st.TooLarge.Add(1)
	case oe.Kind == origin.KindOpen:
		st.BreakerOpen.Add(1)
	case oe.Kind == origin.KindMisconfigured:
		st.Misconfigured.Add(1)
	default:
		st.Unreachable.Add(1)
	}
}

// originError is the RESP error for a read the origin could not answer.
func originError(a *answer, rules policy.Rules) string {
	return fmt.Sprintf("CFORIGIN %s (policy %s); nothing was stored", a.err, rules.Name)
}

// writeAnswer writes a read-through's answer for a single key.
func writeAnswer(w *resp.Writer, a *answer, rules policy.Rules) {
	switch {
	case a.err != nil:
		w.Error(originError(a, rules))
	case !a.present:
		w.Null()
	default:
		w.BulkString(a.value)
	}
}
