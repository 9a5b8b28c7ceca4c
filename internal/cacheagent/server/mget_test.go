package server_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// TestMgetAnswersTheKeysTheL1Holds: an MGET's kept keys are L1 hits and the rest are read from
// their shards, in the client's order (and copied: TestMgetCopiesTheKeysItReads); the client's
// own write, pipelined before the MGET or acknowledged before it, is read; a write straight to
// the shard reaches it by push; with every key kept, no shard is asked.
func TestMgetAnswersTheKeysTheL1Holds(t *testing.T) {
	shards, a, c, k := trackedOnShard0(t, "mget:")
	other := keyOn(t, a, "mget:other:", 1)
	st := a.srv.Stats
	keep := func(key, want string) { t.Helper(); readUntilKept(t, c, st.L1Hits.Load, key, want) }
	mget := func(wantHits int64, keys ...string) string {
		t.Helper()
		hits := st.L1Hits.Load()
		got := c.do(append([]string{"MGET"}, keys...)...)
		if n := st.L1Hits.Load() - hits; n != wantHits {
			t.Errorf("MGET %v = %s: %d L1 hits, want %d", keys, got, n, wantHits)
		}
		return got
	}
	c.do("SET", k, "v1")
	c.do("SET", other, "o1")
	keep(k, "v1")
	if got := mget(1, other, k, "mget:absent"); got != "[o1 v1 (nil)]" {
		t.Fatalf("MGET = %s", got)
	}
	if got := c.pipeline([]string{"SET", k, "v2"}, []string{"MGET", k, other}); got != "OK [v2 o1]" {
		t.Fatalf("SET then MGET in one pipeline = %s", got)
	}
	keep(k, "v2")
	c.do("SET", k, "v3")
	if got := mget(0, k); got != "[v3]" {
		t.Fatalf("MGET after the client's SET = %s", got)
	}
	keep(k, "v3")
	if _, err := shards[0].Do("SET", k, "v4"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); c.do("MGET", k) != "[v4]"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a write straight to the shard never reached the MGET")
		}
	}
	keep(k, "v4")
	keep(other, "o1")
	calls := mgetCalls(t, shards)
	if got := mget(3, k, other, k); got != "[v4 o1 v4]" {
		t.Fatalf("MGET of kept keys = %s", got)
	}
	if n := mgetCalls(t, shards) - calls; n != 0 {
		t.Errorf("an MGET of kept keys sent %d MGETs to the shards", n)
	}
	// Behind a command the loop does not take, the connection's goroutine answers it, the same.
	hits, loopHits := st.L1Hits.Load(), st.LoopHits.Load()
	if got := c.pipeline([]string{"PING"}, []string{"MGET", other, k}); got != "PONG [o1 v4]" ||
		st.L1Hits.Load() != hits+2 || st.LoopHits.Load() != loopHits {
		t.Fatalf("PING, MGET of kept keys = %s with %d L1 hits, %d on the loop; want 2, 0", got, st.L1Hits.Load()-hits, st.LoopHits.Load()-loopHits)
	}
}

// TestMgetReadsTheTTLModeL1: keys of a ttl-mode policy are answered from its copies too; the
// client's write drops them, and a write pipelined before the MGET is read, not the copy.
func TestMgetReadsTheTTLModeL1(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	withPolicy(t, a, contract.Policy{Name: "local", Prefix: "ttl:", L1Enabled: true, L1Mode: "ttl", L1TTLMillis: 60_000})
	c := a.dial(t)
	st := a.srv.Stats
	c.do("SET", "ttl:a", "a1")
	c.do("GET", "ttl:a") // copied: the L1 has room
	hits := st.L1Hits.Load()
	if got := c.do("MGET", "ttl:b", "ttl:a"); got != "[(nil) a1]" || st.L1Hits.Load() != hits+1 {
		t.Fatalf("MGET = %s with %d L1 hits, want [(nil) a1] and 1", got, st.L1Hits.Load()-hits)
	}
	c.do("SET", "ttl:a", "a2")
	if got := c.do("MGET", "ttl:a"); got != "[a2]" {
		t.Fatalf("MGET after the client's SET = %s", got)
	}
	c.do("GET", "ttl:a") // copied again
	hits = st.L1Hits.Load()
	if got := c.do("MGET", "ttl:a"); got != "[a2]" || st.L1Hits.Load() != hits+1 {
		t.Fatalf("MGET of the copy = %s with %d L1 hits, want [a2] and 1", got, st.L1Hits.Load()-hits)
	}
	if got := c.pipeline([]string{"SET", "ttl:a", "a3"}, []string{"MGET", "ttl:a"}); got != "OK [a3]" {
		t.Fatalf("SET then MGET in one pipeline = %s", got)
	}
}

// readUntilKept GETs key until the read answers want and counts in hits: the L1 keeps it.
func readUntilKept(t *testing.T, c *conn, hits func() int64, key, want string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		before := hits()
		if got := c.do("GET", key); got == want && hits() > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never kept", key)
		}
	}
}

// mgetCalls is how many MGETs the shards have run.
func mgetCalls(t *testing.T, shards []*tu.Redis) int {
	t.Helper()
	n := 0
	for _, sh := range shards {
		info, err := sh.Do("INFO", "commandstats")
		if err != nil {
			t.Fatal(err)
		}
		if _, rest, ok := strings.Cut(info, "cmdstat_mget:calls="); ok {
			calls, _, _ := strings.Cut(rest, ",")
			v, _ := strconv.Atoi(calls)
			n += v
		}
	}
	return n
}

