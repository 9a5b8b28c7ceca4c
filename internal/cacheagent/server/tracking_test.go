package server_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// Client-side caching through the agent: a key a client read is invalidated in the client's
// own cache when it changes anywhere in the fleet.

// expectPush reads the next message on c and fails unless it is the push want.
func (c *conn) expectPush(want string) {
	c.t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := tu.ReadReply(c.rd)
	if err != nil || got != want {
		c.t.Fatalf("next message = %q, %v; want %q", got, err, want)
	}
}

// expectNothing checks no push is pending: the next message is the reply to a PING.
func (c *conn) expectNothing() {
	c.t.Helper()
	time.Sleep(150 * time.Millisecond) // a push from a watcher takes well under this
	if got := c.do("PING"); got != "PONG" {
		c.t.Fatalf("an unexpected message before PONG: %q", got)
	}
}

func TestTrackingPushesChangesFromEverywhereRESP3(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	x, other, viaB := a.dial(t), a.dial(t), b.dial(t)
	x.do("HELLO", "3")
	if got := x.do("CLIENT", "TRACKING", "ON"); got != "OK" {
		t.Fatalf("CLIENT TRACKING ON = %q", got)
	}
	k := "csc:k"
	owner := shards[a.srv.Router().Index([]byte(k))]

	// A missing key read is tracked too: a client may cache the miss.
	if got := x.do("GET", k); got != "(nil)" {
		t.Fatalf("GET = %q", got)
	}
	viaB.do("SET", k, "1")
	x.expectPush("push[invalidate [" + k + "]]")

	if got := x.do("GET", k); got != "1" {
		t.Fatalf("GET after the push = %q", got)
	}
	if _, err := owner.Do("SET", k, "2"); err != nil { // straight on the shard, past every agent
		t.Fatal(err)
	}
	x.expectPush("push[invalidate [" + k + "]]")

	x.do("GET", k)
	other.do("SET", k, "3") // another client of the same agent
	x.expectPush("push[invalidate [" + k + "]]")

	// One read, one invalidation: a key not read again is not pushed again.
	viaB.do("SET", k, "4")
	x.expectNothing()

	// Expiry on the shard reaches the client too.
	x.do("GET", k)
	viaB.do("PEXPIRE", k, "30")
	x.expectPush("push[invalidate [" + k + "]]")

	// Every read command registers its keys: MGET, EXISTS, STRLEN, HGET.
	h := "csc:h"
	x.do("MGET", "csc:m1", "csc:m2")
	x.do("HGET", h, "f")
	viaB.do("MSET", "csc:m1", "a", "csc:m2", "b")
	// One push per shard: both keys in one when they share a shard.
	got := readPush(t, x)
	if got != "push[invalidate [csc:m1 csc:m2]]" && got != "push[invalidate [csc:m2 csc:m1]]" {
		got += " " + readPush(t, x)
		if got != "push[invalidate [csc:m1]] push[invalidate [csc:m2]]" && got != "push[invalidate [csc:m2]] push[invalidate [csc:m1]]" {
			t.Errorf("MSET of two MGET keys pushed %v", got)
		}
	}
	viaB.do("HSET", h, "f", "v")
	x.expectPush("push[invalidate [" + h + "]]")

	// The client's own write: after its reply, as Valkey does.
	x.do("GET", k)
	if got := x.do("SET", k, "5"); got != "OK" {
		t.Fatalf("own SET = %q", got)
	}
	x.expectPush("push[invalidate [" + k + "]]")
	x.expectNothing()

	// OFF: nothing more.
	x.do("GET", k)
	x.do("CLIENT", "TRACKING", "OFF")
	viaB.do("SET", k, "6")
	x.expectNothing()
}

