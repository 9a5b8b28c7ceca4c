package lease

// Fetch leases: the read-through side of the protocol. A reader of a missing or stale key of
// a policy with an origin claims the key's lease; the holder asks the origin and settles the
// lease with the value, a deletion (not found, no negative cache) or a short-lived failure
// note that the other readers take as their answer instead of asking the origin themselves.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Claim states.
const (
	Busy    = 0 // another reader holds the lease: wait for it (or answer a stale value)
	Fresh   = 1 // the key holds a fresh value (Value)
	Granted = 2 // the caller holds the lease and must settle it
	Failed  = 3 // the last holder's fetch failed recently (Failure): answer that
)

// claimScript: KEYS key, lease; ARGV token, lease ms, now ms, stamp marker. A value is fresh
// unless it carries a freshness stamp that has passed. A lease starting with "!" holds a
// failure note instead of a token (tokens are hex).
const claimScript = `
local v = redis.call('GET', KEYS[1])
if v and (string.sub(v, 1, 4) ~= ARGV[4] or tonumber(string.sub(v, 5, 20)) > tonumber(ARGV[3])) then return {1, v} end
local l = redis.call('GET', KEYS[2])
if l then
  if string.sub(l, 1, 1) == '!' then return {3, string.sub(l, 2)} end
  return {0}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {2}`

// settleScript: KEYS lease, key; ARGV token, how (store|delete|fail), value, ms. Refused (0)
// when the token no longer holds the lease: a write or delete of the key cancelled it.
const settleScript = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'store' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  redis.call('DEL', KEYS[1])
elseif ARGV[2] == 'delete' then
  redis.call('DEL', KEYS[2], KEYS[1])
else
  redis.call('SET', KEYS[1], '!' .. ARGV[3], 'PX', ARGV[4])
end
return 1`

// Claimed is what a Claim found.
type Claimed struct {
	State   int
	Value   string // Fresh: the value as stored
	Failure string // Failed: the failure the holder recorded
}

// Claim takes key's lease unless its value is fresh at now, or another reader holds it.
func (l *Leases) Claim(ctx context.Context, sh *router.Shard, key, token string, leaseTTL time.Duration, now time.Time) (Claimed, error) {
	res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
		return bd.Eval().Script(claimScript).Numkeys(2).Key(key, Key(key)).
			Arg(token, strconv.FormatInt(leaseTTL.Milliseconds(), 10), strconv.FormatInt(now.UnixMilli(), 10), codec.FreshMarker).Build()
	})
	if err != nil {
		return Claimed{}, err
	}
	reply, err := res.ToArray()
	if err == nil && len(reply) == 0 {
		err = errors.New("empty array")
	}
	if err != nil {
		return Claimed{}, fmt.Errorf("unexpected lease reply: %w", err)
	}
	state, _ := reply[0].AsInt64()
	c := Claimed{State: int(state)}
	if len(reply) > 1 {
		s, _ := reply[1].ToString()
		if c.State == Fresh {
			c.Value = s
		} else {
			c.Failure = s
		}
	}
	if c.State == Granted {
		l.Stats.Granted.Add(1)
	}
	return c, nil
}

// Settlement is how a holder ends its lease.
type Settlement struct {
	how   string
	value string
	ttl   time.Duration
}

// Store settles with value, kept for ttl.
func Store(value string, ttl time.Duration) Settlement { return Settlement{"store", value, ttl} }

// Delete settles by removing the key (the origin has no such key and misses are not cached).
func Delete() Settlement { return Settlement{how: "delete"} }

// Fail settles with a failure note the other readers answer for ttl.
func Fail(failure string, ttl time.Duration) Settlement { return Settlement{"fail", failure, ttl} }

// Settle ends token's lease on key and wakes this agent's waiters (the caller tells the
// others through the bus). false: the lease was cancelled or expired; nothing was stored.
func (l *Leases) Settle(ctx context.Context, sh *router.Shard, key, token string, s Settlement) (bool, error) {
	ttl := strconv.FormatInt(max(s.ttl.Milliseconds(), 1), 10)
	res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
		return bd.Eval().Script(settleScript).Numkeys(2).Key(Key(key), key).Arg(token, s.how, s.value, ttl).Build()
	})
	if err != nil {
		return false, err
	}
	if n, _ := res.AsInt64(); n != 1 {
		l.Stats.FillsRefused.Add(1)
		return false, nil
	}
	l.Wake(key)
	return true, nil
}

// Park registers a wait for key's lease to be settled; call it before Claim so a settlement
// in between is not missed, and Unpark when done.
func (l *Leases) Park(key string) chan struct{} { return l.add(key) }

// Unpark ends a wait registered by Park that was not woken.
func (l *Leases) Unpark(key string, ch chan struct{}) { l.remove(key, ch) }

// NewToken is a fresh lease token.
func NewToken() string { return newToken() }
