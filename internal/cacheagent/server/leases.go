package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/resp"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Leases against stampedes (as in Facebook's memcache): on a miss, one caller across the fleet
// gets a token and fills the key; the others wait for the fill. A delete or invalidation of the
// key cancels the token, so a late, stale fill is refused. The lease lives on the key's own
// shard, under leaseKey(key), with the policy's lease TTL: a holder that dies frees the key.

const leasePrefix = "cf:lease:"

func leaseKey(key string) string { return leasePrefix + key }

// acquireScript returns {1, value} when the key is present, {2} when the caller now holds the
// lease, {0} when someone else does: one atomic step, so a fill cannot slip in between.
const acquireScript = `
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}`

// fillScript stores the value only while the caller's token is still the lease.
const fillScript = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0`

// waiters wakes the callers waiting for a key to be filled.
type waiters struct {
	mu sync.Mutex
	m  map[string][]chan struct{}
}

func (w *waiters) add(key string) chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string][]chan struct{}{}
	}
	w.m[key] = append(w.m[key], ch)
	w.mu.Unlock()
	return ch
}

func (w *waiters) wake(keys ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		for _, ch := range w.m[k] {
			close(ch)
		}
		delete(w.m, k)
	}
}

func (w *waiters) remove(key string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.m[key]
	for i, c := range list {
		if c == ch {
			w.m[key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(w.m[key]) == 0 {
		delete(w.m, key)
	}
}

// leaseRecheck is the safety net for a lost wake-up; waking normally comes through the bus.
const leaseRecheck = 250 * time.Millisecond

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
	timeout = leaseWait(timeout, rules.LeaseTTL)
	sh := b.r.ShardFor(args[1])
	b.local(func(w *resp.Writer) {
		value, token, err := s.leaseGet(ctx, sh, key, rules.LeaseTTL, timeout)
		if errors.Is(err, errAbsent) {
			s.Stats.L2Hits.Add(1) // a negative hit spares the origin like any other
			w.Error(err.Error())
			return
		}
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Array(2)
		if value != nil {
			w.BulkString(*value)
		} else {
			w.Null()
		}
		if token != "" {
			w.BulkString(token)
		} else {
			w.Null()
		}
	})
}

// leaseWait bounds how long CF.LGET waits: no longer than the policy's lease TTL, after which
// the holder has filled the key or its lease has expired (and a waiter takes it over).
func leaseWait(requested, leaseTTL time.Duration) time.Duration {
	return min(requested, leaseTTL)
}

func (s *Server) leaseGet(ctx context.Context, sh *router.Shard, key string, leaseTTL, timeout time.Duration) (*string, string, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Register before looking, so a fill between the look and the wait is not missed.
		ch := s.waiters.add(key)
		token := newToken()
		res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
			return bd.Eval().Script(acquireScript).Numkeys(2).Key(key, leaseKey(key)).
				Arg(token, strconv.FormatInt(leaseTTL.Milliseconds(), 10)).Build()
		})
		if err != nil {
			s.waiters.remove(key, ch)
			return nil, "", err
		}
		reply, err := res.ToArray()
		if err != nil || len(reply) == 0 {
			s.waiters.remove(key, ch)
			return nil, "", fmt.Errorf("unexpected lease reply: %v", err)
		}
		switch state, _ := reply[0].AsInt64(); state {
		case 1:
			s.waiters.remove(key, ch)
			v, _ := reply[1].ToString()
			v, present := readable(v)
			if !present {
				return nil, "", errAbsent
			}
			return &v, "", nil
		case 2:
			s.waiters.remove(key, ch)
			s.Stats.LeasesGranted.Add(1)
			return nil, token, nil
		}
		s.Stats.LeaseWaits.Add(1)
		wait := min(time.Until(deadline), leaseRecheck)
		if wait <= 0 {
			s.waiters.remove(key, ch)
			return nil, "", nil
		}
		select {
		case <-ch:
		case <-time.After(wait):
			s.waiters.remove(key, ch)
		case <-ctx.Done():
			s.waiters.remove(key, ch)
			return nil, "", ctx.Err()
		case <-s.stopping:
			// Shutting down: answer as a wait that timed out, so the client goes on at once.
			s.waiters.remove(key, ch)
			return nil, "", nil
		}
	}
}

func newToken() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// cmdLSet: CF.LSET key token value [EX s|PX ms] -> +OK, or an error when the lease was
// cancelled (the key was deleted or invalidated) or expired: the fill is refused.
func cmdLSet(ctx context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	key, token, value := str(args[1]), str(args[2]), str(args[3])
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(value)) {
		return
	}
	value = stored(rules, value)
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

// fill stores value under key if token still holds the lease, then wakes the waiters.
func (s *Server) fill(ctx context.Context, sh *router.Shard, key, token, value string, ttl time.Duration) func(w *resp.Writer) {
	return func(w *resp.Writer) {
		res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
			return bd.Eval().Script(fillScript).Numkeys(2).Key(leaseKey(key), key).
				Arg(token, value, strconv.FormatInt(ttl.Milliseconds(), 10)).Build()
		})
		s.settle(s.Router(), key)
		if err != nil {
			writeErr(w, err)
			return
		}
		if n, _ := res.AsInt64(); n != 1 {
			s.Stats.LeaseFillsRefused.Add(1)
			w.Error("CFLEASE the lease for this key expired or was cancelled by a delete; the value was not stored")
			return
		}
		s.forget(key)
		s.waiters.wake(key)
		if bu := s.bus.Load(); bu != nil {
			go func() { _ = bu.Publish(context.Background(), bus.OpFilled, key) }() // failures are counted by the bus
		}
		w.OK()
	}
}
