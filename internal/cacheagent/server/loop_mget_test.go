package server_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// mgetOnTheLoop MGETs keys until the loop forwards the MGET (it dials each shard on first use),
// each reply checked against want.
func mgetOnTheLoop(t *testing.T, a *agent, c *conn, want string, keys ...string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		forwarded := a.srv.Stats.LoopForwards.Load()
		if got := c.do(append([]string{"MGET"}, keys...)...); got != want {
			t.Fatalf("MGET %v = %s, want %s", keys, got, want)
		}
		if a.srv.Stats.LoopForwards.Load() > forwarded {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no MGET went through the loop")
		}
	}
}

// mgetUntil MGETs keys until the reply is want, for up to 2 s (an invalidation's way).
func mgetUntil(t *testing.T, c *conn, want string, keys ...string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); c.do(append([]string{"MGET"}, keys...)...) != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("MGET %v never answered %s", keys, want)
		}
	}
}

// keysOnBothShards starts an agent over two shards with policy p, and writes a1 to a key under
// prefix on shard 0 and b1 to one on shard 1.
func keysOnBothShards(t *testing.T, p contract.Policy, prefix string) (shards []*tu.Redis, a *agent, c *conn, k0, k1 string) {
	t.Helper()
	shards = twoShards(t)
	a = startAgent(t, shards, defaults())
	withPolicy(t, a, p)
	c = a.dial(t)
	k0, k1 = keyOn(t, a, prefix+"a:", 0), keyOn(t, a, prefix+"b:", 1)
	c.do("SET", k0, "a1")
	c.do("SET", k1, "b1")
	return shards, a, c, k0, k1
}

// TestTheLoopForwardsMgets: an MGET of keys on both shards is split by shard on the loop and
// answered in the client's order, among forwarded GETs and SETs, each reading the client's own
// writes pipelined before it; errors and RESP3 nulls are Valkey's, byte for byte.
func TestTheLoopForwardsMgets(t *testing.T) {
	shards, a, c, k0, k1 := keysOnBothShards(t, contract.Policy{Name: "plain", Prefix: "fan:", L1Enabled: false}, "fan:")
	st := a.srv.Stats
	mgetOnTheLoop(t, a, c, "[a1 b1]", k0, k1)
	forwarded := st.LoopForwards.Load()
	got := c.pipeline([]string{"SET", k0, "a2"}, []string{"MGET", k0, "fan:absent", k1, k0},
		[]string{"SET", k1, "b2"}, []string{"MGET", k1}, []string{"GET", k0}, []string{"MGET", k1, k0})
	if want := "OK [a2 (nil) b1 a2] OK [b2] a2 [b2 a2]"; got != want {
		t.Fatalf("pipeline = %s, want %s", got, want)
	}
	if n := st.LoopForwards.Load() - forwarded; n != 6 {
		t.Errorf("the loop forwarded %d of 6 commands", n)
	}
	if ok, _ := st.Requests("mget"); ok < 4 {
		t.Errorf("%d MGETs counted, want at least 4", ok)
	}
	list := keyOn(t, a, "fan:list:", 0)
	if _, err := shards[0].Do("LPUSH", list, "x"); err != nil {
		t.Fatal(err)
	}
	if got := c.do("MGET", k1, list); got != "[b2 (nil)]" { // a key of another type reads as nil, as in Valkey
		t.Fatalf("MGET with a list = %s", got)
	}
	for _, proto := range []string{"2", "3"} {
		raw := a.dial(t)
		raw.do("HELLO", proto)
		want := map[string]string{
			"2": "*3\r\n$2\r\nb2\r\n$-1\r\n$2\r\na2\r\n",
			"3": "*3\r\n$2\r\nb2\r\n_\r\n$2\r\na2\r\n",
		}[proto]
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			before := st.LoopForwards.Load()
			if got := rawReply(t, raw, len(want), "MGET", k1, "fan:absent", k0); got != want {
				t.Fatalf("RESP%s MGET = %q, want %q", proto, got, want)
			}
			if st.LoopForwards.Load() > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("RESP%s: no MGET went through the loop", proto)
			}
		}
	}
}

