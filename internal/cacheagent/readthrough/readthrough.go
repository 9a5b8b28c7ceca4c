// Package readthrough answers reads of keys whose policy has an origin. The shard is read as
// usual; Resolve then looks at what it held:
//
//   - a value without a freshness stamp (written by a client) or with one still in the future
//     is answered as is;
//   - a value stale by less than staleWhileRevalidate is answered at once, and one agent of
//     the fleet refreshes it in the background (the key's lease decides which);
//   - a value stale by less than staleIfError, or a missing key, is fetched from the origin by
//     one reader of the fleet (the lease; readers on this agent share one flight), the others
//     wait to be woken; a stale value is answered when the fetch fails or outlasts the
//     origin's timeout.
package readthrough

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

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

// maxRefreshes bounds the background refreshes one agent runs at once. A TTL boundary that
// makes many keys stale together is refreshed as a steady trickle instead of a burst that
// takes the CPU from the readers; a stale read finding no free slot leaves the refresh to the
// next reader (the value is answered either way).
const maxRefreshes = 64

// Fetcher is an agent's read-through: its origin client, its flights and refreshes.
type Fetcher struct {
	client     *origin.Client
	leases     *lease.Leases
	stats      *Stats
	settle     func(r *router.Router, key string) // the agent's write fence, after a fill
	bus        func() *bus.Bus                    // wakes other agents' waiters; nil: none
	stopping   <-chan struct{}                    // closed when the agent shuts down
	flights    singleflight.Group                 // one fetch per key on this agent
	refreshing sync.Map                           // keys with a background refresh under way here
	refreshes  chan struct{}                      // slots for background refreshes
}

// New returns a Fetcher that fills keys under leases, counts into stats, fences the keys it
// stored with settle, and announces fills on the bus busOf returns.
func New(leases *lease.Leases, stats *Stats, settle func(*router.Router, string), busOf func() *bus.Bus, stopping <-chan struct{}) *Fetcher {
	return &Fetcher{client: origin.NewClient(), leases: leases, stats: stats, settle: settle, bus: busOf,
		stopping: stopping, refreshes: make(chan struct{}, maxRefreshes)}
}

// SetHeaders installs the headers origin requests send, by Secret name.
func (f *Fetcher) SetHeaders(bySecret map[string]map[string]string) { f.client.SetHeaders(bySecret) }

// Stats count read-through.
type Stats struct {
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
	OutcomeHit        = "hit"
	OutcomeRevalidate = "stale-while-revalidate"
	OutcomeStaleError = "stale-if-error"
	OutcomeMiss       = "miss"
)

// Answer is what a read-through decided for one key.
type Answer struct {
	// FromShard: the shard's (or L1's) value stands and is answered as read.
	FromShard bool
	Value     string
	Present   bool
	Err       error
	// For Cache-Status.
	Outcome    string
	Collapsed  bool // answered by another reader's fetch
	FwdStatus  int  // the origin's status, when this reader's flight asked it
	Stored     bool
	FreshUntil time.Time
}

// Resolve decides a read of key under rules given what its shard held (raw, found) or that
// its shard is down.
func (f *Fetcher) Resolve(ctx context.Context, r *router.Router, key string, rules policy.Rules, raw string, found, down bool) *Answer {
	if rules.Origin == nil {
		return &Answer{FromShard: true, Outcome: OutcomeHit}
	}
	now := time.Now()
	if found {
		until, _, stamped := codec.Unstamp(raw)
		if !stamped || now.Before(until) {
			return &Answer{FromShard: true, Outcome: OutcomeHit, FreshUntil: until}
		}
		switch age := now.Sub(until); {
		case age < rules.StaleWhileRevalidate:
			f.stats.StaleRevalidate.Add(1)
			f.revalidate(r, key, rules)
			return &Answer{FromShard: true, Outcome: OutcomeRevalidate, FreshUntil: until}
		case age < rules.StaleIfError:
			a := f.fetch(ctx, r, key, rules, true, down)
			if a.Err != nil {
				f.stats.StaleError.Add(1)
				return &Answer{FromShard: true, Outcome: OutcomeStaleError, FreshUntil: until, FwdStatus: a.FwdStatus}
			}
			return a
		}
		// Past both windows (the shard's clock is behind this agent's): a miss.
	}
	return f.fetch(ctx, r, key, rules, false, down)
}

