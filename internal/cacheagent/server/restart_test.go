package server_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// breakerRefusal is the text of a request refused because the breaker is (still) open: expected
// during an outage and its cooldown, unlike a request that fails on a connection from before.
func breakerRefusal(reply string) bool {
	return strings.Contains(reply, "circuit breaker is open") || strings.Contains(reply, "too many requests")
}

// TestShardRestartUnderLoad: a shard dies under load and comes back (empty, as a restarted
// cache does). Writes to it succeed again within the breaker cooldown plus one second, reads
// never answer an error, and after the restart no request fails on a connection from before.
func TestShardRestartUnderLoad(t *testing.T) {
	for _, mode := range l1Modes {
		t.Run(mode.name, func(t *testing.T) {
			shards := twoShards(t)
			cooldown := time.Second
			if d, err := time.ParseDuration(os.Getenv("CACHEFLEET_TEST_COOLDOWN")); err == nil {
				cooldown = d // e.g. 10s, the agent's default, for the README's numbers
			}
			a := mode.agentIn(t, shards, func(o *options) { o.config.Cooldown = cooldown })
			recovery, stale := restartUnderLoad(t, a, shards[1], cooldown)
			t.Logf("shard restart (%s): writes back %v after the restart (cooldown %v), %d requests failed on old connections",
				mode.name, recovery.Round(time.Millisecond), cooldown, len(stale))
			if recovery > cooldown+time.Second {
				t.Errorf("writes came back %v after the restart, want <= cooldown + 1s", recovery)
			}
			if len(stale) > 0 {
				t.Errorf("%d requests failed after the restart other than by the open breaker, first: %s", len(stale), stale[0])
			}
		})
	}
}

func restartUnderLoad(t *testing.T, a *agent, victim *tu.Redis, cooldown time.Duration) (time.Duration, []string) {
	key := keyOn(t, a, "restart:", a.srv.Router().Index([]byte(victimKeyProbe(t, a, victim))))
	var mu sync.Mutex
	var restartedAt, firstWrite time.Time
	var stale []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		c := a.dial(t)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cmd := []string{"SET", key, fmt.Sprint(g, i)}
				if i%2 == 1 {
					cmd = []string{"GET", key}
				}
				c.nc.SetDeadline(time.Now().Add(5 * time.Second))
				got, err := tu.RoundTrip(c.nc, c.rd, cmd...)
				now := time.Now()
				mu.Lock()
				after := !restartedAt.IsZero() && now.After(restartedAt)
				switch {
				case err != nil:
					stale = append(stale, fmt.Sprintf("%v: %v", cmd, err))
				case cmd[0] == "GET" && strings.HasPrefix(got, "ERR:"):
					stale = append(stale, fmt.Sprintf("read answered an error: %s", got))
				case after && strings.HasPrefix(got, "ERR:") && !breakerRefusal(got):
					stale = append(stale, fmt.Sprintf("%v at +%v: %s", cmd, now.Sub(restartedAt).Round(time.Millisecond), got))
				case after && got == "OK" && firstWrite.IsZero():
					firstWrite = now
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	victim.Stop()
	time.Sleep(cooldown / 2)
	victim.Start()
	mu.Lock()
	restartedAt = time.Now()
	mu.Unlock()
	time.Sleep(cooldown + 2*time.Second)
	close(stop)
	wg.Wait()
	if firstWrite.IsZero() {
		t.Fatalf("no write succeeded in %v after the restart", cooldown+2*time.Second)
	}
	return firstWrite.Sub(restartedAt), stale
}

// victimKeyProbe returns a key owned by the shard at victim's address.
func victimKeyProbe(t *testing.T, a *agent, victim *tu.Redis) string {
	for i, sh := range a.srv.Router().Shards {
		if sh.Addr() == victim.Addr() {
			return keyOn(t, a, "probe:", i)
		}
	}
	t.Fatal("victim is not in the ring")
	return ""
}

// TestShardRestartWhileIdle: the shard restarts while the agent sends it nothing; the next
// request must not fail on the connection that predates the restart.
func TestShardRestartWhileIdle(t *testing.T) {
	for _, mode := range l1Modes {
		t.Run(mode.name, func(t *testing.T) {
			shards := twoShards(t)
			a := mode.agentIn(t, shards, nil)
			c := a.dial(t)
			key := victimKeyProbe(t, a, shards[1])
			for range 3 {
				c.do("SET", key, "v")
				c.do("GET", key)
			}
			for round := range 3 {
				shards[1].Stop()
				shards[1].Start()
				if got := c.do("SET", key, "after"); got != "OK" {
					t.Fatalf("round %d: first write after the restart = %q", round, got)
				}
				if got := c.do("GET", key); got != "after" {
					t.Fatalf("round %d: read after the restart = %q", round, got)
				}
			}
			if a.srv.Router().Shards[1].Stats.StaleRetries.Load() == 0 && mode.name == "off" {
				t.Error("no stale-connection retry counted: the test no longer takes the idle path")
			}
		})
	}
}
