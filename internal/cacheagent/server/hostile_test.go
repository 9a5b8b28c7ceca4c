package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestEmptyCommandFloodFromAnUnauthenticatedClient: 16 MB of "*0" once overflowed the
// parser's stack and killed the agent for every application on the node.
func TestEmptyCommandFloodFromAnUnauthenticatedClient(t *testing.T) {
	o := defaults()
	o.config.Password = "s3cret"
	shards := []*tu.Redis{tu.StartRedis(t, "s3cret")}
	a := startAgent(t, shards, o)
	flood := a.dial(t)
	flood.nc.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := flood.nc.Write(bytes.Repeat([]byte("*0\r\n"), 4<<20)); err != nil {
		t.Fatalf("writing the flood: %v", err)
	}
	// Empty commands get no reply (as in Valkey); the same connection then still works.
	if got := flood.do("PING"); got != "ERR:NOAUTH Authentication required." {
		t.Errorf("PING after the flood, before AUTH = %q", got)
	}
	if got := flood.do("AUTH", "s3cret"); got != "OK" {
		t.Errorf("AUTH after the flood = %q", got)
	}
	other := a.dial(t)
	other.do("AUTH", "s3cret")
	if got := other.do("SET", "k", "v"); got != "OK" {
		t.Errorf("another client after the flood: SET = %q", got)
	}
}

// TestOversizedValueKeepsTheConnection: a 4 MB value against a 1 KB limit is refused with a
// clear error, nothing is stored, and the client's connection is not reset.
func TestOversizedValueKeepsTheConnection(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults()) // maxValueBytes 1024
	c := a.dial(t)
	big := strings.Repeat("v", 4<<20)
	got := c.do("SET", "big", big)
	if got != "ERR:ERR value of 4194304 bytes for key 'big' exceeds the limit of 1024 bytes" {
		t.Errorf("SET of 4 MB = %q", truncateForLog(got))
	}
	// Pipelined behind another oversized write: both refused, replies in order.
	c.nc.Write(append(append(tu.Encode("SET", "big2", big), tu.Encode("MSET", "a", "1", "b", big)...), tu.Encode("GET", "big")...))
	for i, want := range []string{
		"ERR:ERR value of 4194304 bytes for key 'big2' exceeds the limit of 1024 bytes",
		"ERR:ERR value of 4194304 bytes for key 'a' exceeds the limit of 1024 bytes",
		"(nil)",
	} {
		if got, err := tu.ReadReply(c.rd); err != nil || got != want {
			t.Errorf("pipelined reply %d = %q, %v; want %q", i, truncateForLog(got), err, want)
		}
	}
	if got := c.do("PING"); got != "PONG" {
		t.Errorf("PING on the same connection = %q", got)
	}
	for _, sh := range shards {
		if n, _ := sh.Do("DBSIZE"); n != "0" {
			t.Errorf("a refused value reached shard %s (%s keys)", sh.Addr(), n)
		}
	}
}

func truncateForLog(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// TestPasswordChangesWhileClientsAuthenticate: the password is changed (Kubernetes mode reads
// it from the fleet's Secret) while open connections authenticate; run under -race.
func TestPasswordChangesWhileClientsAuthenticate(t *testing.T) {
	o := defaults()
	o.config.Password = "one"
	a := startAgent(t, []*tu.Redis{tu.StartRedis(t, "one")}, o)
	conns := []*conn{a.dial(t), a.dial(t), a.dial(t)}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				a.srv.SetPassword("one")
				return
			default:
				a.srv.SetPassword([]string{"one", "two"}[i%2])
			}
		}
	}()
	for range 100 {
		for _, c := range conns {
			if got := c.do("AUTH", "one"); got != "OK" && got != "ERR:WRONGPASS invalid username-password pair or user is disabled." {
				t.Errorf("AUTH during a password change = %q", got)
			}
		}
	}
	close(stop)
	<-done
	if got := a.dial(t).do("AUTH", "one"); got != "OK" {
		t.Errorf("AUTH with the final password = %q", got)
	}
}