func readPush(t *testing.T, c *conn) string {
	t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := tu.ReadReply(c.rd)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestTrackingModes(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	viaB := b.dial(t)

	t.Run("OPTIN tracks only after CLIENT CACHING YES, for one command", func(t *testing.T) {
		x := a.dial(t)
		x.do("HELLO", "3")
		x.do("CLIENT", "TRACKING", "ON", "OPTIN")
		x.do("GET", "in:plain")
		x.do("CLIENT", "CACHING", "YES")
		x.do("GET", "in:opted")
		x.do("GET", "in:after")
		viaB.do("MSET", "in:plain", "1", "in:opted", "1", "in:after", "1")
		x.expectPush("push[invalidate [in:opted]]")
		x.expectNothing()
		// CACHING YES covers a whole MULTI/EXEC (valkey-go's DoCache sends one).
		x.do("CLIENT", "CACHING", "YES")
		x.do("MULTI")
		x.do("PTTL", "in:tx")
		x.do("GET", "in:tx")
		x.do("EXEC")
		viaB.do("SET", "in:tx", "1")
		x.expectPush("push[invalidate [in:tx]]")
	})
	t.Run("OPTOUT tracks all but the command after CLIENT CACHING NO", func(t *testing.T) {
		x := a.dial(t)
		x.do("HELLO", "3")
		x.do("CLIENT", "TRACKING", "ON", "OPTOUT")
		x.do("CLIENT", "CACHING", "NO")
		x.do("GET", "out:skipped")
		x.do("GET", "out:tracked")
		viaB.do("MSET", "out:skipped", "1", "out:tracked", "1")
		x.expectPush("push[invalidate [out:tracked]]")
		x.expectNothing()
	})
	t.Run("BCAST hears every change under its prefixes without reading", func(t *testing.T) {
		x := a.dial(t)
		x.do("HELLO", "3")
		x.do("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "bc:user:", "PREFIX", "bc:sess:")
		viaB.do("SET", "bc:user:1", "a")
		x.expectPush("push[invalidate [bc:user:1]]")
		viaB.do("SET", "bc:order:1", "a")
		viaB.do("SET", "bc:sess:9", "a")
		x.expectPush("push[invalidate [bc:sess:9]]")
		viaB.do("SET", "bc:user:1", "b") // again, unread: BCAST is not one-shot
		x.expectPush("push[invalidate [bc:user:1]]")
	})
	t.Run("NOLOOP keeps a client's own writes from coming back", func(t *testing.T) {
		x := a.dial(t)
		x.do("HELLO", "3")
		x.do("CLIENT", "TRACKING", "ON", "NOLOOP")
		y := a.dial(t)
		y.do("HELLO", "3")
		y.do("CLIENT", "TRACKING", "ON")
		x.do("GET", "nl:k")
		y.do("GET", "nl:k")
		x.do("SET", "nl:k", "mine")
		y.expectPush("push[invalidate [nl:k]]") // others hear of it at once
		// The agent does not tell x of its own write. The shard's report of it can still beat
		// the write's reply to the agent: then x gets one spurious invalidation, never a
		// missed one (the price of learning of changes on a second connection).
		time.Sleep(150 * time.Millisecond)
		if got := x.do("PING"); got != "PONG" {
			if got != "push[invalidate [nl:k]]" {
				t.Fatalf("NOLOOP client got %q after its own write", got)
			}
			if got := readPush(t, x); got != "PONG" {
				t.Fatalf("then %q", got)
			}
		}
		x.do("GET", "nl:k")
		viaB.do("SET", "nl:k", "theirs")
		x.expectPush("push[invalidate [nl:k]]")
	})
	t.Run("REDIRECT delivers to a RESP2 subscriber as pub/sub messages", func(t *testing.T) {
		sub, x := a.dial(t), a.dial(t)
		id := sub.do("CLIENT", "ID")
		if got := sub.do("SUBSCRIBE", "__redis__:invalidate"); got != "[subscribe __redis__:invalidate 1]" {
			t.Fatalf("SUBSCRIBE = %q", got)
		}
		if got := x.do("CLIENT", "TRACKING", "ON", "REDIRECT", id); got != "OK" {
			t.Fatalf("TRACKING ON REDIRECT = %q", got)
		}
		if got := x.do("CLIENT", "GETREDIR"); got != id {
			t.Errorf("GETREDIR = %q, want %s", got, id)
		}
		x.do("GET", "rd:k")
		viaB.do("SET", "rd:k", "1")
		if got := readPush(t, sub); got != "[message __redis__:invalidate [rd:k]]" {
			t.Errorf("redirected invalidation = %q", got)
		}
		// The target gone: a RESP3 client is told its redirect is broken.
		y := a.dial(t)
		y.do("HELLO", "3")
		y.do("CLIENT", "TRACKING", "ON", "REDIRECT", id)
		sub.nc.Close()
		time.Sleep(100 * time.Millisecond)
		y.do("GET", "rd:j")
		viaB.do("SET", "rd:j", "1")
		y.expectPush("push[tracking-redir-broken " + id + "]")
	})
}

// TestFlushAllReachesTrackingClients: FLUSHALL through an agent (when allowed) tells every
// tracking client to drop everything, once.
func TestFlushAllReachesTrackingClients(t *testing.T) {
	o := defaults()
	o.defaults.AllowFlush = true
	shards := twoShards(t)
	a := startAgent(t, shards, o)
	x, admin := a.dial(t), a.dial(t)
	x.do("HELLO", "3")
	x.do("CLIENT", "TRACKING", "ON")
	x.do("GET", "fl:k")
	if got := admin.do("FLUSHALL"); got != "OK" {
		t.Fatalf("FLUSHALL = %q", got)
	}
	x.expectPush("push[invalidate (nil)]")
	// Once, as Valkey: each shard's watcher reports the flush too (and, following again, once
	// more), but x has read nothing since it was told to drop everything.
	time.Sleep(1500 * time.Millisecond)
	x.expectNothing()

	// A flush made elsewhere (another agent, or on the shards themselves) reaches x once too.
	x.do("GET", "fl:k")
	for _, sh := range shards {
		if _, err := sh.Do("FLUSHALL"); err != nil {
			t.Fatal(err)
		}
	}
	x.expectPush("push[invalidate (nil)]")
	time.Sleep(1500 * time.Millisecond)
	x.expectNothing()
}

// TestValkeyGoDoCacheThroughTheAgent uses valkey-go with its default options: RESP3 with
// CLIENT TRACKING ON OPTIN, and DoCache sending CLIENT CACHING YES, MULTI, PTTL, GET, EXEC.
// A write through another agent or straight on the shard reaches the application's cache.
func TestValkeyGoDoCacheThroughTheAgent(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	ctx := context.Background()
	app, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{a.addr}})
	if err != nil {
		t.Fatalf("valkey-go with default options cannot connect: %v", err)
	}
	defer app.Close()
	writer := b.dial(t)
	get := func(k string) (string, bool) {
		res := app.DoCache(ctx, app.B().Get().Key(k).Cache(), time.Minute)
		v, err := res.ToString()
		if valkey.IsValkeyNil(err) {
			v, err = "(nil)", nil
		}
		if err != nil {
			t.Fatalf("DoCache GET %s: %v", k, err)
		}
		return v, res.IsCacheHit()
	}
	until := func(k, want string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			if v, _ := get(k); v == want {
				return time.Since(start)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s never became %q in the application's cache", k, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	k := "vg:k"
	writer.do("SET", k, "v1")
	if v, hit := get(k); v != "v1" || hit {
		t.Fatalf("first DoCache = %q (hit %v)", v, hit)
	}
	// Agent a learns of b's write by its watcher, which can report it after the first read and
	// drop that copy once (a spurious invalidation): a read after a read is then a hit.
	for deadline := time.Now().Add(5 * time.Second); ; {
		v, hit := get(k)
		if v != "v1" {
			t.Fatalf("DoCache after a DoCache = %q, want v1", v)
		}
		if hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no DoCache after a DoCache was a hit in the application's own cache")
		}
	}
	writer.do("SET", k, "v2")
	until(k, "v2")
	if _, err := shards[a.srv.Router().Index([]byte(k))].Do("SET", k, "v3"); err != nil {
		t.Fatal(err)
	}
	until(k, "v3")

	// How long a write through another agent takes to reach the application's cache.
	var lat []time.Duration
	for i := range 200 {
		key := fmt.Sprintf("vg:lat:%d", i%10)
		get(key)
		writer.do("SET", key, strconv.Itoa(i))
		lat = append(lat, until(key, strconv.Itoa(i)))
	}
	slices.Sort(lat)
	t.Logf("write through agent B -> application cache on agent A updated: p50 %v, p99 %v (200 writes)",
		lat[len(lat)/2], lat[len(lat)*99/100])
}

// TestClientCachesConvergeUnderConcurrentWrites: valkey-go applications cache through agent A
// while writers change the same keys through agent B and straight on the shards. Once the
// writes stop, every application's cached value equals the shard's: none kept a value whose
// invalidation overtook it.
func TestClientCachesConvergeUnderConcurrentWrites(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	ctx := context.Background()
	const nKeys, nApps = 16, 4
	key := func(i int) string { return "cv:" + strconv.Itoa(i) }
	var apps []valkey.Client
	for range nApps {
		c, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{a.addr}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		apps = append(apps, c)
	}
	writer, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{b.addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes, reads atomic.Int64
	for w := range 3 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				k := key(rand.IntN(nKeys))
				v := fmt.Sprintf("w%d-%d", w, n)
				if w == 2 { // one writer goes around every agent
					shards[a.srv.Router().Index([]byte(k))].Do("SET", k, v)
				} else {
					writer.Do(ctx, writer.B().Set().Key(k).Value(v).Build())
				}
				writes.Add(1)
			}
		})
	}
	for _, app := range apps {
		wg.Go(func() {
			for !stop.Load() {
				app.DoCache(ctx, app.B().Get().Key(key(rand.IntN(nKeys))).Cache(), time.Minute)
				reads.Add(1)
			}
		})
	}
	time.Sleep(3 * time.Second)
	stop.Store(true)
	wg.Wait()
	time.Sleep(500 * time.Millisecond) // the last invalidations arrive
	stale := 0
	for i := range nKeys {
		want, _ := shards[a.srv.Router().Index([]byte(key(i)))].Do("GET", key(i))
		for j, app := range apps {
			got, err := app.DoCache(ctx, app.B().Get().Key(key(i)).Cache(), time.Minute).ToString()
			if err != nil || got != want {
				stale++
				t.Errorf("application %d caches %s = %q (%v); the shard holds %q", j, key(i), got, err, want)
			}
		}
	}
	t.Logf("%d writes, %d cached reads; %d stale values after the writes stopped", writes.Load(), reads.Load(), stale)
}

