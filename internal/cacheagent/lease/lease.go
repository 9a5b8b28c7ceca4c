// Package lease is stampede protection across the fleet (as in Facebook's memcache): on a
// miss, one caller gets a token and fills the key; the others wait for the fill. A delete or
// invalidation of the key cancels the token, so a late, stale fill is refused. The lease lives
// on the key's own shard, under Key(key), with the policy's lease TTL: a holder that dies frees
// the key.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

const prefix = "cf:lease:"

// Key is where key's lease lives (on key's shard: the hash tag rules are the key's own).
func Key(key string) string { return prefix + key }

// acquireScript returns {1, value} when the key is present, {2} when the caller now holds the
// lease, {0} when someone else does: one atomic step, so a fill cannot slip in between.
const acquireScript = `
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}`

// recheck is the safety net for a lost wake-up; waking normally comes through the bus.
const recheck = 250 * time.Millisecond

// Stats are the lease counters.
type Stats struct {
	Granted, Waits, FillsRefused atomic.Int64
}

// Leases is one agent's side of the protocol: it parks waiters and wakes them on fills.
type Leases struct {
	Stats   Stats
	mu      sync.Mutex
	waiters map[string][]chan struct{}
}

// Result is what a Get found.
type Result struct {
	Value *string // the stored value (as stored: the caller decodes it), or
	Token string  // a lease the caller must fill, or neither: the wait timed out
}

// Get returns the key's value, or a lease to fill it, waiting up to timeout while another
// caller holds the lease. stop ends the wait at once (the agent shuts down): as a timeout.
func (l *Leases) Get(ctx context.Context, stop <-chan struct{}, sh *router.Shard, key string, leaseTTL, timeout time.Duration) (Result, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Register before looking, so a fill between the look and the wait is not missed.
		ch := l.add(key)
		token := newToken()
		res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
			return bd.Eval().Script(acquireScript).Numkeys(2).Key(key, Key(key)).
				Arg(token, strconv.FormatInt(leaseTTL.Milliseconds(), 10)).Build()
		})
		if err != nil {
			l.remove(key, ch)
			return Result{}, err
		}
		reply, err := res.ToArray()
		if err == nil && len(reply) == 0 {
			err = errors.New("empty array")
		}
		if err != nil {
			l.remove(key, ch)
			return Result{}, fmt.Errorf("unexpected lease reply: %w", err)
		}
		switch state, _ := reply[0].AsInt64(); state {
		case 1:
			l.remove(key, ch)
			v, _ := reply[1].ToString()
			return Result{Value: &v}, nil
		case 2:
			l.remove(key, ch)
			l.Stats.Granted.Add(1)
			return Result{Token: token}, nil
		}
		l.Stats.Waits.Add(1)
		wait := min(time.Until(deadline), recheck)
		if wait <= 0 {
			l.remove(key, ch)
			return Result{}, nil
		}
		select {
		case <-ch:
		case <-time.After(wait):
			l.remove(key, ch)
		case <-ctx.Done():
			l.remove(key, ch)
			return Result{}, ctx.Err()
		case <-stop:
			l.remove(key, ch)
			return Result{}, nil
		}
	}
}

// Fill stores value under key for ttl if token still holds the lease, and wakes this agent's
// waiters (other agents' are woken by the bus). false: the lease expired or was cancelled.
func (l *Leases) Fill(ctx context.Context, sh *router.Shard, key, token, value string, ttl time.Duration) (bool, error) {
	return l.Settle(ctx, sh, key, token, Store(value, ttl))
}

// Wait bounds how long a Get may wait: no longer than the lease TTL, after which the holder
// has filled the key or its lease has expired and a waiter takes it over, plus a grace for that
// take-over: the last look must come after the expiry by the shard's clock, whose millisecond
// steps need not line up with the agent's.
func Wait(requested, leaseTTL time.Duration) time.Duration {
	return min(requested, leaseTTL+takeOverGrace)
}

const takeOverGrace = 50 * time.Millisecond

func (l *Leases) add(key string) chan struct{} {
	ch := make(chan struct{})
	l.mu.Lock()
	if l.waiters == nil {
		l.waiters = map[string][]chan struct{}{}
	}
	l.waiters[key] = append(l.waiters[key], ch)
	l.mu.Unlock()
	return ch
}

// Wake ends the waits for keys (filled here or, through the bus, elsewhere).
func (l *Leases) Wake(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		for _, ch := range l.waiters[k] {
			close(ch)
		}
		delete(l.waiters, k)
	}
}

func (l *Leases) remove(key string, ch chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.waiters[key]
	for i, c := range list {
		if c == ch {
			l.waiters[key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(l.waiters[key]) == 0 {
		delete(l.waiters, key)
	}
}

func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return hex.EncodeToString(b)
}