// fetch answers key from the origin through this agent's flight for it. A reader with a stale
// value to fall back on waits no longer than the origin's timeout; one without waits for the
// lease holder's fetch.
func (f *Fetcher) fetch(ctx context.Context, r *router.Router, key string, rules policy.Rules, haveStale, down bool) *Answer {
	flight := key
	if down {
		flight = "\x00down\x00" + key
	}
	var leader atomic.Bool
	ch := f.flights.DoChan(flight, func() (any, error) {
		leader.Store(true)
		if down {
			return f.fetchUnstored(key, rules), nil
		}
		return f.fetchLeased(r, key, rules), nil
	})
	wait := rules.LeaseTTL + time.Second
	if haveStale {
		wait = rules.OriginTimeout()
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case res := <-ch:
		a := *res.Val.(*Answer)
		if !leader.Load() {
			f.stats.CoalescedAgent.Add(1)
			a.Collapsed, a.FwdStatus = true, 0
		}
		return &a
	case <-timer.C:
		return &Answer{Outcome: OutcomeMiss, Err: fmt.Errorf("origin fetch of this key did not finish within %s", wait)}
	case <-ctx.Done():
		return &Answer{Outcome: OutcomeMiss, Err: ctx.Err()}
	}
}

// fetchLeased fetches key under its fleet-wide lease: the holder asks the origin, the others
// wait for its settlement and answer what it stored (or the failure it recorded).
func (f *Fetcher) fetchLeased(r *router.Router, key string, rules policy.Rules) *Answer {
	ctx, cancel := context.WithTimeout(context.Background(), rules.LeaseTTL+time.Second)
	defer cancel()
	sh := r.ShardFor([]byte(key))
	token := lease.NewToken()
	deadline := time.Now().Add(rules.LeaseTTL)
	for waited := false; ; waited = true {
		woken := f.leases.Park(key)
		c, err := f.leases.Claim(ctx, sh, key, token, rules.LeaseTTL, time.Now())
		if err != nil || c.State != lease.Busy {
			f.leases.Unpark(key, woken)
		}
		switch {
		case err != nil: // the shard failed meanwhile: the origin still answers
			return f.fetchUnstored(key, rules)
		case c.State == lease.Granted:
			return f.fetchAndSettle(ctx, r, sh, key, token, rules, true)
		case c.State == lease.Fresh:
			if waited {
				f.stats.CoalescedFleet.Add(1)
			}
			v, present := reply.Readable(c.Value)
			until, _, _ := codec.Unstamp(c.Value)
			return &Answer{Value: v, Present: present, Outcome: OutcomeMiss, Collapsed: true, FreshUntil: until}
		case c.State == lease.Failed:
			f.stats.CoalescedFleet.Add(1)
			return &Answer{Outcome: OutcomeMiss, Collapsed: true, Err: errors.New(c.Failure)}
		}
		f.leases.Stats.Waits.Add(1)
		wait := min(time.Until(deadline), 250*time.Millisecond) // woken by the holder or the bus; this is the safety net
		if wait <= 0 {
			f.leases.Unpark(key, woken)
			return &Answer{Outcome: OutcomeMiss, Err: fmt.Errorf("another agent's origin fetch of this key did not finish within %s", rules.LeaseTTL)}
		}
		select {
		case <-woken:
		case <-time.After(wait):
			f.leases.Unpark(key, woken)
		case <-f.stopping:
			f.leases.Unpark(key, woken)
			return &Answer{Outcome: OutcomeMiss, Err: errors.New("the agent is shutting down")}
		}
	}
}

