package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
	"github.com/cachefleet/cachefleet/internal/cacheagent/source"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// These tests run real redis-server processes as shards and real agents on loopback.

type agent struct {
	srv  *server.Server
	addr string
	// goneAt records when the bus removed a key from this agent's L1 (bus agents only).
	goneAt sync.Map
}

type options struct {
	defaults source.Defaults
	config   server.Config
}

func defaults() options {
	o := options{
		defaults: source.Defaults{L1: true, L1MaxMemory: 16 << 20, L1MaxTTL: time.Minute, DefaultTTL: time.Hour,
			MinUsableTTL: 5 * time.Second, MaxValueBytes: 1024},
		config: server.DefaultConfig(),
	}
	o.config.ShardTimeout = 300 * time.Millisecond
	o.config.Cooldown = 500 * time.Millisecond
	return o
}

func startAgent(t testing.TB, shards []*tu.Redis, o options) *agent {
	t.Helper()
	var addrs []string
	for _, r := range shards {
		addrs = append(addrs, r.Addr())
	}
	return startAgentAt(t, addrs, o)
}

// startAgentAt is startAgent over shards at addrs (a proxy in front of one, say).
func startAgentAt(t testing.TB, addrs []string, o options) *agent {
	t.Helper()
	var spec []string
	for i, addr := range addrs {
		spec = append(spec, fmt.Sprintf("shard-%d=%s", i, addr))
	}
	o.defaults.PasswordEnabled = o.config.Password != ""
	doc, err := source.StaticDocument(strings.Join(spec, ","), o.defaults)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(o.config)
	if err := srv.SetRing(doc); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if n := srv.Stats.Panics.Load(); n > 0 {
			t.Errorf("%d client connections panicked (see the log)", n)
		}
	})
	return &agent{srv: srv, addr: ln.Addr().String()}
}

type conn struct {
	t  *testing.T
	nc net.Conn
	rd *bufio.Reader
}

func (a *agent) dial(t *testing.T) *conn {
	t.Helper()
	nc, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &conn{t: t, nc: nc, rd: bufio.NewReader(nc)}
}

func (c *conn) do(args ...string) string {
	c.t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	out, err := tu.RoundTrip(c.nc, c.rd, args...)
	if err != nil {
		c.t.Fatalf("%v: %v", args, err)
	}
	return out
}

