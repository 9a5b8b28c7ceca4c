package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// lget parses a CF.LGET reply "[value token]".
func lget(c *conn, key string, timeoutMs int) (value, token string) {
	out := c.do("CF.LGET", key, "TIMEOUT", fmt.Sprint(timeoutMs))
	parts := strings.Fields(strings.Trim(out, "[]"))
	if len(parts) != 2 {
		c.t.Fatalf("CF.LGET reply %q", out)
	}
	return parts[0], parts[1]
}

func TestStampedeOf300ReachesTheOriginOnce(t *testing.T) {
	agents := startBusAgentsWith(t, twoShards(t), 3, 5*time.Second)
	const callers = 300
	var granted, filled, gotValue atomic.Int64
	var wrong atomic.Value
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		c := agents[i%3].dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			v, tok := lget(c, "product:42", 5000)
			if tok != "(nil)" {
				granted.Add(1)
				time.Sleep(50 * time.Millisecond) // the origin query
				filled.Add(1)
				if got := c.do("CF.LSET", "product:42", tok, "from-origin", "EX", "60"); got != "OK" {
					wrong.Store("fill refused: " + got)
				}
				gotValue.Add(1)
				return
			}
			if v != "from-origin" {
				wrong.Store("waiter got " + v)
				return
			}
			gotValue.Add(1)
		}()
	}
	close(start)
	wg.Wait()
	if w := wrong.Load(); w != nil {
		t.Fatal(w)
	}
	t.Logf("%d concurrent CF.LGET over 3 agents: %d leases granted, %d origin fills, %d callers got the value", callers, granted.Load(), filled.Load(), gotValue.Load())
	fmt.Printf("stampede: callers=%d leases=%d origin_fills=%d served=%d\n", callers, granted.Load(), filled.Load(), gotValue.Load())
	if granted.Load() != 1 || filled.Load() != 1 || gotValue.Load() != callers {
		t.Errorf("want exactly 1 lease and 1 fill for %d callers", callers)
	}
}

func TestDeleteBetweenGrantAndFillRefusesTheFill(t *testing.T) {
	agents := startBusAgentsWith(t, twoShards(t), 2, 5*time.Second)
	ca, cb := agents[0].dial(t), agents[1].dial(t)
	_, tok := lget(ca, "stale", 1000)
	if tok == "(nil)" {
		t.Fatal("no lease for a missing key")
	}
	cb.do("DEL", "stale") // the data changed at the source while the fill was computed
	if got := ca.do("CF.LSET", "stale", tok, "old-data"); !strings.HasPrefix(got, "ERR:CFLEASE") {
		t.Errorf("late fill after a delete = %q, want refused", got)
	}
	if got := cb.do("GET", "stale"); got != "(nil)" {
		t.Errorf("the refused fill was stored: %q", got)
	}
	// A direct SET cancels the lease too.
	_, tok = lget(ca, "stale", 1000)
	cb.do("SET", "stale", "fresh")
	if got := ca.do("CF.LSET", "stale", tok, "old-data"); !strings.HasPrefix(got, "ERR:CFLEASE") || cb.do("GET", "stale") != "fresh" {
		t.Errorf("a fill overwrote fresher data: %q", got)
	}
}

func TestADeadLeaseHolderFreesTheKey(t *testing.T) {
	agents := startBusAgentsWith(t, []*tu.Redis{tu.StartRedis(t, "")}, 1, 300*time.Millisecond)
	c1, c2 := agents[0].dial(t), agents[0].dial(t)
	if _, tok := lget(c1, "orphan", 1000); tok == "(nil)" {
		t.Fatal("no lease")
	}
	// c1 "dies" without filling; c2 waits and gets its own lease when the first one expires.
	start := time.Now()
	_, tok := lget(c2, "orphan", 3000)
	if tok == "(nil)" {
		t.Fatal("the key stayed locked after the holder's lease expired")
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("second lease after %v, before the first expired", waited)
	}
	if got := c2.do("CF.LGET", "nolease-key"); strings.HasPrefix(got, "ERR") {
		t.Errorf("CF.LGET without TIMEOUT = %q", got)
	}
}