// TestUnauthenticatedFramesAreBoundedAsValkeyBoundsThem: before AUTH, Valkey closes a
// connection that announces more than 10 arguments or an argument over 16 KiB. The agent once
// buffered whole 62 MiB commands from 30 such clients (2.5 GB). Same bytes, same answer.
func TestUnauthenticatedFramesAreBoundedAsValkeyBoundsThem(t *testing.T) {
	o := defaults()
	o.config.Password = "s3cret"
	valkey := tu.StartRedis(t, "s3cret")
	a := startAgent(t, []*tu.Redis{valkey}, o)
	for _, frame := range []string{
		"*11\r\n",
		"*2\r\n$3\r\nSET\r\n$65000000\r\n" + strings.Repeat("y", 38),
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16385\r\n",
	} {
		var got [2]string
		for i, addr := range []string{valkey.Addr(), a.addr} {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			nc.Write([]byte(frame))
			all, _ := io.ReadAll(nc) // to the close: both must close the connection
			nc.Close()
			got[i] = string(all)
		}
		if got[0] != got[1] || !strings.HasPrefix(got[1], "-ERR Protocol error: unauthenticated") {
			t.Errorf("%q before AUTH: Valkey %q, agent %q", truncateForLog(frame), got[0], got[1])
		}
	}
	// Within the bounds, and after AUTH, the same connection takes large commands.
	c := a.dial(t)
	if got := c.do("SET", "k", strings.Repeat("v", 16<<10)); got != "ERR:NOAUTH Authentication required." {
		t.Errorf("a 16 KiB SET before AUTH = %q", got)
	}
	c.do("AUTH", "s3cret")
	if got := c.do("SET", "k", strings.Repeat("v", 1000)); got != "OK" {
		t.Errorf("SET after AUTH = %q", got)
	}
}

// TestMgetOfAHundredThousandKeys: Valkey answers an MGET of 100,000 keys; the agent once
// closed the connection with a protocol error.
func TestMgetOfAHundredThousandKeys(t *testing.T) {
	shards := twoShards(t)
	o := defaults() // the MGET needs more than the shard timeout, and is given it by its size (router)
	o.config.ShardTimeout = time.Second * raceSlowdown
	a := startAgent(t, shards, o)
	c := a.dial(t)
	c.do("SET", "key:7", "seven")
	args := []string{"MGET"}
	for i := range 100000 {
		args = append(args, fmt.Sprintf("key:%d", i))
	}
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	c.nc.Write(tu.Encode(args...))
	raw, err := tu.ReadRaw(c.rd)
	if err != nil {
		t.Fatalf("MGET of 100,000 keys: %v", err)
	}
	if !bytes.HasPrefix(raw, []byte("*100000\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$5\r\nseven\r\n$-1\r\n")) {
		t.Errorf("MGET of 100,000 keys answered %q...", raw[:min(len(raw), 80)])
	}
	if got := c.do("PING"); got != "PONG" {
		t.Errorf("PING after = %q", got)
	}
}

// TestABusyScriptIsKilledAndReportedAsBusy: EVAL 'while true do end' once left its shard BUSY
// for good: SCRIPT KILL was refused, reads of the shard's keys answered nil and writes CFDOWN.
func TestABusyScriptIsKilledAndReportedAsBusy(t *testing.T) {
	shards := twoShards(t)
	o := defaults()
	o.config.ShardTimeout = 3 * time.Second
	a := startAgent(t, shards, o)
	k := keyOn(t, a, "busy:", 0)
	other := keyOn(t, a, "other:", 0)
	if _, err := shards[0].Do("CONFIG", "SET", "busy-reply-threshold", "100"); err != nil {
		t.Fatal(err)
	}
	b := a.dial(t)
	b.do("SET", other, "v")
	looper := a.dial(t)
	looper.nc.SetDeadline(time.Now().Add(10 * time.Second))
	looper.nc.Write(tu.Encode("EVAL", "while true do end", "1", k))
	time.Sleep(300 * time.Millisecond) // past busy-reply-threshold: the shard now answers BUSY
	if got := b.do("GET", other); !strings.HasPrefix(got, "ERR:BUSY") {
		t.Errorf("GET of the busy shard's key = %q, want Valkey's BUSY", got)
	}
	if got := b.do("SCRIPT", "KILL"); got != "OK" {
		t.Fatalf("SCRIPT KILL = %q", got)
	}
	if got, err := tu.ReadReply(looper.rd); err != nil || !strings.Contains(got, "killed by user") {
		t.Errorf("the looping EVAL's reply = %q, %v", got, err)
	}
	if got := b.do("GET", other); got != "v" {
		t.Errorf("GET after the kill = %q", got)
	}
	if got := b.do("SCRIPT", "KILL"); got != "ERR:NOTBUSY No scripts in execution right now." {
		t.Errorf("SCRIPT KILL with nothing running = %q", got)
	}
	if got := looper.do("EVAL", "return redis.call('GET', KEYS[1])", "1", other); got != "v" {
		t.Errorf("an EVAL after = %q", got)
	}
}

