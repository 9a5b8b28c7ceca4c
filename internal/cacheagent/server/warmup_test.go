package server_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/source"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// grow moves agent a to all of shards, keeping the layout of from (its ring before the
// scale-up) for a warm-up window of the given length (none when 0), as the controller does.
func grow(t *testing.T, a *agent, from *contract.Document, shards []*tu.Redis, o options, window time.Duration) {
	t.Helper()
	prev := a.srv.Router().Doc
	var spec []string
	for i, r := range shards {
		spec = append(spec, fmt.Sprintf("shard-%d=%s", i, r.Addr()))
	}
	doc, err := source.StaticDocument(strings.Join(spec, ","), o.defaults)
	if err != nil {
		t.Fatal(err)
	}
	if window != 0 {
		doc.Warming = &contract.Warming{Epoch: from.Epoch, Algorithm: from.Algorithm, Members: from.Members(),
			UntilMillis: time.Now().Add(window).UnixMilli()}
	}
	doc.SealAbove(prev, prev.Epoch)
	if err := a.srv.SetRing(doc); err != nil {
		t.Fatal(err)
	}
}

// pipeline sends commands in one write and returns their replies joined by spaces.
func (c *conn) pipeline(cmds ...[]string) string {
	c.t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	for _, cmd := range cmds {
		buf = append(buf, tu.Encode(cmd...)...)
	}
	if _, err := c.nc.Write(buf); err != nil {
		c.t.Fatal(err)
	}
	return strings.Join(c.replies(len(cmds)), " ")
}

// previousOwner is the index of key's previous owner on agent a.
func previousOwner(t *testing.T, a *agent, key string) int {
	t.Helper()
	sh := a.srv.Router().PreviousOwner([]byte(key))
	if sh == nil {
		t.Fatalf("%s has no previous owner", key)
	}
	i, _ := strconv.Atoi(strings.TrimPrefix(sh.Name(), "shard-"))
	return i
}

func fourShards(t *testing.T, password string) []*tu.Redis {
	return []*tu.Redis{tu.StartRedis(t, password), tu.StartRedis(t, password), tu.StartRedis(t, password), tu.StartRedis(t, password)}
}

// TestScaleUpWarmsMovedKeys: after 3 -> 4 shards, the keys that moved to the new shard are
// answered from their previous owner and moved to the new one with their remaining TTL; with
// no warm-up window the same reads miss (the control that shows the keys did move).
func TestScaleUpWarmsMovedKeys(t *testing.T) {
	for _, mode := range []string{"tracking", "ttl", "auth"} {
		t.Run(mode, func(t *testing.T) {
			o := defaults()
			o.defaults.TTLModeForAll = mode == "ttl"
			if mode == "auth" { // the previous shard authenticates to the new one for the move
				o.config.Password = "s3cret"
			}
			shards := fourShards(t, o.config.Password)
			a := startAgent(t, shards[:3], o)
			c := a.dial(t)
			if mode == "auth" {
				c.do("AUTH", "s3cret")
			}
			const n = 400
			for i := range n {
				if got := c.do("SET", "k:"+strconv.Itoa(i), "v"+strconv.Itoa(i), "EX", "600"); got != "OK" {
					t.Fatalf("SET = %q", got)
				}
			}
			before := a.srv.Router().Doc
			grow(t, a, before, shards, o, 0)
			var moved []int
			for i := range n {
				if a.srv.Router().Index([]byte("k:"+strconv.Itoa(i))) == 3 {
					moved = append(moved, i)
				}
			}
			if len(moved) < n/8 || len(moved) > n/2 {
				t.Fatalf("%d of %d keys moved to the 4th shard, want about a quarter", len(moved), n)
			}
			// The control: no window, the moved keys miss. (In tracking mode the agent now keeps
			// this miss; during the window a kept miss of a moved key is not answered.)
			if got := c.do("GET", "k:"+strconv.Itoa(moved[0])); got != "(nil)" {
				t.Fatalf("without warm-up GET of a moved key = %q, want a miss", got)
			}
			grow(t, a, before, shards, o, time.Minute)
			for _, i := range moved {
				k := "k:" + strconv.Itoa(i)
				if got := c.do("GET", k); got != "v"+strconv.Itoa(i) {
					st := &a.srv.Stats.Warmup
					t.Fatalf("GET %s after scale-up = %q, want v%d (warm-up: %d moved, %d absent, %d superseded, %d unmoved)",
						k, got, i, st.Moved.Load(), st.Absent.Load(), st.Superseded.Load(), st.Unmoved.Load())
				}
				if got, _ := shards[3].Do("GET", k); got != "v"+strconv.Itoa(i) {
					t.Fatalf("%s on the new shard = %q: not moved", k, got)
				}
				if got, _ := shards[previousOwner(t, a, k)].Do("EXISTS", k); got != "0" {
					t.Fatalf("%s is still on its previous shard after the move", k)
				}
				ttl, _ := shards[3].Do("TTL", k)
				if s, _ := strconv.Atoi(ttl); s < 590 || s > 600 {
					t.Fatalf("TTL of %s on the new shard = %s, want the remaining ~600 s", k, ttl)
				}
			}
			// A second read is a plain hit on the new owner.
			movedN := a.srv.Stats.Warmup.Moved.Load()
			if movedN != int64(len(moved)) {
				t.Fatalf("warm-up moved %d keys, want the %d that changed owner", movedN, len(moved))
			}
			for _, i := range moved {
				c.do("GET", "k:"+strconv.Itoa(i))
			}
			if again := a.srv.Stats.Warmup.Moved.Load(); again != movedN {
				t.Fatalf("second reads moved again (%d -> %d)", movedN, again)
			}
			t.Logf("%d of %d keys moved; all answered after the scale-up, %d moved", len(moved), n, movedN)
		})
	}
}