func TestNegativeCacheAnswersAbsentWithoutTheOrigin(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	withPolicy(t, a, contract.Policy{Name: "users", Prefix: "user:", L1Enabled: true, L1Mode: "ttl",
		LeaseTTLMillis: 5000, NegativeTTLMillis: 1500})
	c, waiter := a.dial(t), a.dial(t)
	_, tok := lget(c, "user:1", 1000)
	if tok == "(nil)" {
		t.Fatal("no lease for a missing key")
	}
	waited := make(chan string)
	go func() { waited <- waiter.do("CF.LGET", "user:1", "TIMEOUT", "3000") }()
	time.Sleep(50 * time.Millisecond) // the waiter is parked behind the lease
	if got := c.do("CF.LMISS", "user:1", tok); got != "OK" {
		t.Fatalf("CF.LMISS = %q", got)
	}
	if got := <-waited; !strings.HasPrefix(got, "ERR:CFNOTFOUND") {
		t.Errorf("a waiter got %q, want CFNOTFOUND", got)
	}
	if got := c.do("CF.LGET", "user:1"); !strings.HasPrefix(got, "ERR:CFNOTFOUND") {
		t.Errorf("CF.LGET of a key recorded as absent = %q", got)
	}
	for _, cmd := range [][]string{{"GET", "user:1"}, {"GET", "user:1"}, {"MGET", "user:1"}} {
		if got := c.do(cmd...); got != "(nil)" && got != "[(nil)]" {
			t.Errorf("%v = %q, want nil", cmd, got)
		}
	}
	time.Sleep(1600 * time.Millisecond)
	if _, tok := lget(c, "user:1", 1000); tok == "(nil)" {
		t.Error("no new lease after the negative TTL ended")
	}
	// Without negativeCacheTTL the command is refused; raw bytes that look like the marker
	// are the application's own and read back unchanged.
	if got := c.do("CF.LMISS", "other", "tok"); !strings.HasPrefix(got, "ERR:ERR negative caching is not enabled") {
		t.Errorf("CF.LMISS without negativeCacheTTL = %q", got)
	}
	c.do("SET", "user:raw", codec.Absent)
	if got := c.do("GET", "user:raw"); got != codec.Absent {
		t.Errorf("an application value equal to the absent marker read back as %q", got)
	}
}

// TestShutdownEndsLeaseWaits: a CF.LGET waiting on another caller's fill returns at once when
// the agent shuts down (as a timed-out wait), instead of holding the shutdown.
func TestShutdownEndsLeaseWaits(t *testing.T) {
	agents := startBusAgentsWith(t, []*tu.Redis{tu.StartRedis(t, "")}, 1, 30*time.Second)
	holder, waiter := agents[0].dial(t), agents[0].dial(t)
	if got := holder.do("CF.LGET", "slow"); !strings.HasPrefix(got, "[(nil) ") {
		t.Fatalf("first CF.LGET = %q, want a lease", got)
	}
	waiter.nc.SetDeadline(time.Now().Add(30 * time.Second))
	waiter.nc.Write(tu.Encode("CF.LGET", "slow", "TIMEOUT", "60000"))
	eventually(t, "the second caller waits", func() error {
		if n := agents[0].srv.LeaseStats().Waits.Load(); n == 0 {
			return fmt.Errorf("no wait yet")
		}
		return nil
	})
	start := time.Now()
	go agents[0].srv.Shutdown(context.Background())
	got, err := tu.ReadReply(waiter.rd)
	if err != nil || got != "[(nil) (nil)]" {
		t.Fatalf("waiting CF.LGET at shutdown = %q, %v; want a timed-out wait", got, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the wait ended %v after shutdown began", d)
	}
}