// rawReply sends a command and reads n bytes of its reply.
func rawReply(t *testing.T, c *conn, n int, args ...string) string {
	t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(tu.Encode(args...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.rd, buf); err != nil {
		t.Fatal(err)
	}
	if c.rd.Buffered() > 0 {
		rest, _ := c.rd.Peek(c.rd.Buffered())
		t.Fatalf("%v: %q then %q more", args, buf, rest)
	}
	return string(buf)
}

// TestAnEncodedValueIsDecodedAsReadInItsTurn: a value another agent compressed (under a policy
// this agent does not have) comes back from the shard with the agent's marker, and is decoded
// off the loop. A GET or MGET of it answers the value it read in its turn: a SET of the key
// the client pipelined after it, which the loop forwards meanwhile, is not seen (reading it
// again on the full path did see it).
func TestAnEncodedValueIsDecodedAsReadInItsTurn(t *testing.T) {
	shards := twoShards(t)
	writer, reader := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	withPolicy(t, writer, contract.Policy{Name: "zip", Prefix: "zip:", L1Enabled: false,
		MaxValueBytes: 64 << 10, Compression: codec.Zstd, CompressionMinSize: 1024})
	withPolicy(t, reader, contract.Policy{Name: "plain", Prefix: "zip:", L1Enabled: false})
	value := strings.Repeat("compressible ", 200)
	k0, k1 := keyOn(t, reader, "zip:a:", 0), keyOn(t, reader, "zip:b:", 1)
	w, c := writer.dial(t), reader.dial(t)
	w.do("SET", k1, "short")
	for i, read := range [][]string{{"GET", k0}, {"MGET", k0, k1}} {
		w.do("SET", k0, value)
		if raw, err := shards[0].Do("GET", k0); err != nil || !strings.HasPrefix(raw, codec.Marker) {
			t.Fatalf("the writer did not compress the value (%v)", err)
		}
		want := []string{value, "[" + value + " short]"}[i]
		mgetOnTheLoop(t, reader, c, "["+value+" short]", k0, k1) // the shard connections are up
		forwarded := reader.srv.Stats.LoopForwards.Load()
		got := c.pipeline(read, []string{"SET", k0, "after"}, []string{"GET", k0})
		if got != want+" OK after" {
			t.Fatalf("%s, then SET of the key = ...%q", read[0], got[max(0, len(got)-40):])
		}
		if n := reader.srv.Stats.LoopForwards.Load() - forwarded; n != 3 {
			t.Errorf("%s: the loop forwarded %d of 3 commands", read[0], n)
		}
	}
}

// TestMgetAnswersKeptKeysBehindForwardedRequests: behind forwarded requests, an MGET's kept
// keys are answered from the L1 and the rest read from the shards; a key the client's
// forwarded SET ahead of it writes is read from the shard, never from the older copy.
func TestMgetAnswersKeptKeysBehindForwardedRequests(t *testing.T) {
	shards, a, c, k := trackedOnShard0(t, "behind:")
	withPolicy(t, a, contract.Policy{Name: "plain", Prefix: "plainfan:", L1Enabled: false})
	p := keyOn(t, a, "plainfan:", 1)
	st := a.srv.Stats
	c.do("SET", k, "v1")
	c.do("SET", p, "p1")
	readUntilKept(t, c, st.LoopHits.Load, k, "v1")
	mgetOnTheLoop(t, a, c, "[v1 p1]", k, p)
	hits, calls := st.L1Hits.Load(), mgetCalls(t, shards[:1])
	if got := c.pipeline([]string{"SET", p, "p2"}, []string{"MGET", k, p}, []string{"GET", p}); got != "OK [v1 p2] p2" {
		t.Fatalf("pipeline = %s", got)
	}
	if n := st.L1Hits.Load() - hits; n != 1 {
		t.Errorf("%d L1 hits, want 1 (the kept key)", n)
	}
	if n := mgetCalls(t, shards[:1]) - calls; n != 0 {
		t.Errorf("the kept key's shard ran %d MGETs, want none", n)
	}
	if got := c.pipeline([]string{"SET", k, "v2"}, []string{"MGET", p, k}, []string{"MGET", k}); got != "OK [p2 v2] [v2]" {
		t.Fatalf("SET then MGETs of the kept key = %s", got)
	}
}

// TestAFullL1CopiesMgetKeysReadTwice: with the L1 full, an MGET's one-off reads go to the
// shards as they are (on the loop, counted as not admitted); a key read again in the window is
// copied, and its third read is a hit.
func TestAFullL1CopiesMgetKeysReadTwice(t *testing.T) {
	o := defaults()
	o.defaults.L1MaxMemory = 512 << 10
	a := startAgent(t, twoShards(t), o)
	c := a.dial(t)
	val := strings.Repeat("v", 64)
	st := a.srv.Stats
	const keys = 4000 // twice what the copies hold
	var sets, gets [][]string
	for i := range keys {
		sets = append(sets, []string{"SET", fmt.Sprint("mfill:", i), val})
		gets = append(gets, []string{"GET", fmt.Sprint("mfill:", i)})
	}
	c.pipeline(sets...)
	c.pipeline(gets...)
	c.pipeline(gets...)
	secondHits := 0
	for i := range 10 {
		k0, k1 := keyOn(t, a, fmt.Sprint("mlate:a", i, ":"), 0), keyOn(t, a, fmt.Sprint("mlate:b", i, ":"), 1)
		c.do("SET", k0, val)
		c.do("SET", k1, val)
		for read := 1; read <= 3; read++ {
			hits, refused := st.L1Hits.Load(), st.L1NotAdmitted.Load()
			if got := c.do("MGET", k0, k1); got != "["+val+" "+val+"]" {
				t.Fatalf("read %d: MGET = %s", read, got)
			}
			nHits, nRefused := st.L1Hits.Load()-hits, st.L1NotAdmitted.Load()-refused
			switch {
			case read == 1 && (nHits != 0 || nRefused > 2):
				t.Errorf("first MGET of %s %s: %d hits, %d keys not admitted", k0, k1, nHits, nRefused)
			case read == 2 && nRefused != 0:
				t.Errorf("second MGET of %s %s: %d keys not admitted", k0, k1, nRefused)
			case read == 2 && nHits > 0:
				secondHits++
			case read == 3 && nHits != 2:
				t.Errorf("third MGET of %s %s: %d hits, want 2", k0, k1, nHits)
			}
		}
	}
	if secondHits > 3 {
		t.Errorf("%d of 10 pairs of new keys were copied on their first read of a full L1", secondHits)
	}
}

// TestAForwardedMgetReadsADownShardsKeysAsMisses: when a shard's connection dies under a
// forwarded MGET, that shard's keys are read again on the full path, which answers them as
// misses (no error on reads), and the other shard's values stay as read; once the shard is
// back, the loop forwards MGETs again.
func TestAForwardedMgetReadsADownShardsKeysAsMisses(t *testing.T) {
	shards, a, c, k0, k1 := keysOnBothShards(t, contract.Policy{Name: "plain", Prefix: "down:", L1Enabled: false}, "down:")
	mgetOnTheLoop(t, a, c, "[b1 a1]", k1, k0)
	shards[1].Stop()
	for range 3 {
		if got := c.do("MGET", k1, k0, k1); got != "[(nil) a1 (nil)]" {
			t.Fatalf("MGET with shard 1 down = %s", got)
		}
	}
	shards[1].Start()
	if _, err := shards[1].Do("SET", k1, "b2"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		forwarded := a.srv.Stats.LoopForwards.Load()
		got := c.do("MGET", k1, k0)
		if got == "[b2 a1]" && a.srv.Stats.LoopForwards.Load() > forwarded {
			break
		}
		if got != "[b2 a1]" && got != "[(nil) a1]" {
			t.Fatalf("MGET while shard 1 returns = %s", got)
		}
		if time.Now().After(deadline) {
			t.Fatalf("MGET = %s: shard 1 never read on the loop again", got)
		}
	}
}

// TestAForwardedMgetKeepsWhatItReads: an MGET's tracking-L1 misses are read by the loop as
// tracked reads, as a forwarded GET's are (no shard runs an MGET for them), and kept, a missing
// key as a miss: the next MGET is answered by the L1. A write straight to a shard reaches the
// copy. A key holding a list reads as nil, as in Valkey, in RESP2 and RESP3 byte for byte.
func TestAForwardedMgetKeepsWhatItReads(t *testing.T) {
	shards, a, c, k0, k1 := keysOnBothShards(t, contract.Policy{Name: "plain", Prefix: "plain:", L1Enabled: false}, "fkeep:")
	st := a.srv.Stats
	// The loop's connections to both shards, through keys of no L1.
	mgetOnTheLoop(t, a, c, "[(nil) (nil)]", keyOn(t, a, "plain:", 0), keyOn(t, a, "plain:", 1))
	mgets, forwarded := mgetCalls(t, shards), st.LoopForwards.Load()
	if got := c.do("MGET", k0, "fkeep:absent", k1); got != "[a1 (nil) b1]" {
		t.Fatalf("first MGET = %s", got)
	}
	if n := st.LoopForwards.Load() - forwarded; n != 1 {
		t.Fatalf("%d MGETs forwarded by the loop, want 1", n)
	}
	if n := mgetCalls(t, shards) - mgets; n != 0 {
		t.Errorf("the shards ran %d MGETs for keys read as tracked reads", n)
	}
	// Kept, unless an invalidation crossed a read (a write's late report): then it is read and
	// kept again, on the loop.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		hits, forwarded := st.LoopHits.Load(), st.LoopForwards.Load()
		if got := c.do("MGET", k1, "fkeep:absent", k0); got != "[b1 (nil) a1]" {
			t.Fatalf("MGET = %s", got)
		}
		if st.LoopHits.Load()-hits == 3 {
			break
		}
		if st.LoopForwards.Load() == forwarded {
			t.Fatal("an MGET of keys not kept left the loop")
		}
		if time.Now().After(deadline) {
			t.Fatal("the MGET's keys were never kept")
		}
	}
	if _, err := shards[0].Do("SET", k0, "a2"); err != nil {
		t.Fatal(err)
	}
	mgetUntil(t, c, "[a2 b1]", k0, k1) // a write straight to the shard reaches the kept copy
	list := keyOn(t, a, "fkeep:list:", 0)
	if _, err := shards[0].Do("RPUSH", list, "x"); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"2", "3"} {
		raw := a.dial(t)
		raw.do("HELLO", proto)
		want := map[string]string{"2": "*2\r\n$-1\r\n$2\r\nb1\r\n", "3": "*2\r\n_\r\n$2\r\nb1\r\n"}[proto]
		// The list is never kept: each MGET reads it, on the loop once the connection is there.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			forwarded := st.LoopForwards.Load()
			if got := rawReply(t, raw, len(want), "MGET", list, k1); got != want {
				t.Fatalf("RESP%s MGET with a list = %q, want %q", proto, got, want)
			}
			if st.LoopForwards.Load() > forwarded {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("RESP%s: no MGET with a list went through the loop", proto)
			}
		}
	}
}