// TestWarmUpWindowEnds: past the window the previous owner is no longer asked.
func TestWarmUpWindowEnds(t *testing.T) {
	shards := fourShards(t, "")
	o := defaults()
	a := startAgent(t, shards[:3], o)
	c := a.dial(t)
	for i := range 100 {
		c.do("SET", "k:"+strconv.Itoa(i), "v")
	}
	grow(t, a, a.srv.Router().Doc, shards, o, 300*time.Millisecond)
	time.Sleep(400 * time.Millisecond)
	for i := range 100 {
		k := "k:" + strconv.Itoa(i)
		if a.srv.Router().Index([]byte(k)) == 3 {
			if got := c.do("GET", k); got != "(nil)" {
				t.Fatalf("GET %s after the window = %q, want a miss", k, got)
			}
		}
	}
	if n := a.srv.Stats.Warmup.Moved.Load() + a.srv.Stats.Warmup.Absent.Load(); n != 0 {
		t.Fatalf("%d lookups on previous owners after the window", n)
	}
}

// TestWarmUpNeverBringsBackAnOldValue: writes and deletes of moved keys during the window
// remove the previous owner's copy first, so no later miss (an expiry, a delete, a racing
// reader) brings the old value back.
func TestWarmUpNeverBringsBackAnOldValue(t *testing.T) {
	shards := fourShards(t, "")
	o := defaults()
	a := startAgent(t, shards[:3], o)
	b := startAgent(t, shards[:3], o)
	ca, cb := a.dial(t), b.dial(t)
	const n = 300
	for i := range n {
		ca.do("SET", "k:"+strconv.Itoa(i), "old")
	}
	grow(t, a, a.srv.Router().Doc, shards, o, time.Minute)
	grow(t, b, b.srv.Router().Doc, shards, o, time.Minute)
	var moved []string
	for i := range n {
		if k := "k:" + strconv.Itoa(i); a.srv.Router().Index([]byte(k)) == 3 {
			moved = append(moved, k)
		}
	}
	if len(moved) < 8 {
		t.Fatalf("only %d keys moved", len(moved))
	}
	k0, k1, k2, k3 := moved[0], moved[1], moved[2], moved[3]
	if got := ca.do("DEL", k0); got != "0" {
		t.Fatalf("DEL of a moved key not read yet = %q (the new owner does not hold it)", got)
	}
	if got := ca.do("GET", k0); got != "(nil)" {
		t.Fatalf("GET after DEL = %q", got)
	}
	ca.do("SET", k1, "new", "PX", "200")
	if got := cb.do("GET", k1); got != "new" {
		t.Fatalf("GET after SET = %q", got)
	}
	time.Sleep(300 * time.Millisecond)
	if got := cb.do("GET", k1); got != "(nil)" {
		t.Fatalf("GET after the new value expired = %q: the old value came back", got)
	}
	// A write and a read of it in one pipeline.
	if got := ca.pipeline([]string{"SET", k2, "new"}, []string{"GET", k2}); got != "OK new" {
		t.Fatalf("pipelined SET+GET = %q", got)
	}
	// A transaction's write drops the previous copy too.
	if got := ca.pipeline([]string{"MULTI"}, []string{"SET", k3, "tx", "PX", "200"}, []string{"EXEC"}); got != "OK QUEUED [OK]" {
		t.Fatalf("MULTI/SET/EXEC = %q", got)
	}
	time.Sleep(300 * time.Millisecond)
	if got := cb.do("GET", k3); got != "(nil)" {
		t.Fatalf("GET after the transaction's value expired = %q: the old value came back", got)
	}

	// Racing readers on one agent while the other deletes and reads back: the delete always
	// wins, whatever a reader's move was doing.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		rc := a.dial(t)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := tu.RoundTrip(rc.nc, rc.rd, "GET", moved[4+i%(len(moved)-4)]); err != nil {
					return // reported by the deleting side if it matters
				}
			}
		})
	}
	for round := range 20 {
		for _, k := range moved[4:] {
			if round > 0 { // the previous layout's value, as an agent still on the old ring would leave it
				if _, err := shards[previousOwner(t, a, k)].Do("SET", k, "old"); err != nil {
					t.Fatal(err)
				}
			}
			if got := cb.do("DEL", k); got != "0" && got != "1" {
				t.Fatalf("DEL = %q", got)
			}
			if got := cb.do("GET", k); got != "(nil)" {
				close(stop)
				t.Fatalf("round %d: GET %s right after DEL = %q: a copy of the old value came back", round, k, got)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("warm-up: %d moved, %d absent, %d superseded, %d previous copies dropped",
		a.srv.Stats.Warmup.Moved.Load()+b.srv.Stats.Warmup.Moved.Load(), a.srv.Stats.Warmup.Absent.Load()+b.srv.Stats.Warmup.Absent.Load(),
		a.srv.Stats.Warmup.Superseded.Load()+b.srv.Stats.Warmup.Superseded.Load(), a.srv.Stats.Warmup.Dropped.Load()+b.srv.Stats.Warmup.Dropped.Load())
}

// TestConcurrentReadersOfAMovedKeyAllHit: when several readers miss a moved key at once, the
// first moves it and the others, finding the previous shard empty, find it on the new one.
func TestConcurrentReadersOfAMovedKeyAllHit(t *testing.T) {
	shards := fourShards(t, "")
	o := defaults()
	a := startAgent(t, shards[:3], o)
	c := a.dial(t)
	const n = 300
	for i := range n {
		c.do("SET", "k:"+strconv.Itoa(i), "v")
	}
	grow(t, a, a.srv.Router().Doc, shards, o, time.Minute)
	conns := make([]*conn, 8)
	for i := range conns {
		conns[i] = a.dial(t)
	}
	misses := 0
	for i := range n {
		k := "k:" + strconv.Itoa(i)
		if a.srv.Router().Index([]byte(k)) != 3 {
			continue
		}
		var wg sync.WaitGroup
		got := make([]string, len(conns))
		for j, rc := range conns {
			rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := rc.nc.Write(tu.Encode("GET", k)); err != nil {
				t.Fatal(err)
			}
			wg.Go(func() { got[j], _ = tu.ReadReply(rc.rd) })
		}
		wg.Wait()
		for _, g := range got {
			if g != "v" {
				misses++
			}
		}
	}
	st := &a.srv.Stats.Warmup
	t.Logf("%d misses; warm-up: %d moved, %d raced, %d absent", misses, st.Moved.Load(), st.Raced.Load(), st.Absent.Load())
	if misses > 0 {
		t.Fatalf("%d concurrent reads of moved keys missed", misses)
	}
}