// TestTheLoopAnswersMgetsOfKeptKeys: an MGET whose keys the L1 all holds is answered on the
// event loop, in its place in the pipeline; one with a key it lacks is forwarded by the loop,
// which reads that key from its shard as a tracked read and keeps it (a miss too).
func TestTheLoopAnswersMgetsOfKeptKeys(t *testing.T) {
	_, a, c, k := trackedOnShard0(t, "loopmget:")
	other := keyOn(t, a, "loopmget:other:", 1)
	st := a.srv.Stats
	c.do("SET", k, "v1")
	c.do("SET", other, "o1")
	readUntilKept(t, c, st.LoopHits.Load, k, "v1")
	readUntilKept(t, c, st.LoopHits.Load, other, "o1")
	loopHits := func(want int64, cmds ...[]string) string {
		t.Helper()
		hits := st.LoopHits.Load()
		got := c.pipeline(cmds...)
		if n := st.LoopHits.Load() - hits; n != want {
			t.Errorf("%v = %s: %d loop hits, want %d", cmds, got, n, want)
		}
		return got
	}
	if got := loopHits(3, []string{"MGET", k, other, k}); got != "[v1 o1 v1]" {
		t.Fatalf("MGET = %s", got)
	}
	if got := loopHits(5, []string{"GET", k}, []string{"MGET", other, k}, []string{"MGET", k}, []string{"GET", other}); got != "v1 [o1 v1] [v1] o1" {
		t.Fatalf("pipeline = %s", got)
	}
	forwards := st.LoopForwards.Load()
	if got := loopHits(2, []string{"MGET", k, "loopmget:absent", other}); got != "[v1 (nil) o1]" {
		t.Fatalf("MGET with a key not kept = %s", got)
	}
	if n := st.LoopForwards.Load() - forwards; n != 1 {
		t.Errorf("%d forwarded by the loop, want the MGET with a key not kept", n)
	}
	if got := loopHits(3, []string{"MGET", k, "loopmget:absent", other}); got != "[v1 (nil) o1]" {
		t.Fatalf("MGET after its missing key was kept = %s", got)
	}
	if ok, _ := st.Requests("mget"); ok != 5 {
		t.Errorf("%d MGETs counted, want 5", ok)
	}
}

// TestMgetCopiesTheKeysItReads: an MGET's misses of tracking-L1 keys are tracked reads, copied
// as a GET's are, so that an application that reads only with MGET gets L1 hits; a write
// straight to the shard reaches the copies. A shard whose keys are not all L1 keys is read with
// a plain MGET, and its L1 keys count as not admitted.
func TestMgetCopiesTheKeysItReads(t *testing.T) {
	shards, a, c, k0, k1 := keysOnBothShards(t, contract.Policy{Name: "uncached", Prefix: "nol1:", L1Enabled: false}, "mcopy:")
	st := a.srv.Stats
	if got := c.do("MGET", k0, k1, k0); got != "[a1 b1 a1]" {
		t.Fatalf("first MGET = %s", got)
	}
	// L1 hits, on the loop or, when the MGET reached the connection's goroutine before it
	// handed the connection back to the loop, there.
	hits := st.L1Hits.Load()
	if got := c.do("MGET", k1, k0); got != "[b1 a1]" || st.L1Hits.Load() != hits+2 {
		t.Fatalf("second MGET = %s with %d L1 hits, want [b1 a1] and 2", got, st.L1Hits.Load()-hits)
	}
	if _, err := shards[0].Do("SET", k0, "a2"); err != nil {
		t.Fatal(err)
	}
	mgetUntil(t, c, "[a2 b1]", k0, k1) // a write straight to the shard reaches the MGET's copy
	plain := keyOn(t, a, "mcopy:c:", 0)
	c.do("SET", plain, "c1")
	refused := st.L1NotAdmitted.Load()
	if got := c.do("MGET", plain, keyOn(t, a, "nol1:", 0)); got != "[c1 (nil)]" {
		t.Fatalf("MGET with a key of no L1 = %s", got)
	}
	if n := st.L1NotAdmitted.Load() - refused; n != 1 {
		t.Errorf("%d keys counted as not admitted, want 1", n)
	}
	hits = st.L1Hits.Load()
	if got := c.do("MGET", plain); got != "[c1]" || st.L1Hits.Load() != hits {
		t.Errorf("MGET = %s with %d L1 hits: a key read by a plain MGET was copied", got, st.L1Hits.Load()-hits)
	}
}

// TestMgetReadsAKeyOfAnotherTypeAsNil: Valkey's MGET answers nil for a key holding a list; so
// must the agent's, on the full path (no event loop), where a tracking-L1 miss is read as a
// tracked GET whose reply is WRONGTYPE. Before, that error answered the whole MGET.
func TestMgetReadsAKeyOfAnotherTypeAsNil(t *testing.T) {
	shards := twoShards(t)
	o := defaults()
	o.config.EventLoops = 0
	a := startAgent(t, shards, o)
	c := a.dial(t)
	list, k := keyOn(t, a, "mtype:list:", 0), keyOn(t, a, "mtype:s:", 0)
	if _, err := shards[0].Do("RPUSH", list, "x"); err != nil {
		t.Fatal(err)
	}
	c.do("SET", k, "v")
	for i := range 2 { // a miss, then the kept value beside the list read again
		if got := c.do("MGET", list, k); got != "[(nil) v]" {
			t.Fatalf("MGET %d = %s, want [(nil) v]", i, got)
		}
	}
}