// TestScriptAndCollectionReadsAreTracked: keys a script declares and keys of any type a read
// command names are tracked, as Valkey tracks them (Valkey's tracking suite waits forever for
// the push of a key read inside EVAL).
func TestScriptAndCollectionReadsAreTracked(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	x, viaB := a.dial(t), b.dial(t)
	x.do("HELLO", "3")
	if got := x.do("CLIENT", "TRACKING", "ON"); got != "OK" {
		t.Fatalf("CLIENT TRACKING ON = %q", got)
	}
	x.do("EVAL", "return redis.call('GET', KEYS[1])", "1", "csc:script")
	viaB.do("SET", "csc:script", "v")
	x.expectPush("push[invalidate [csc:script]]")

	x.do("LRANGE", "csc:list", "0", "-1")
	viaB.do("RPUSH", "csc:list", "job")
	x.expectPush("push[invalidate [csc:list]]")

	x.do("ZRANGE", "csc:board", "0", "-1")
	viaB.do("ZADD", "csc:board", "1", "alice")
	x.expectPush("push[invalidate [csc:board]]")
}

// A tracking client is served from the node L1, whose copies are kept current over other
// shard connections than the one that tells the client of changes (the watcher). The two race:
// these tests hold back every shard connection but the watcher's (a proxy) so the watcher's
// report always comes first, the order the race can take under load.