// send sends a command without waiting for its reply (reply reads it).
func (c *conn) send(args ...string) {
	c.t.Helper()
	if _, err := c.nc.Write(tu.Encode(args...)); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads the next reply.
func (c *conn) reply() string {
	c.t.Helper()
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	return c.replies(1)[0]
}

// replies reads n replies, as tu.ReadReply renders them.
func (c *conn) replies(n int) []string {
	c.t.Helper()
	var out []string
	for range n {
		r, err := tu.ReadReply(c.rd)
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func twoShards(t *testing.T) []*tu.Redis {
	return []*tu.Redis{tu.StartRedis(t, ""), tu.StartRedis(t, "")}
}

// keyOn returns a key with the given prefix owned by shard i of agent a.
func keyOn(t *testing.T, a *agent, prefix string, i int) string {
	t.Helper()
	for n := 0; n < 10000; n++ {
		k := prefix + strconv.Itoa(n)
		if a.srv.Router().Index([]byte(k)) == i {
			return k
		}
	}
	t.Fatal("no key found")
	return ""
}

func TestWriteThroughOneAgentReadThroughAnother(t *testing.T) {
	shards := twoShards(t)
	a, b := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	ca, cb := a.dial(t), b.dial(t)
	for i := 0; i < 20; i++ {
		k := "user:" + strconv.Itoa(i)
		if got := ca.do("SET", k, "v"+strconv.Itoa(i)); got != "OK" {
			t.Fatalf("SET = %q", got)
		}
		if got := cb.do("GET", k); got != "v"+strconv.Itoa(i) {
			t.Fatalf("GET %s through B = %q", k, got)
		}
	}
	// Both shards hold keys: the ring spreads them.
	for _, r := range shards {
		if n, _ := r.Do("DBSIZE"); n == "0" {
			t.Errorf("shard %s holds no keys", r.Addr())
		}
	}
}

func TestTTLsGivenAndPreserved(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	c.do("SET", "plain", "v")
	if pttl, _ := strconv.Atoi(c.do("PTTL", "plain")); pttl < 3_590_000 || pttl > 3_600_000 {
		t.Errorf("a SET without expiry got PTTL %d, want the default TTL (1h)", pttl)
	}
	c.do("SET", "explicit", "v", "EX", "100")
	if ttl := c.do("TTL", "explicit"); ttl != "100" && ttl != "99" {
		t.Errorf("explicit EX 100 became TTL %s", ttl)
	}
	c.do("SETEX", "sx", "50", "v")
	if ttl := c.do("TTL", "sx"); ttl != "50" && ttl != "49" {
		t.Errorf("SETEX 50 became TTL %s", ttl)
	}
	if got := c.do("INCR", "counter"); got != "1" {
		t.Errorf("INCR = %s", got)
	}
	if ttl, _ := strconv.Atoi(c.do("TTL", "counter")); ttl < 3590 {
		t.Errorf("a counter created by INCR has TTL %d, want the default TTL", ttl)
	}
	c.do("EXPIRE", "counter", "30")
	c.do("INCRBY", "counter", "5")
	if ttl, _ := strconv.Atoi(c.do("TTL", "counter")); ttl > 30 {
		t.Errorf("INCRBY extended the TTL to %d", ttl)
	}
	if got := c.do("DECRBY", "counter", "2"); got != "4" {
		t.Errorf("DECRBY = %s", got)
	}
	c.do("SET", "keep", "v", "EX", "40")
	c.do("SET", "keep", "v2", "KEEPTTL")
	if ttl, _ := strconv.Atoi(c.do("TTL", "keep")); ttl > 40 || ttl < 38 {
		t.Errorf("KEEPTTL gave TTL %d", ttl)
	}
	if got := c.do("GETEX", "keep", "PERSIST"); got != "v2" {
		t.Errorf("GETEX = %s", got)
	}
	if got := c.do("GETDEL", "keep"); got != "v2" || c.do("EXISTS", "keep") != "0" {
		t.Errorf("GETDEL = %s", got)
	}
	if got := c.do("SET", "nx", "1", "NX", "GET"); got != "(nil)" {
		t.Errorf("SET NX GET on a new key = %s", got)
	}
	if got := c.do("TYPE", "nx"); got != "string" {
		t.Errorf("TYPE = %s", got)
	}
}

func TestMultiKeyCommandsAcrossShards(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	k0, k1 := keyOn(t, a, "m:", 0), keyOn(t, a, "m:", 1)
	if got := c.do("MSET", k0, "zero", k1, "one"); got != "OK" {
		t.Fatalf("MSET = %s", got)
	}
	if got := c.do("MGET", k1, "missing", k0); got != "[one (nil) zero]" {
		t.Errorf("MGET = %s", got)
	}
	if got := c.do("EXISTS", k0, k1, "missing", k0); got != "3" {
		t.Errorf("EXISTS = %s", got)
	}
	if ttl, _ := strconv.Atoi(c.do("TTL", k1)); ttl < 3590 {
		t.Errorf("MSET gave TTL %d", ttl)
	}
	if got := c.do("DEL", k0, k1, "missing"); got != "2" {
		t.Errorf("DEL = %s", got)
	}
	if got := c.do("MGET", k0, k1); got != "[(nil) (nil)]" {
		t.Errorf("after DEL, MGET = %s", got)
	}
}

func TestPipelinedRepliesKeepTheClientsOrder(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	var req []byte
	const n = 300
	for i := 0; i < n; i++ {
		k := "p:" + strconv.Itoa(i)
		req = append(req, tu.Encode("SET", k, strconv.Itoa(i))...)
		req = append(req, tu.Encode("GET", k)...)
		req = append(req, tu.Encode("PING")...)
	}
	if _, err := c.nc.Write(req); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		for _, want := range []string{"OK", strconv.Itoa(i), "PONG"} {
			got, err := tu.ReadReply(c.rd)
			if err != nil || got != want {
				t.Fatalf("reply %d: %q (%v), want %q", i, got, err, want)
			}
		}
	}
}

func TestOversizedValuesAreRefused(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c := a.dial(t)
	big := strings.Repeat("x", 1025)
	if got := c.do("SET", "big", big); !strings.HasPrefix(got, "ERR:ERR value of 1025 bytes") {
		t.Errorf("SET of an oversized value = %q", got)
	}
	if got := c.do("MSET", "a", "1", "big", big); !strings.HasPrefix(got, "ERR:") || c.do("EXISTS", "a") != "0" {
		t.Errorf("MSET with an oversized value = %q; nothing may be stored", got)
	}
	if got := c.do("GET", "big"); got != "(nil)" {
		t.Errorf("oversized value was stored: %q", got)
	}
	if got := c.do("SET", "fits", strings.Repeat("x", 1024)); got != "OK" {
		t.Errorf("a value at the limit was refused: %q", got)
	}
	// A string grown past the limit is refused in Valkey's words (for proto-max-bulk-len); an
	// empty SETRANGE grows nothing, and is answered as Valkey answers it.
	if got := c.do("SETRANGE", "grown", "1020", "12345"); got != "ERR:ERR string exceeds maximum allowed size (the limit of 1024 bytes for key 'grown')" {
		t.Errorf("SETRANGE past the limit = %q", got)
	}
	if got := c.do("SETRANGE", "grown", "5000", ""); got != "0" {
		t.Errorf("an empty SETRANGE far out = %q", got)
	}
}

func TestBadInputKeepsTheAgentAlive(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c := a.dial(t)
	if got := c.do("NOSUCHCOMMAND", "l", "x"); !strings.HasPrefix(got, "ERR:ERR unknown command 'NOSUCHCOMMAND'") {
		t.Errorf("unknown command = %q", got)
	}
	if got := c.do("GET"); got != "ERR:ERR wrong number of arguments for 'get' command" {
		t.Errorf("wrong arity = %q", got)
	}
	if got := c.do("SELECT", "1"); !strings.HasPrefix(got, "ERR:") {
		t.Errorf("SELECT 1 = %q", got)
	}
	bad := a.dial(t)
	bad.nc.Write([]byte("*1\r\n$x\r\n"))
	if got, _ := tu.ReadReply(bad.rd); !strings.HasPrefix(got, "ERR:ERR Protocol error") {
		t.Errorf("bad frame = %q", got)
	}
	if _, err := tu.ReadReply(bad.rd); err == nil {
		t.Error("the connection with a bad frame stayed open")
	}
	huge := a.dial(t)
	huge.nc.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n"))
	if got, _ := tu.ReadReply(huge.rd); !strings.HasPrefix(got, "ERR:ERR Protocol error: invalid bulk length") {
		t.Errorf("bulk over the limit = %q", got)
	}
	if got := c.do("PING"); got != "PONG" {
		t.Errorf("the agent died with a bad client: %q", got)
	}
}

func TestHelloRESP3AndClientCommands(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c := a.dial(t)
	if got := c.do("HELLO", "3", "SETNAME", "app"); !strings.Contains(got, "proto 3") || !strings.Contains(got, "server cachefleet") {
		t.Errorf("HELLO 3 = %q", got)
	}
	if got := c.do("GET", "missing"); got != "(nil)" {
		t.Errorf("RESP3 nil = %q", got)
	}
	c.nc.Write(tu.Encode("GET", "missing"))
	if line, _ := c.rd.ReadString('\n'); line != "_\r\n" {
		t.Errorf("RESP3 null is %q", line)
	}
	if got := c.do("CLIENT", "GETNAME"); got != "app" {
		t.Errorf("CLIENT GETNAME = %q", got)
	}
	if got := c.do("CLIENT", "SETINFO", "LIB-NAME", "x"); got != "OK" {
		t.Errorf("CLIENT SETINFO = %q", got)
	}
	if got := c.do("ECHO", "hi"); got != "hi" {
		t.Errorf("ECHO = %q", got)
	}
	if got := c.do("INFO"); !strings.Contains(got, "ring_epoch:1") {
		t.Errorf("INFO = %q", got)
	}
	if got := c.do("QUIT"); got != "OK" {
		t.Errorf("QUIT = %q", got)
	}
}

func TestAuthIsRequiredWhenConfigured(t *testing.T) {
	shards := []*tu.Redis{tu.StartRedis(t, "s3cret"), tu.StartRedis(t, "s3cret")}
	o := defaults()
	o.config.Password = "s3cret"
	a := startAgent(t, shards, o)
	c := a.dial(t)
	if got := c.do("GET", "k"); !strings.HasPrefix(got, "ERR:NOAUTH") {
		t.Errorf("GET before AUTH = %q", got)
	}
	if got := c.do("AUTH", "wrong"); !strings.HasPrefix(got, "ERR:WRONGPASS") {
		t.Errorf("AUTH wrong = %q", got)
	}
	if got := c.do("AUTH", "s3cret"); got != "OK" {
		t.Fatalf("AUTH = %q", got)
	}
	if got := c.do("SET", "k", "v"); got != "OK" {
		t.Errorf("SET after AUTH (shards need the password too) = %q", got)
	}
}

func TestDirectWriteOnAShardInvalidatesTrackedL1(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	c.do("SET", "tracked", "v1")
	c.do("GET", "tracked")
	hits := a.srv.Stats.L1Hits.Load()
	if got := c.do("GET", "tracked"); got != "v1" || a.srv.Stats.L1Hits.Load() != hits+1 {
		t.Fatalf("second GET = %q, L1 hits %d -> %d: not served from L1", got, hits, a.srv.Stats.L1Hits.Load())
	}
	owner := shards[a.srv.Router().Index([]byte("tracked"))]
	if _, err := owner.Do("SET", "tracked", "v2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for c.do("GET", "tracked") != "v2" {
		if time.Now().After(deadline) {
			t.Fatal("the L1 copy outlived a direct write on its shard")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTrackingL1KeepsOnlyUsableValues(t *testing.T) {
	o := defaults()
	o.defaults.MinUsableTTL = time.Second
	a := startAgent(t, twoShards(t), o)
	c := a.dial(t)
	c.do("SET", "long", "v", "PX", "5000")
	c.do("SET", "short", "v", "PX", "800")
	for _, k := range []string{"long", "short"} {
		c.do("GET", k)
	}
	hits := a.srv.Stats.L1Hits.Load()
	c.do("GET", "long")
	if got := a.srv.Stats.L1Hits.Load(); got != hits+1 {
		t.Fatalf("a value with 5s left was not kept in the tracked L1 (hits %d -> %d)", hits, got)
	}
	if got := c.do("GET", "short"); got != "v" || a.srv.Stats.L1Hits.Load() != hits+1 {
		t.Errorf("GET short = %q, L1 hits %d: a value under the minimum usable TTL was kept", got, a.srv.Stats.L1Hits.Load()-hits)
	}
	time.Sleep(900 * time.Millisecond)
	if got := c.do("GET", "short"); got != "(nil)" {
		t.Errorf("GET short after its TTL = %q", got)
	}
}

func TestTTLModeL1IsBoundedByTheL2TTL(t *testing.T) {
	o := defaults()
	o.defaults.TTLModeForAll = true
	o.defaults.MinUsableTTL = 500 * time.Millisecond
	shards := twoShards(t)
	a := startAgent(t, shards, o)
	c := a.dial(t)
	c.do("SET", "short", "v", "PX", "1500")
	c.do("SET", "tooshort", "v", "PX", "300")
	c.do("GET", "short")
	c.do("GET", "tooshort")
	if _, ok := a.srv.L1().Get("short"); !ok {
		t.Error("value not kept in L1")
	}
	if _, ok := a.srv.L1().Get("tooshort"); ok {
		t.Error("a value under the minimum usable TTL was kept in L1")
	}
	time.Sleep(1600 * time.Millisecond)
	if got := c.do("GET", "short"); got != "(nil)" {
		t.Errorf("L1 served %q after the value expired in L2", got)
	}
	// A write through the agent drops its own copy at once.
	c.do("SET", "w", "1")
	c.do("GET", "w")
	c.do("SET", "w", "2")
	if got := c.do("GET", "w"); got != "2" {
		t.Errorf("read after own write = %q", got)
	}
}

func TestShardKilledUnderLoadThenRestarted(t *testing.T) {
	shards := twoShards(t)
	o := defaults()
	o.defaults.L1 = false
	a := startAgent(t, shards, o)
	c := a.dial(t)
	alive, dead := keyOn(t, a, "k:", 0), keyOn(t, a, "k:", 1)
	c.do("SET", alive, "a")
	c.do("SET", dead, "d")

	// Readers hammer both shards while shard-1 dies.
	var errs, reads atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := a.dial(t)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, k := range []string{alive, dead} {
					rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
					got, err := tu.RoundTrip(rc.nc, rc.rd, "GET", k)
					reads.Add(1)
					if err != nil || strings.HasPrefix(got, "ERR:") {
						errs.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	shards[1].Stop()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if errs.Load() != 0 {
		t.Errorf("%d of %d reads answered an error while a shard was down", errs.Load(), reads.Load())
	}
	if got := c.do("GET", dead); got != "(nil)" {
		t.Errorf("read on the dead shard = %q, want a miss", got)
	}
	if got := c.do("GET", alive); got != "a" {
		t.Errorf("read on the live shard = %q", got)
	}
	sh := a.srv.Router().Shards[1]
	if sh.BreakerState() == 0 {
		t.Error("the breaker of the dead shard is closed")
	}
	if got := c.do("SET", dead, "x"); !strings.Contains(got, "CFDOWN shard shard-1") {
		t.Errorf("write to the dead shard = %q, want an error naming shard-1", got)
	}
	if got := c.do("DEL", dead); got != "1" || sh.Pending() != 1 {
		t.Errorf("DEL on the dead shard = %q, %d pending", got, sh.Pending())
	}

	// The shard returns holding the key (as a promoted replica would): the queued delete must
	// reach it before any read does.
	shards[1].Start()
	shards[1].Do("SET", dead, "stale")
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := c.do("GET", dead)
		if got == "(nil)" && sh.Pending() == 0 && sh.BreakerState() == 0 {
			break
		}
		if got == "stale" {
			t.Fatal("a read reached the returning shard before the queued delete")
		}
		if time.Now().After(deadline) {
			t.Fatalf("shard did not recover: breaker %d, pending %d, GET %q", sh.BreakerState(), sh.Pending(), got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := sh.Stats.ReplayedDeletes.Load(); n != 1 {
		t.Errorf("replayed %d deletes, want 1", n)
	}
	if got := c.do("SET", dead, "back"); got != "OK" {
		t.Errorf("write after recovery = %q", got)
	}
}
