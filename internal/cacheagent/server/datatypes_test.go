package server_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// Every data type goes to its key's shard with the policy handling strings get: the policy TTL
// on a key a write creates, the size limit, L1 copies dropped on a write by any command.

func TestDataTypesGetThePolicyTTLAndSizeLimit(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults()) // default TTL 1h, values up to 1 KiB
	c := a.dial(t)
	for _, cmd := range [][]string{
		{"LPUSH", "q", "job"}, {"SADD", "online", "u1"}, {"ZADD", "board", "10", "alice"}, {"PFADD", "visits", "v"},
		{"GEOADD", "shops", "13.36", "38.11", "s1"}, {"XADD", "events", "*", "f", "v"}, {"SETBIT", "bits", "3", "1"},
		{"HMSET", "hm", "f", "v"},
	} {
		if got := c.do(cmd...); strings.HasPrefix(got, "ERR") {
			t.Fatalf("%v = %q", cmd, got)
		}
		ttl, err := strconv.Atoi(c.do("TTL", cmd[1]))
		if err != nil || ttl < 3500 || ttl > 3600 {
			t.Errorf("%s %s: TTL %d, want the policy's hour", cmd[0], cmd[1], ttl)
		}
	}
	if got := c.do("LPUSH", "q", strings.Repeat("x", 2000)); !strings.Contains(got, "exceeds the limit of 1024 bytes") {
		t.Errorf("LPUSH of a value over the limit = %q", got)
	}
	if got := c.do("LLEN", "q"); got != "1" {
		t.Errorf("LLEN after the refused push = %q, want 1: nothing stored", got)
	}
	if got := c.do("SADD", "online", "ok", strings.Repeat("y", 2000)); !strings.Contains(got, "exceeds the limit") {
		t.Errorf("SADD of a member over the limit = %q", got)
	}
}

func TestMultiKeyCommandsNeedOneShard(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c := a.dial(t)
	k0, k1 := keyOn(t, a, "s", 0), keyOn(t, a, "s", 1)
	c.do("SADD", k0, "a")
	c.do("SADD", k1, "b")
	for _, cmd := range [][]string{
		{"SUNION", k0, k1}, {"RENAME", k0, k1}, {"SMOVE", k0, k1, "a"}, {"ZUNIONSTORE", k0, "1", k1}, {"BITOP", "OR", k0, k1},
		{"SORT", k0, "STORE", k1}, {"EVAL", "return 1", "2", k0, k1},
	} {
		if got := c.do(cmd...); !strings.HasPrefix(got, "ERR:CROSSSLOT") {
			t.Errorf("%v across shards = %q, want the cross-shard error", cmd, got)
		}
	}
	if got := c.do("SUNION", "{u}a", "{u}b"); strings.HasPrefix(got, "ERR") {
		t.Errorf("SUNION within one hash tag = %q", got)
	}
}

func TestWritesByAnyCommandDropL1Copies(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c := a.dial(t)
	for _, tc := range []struct {
		name  string
		key   string
		write []string
		want  string
	}{
		{"SETBIT", "bitk", []string{"SETBIT", "bitk", "6", "1"}, "c"}, // 'a' is 0x61; its bit 6 set, 0x63
		{"RENAME onto it", "{r}dst", []string{"RENAME", "{r}src", "{r}dst"}, "from-src"},
		{"COPY onto it", "{c}dst", []string{"COPY", "{c}src", "{c}dst", "REPLACE"}, "from-src"},
		{"SORT STORE onto it", "{o}dst", []string{"SORT", "{o}list", "ALPHA", "STORE", "{o}dst"}, "WRONGTYPE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.do("SET", tc.key, "a")
			if strings.HasSuffix(tc.key, "dst") {
				c.do("SET", strings.Replace(tc.key, "dst", "src", 1), "from-src")
				c.do("RPUSH", strings.Replace(tc.key, "dst", "list", 1), "x")
			}
			c.do("GET", tc.key) // the L1 keeps "a"
			if got := c.do("GET", tc.key); got != "a" {
				t.Fatalf("GET = %q", got)
			}
			c.do(tc.write...)
			got := c.do("GET", tc.key)
			if !strings.Contains(got, tc.want) {
				t.Errorf("GET after %v = %q: the L1's copy outlived the write", tc.write, got)
			}
		})
	}
}