// fetchAndSettle asks the origin as the lease holder and settles the lease with what it said.
// wake tells the other agents' waiters through the bus; a background refresh has none (its
// readers were answered the stale value), so it spares the bus a message per key.
func (f *Fetcher) fetchAndSettle(ctx context.Context, r *router.Router, sh *router.Shard, key, token string, rules policy.Rules, wake bool) *Answer {
	res, err := f.client.Fetch(ctx, rules.Origin, key[len(rules.Prefix):], rules.MaxValueBytes)
	f.count(err, res)
	a := &Answer{Outcome: OutcomeMiss, FwdStatus: res.Status}
	var settle lease.Settlement
	switch {
	case err != nil:
		a.Err = err
		if oe := (*origin.Error)(nil); errors.As(err, &oe) {
			a.FwdStatus = oe.Status
		}
		settle = lease.Fail(err.Error(), failureMemory)
	case !res.Found:
		settle = lease.Delete()
		if rules.NegativeTTL > 0 {
			settle = lease.Store(codec.Absent, rules.NegativeTTL)
		}
	default:
		ttl := rules.WriteTTL(nil)
		a.Value, a.Present, a.FreshUntil = string(res.Body), true, time.Now().Add(ttl)
		settle = lease.Store(codec.Stamp(a.FreshUntil, rules.Stored(a.Value)), ttl+rules.StaleWindow())
	}
	a.Stored, _ = f.leases.Settle(ctx, sh, key, token, settle)
	a.Stored = a.Stored && err == nil
	f.settle(r, key)
	if bu := f.bus(); bu != nil && wake {
		go func() { _ = bu.Publish(context.WithoutCancel(ctx), bus.OpFilled, key) }() // failures are counted by the bus
	}
	return a
}

// fetchUnstored asks the origin for a key whose shard is down: the answer is returned, and
// nothing is stored (there is nowhere to).
func (f *Fetcher) fetchUnstored(key string, rules policy.Rules) *Answer {
	f.stats.Unstored.Add(1)
	res, err := f.client.Fetch(context.Background(), rules.Origin, key[len(rules.Prefix):], rules.MaxValueBytes)
	f.count(err, res)
	if err != nil {
		return &Answer{Outcome: OutcomeMiss, Err: err}
	}
	return &Answer{Outcome: OutcomeMiss, Value: string(res.Body), Present: res.Found, FwdStatus: res.Status}
}

// revalidate refreshes a stale key in the background, unless a refresh of it is already under
// way here or another reader of the fleet holds its lease (or its value was refreshed since).
func (f *Fetcher) revalidate(r *router.Router, key string, rules policy.Rules) {
	if _, busy := f.refreshing.LoadOrStore(key, struct{}{}); busy {
		return
	}
	select {
	case f.refreshes <- struct{}{}:
	default:
		f.refreshing.Delete(key)
		return
	}
	go func() {
		defer func() { <-f.refreshes; f.refreshing.Delete(key) }()
		ctx, cancel := context.WithTimeout(context.Background(), rules.LeaseTTL+time.Second)
		defer cancel()
		sh := r.ShardFor([]byte(key))
		token := lease.NewToken()
		c, err := f.leases.Claim(ctx, sh, key, token, rules.LeaseTTL, time.Now())
		if err != nil || c.State != lease.Granted {
			return
		}
		f.stats.Refreshes.Add(1)
		f.fetchAndSettle(ctx, r, sh, key, token, rules, false)
	}()
}

// count records an origin request by its result.
func (f *Fetcher) count(err error, res origin.Result) {
	st := f.stats
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

// ErrorText is the RESP error for a read the origin could not answer.
func ErrorText(a *Answer, rules policy.Rules) string {
	return fmt.Sprintf("CFORIGIN %s (policy %s); nothing was stored", a.Err, rules.Name)
}

// Write writes a read-through's answer for a single key.
func (a *Answer) Write(w *resp.Writer, rules policy.Rules) {
	switch {
	case a.Err != nil:
		w.Error(ErrorText(a, rules))
	case !a.Present:
		w.Null()
	default:
		w.BulkString(a.Value)
	}
}
