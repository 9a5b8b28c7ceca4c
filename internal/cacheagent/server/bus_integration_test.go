package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

var busKey = []byte("test-bus-key-0123456789abcdef012")

// startBusAgents starts n agents in ttl mode sharing a bus over the shards.
func startBusAgents(t *testing.T, shards []*tu.Redis, n int) []*agent {
	return startBusAgentsWith(t, shards, n, 0)
}

func startBusAgentsWith(t *testing.T, shards []*tu.Redis, n int, leaseTTL time.Duration, tweaks ...func(*options)) []*agent {
	t.Helper()
	o := defaults()
	o.defaults.LeaseTTL = leaseTTL
	o.defaults.TTLModeForAll = true
	o.defaults.MinUsableTTL = time.Second
	for _, tweak := range tweaks {
		tweak(&o)
	}
	var agents []*agent
	for i := 0; i < n; i++ {
		a := startAgent(t, shards, o)
		b := bus.New(bus.Config{
			Fleet: "local/static", Channel: "cachefleet:test", Key: busKey, Node: fmt.Sprintf("node-%d", i),
			Shards: func() []*router.Shard { return a.srv.Router().Shards },
			Apply: func(m *bus.Message) {
				a.srv.ApplyInvalidation(m)
				if m.Op == bus.OpDelete {
					now := time.Now()
					for _, k := range m.Args {
						a.goneAt.LoadOrStore(k, now)
					}
				}
			},
			Flush: a.srv.FlushL1,
		})
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go b.Run(ctx)
		a.srv.SetBus(b)
		agents = append(agents, a)
	}
	// Wait until every agent is subscribed on every shard (a message published on one shard
	// reaches only the agents subscribed there), then until every agent hears every other one.
	eventually(t, "every agent subscribed on every shard", func() error {
		for _, sh := range shards {
			got, err := sh.Do("PUBSUB", "NUMSUB", "cachefleet:test")
			if err != nil {
				return err
			}
			if want := fmt.Sprintf("[cachefleet:test %d]", n); got != want {
				return fmt.Errorf("shard %s: PUBSUB NUMSUB = %s, want %s", sh.Addr(), got, want)
			}
		}
		return nil
	})
	eventually(t, "bus connected", func() error {
		for _, a := range agents {
			a.srv.Bus().Publish(context.Background(), bus.OpDelete, "probe")
		}
		for _, a := range agents {
			if a.srv.Bus().Stats.Applied.Load() < int64(n-1) {
				return fmt.Errorf("agent %s applied %d", a.srv.Bus().Sender(), a.srv.Bus().Stats.Applied.Load())
			}
		}
		return nil
	})
	return agents
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// waitGone returns how long key took to leave a's L1: the moment the bus applied its delete,
// recorded by the agent itself, so the poller's own sleep is not measured.
func waitGone(t *testing.T, a *agent, key string, since time.Time) time.Duration {
	t.Helper()
	deadline := since.Add(5 * time.Second)
	for {
		if _, ok := a.srv.L1().Get(key); !ok {
			if at, ok := a.goneAt.Load(key); ok {
				return at.(time.Time).Sub(since)
			}
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed in an agent's L1 after a write elsewhere", key)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestWritesInvalidateOtherAgentsL1OverTheBus(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 3)
	ca, cb, cc := agents[0].dial(t), agents[1].dial(t), agents[2].dial(t)
	var lat []time.Duration
	for i := 0; i < 200; i++ {
		k := fmt.Sprintf("item:%d", i)
		// Seed on the shard directly: a first write through A would send its own invalidation.
		shards[agents[0].srv.Router().Index([]byte(k))].Do("SET", k, "v1", "PX", "600000")
		cb.do("GET", k)
		cc.do("GET", k)
		if _, ok := agents[1].srv.L1().Get(k); !ok {
			t.Fatalf("%s not in B's L1", k)
		}
		start := time.Now()
		ca.do("SET", k, "v2")
		lat = append(lat, waitGone(t, agents[1], k, start), waitGone(t, agents[2], k, start))
		if got := cb.do("GET", k); got != "v2" {
			t.Fatalf("B read %q after the write", got)
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("write on one agent -> L1 copy gone on another: p50 %v, p99 %v (%d samples)", p50, p99, len(lat))
	fmt.Printf("bus-latency: p50=%v p99=%v samples=%d\n", p50, p99, len(lat))
}

func TestInvalidationsSurviveALostShard(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 2)
	ca, cb := agents[0].dial(t), agents[1].dial(t)
	k := keyOn(t, agents[0], "alive:", 0)
	shards[1].Stop()
	// Let B notice the lost subscription (it must not flush: shard-0's is still up).
	time.Sleep(300 * time.Millisecond)
	shards[0].Do("SET", k, "v1", "PX", "600000")
	// B's L1 may be flushed while its bus is not yet stable (a subscription lost in the first
	// second), which refuses a fill in flight: read until the copy is kept.
	eventually(t, "value in B's L1", func() error {
		if got := cb.do("GET", k); got != "v1" {
			return fmt.Errorf("GET = %q", got)
		}
		if _, ok := agents[1].srv.L1().Get(k); !ok {
			return fmt.Errorf("not kept")
		}
		return nil
	})
	ca.do("SET", k, "v2")
	waitGone(t, agents[1], k, time.Now())
	if got := cb.do("GET", k); got != "v2" {
		t.Errorf("B read %q", got)
	}
}

func TestInvalidatePrefixAndKeysEverywhere(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 2)
	ca, cb := agents[0].dial(t), agents[1].dial(t)
	for i := 0; i < 20; i++ {
		ca.do("SET", fmt.Sprintf("user:%d", i), "v")
		ca.do("SET", fmt.Sprintf("other:%d", i), "v")
	}
	time.Sleep(100 * time.Millisecond) // the writes' own invalidations pass first
	for i := 0; i < 20; i++ {
		cb.do("GET", fmt.Sprintf("user:%d", i))
	}
	if got := ca.do("CF.INVALIDATE", "PREFIX", "user:"); got != "20" {
		t.Errorf("CF.INVALIDATE PREFIX removed %s keys, want 20", got)
	}
	eventually(t, "B's L1 copies gone", func() error {
		for i := 0; i < 20; i++ {
			if _, ok := agents[1].srv.L1().Get(fmt.Sprintf("user:%d", i)); ok {
				return fmt.Errorf("user:%d still in B's L1", i)
			}
		}
		return nil
	})
	if got := cb.do("EXISTS", "user:3", "other:3"); got != "1" {
		t.Errorf("after the prefix invalidation EXISTS user:3 other:3 = %s, want 1", got)
	}
	if got := cb.do("CF.INVALIDATE", "KEY", "other:1", "other:2", "nope"); got != "2" {
		t.Errorf("CF.INVALIDATE KEY = %s", got)
	}
	if got := cb.do("CF.INVALIDATE", "TAGZ", "x"); !strings.HasPrefix(got, "ERR:") {
		t.Errorf("bad CF.INVALIDATE = %s", got)
	}
}

func TestForgedAndGarbageBusMessagesAreRejected(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 2)
	cb := agents[1].dial(t)
	shards[agents[0].srv.Router().Index([]byte("guarded"))].Do("SET", "guarded", "v", "PX", "600000")
	cb.do("GET", "guarded")
	forged := (&bus.Message{Fleet: "local/static", Sender: "evil", Seq: 1, TimeMs: time.Now().UnixMilli(), Op: bus.OpFlush}).Seal([]byte("wrong key"))
	for _, payload := range []string{string(forged), "garbage", ""} {
		if _, err := shards[0].Do("PUBLISH", "cachefleet:test", payload); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "rejections counted", func() error {
		var n int64
		agents[1].srv.Bus().Stats.Rejected.Range(func(_, v any) bool {
			n += v.(interface{ Load() int64 }).Load()
			return true
		})
		if n < 3 {
			return fmt.Errorf("%d rejected", n)
		}
		return nil
	})
	if _, ok := agents[1].srv.L1().Get("guarded"); !ok {
		t.Error("a forged flush was applied")
	}
}

func TestHTTPInvalidateNeedsTheToken(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 1)
	agents[0].dial(t).do("SET", "h:1", "v")
	srv := httptestServer(t, agents[0])
	for _, tc := range []struct {
		auth string
		code int
	}{{"", 401}, {"Bearer wrong", 401}, {"Bearer " + string(busKey), 200}} {
		req, _ := http.NewRequest("POST", srv+"/v1/invalidate", strings.NewReader(`{"keys":["h:1"]}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("auth %q: status %d, want %d", tc.auth, resp.StatusCode, tc.code)
		}
	}
	if got := agents[0].dial(t).do("EXISTS", "h:1"); got != "0" {
		t.Errorf("key survived POST /v1/invalidate")
	}
}

// TestConcurrentPublishersKeepTheirOrder: leases, invalidations and tags publish from many
// goroutines at once. Receivers must see no gap (a gap flushes their L1) and no false replay.
func TestConcurrentPublishersKeepTheirOrder(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 2)
	pub, sub := agents[0].srv.Bus(), agents[1].srv.Bus()
	gaps0, applied0, dup0 := sub.Stats.Gaps.Load(), sub.Stats.Applied.Load(), sub.Stats.Duplicates.Load()
	const publishers, each = 8, 100
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := pub.Publish(context.Background(), bus.OpDelete, fmt.Sprintf("k:%d:%d", p, i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "every message applied, and its copy through the other shard seen", func() error {
		for p := range publishers {
			for i := range each {
				if _, ok := agents[1].goneAt.Load(fmt.Sprintf("k:%d:%d", p, i)); !ok {
					return fmt.Errorf("k:%d:%d not applied", p, i)
				}
			}
		}
		applied, dups := sub.Stats.Applied.Load()-applied0, sub.Stats.Duplicates.Load()-dup0
		if applied < publishers*each || dups < publishers*each {
			return fmt.Errorf("applied %d, duplicates %d, want %d each", applied, dups, publishers*each)
		}
		return nil
	})
	rejected := int64(0)
	sub.Stats.Rejected.Range(func(_, v any) bool { rejected += v.(interface{ Load() int64 }).Load(); return true })
	if g := sub.Stats.Gaps.Load() - gaps0; g != 0 || rejected != 0 {
		t.Errorf("%d gaps and %d rejections under concurrent publishers, want 0", g, rejected)
	}
}

// TestBusFollowsKeyAndChannelChanges: the fleet's bus Secret is rotated and its channel
// changed while agents run; they pick the changes up one after the other (as they would
// read the Secret at different moments) and no message between them is lost.
func TestBusFollowsKeyAndChannelChanges(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 2)
	a, b := agents[0].srv.Bus(), agents[1].srv.Bus()
	delivered := func(step string) {
		t.Helper()
		key := "follow:" + step
		if err := a.Publish(context.Background(), bus.OpDelete, key); err != nil {
			t.Fatalf("%s: publish: %v", step, err)
		}
		eventually(t, step+": B applied A's message", func() error {
			if _, ok := agents[1].goneAt.Load(key); !ok {
				return fmt.Errorf("not applied")
			}
			return nil
		})
	}
	delivered("before")
	a.Configure("cachefleet:test", []byte("rotated key"))
	delivered("A rotated, B not yet") // A still signs with the old key during the overlap
	b.Configure("cachefleet:test", []byte("rotated key"))
	delivered("both rotated")
	a.Configure("cachefleet:moved", []byte("rotated key"))
	b.Configure("cachefleet:moved", []byte("rotated key"))
	eventually(t, "both agents listen on the new channel", func() error {
		got, err := shards[0].Do("PUBSUB", "NUMSUB", "cachefleet:moved")
		if err != nil || got != "[cachefleet:moved 2]" {
			return fmt.Errorf("PUBSUB NUMSUB = %s, %v", got, err)
		}
		return nil
	})
	delivered("new channel")
	if got, _ := shards[0].Do("PUBSUB", "NUMSUB", "cachefleet:test"); got != "[cachefleet:test 0]" {
		t.Errorf("the old channel still has subscribers: %s", got)
	}
}