// TestEmptyPrefixInvalidationIsRefusedAsFlushall: CF.INVALIDATE PREFIX "" once deleted every
// key on every shard although FLUSHALL was refused; POST /v1/invalidate likewise.
func TestEmptyPrefixInvalidationIsRefusedAsFlushall(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	for i := range 20 {
		c.do("SET", fmt.Sprintf("k%d", i), "v")
	}
	if got := c.do("CF.INVALIDATE", "PREFIX", ""); !strings.HasPrefix(got, "ERR:ERR an empty prefix names every key") {
		t.Errorf("CF.INVALIDATE PREFIX \"\" = %q", got)
	}
	if got := c.do("CF.INVALIDATE", "PREFIX", "k1", ""); !strings.HasPrefix(got, "ERR:") {
		t.Errorf("CF.INVALIDATE PREFIX k1 \"\" = %q", got)
	}
	base := httptestServer(t, a)
	req, _ := http.NewRequest("POST", base+"/v1/invalidate", strings.NewReader(`{"prefixes": [""]}`))
	req.Header.Set("Authorization", "Bearer "+string(busKey))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("POST /v1/invalidate of prefix \"\": %d, want 403", res.StatusCode)
	}
	total := 0
	for _, sh := range shards {
		n, _ := sh.Do("DBSIZE")
		var k int
		fmt.Sscan(n, &k)
		total += k
	}
	if total != 20 {
		t.Errorf("%d of 20 keys left after refused invalidations", total)
	}
	if got := c.do("CF.INVALIDATE", "PREFIX", "k1"); got != "11" {
		t.Errorf("CF.INVALIDATE PREFIX k1 = %q, want 11 (k1, k10..k19)", got)
	}
}

// TestScriptsCannotFlushOrReconfigureTheShards: EVAL "return redis.call('FLUSHALL')" once
// emptied every key of its shard although the agent refuses FLUSHALL. Scripts run as a shard
// user without @admin and @dangerous, inside MULTI too.
func TestScriptsCannotFlushOrReconfigureTheShards(t *testing.T) {
	for _, pw := range []string{"", "s3cret"} {
		t.Run("password="+pw, func(t *testing.T) {
			shards := []*tu.Redis{tu.StartRedis(t, pw), tu.StartRedis(t, pw)}
			o := defaults()
			o.config.Password = pw
			a := startAgent(t, shards, o)
			c := a.dial(t)
			if pw != "" {
				c.do("AUTH", pw)
			}
			k := keyOn(t, a, "k", 0)
			c.do("SET", k, "v")
			for _, script := range []string{
				"return redis.call('FLUSHALL')",
				"return redis.call('flushdb')",
				"return redis.call('SWAPDB', '0', '1')",
				"return redis.call('MIGRATE', '127.0.0.1', '1', KEYS[1], '0', '100')",
				"return redis.call('KEYS', '*')",
			} {
				if got := c.do("EVAL", script, "1", k); !strings.Contains(got, "User cachefleet-scripts has no permissions") {
					t.Errorf("EVAL %s = %q, want a permission error", script, got)
				}
			}
			c.do("MULTI")
			c.do("SET", k, "in-tx")
			c.do("EVAL", "return redis.call('FLUSHALL')", "1", k)
			if got := c.do("EXEC"); !strings.Contains(got, "no permissions") {
				t.Errorf("EXEC of a flushing script = %q", got)
			}
			if got := c.do("GET", k); got != "in-tx" {
				t.Errorf("after the refused scripts GET = %q", got)
			}
			if got := c.do("EVAL", "return redis.call('INCR', KEYS[1])", "1", "n:"+k); got != "1" {
				t.Errorf("a script that writes its key = %q", got)
			}
			// The agent's own connections keep the default user: SCAN, DBSIZE, tracking work.
			if got := c.do("DBSIZE"); got != "2" {
				t.Errorf("DBSIZE = %q", got)
			}
		})
	}
}