// trackingRace is an agent over one shard behind a proxy, and the shard itself.
func trackingRace(t *testing.T) (*agent, *tu.Redis, *tu.Proxy) {
	shard := tu.StartRedis(t, "")
	proxy := tu.StartProxy(t, shard.Addr())
	o := defaults()
	o.config.ShardTimeout = 3 * time.Second // the held reads must not time out
	return startAgentAt(t, []string{proxy.Addr()}, o), shard, proxy
}

// tracking is a RESP3 connection with CLIENT TRACKING ON and the options given.
func (a *agent) tracking(t *testing.T, opts ...string) *conn {
	c := a.dial(t)
	c.do("HELLO", "3")
	if got := c.do(append([]string{"CLIENT", "TRACKING", "ON"}, opts...)...); got != "OK" {
		t.Fatalf("CLIENT TRACKING ON %v = %q", opts, got)
	}
	return c
}

// setOn writes k straight on the shard, past every agent.
func setOn(t *testing.T, shard *tu.Redis, k, v string) {
	t.Helper()
	if _, err := shard.Do("SET", k, v); err != nil {
		t.Fatal(err)
	}
}

// releaseSoon lets the proxy's held bytes through after the reads about to be sent are on
// their way.
func releaseSoon(p *tu.Proxy) { time.AfterFunc(200*time.Millisecond, p.Release) }

