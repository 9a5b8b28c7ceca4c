package server_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/cacheagent/upstream"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// l1OffOptions: every GET reaches a shard.
func l1OffOptions() options {
	o := defaults()
	o.defaults.L1 = false
	return o
}

// oneKeyOnShard0 starts an agent without L1 over two shards, and sets a key of shard 0 to "v"
// through a connection to it.
func oneKeyOnShard0(t *testing.T, prefix string) ([]*tu.Redis, *conn, string) {
	t.Helper()
	shards := twoShards(t)
	a := startAgent(t, shards, l1OffOptions())
	k := keyOn(t, a, prefix, 0)
	c := a.dial(t)
	c.do("SET", k, "v")
	return shards, c, k
}

// TestTheLoopForwardsInThePipelinesOrder: GETs and SETs forwarded by the event loop to both
// shards, and the commands around them answered by the connections' goroutines, reach each
// client in the order sent, from many clients at once; a GET after a SET sees it.
func TestTheLoopForwardsInThePipelinesOrder(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, l1OffOptions())
	forwarded := a.srv.Stats.LoopForwards.Load()
	var wg sync.WaitGroup
	for g := range 8 {
		c := a.dial(t)
		wg.Go(func() {
			for i := range 150 {
				k0, k1 := keyOn(t, a, fmt.Sprintf("f%d:%d:", g, i), 0), keyOn(t, a, fmt.Sprintf("f%d:%d:", g, i), 1)
				v := fmt.Sprint(i)
				cmds := [][]string{{"SET", k0, v}, {"GET", k0}, {"SET", k1, v + "b"}, {"GET", k1}}
				want := []string{"OK", v, "OK", v + "b"}
				if i%3 == 0 { // a command the loop leaves to the goroutine, between forwarded ones
					cmds = append(cmds, []string{"INCR", k0 + "n"}, []string{"GET", k1})
					want = append(want, "1", v+"b")
				}
				if got := c.pipeline(cmds...); got != strings.Join(want, " ") {
					t.Errorf("client %d round %d: replies %q, want %q", g, i, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := a.srv.Stats.LoopForwards.Load() - forwarded; n < 8*150 {
		t.Fatalf("the loop forwarded %d commands of %d", n, 8*150*4)
	}
}

// TestTheLoopAnswersWhatTheFullPathWould: through the loop, a missing key reads as RESP3's
// null, a value the agent stored encoded reads decoded, and the policy TTL applies to SET.
func TestTheLoopAnswersWhatTheFullPathWould(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, l1OffOptions())
	c := a.dial(t)
	c.do("SET", "plain", "v")
	if ttl := c.do("PTTL", "plain"); ttl == "-1" || strings.HasPrefix(ttl, "ERR") {
		t.Fatalf("PTTL after SET through the loop = %s, want the policy TTL", ttl)
	}
	marked := "\xffCFz-not-compressed"
	c.do("SET", "marked", marked)
	for i := 0; ; i++ { // the loop connects to a shard on its first request
		forwarded := a.srv.Stats.LoopForwards.Load()
		if got := c.do("GET", "marked"); got != marked {
			t.Fatalf("GET of a value with the agent's prefix = %q, want %q", got, marked)
		}
		if a.srv.Stats.LoopForwards.Load() > forwarded {
			break
		}
		if i == 50 {
			t.Fatal("no GET went through the loop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(append(tu.Encode("HELLO", "3"), tu.Encode("GET", "missing")...)); err != nil {
		t.Fatal(err)
	}
	if _, err := tu.ReadRaw(c.rd); err != nil {
		t.Fatal(err)
	}
	raw, err := tu.ReadRaw(c.rd)
	if err != nil || string(raw) != "_\r\n" {
		t.Fatalf("RESP3 GET of a missing key = %q, %v; want _", raw, err)
	}
}

// TestAFrozenShardFailsTheLoopsRequestsAsTheFullPathWould: requests the loop forwarded to a
// shard that stops answering end after the shard timeout, a read as a miss (never an error)
// and a write with CFDOWN, and the loop serves again once the shard is back.
func TestAFrozenShardFailsTheLoopsRequestsAsTheFullPathWould(t *testing.T) {
	shards, c, k := oneKeyOnShard0(t, "frozen:")
	if got := c.do("GET", k); got != "v" {
		t.Fatalf("GET = %q", got)
	}
	shards[0].Freeze()
	thawed := false
	defer func() {
		if !thawed {
			shards[0].Thaw()
		}
	}()
	start := time.Now()
	got := strings.SplitN(c.pipeline([]string{"GET", k}, []string{"SET", k, "w"}), " ", 2)
	took := time.Since(start)
	if got[0] != "(nil)" || !strings.Contains(got[1], "CFDOWN") {
		t.Fatalf("replies from a frozen shard %q, want (nil) and a CFDOWN error", got)
	}
	if took > 3*time.Second {
		t.Fatalf("the replies took %v; the shard timeout is 300ms", took)
	}
	shards[0].Thaw()
	thawed = true
	deadline := time.Now().Add(10 * time.Second)
	for c.do("SET", k, "x") != "OK" || c.do("GET", k) != "x" { // the breaker lets requests through again
		if time.Now().After(deadline) {
			t.Fatal("the shard never served the loop again")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAReadOfAFrozenShardWaitsOneShardTimeout: a GET the loop forwarded to a shard that stopped
// answering is a miss once the shard timeout has passed: it is not run again on the full path,
// where it would wait a second timeout (a client with a read timeout of twice the shard's saw
// errors on a node cut off from a shard).
func TestAReadOfAFrozenShardWaitsOneShardTimeout(t *testing.T) {
	shards := twoShards(t)
	o := defaults() // with the L1, a GET the loop forwards is a tracked read
	o.config.ShardTimeout = time.Second
	a := startAgent(t, shards, o)
	k := keyOn(t, a, "frozen-read:", 0)
	c := a.dial(t)
	c.do("SET", k, "v")
	shards[0].Freeze()
	defer shards[0].Thaw()
	start := time.Now()
	if got := c.do("GET", k); got != "(nil)" {
		t.Fatalf("GET of a frozen shard = %q, want a miss", got)
	}
	if took := time.Since(start); took > 1600*time.Millisecond {
		t.Fatalf("the miss took %v: the shard timeout (1s) was waited twice", took)
	}
}

// TestAKilledLoopConnectionLosesNoRead: the shard closing the loop's connection (CLIENT KILL,
// a proxy's idle timeout) costs no read its value: requests caught on it take the full path,
// and the loop connects again.
func TestAKilledLoopConnectionLosesNoRead(t *testing.T) {
	shards, c, k := oneKeyOnShard0(t, "killed:")
	for round := range 20 {
		id := ""
		for i := 0; id == ""; i++ {
			if got := c.do("GET", k); got != "v" {
				t.Fatalf("round %d: GET = %q", round, got)
			}
			list, _ := shards[0].Do("CLIENT", "LIST")
			for _, line := range strings.Split(list, "\n") {
				if strings.Contains(line, " name="+upstream.Name+" ") {
					id = strings.TrimPrefix(strings.Fields(line)[0], "id=")
				}
			}
			if i == 100 {
				t.Fatalf("round %d: the loop has no connection to the shard:\n%s", round, list)
			}
		}
		if _, err := shards[0].Do("CLIENT", "KILL", "ID", id); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if got := c.do("GET", k); got != "v" {
				t.Fatalf("round %d: GET after the loop's connection was killed = %q", round, got)
			}
		}
	}
}

// TestDeepPipelinesKeepTheirOrderThroughTheLoop: a pipeline as deep as the loop takes, and a
// deeper one (left to the goroutine), over both shards, are answered in order.
func TestDeepPipelinesKeepTheirOrderThroughTheLoop(t *testing.T) {
	a := startAgent(t, twoShards(t), l1OffOptions())
	c := a.dial(t)
	for _, depth := range []int{16, 64, 100} {
		forwarded := a.srv.Stats.LoopForwards.Load()
		for round := range 20 {
			var cmds [][]string
			var want []string
			for i := range depth / 2 {
				k, v := fmt.Sprintf("deep:%d:%d", round, i), fmt.Sprintf("%d-%d", depth, i)
				cmds = append(cmds, []string{"SET", k, v}, []string{"GET", k})
				want = append(want, "OK", v)
			}
			if got := c.pipeline(cmds...); got != strings.Join(want, " ") {
				t.Fatalf("depth %d: replies %q, want %q", depth, got, want)
			}
		}
		if n := a.srv.Stats.LoopForwards.Load() - forwarded; (n > 0) != (depth <= 64) {
			t.Errorf("depth %d: the loop forwarded %d commands", depth, n)
		}
	}
}

// trackedOnShard0 starts an agent with the tracking L1 over two shards, and returns a client
// and a key of shard 0 once the loop has a connection to that shard (it dials on first use).
func trackedOnShard0(t *testing.T, prefix string) ([]*tu.Redis, *agent, *conn, string) {
	t.Helper()
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	for i := 0; ; i++ {
		forwarded := a.srv.Stats.LoopForwards.Load()
		c.do("GET", keyOn(t, a, fmt.Sprintf("%swarm%d:", prefix, i), 0))
		if a.srv.Stats.LoopForwards.Load() > forwarded {
			break
		}
		if i == 100 {
			t.Fatal("no GET went through the loop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return shards, a, c, keyOn(t, a, prefix, 0)
}

// TestTheLoopKeepsATrackedReadUntilTheShardChangesIt: a tracking-L1 miss the loop forwarded is
// kept, the next read of the key is a hit, and a write straight to the shard (which only its
// invalidation push tells the agent of) or a flush ends the copy.
func TestTheLoopKeepsATrackedReadUntilTheShardChangesIt(t *testing.T) {
	shards, a, c, k := trackedOnShard0(t, "kept:")
	if _, err := shards[0].Do("SET", k, "v1"); err != nil {
		t.Fatal(err)
	}
	st := a.srv.Stats
	forwarded, hits := st.LoopForwards.Load(), st.LoopHits.Load()
	if got := c.do("GET", k); got != "v1" || st.LoopForwards.Load() != forwarded+1 {
		t.Fatalf("GET = %q, forwarded %d", got, st.LoopForwards.Load()-forwarded)
	}
	if got := c.do("GET", k); got != "v1" || st.LoopHits.Load() != hits+1 || st.LoopForwards.Load() != forwarded+1 {
		t.Fatalf("second GET = %q: %d loop hits, %d forwarded; want a hit", got, st.LoopHits.Load()-hits, st.LoopForwards.Load()-forwarded)
	}
	eventually := func(change []string, want string) {
		t.Helper()
		if _, err := shards[0].Do(change...); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			got := c.do("GET", k)
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v on the shard, GET still = %q, want %q", change, got, want)
			}
		}
		if got := c.do("GET", k); got != want { // kept again, and current
			t.Fatalf("after %v, GET = %q", change, got)
		}
	}
	eventually([]string{"SET", k, "v2"}, "v2")
	eventually([]string{"FLUSHALL"}, "(nil)")
	eventually([]string{"SET", k, "v3"}, "v3")
}

// TestAKilledLoopConnectionDropsWhatItKept: the loop's copies are current only while the
// connection that carries their invalidations lives; once it is gone, a write the agent could
// not hear of is read, not an old copy.
func TestAKilledLoopConnectionDropsWhatItKept(t *testing.T) {
	shards, a, c, k := trackedOnShard0(t, "dropped:")
	for round := range 5 {
		v := fmt.Sprint("v", round)
		if _, err := shards[0].Do("SET", k, v); err != nil {
			t.Fatal(err)
		}
		hits := a.srv.Stats.LoopHits.Load()
		for c.do("GET", k) != v || a.srv.Stats.LoopHits.Load() == hits { // read until it is kept
			time.Sleep(5 * time.Millisecond)
		}
		list, _ := shards[0].Do("CLIENT", "LIST")
		killed := 0
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name="+upstream.Name+" ") {
				if _, err := shards[0].Do("CLIENT", "KILL", "ID", strings.TrimPrefix(strings.Fields(line)[0], "id=")); err == nil {
					killed++
				}
			}
		}
		if killed == 0 {
			t.Fatalf("round %d: the loop has no connection to the shard:\n%s", round, list)
		}
		time.Sleep(100 * time.Millisecond) // the loop sees the close
		// No push can say this: the connection is gone, and no other tracks the key.
		if _, err := shards[0].Do("SET", k, v+"-new"); err != nil {
			t.Fatal(err)
		}
		if got := c.do("GET", k); got != v+"-new" {
			t.Fatalf("round %d: GET after the loop's connection was killed = %q, want %q", round, got, v+"-new")
		}
	}
}

// TestAKilledShardConnectionLosesNoRead: without event loops, every read goes through
// valkey-go's connection; the shard closing it (CLIENT KILL, a proxy's idle timeout) costs the
// next read nothing, plain or tracked: it is sent again on a new connection, not answered as a
// down shard's miss. It failed on the first round before reads were sent again.
func TestAKilledShardConnectionLosesNoRead(t *testing.T) {
	for _, l1 := range []bool{false, true} {
		t.Run(fmt.Sprintf("l1=%v", l1), func(t *testing.T) {
			shards := twoShards(t)
			o := defaults()
			o.defaults.L1 = l1
			o.config.EventLoops = 0
			a := startAgent(t, shards, o)
			c := a.dial(t)
			for round := range 20 {
				k := keyOn(t, a, fmt.Sprintf("killed-vg:%d:", round), 0)
				c.do("SET", k, "v")
				if _, err := shards[0].Do("CLIENT", "KILL", "TYPE", "normal"); err != nil {
					t.Fatal(err)
				}
				if got := c.do("GET", k); got != "v" {
					t.Fatalf("round %d: GET after the shard closed the agent's connection = %q", round, got)
				}
			}
			if n := a.srv.Router().Shards[0].Stats.StaleRetries.Load(); n == 0 {
				t.Error("no read was sent again: the test missed the case it is about")
			}
		})
	}
}

// TestL1HitsBehindForwardedRequestsKeepOrderAndYourWrites: in one pipeline, a kept key read
// after a forwarded miss is answered from the L1 in its place among the shard's replies, and a
// read after the client's own write of the key is not: it waits for the write. Eight clients at
// once, each with its own key, so that every reply is known.
func TestL1HitsBehindForwardedRequestsKeepOrderAndYourWrites(t *testing.T) {
	_, a, _, _ := trackedOnShard0(t, "behind:")
	st := a.srv.Stats
	hits := st.LoopHits.Load()
	var wg sync.WaitGroup
	for g := range 8 {
		c := a.dial(t)
		hot := keyOn(t, a, fmt.Sprintf("behind%d:", g), g%2)
		c.do("SET", hot, "0")
		wg.Go(func() {
			for i := 1; i <= 50; i++ {
				c.do("GET", hot) // kept: the pipeline's first read of it is a hit
				missing := fmt.Sprintf("behind%d:missing:%d", g, i)
				v := fmt.Sprint(i)
				got := c.pipeline([]string{"GET", missing}, []string{"GET", hot}, []string{"SET", hot, v}, []string{"GET", hot}, []string{"GET", missing})
				if want := fmt.Sprintf("(nil) %d OK %s (nil)", i-1, v); got != want {
					t.Errorf("client %d round %d: replies %q, want %q", g, i, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	// Each round's read of the key in the pipeline should hit; one whose fill saw another
	// client's invalidation arrive between its GET and PTTL is not kept, and is forwarded.
	if n := st.LoopHits.Load() - hits; n < 8*50/8 {
		t.Errorf("%d L1 hits on the loop for %d reads of kept keys behind forwarded misses", n, 8*50)
	}
	t.Logf("%d of %d reads behind forwarded misses were L1 hits", st.LoopHits.Load()-hits, 8*50)
}

// TestTheLoopTracksOnlyTheReadsItKeeps: the loop's shard connections ask the shard to track
// the reads the L1 copies, and no other (reads of keys whose policy keeps no copy): the shard's
// tracking table grows by the kept key only, and the kept key is then a hit. (Tracking every
// read, OPTOUT, with CLIENT CACHING NO before the others, was measured and cost more.)
func TestTheLoopTracksOnlyTheReadsItKeeps(t *testing.T) {
	shards, a, c, kept := trackedOnShard0(t, "optout:")
	withPolicy(t, a, contract.Policy{Name: "plain", Prefix: "plain:", L1Enabled: false})
	plain := keyOn(t, a, "plain:", 0)
	trackedKeys := func() int { return trackedKeys(t, shards[0]) }
	st := a.srv.Stats
	before, forwarded, hits := trackedKeys(), st.LoopForwards.Load(), st.LoopHits.Load()
	c.do("SET", plain, "p")
	c.do("SET", kept, "k")
	for range 3 {
		if got := c.do("GET", plain); got != "p" {
			t.Fatalf("GET %s = %q", plain, got)
		}
	}
	if got := c.do("GET", kept); got != "k" {
		t.Fatalf("GET %s = %q", kept, got)
	}
	if n := st.LoopForwards.Load() - forwarded; n != 6 {
		t.Fatalf("the loop forwarded %d of 6 commands", n)
	}
	if n := trackedKeys() - before; n != 1 {
		t.Errorf("the shard tracks %d more keys, want 1 (the kept key only)", n)
	}
	if got := c.do("GET", kept); got != "k" || st.LoopHits.Load() != hits+1 {
		t.Errorf("second GET %s = %q with %d loop hits; want a hit", kept, got, st.LoopHits.Load()-hits)
	}
}

// trackedKeys is how many keys the shard tracks for its clients.
func trackedKeys(t *testing.T, shard *tu.Redis) int {
	t.Helper()
	info, err := shard.Do("INFO", "stats")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "tracking_total_keys:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no tracking_total_keys in %q", info)
	return 0
}

// TestAFullL1CopiesKeysReadTwice: until the tracking L1 evicts, every miss is copied; once it
// has, a key's first read goes to the shard untracked and is not copied, its second is copied,
// and its third is a hit (lateKeysReadTwice); the shard tracks few of a burst of one-off reads.
func TestAFullL1CopiesKeysReadTwice(t *testing.T) {
	shards := twoShards(t)
	o := defaults()
	o.defaults.L1MaxMemory = 512 << 10 // 128 KB of copies per shard
	a := startAgent(t, shards, o)
	c := a.dial(t)
	val := strings.Repeat("v", 64)
	st := a.srv.Stats
	first := keyOn(t, a, "twice:first:", 0)
	c.do("SET", first, val)
	// The copy of a read may be dropped once by the shard's late report of the write before it
	// (a loaded machine delays it); a copy is made again on the next read, so within three reads
	// one must be a hit.
	hit := false
	for range 3 {
		c.do("GET", first)
		if hits := st.LoopHits.Load(); c.do("GET", first) == val && st.LoopHits.Load() == hits+1 {
			hit = true
			break
		}
	}
	if !hit {
		t.Fatal("before any eviction, a key's second read is not a hit")
	}
	if n := st.L1NotAdmitted.Load(); n != 0 {
		t.Errorf("%d reads not admitted before the L1 evicted", n)
	}
	const keys = 4000 // twice what the copies hold
	var cmds [][]string
	for i := range keys {
		cmds = append(cmds, []string{"SET", fmt.Sprint("fill:", i), val})
	}
	c.pipeline(cmds...)
	for i := range cmds {
		cmds[i] = []string{"GET", cmds[i][1]}
	}
	c.pipeline(cmds[:keys/2]...) // fills the copies to eviction
	c.pipeline(cmds[:keys/2]...)
	before := trackedKeys(t, shards[0]) + trackedKeys(t, shards[1])
	refusedBefore := st.L1NotAdmitted.Load()
	c.pipeline(cmds[keys/2:]...) // one-off reads
	if n := trackedKeys(t, shards[0]) + trackedKeys(t, shards[1]) - before; n > keys/2/10 {
		t.Errorf("the shards track %d more keys after %d one-off reads of a full L1", n, keys/2)
	}
	if n := st.L1NotAdmitted.Load() - refusedBefore; n < keys/2-keys/2/10 || n > keys/2 {
		t.Errorf("%d of %d one-off reads of a full L1 counted as not admitted", n, keys/2)
	}
	lateKeysReadTwice(t, c, val, st.LoopHits.Load, &st.L1NotAdmitted, func(i int) string { return keyOn(t, a, fmt.Sprint("twice:late", i, ":"), i%2) })
}

// lateKeysReadTwice reads ten new keys three times each from a full L1: the first read is never
// a hit, the third always is, and the second is not, but for a key the admission's Bloom
// filter takes for one it has seen (a few percent: with these figures, 4 or more of 10 is a
// chance of about 1 in 1,000). A first read that is not copied counts in refused, and only
// such a read does.
func lateKeysReadTwice(t *testing.T, c *conn, val string, hits func() int64, refused *atomic.Int64, key func(i int) string) {
	t.Helper()
	secondHits := 0
	for i := range 10 {
		k := key(i)
		c.do("SET", k, val)
		firstRefused := false
		for read := 1; read <= 3; read++ {
			before, refusedBefore := hits(), refused.Load()
			if got := c.do("GET", k); got != val {
				t.Fatalf("read %d of %s = %q", read, k, got)
			}
			hit, wasRefused := hits() > before, refused.Load() > refusedBefore
			switch {
			case read == 1 && hit:
				t.Errorf("first read of %s was a hit", k)
			case read == 1:
				firstRefused = wasRefused
			case wasRefused:
				t.Errorf("read %d of %s counted as not admitted", read, k)
			case read == 2 && hit == firstRefused:
				t.Errorf("%s: first read not admitted %v, second read a hit %v", k, firstRefused, hit)
			}
			switch {
			case read == 2 && hit:
				secondHits++
			case read == 3 && !hit:
				t.Errorf("third read of %s was not a hit", k)
			}
		}
	}
	if secondHits > 3 {
		t.Errorf("%d of 10 new keys were copied on their first read of a full L1", secondHits)
	}
}

// TestAFullTTLModeL1CopiesKeysReadTwice: the ttl-mode L1 admits as the tracking one does.
func TestAFullTTLModeL1CopiesKeysReadTwice(t *testing.T) {
	o := defaults()
	o.defaults.L1MaxMemory = 2 << 20 // the ttl-mode L1 holds half: 1 MiB
	a := startAgent(t, twoShards(t), o)
	withPolicy(t, a, contract.Policy{Name: "local", Prefix: "ttl:", L1Enabled: true, L1Mode: "ttl", L1TTLMillis: 60_000})
	c := a.dial(t)
	val := strings.Repeat("v", 64)
	st := a.srv.Stats
	read := func(k string, want int64) {
		t.Helper()
		hits := st.L1Hits.Load()
		if got := c.do("GET", k); got != val {
			t.Fatalf("GET %s = %q", k, got)
		}
		if n := st.L1Hits.Load() - hits; n != want {
			t.Errorf("GET %s: %d L1 hits, want %d", k, n, want)
		}
	}
	c.do("SET", "ttl:first", val)
	read("ttl:first", 0)
	read("ttl:first", 1) // room: copied on its first read
	const keys = 12_000  // about twice what 1 MiB holds
	for from := 0; from < keys; from += 1000 {
		var sets, gets [][]string
		for i := from; i < from+1000; i++ {
			sets = append(sets, []string{"SET", fmt.Sprint("ttl:fill:", i), val})
			gets = append(gets, []string{"GET", fmt.Sprint("ttl:fill:", i)})
		}
		c.pipeline(sets...)
		c.pipeline(gets...)
	}
	lateKeysReadTwice(t, c, val, st.L1Hits.Load, &st.L1NotAdmitted, func(i int) string { return fmt.Sprint("ttl:late:", i) })
}