// TestWatchNeverBlocksAndGivesItsConnectionBack: the 1,025th WATCH on a shard once blocked
// forever, clients that hung up kept their connections, and the 1,024 connections stayed open
// for good. WATCH now waits at most the shard timeout for a place, and a connection goes back
// when its client hangs up, EXECs, DISCARDs or UNWATCHes; idle ones are closed.
func TestWatchNeverBlocksAndGivesItsConnectionBack(t *testing.T) {
	shards := twoShards(t)
	o := defaults()
	o.config.MaxDedicated = 8
	o.config.PoolIdle = 300 * time.Millisecond
	a := startAgent(t, shards, o)
	k := keyOn(t, a, "w", 0)
	c0 := a.dial(t)
	c0.do("SET", k, "v")
	baseline := shardClients(t, shards[0])
	var watchers []*conn
	for i := range 8 {
		c := a.dial(t)
		if got := c.do("WATCH", k); got != "OK" {
			t.Fatalf("WATCH %d = %q", i, got)
		}
		watchers = append(watchers, c)
	}
	if n := shardClients(t, shards[0]); n < baseline+8 {
		t.Fatalf("8 WATCHes hold %d shard connections more than before, want 8", n-baseline)
	}
	extra := a.dial(t)
	start := time.Now()
	if got := extra.do("WATCH", k); !strings.Contains(got, "8 clients already hold a connection of their own") {
		t.Errorf("the 9th WATCH = %q", got)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("the 9th WATCH waited %v", waited)
	}
	// Places come back when a client hangs up, EXECs, DISCARDs or UNWATCHes.
	watchers[0].nc.Close()
	watchers[1].do("MULTI")
	watchers[1].do("SET", k, "x")
	watchers[1].do("EXEC")
	watchers[2].do("MULTI")
	watchers[2].do("DISCARD")
	watchers[3].do("UNWATCH")
	for i := range 4 {
		c := a.dial(t)
		if got := c.do("WATCH", k); got != "OK" {
			t.Errorf("WATCH %d after four places were given back = %q", i, got)
		}
		c.do("UNWATCH")
	}
	for _, c := range watchers[4:] {
		c.nc.Close()
	}
	// The shard's connections shrink back once the WATCH connections are idle.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := shardClients(t, shards[0])
		if n <= baseline+4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shard connections %d, %d before the WATCHes", n, baseline)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := c0.do("SET", k, "after"); got != "OK" {
		t.Errorf("SET after = %q", got)
	}
}

// shardClients counts a shard's client connections.
func shardClients(t *testing.T, r *tu.Redis) int {
	t.Helper()
	out, err := r.Do("CLIENT", "LIST")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(out, "id=") - 1 // less the one asking
}

// TestCrossShardMsetWithAShardDownSaysWhatWasWritten: a cross-shard MSET with one shard down
// once answered CFDOWN while the other shard's half was written, and the client could not
// know which. It is not atomic (Valkey Cluster refuses it outright); the error names the keys.
func TestCrossShardMsetWithAShardDownSaysWhatWasWritten(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	c := a.dial(t)
	up, down := keyOn(t, a, "up:", 0), keyOn(t, a, "down:", 1)
	shards[1].Stop()
	got := c.do("MSET", up, "1", down, "2")
	want := fmt.Sprintf("written: '%s'; not written: '%s'", up, down)
	if !strings.HasPrefix(got, "ERR:CFDOWN shard shard-1 is unavailable") || !strings.HasSuffix(got, want) {
		t.Errorf("MSET with shard-1 down = %q, want CFDOWN ... %s", got, want)
	}
	if v, _ := shards[0].Do("GET", up); v != "1" {
		t.Errorf("the key on the live shard = %q", v)
	}
}

// TestAClientThatHangsUpIsLetGo: with the event loop, a client that sent a command and
// closed its side was never closed by the agent (the end of the stream came with the command,
// in the one epoll edge): each such client held a connection and a goroutine until it closed
// for good. Found by FuzzDispatch.
func TestAClientThatHangsUpIsLetGo(t *testing.T) {
	shards := twoShards(t)
	for _, loops := range []int{1, 0} {
		o := defaults()
		o.config.EventLoops = loops
		a := startAgent(t, shards, o)
		for _, in := range []string{"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", "PING\r\n", "*1\r\n$4\r\nPING\r\n"} {
			for range 5 {
				nc, err := net.Dial("tcp", a.addr)
				if err != nil {
					t.Fatal(err)
				}
				nc.SetDeadline(time.Now().Add(3 * time.Second))
				nc.Write([]byte(in))
				nc.(*net.TCPConn).CloseWrite()
				reply, err := io.ReadAll(nc) // to the agent's close
				nc.Close()
				if err != nil || len(reply) == 0 {
					t.Errorf("event-loops=%d: %q then a half-close: read %q, %v; want the reply and the agent's close", loops, in, reply, err)
				}
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for a.srv.Stats.Clients.Load() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := a.srv.Stats.Clients.Load(); n != 0 {
			t.Errorf("event-loops=%d: %d connections still open after their clients left", loops, n)
		}
	}
}