func TestBitCommandsAreRefusedWhereValuesAreEncoded(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	withPolicy(t, a, contract.Policy{Name: "zipped", Prefix: "z:", MaxValueBytes: 64 << 10, Compression: codec.Zstd, CompressionMinSize: 16})
	c := a.dial(t)
	c.do("SET", "z:v", strings.Repeat("compress me ", 50))
	for _, cmd := range [][]string{{"SETBIT", "z:v", "1", "1"}, {"GETBIT", "z:v", "1"}, {"BITCOUNT", "z:v"}, {"BITOP", "NOT", "z:d", "z:v"}} {
		if got := c.do(cmd...); !strings.Contains(got, "not available on keys whose policy compresses values") {
			t.Errorf("%v = %q, want the refusal", cmd, got)
		}
	}
	if got := c.do("GETBIT", "plain", "1"); got != "0" {
		t.Errorf("GETBIT elsewhere = %q", got)
	}
}

func TestScriptsWithoutKeysAndFunctionsRunOnEveryShard(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	if got := c.do("EVAL", "return 7", "0"); got != "7" {
		t.Errorf("EVAL with no keys = %q", got)
	}
	lib := "#!lua name=tlib\nserver.register_function('echo1', function(keys, args) return keys[1] end)"
	if got := c.do("FUNCTION", "LOAD", lib); got != "tlib" {
		t.Fatalf("FUNCTION LOAD = %q", got)
	}
	for i, sh := range shards { // loaded everywhere: FCALL runs on whichever shard owns its keys
		if got, err := sh.Do("FUNCTION", "LIST"); err != nil || !strings.Contains(got, "tlib") {
			t.Errorf("shard %d: FUNCTION LIST = %q, %v", i, got, err)
		}
	}
	for i := range 2 {
		k := keyOn(t, a, "f", i)
		if got := c.do("FCALL", "echo1", "1", k); got != k {
			t.Errorf("FCALL on shard %d = %q", i, got)
		}
	}
	if got := c.do("FUNCTION", "DELETE", "tlib"); got != "OK" {
		t.Errorf("FUNCTION DELETE = %q", got)
	}
	for i, sh := range shards {
		if got, _ := sh.Do("FUNCTION", "LIST"); strings.Contains(got, "tlib") {
			t.Errorf("shard %d still lists the deleted library", i)
		}
	}
	if got := c.do("RANDOMKEY"); got != "(nil)" {
		t.Errorf("RANDOMKEY of an empty fleet = %q", got)
	}
	c.do("SET", "only", "v")
	if got := c.do("RANDOMKEY"); got != "only" {
		t.Errorf("RANDOMKEY = %q, want the one key", got)
	}
}

// TestAJoiningShardGetsTheFunctions: a scale-up's new shard is given the libraries loaded
// before it joined, before the agent routes an FCALL to it.
func TestAJoiningShardGetsTheFunctions(t *testing.T) {
	shards := []*tu.Redis{tu.StartRedis(t, ""), tu.StartRedis(t, ""), tu.StartRedis(t, "")}
	o := defaults()
	a := startAgent(t, shards[:1], o)
	c := a.dial(t)
	lib := "#!lua name=glib\nserver.register_function('echo1', function(keys, args) return keys[1] end)"
	if got := c.do("FUNCTION", "LOAD", lib); got != "glib" {
		t.Fatalf("FUNCTION LOAD = %q", got)
	}
	grow(t, a, a.srv.Router().Doc, shards[:2], o, 0) // shard-1 joins
	k := keyOn(t, a, "g", 1)
	if got := c.do("FCALL", "echo1", "1", k); got != k {
		t.Errorf("FCALL on the joined shard = %q", got)
	}
	if got := a.srv.Stats.FunctionCopyFailures.Load(); got != 0 {
		t.Errorf("%d failed copies", got)
	}

	// A shard that cannot be reached is counted, and the ring is applied all the same.
	shards[2].Stop()
	grow(t, a, a.srv.Router().Doc, shards, o, 0)
	if got := a.srv.Stats.FunctionCopyFailures.Load(); got != 1 {
		t.Errorf("a copy to a stopped shard counted %d failures, want 1", got)
	}
	if got := len(a.srv.Router().Shards); got != 3 {
		t.Errorf("the ring has %d shards", got)
	}
}