func TestATrackingClientIsServedFromTheNodeL1(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	k := "csc:hot"
	if _, err := shards[a.srv.Router().Index([]byte(k))].Do("SET", k, "v"); err != nil {
		t.Fatal(err)
	}
	x := a.tracking(t)
	x.do("GET", k) // a miss of the node L1, which keeps the copy
	hits := a.srv.Stats.L1Hits.Load()
	for range 3 {
		if got := x.do("GET", k); got != "v" {
			t.Fatalf("GET = %q", got)
		}
	}
	if got := a.srv.Stats.L1Hits.Load() - hits; got != 3 {
		t.Fatalf("%d of 3 reads of a kept key by a tracking client were node L1 hits", got)
	}
	if got := x.do("MGET", k, k); got != "[v v]" {
		t.Fatalf("MGET = %q", got)
	}
	if got := a.srv.Stats.L1Hits.Load() - hits; got != 5 {
		t.Fatalf("an MGET's kept keys were not node L1 hits (%d hits in all, want 5)", got)
	}
}

func TestATrackingClientIsNeverHandedACopyItWasToldChanged(t *testing.T) {
	a, shard, proxy := trackingRace(t)
	k := "csc:race"
	setOn(t, shard, k, "old")
	x := a.tracking(t)
	x.do("GET", k) // kept by the node L1; x registered
	if got := x.do("GET", k); got != "old" {
		t.Fatalf("GET = %q", got)
	}
	proxy.HoldExcept("BCAST") // the copy's own invalidation is held back; the watcher's is not
	setOn(t, shard, k, "new")
	x.expectPush("push[invalidate [" + k + "]]")
	releaseSoon(proxy)
	if got := x.do("GET", k); got != "new" {
		t.Fatalf("GET after the push = %q: the node L1's copy outlived the change the client was told of", got)
	}
}

// A read sent before a change whose reply comes after the change's report must not leave its
// copy for a client that registered the key after the report (and will not be told).
func TestAReadSentBeforeAChangeLeavesNoCopy(t *testing.T) {
	a, shard, proxy := trackingRace(t)
	k := "csc:flight"
	setOn(t, shard, k, "old")
	told := a.tracking(t, "BCAST", "PREFIX", "csc:") // hears of the change when the agent does
	early, late := a.tracking(t), a.tracking(t)
	early.do("GET", "csc:other") // the agent's shard connections are made before the hold
	gets := func() int {
		info, _ := shard.Do("INFO", "commandstats")
		n, _ := strconv.Atoi(strings.SplitN(strings.SplitN(info, "cmdstat_get:calls=", 2)[1], ",", 2)[0])
		return n
	}
	before := gets()
	proxy.HoldExcept("BCAST")
	// early's read reaches the shard before the change; its reply is held back.
	early.send("GET", k)
	eventually(t, "the shard serves early's GET", func() error {
		if gets() == before {
			return errors.New("no GET yet")
		}
		return nil
	})
	setOn(t, shard, k, "new")
	told.expectPush("push[invalidate [" + k + "]]")
	// late registers the key after the change was reported: it will not be told of it, so it
	// must not get early's reply (late's read waits for early's round, then finds its copy).
	releaseSoon(proxy)
	if got := late.do("GET", k); got != "new" {
		t.Fatalf("GET after the change was reported = %q: the copy of a read sent before the change was kept", got)
	}
	if got := early.reply(); got != "old" {
		t.Fatalf("early's GET = %q", got)
	}
	early.expectPush("push[invalidate [" + k + "]]") // early read before the report: it is told
}