// TestRateLimiterExpireNXWorksUnderAPolicyTTL: INCR then EXPIRE NX is how applications bound a
// counter's window. The counter INCR created got the policy TTL (an hour here), so a plain NX
// found a TTL and did nothing: the window lasted the policy's hour, not the application's 60 s.
func TestRateLimiterExpireNXWorksUnderAPolicyTTL(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults()) // policy TTL 1h
	c := a.dial(t)
	for _, cmd := range []string{"EXPIRE", "PEXPIRE"} {
		k := "rate:" + cmd
		ttl := map[string]string{"EXPIRE": "60", "PEXPIRE": "60000"}[cmd]
		if got := c.do("INCR", k); got != "1" {
			t.Fatalf("INCR = %q", got)
		}
		if got := c.do(cmd, k, ttl, "NX"); got != "1" {
			t.Errorf("%s NX on a counter with only the policy's TTL = %q, want 1 (set)", cmd, got)
		}
		if got := c.do(cmd, k, ttl, "NX"); got != "0" {
			t.Errorf("%s NX again = %q, want 0: the application's own TTL is kept", cmd, got)
		}
		if got, _ := strconv.Atoi(c.do("TTL", k)); got > 60 || got < 58 {
			t.Errorf("TTL %d, want the application's 60 s", got)
		}
	}
	if got := c.do("EXPIRE", "rate:x", "60", "NX", "GT"); !strings.Contains(got, "not compatible") {
		t.Errorf("NX with GT = %q, want Valkey's error", got)
	}
}

// TestBlockingCommandsWaitOnAConnectionOfTheirOwn: a client blocked in BLPOP holds a
// connection of its own, so its neighbours' reads on the same shard go on; a push through
// another agent wakes it; a client that hangs up while blocked gives the connection back.
func TestBlockingCommandsWaitOnAConnectionOfTheirOwn(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	q := keyOn(t, a, "queue", 0)
	sh := shards[0]
	waitingOnShard := func() int { // the shard's connections blocked in BLPOP
		list, err := sh.Do("CLIENT", "LIST")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "cmd=blpop")
	}
	waiter, neighbour, pusher := a.dial(t), a.dial(t), b.dial(t)
	neighbour.do("SET", keyOn(t, a, "n", 0), "v")
	got := make(chan string, 1)
	go func() { got <- waiter.do("BLPOP", q, "0") }()
	time.Sleep(200 * time.Millisecond)
	if info := neighbour.do("INFO", "clients"); !strings.Contains(info, "blocked_clients:1") {
		t.Errorf("INFO clients while one waits: %q", info)
	}
	for range 20 { // the shared connection is not held by the waiter
		if v := neighbour.do("GET", keyOn(t, a, "n", 0)); v != "v" {
			t.Fatalf("a neighbour's GET while another client waits = %q", v)
		}
	}
	pusher.do("RPUSH", q, "job")
	select {
	case v := <-got:
		if v != "["+q+" job]" {
			t.Errorf("BLPOP = %q", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("BLPOP was not woken by a push through another agent")
	}

	gone := a.dial(t)
	gone.nc.Write([]byte("*3\r\n$5\r\nBLPOP\r\n$" + strconv.Itoa(len(q)) + "\r\n" + q + "\r\n$1\r\n0\r\n"))
	deadline := time.Now().Add(5 * time.Second)
	for waitingOnShard() != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := waitingOnShard(); n != 1 {
		t.Fatalf("%d shard connections in BLPOP while one client waits", n)
	}
	gone.nc.Close()
	for waitingOnShard() > 0 && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(20 * time.Millisecond)
	}
	if n, blocked := waitingOnShard(), a.srv.Stats.BlockedClients.Load(); n > 0 || blocked > 0 {
		t.Errorf("after the waiter hung up: %d shard connections still in BLPOP, %d clients counted as blocked", n, blocked)
	}
}

// TestAScriptLongerThanTheShardTimeoutRunsToItsEnd: a script is not a request that a slow
// shard failed; it ran into the shard timeout (300 ms here) and answered CFDOWN, counting a
// failure against the shard's breaker (Valkey's scripting suite ended there).
func TestAScriptLongerThanTheShardTimeoutRunsToItsEnd(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c := a.dial(t)
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	slow := `local x = 0 for i = 1, 60000000 do x = x + i end return 'done'` // about 0.8 s on this VM
	if got := c.do("EVAL", slow, "1", "slow:k"); got != "done" {
		t.Errorf("a script of about 0.8 s = %q, want its result", got)
	}
	if got := c.do("EVAL", slow, "0"); got != "done" {
		t.Errorf("a script of about 0.8 s without keys = %q", got)
	}
}
