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
)

// l1Mode is one of the agent's L1 configurations; read-your-writes must hold in each.
type l1Mode struct {
	name string
	set  func(*options)
}

// agentIn starts an agent over shards in this mode, after tweak adjusts the options.
func (m l1Mode) agentIn(t *testing.T, shards []*tu.Redis, tweak func(*options)) *agent {
	o := defaults()
	m.set(&o)
	if tweak != nil {
		tweak(&o)
	}
	return startAgent(t, shards, o)
}

func noMinUsable(o *options) { o.defaults.MinUsableTTL = 0 }

var l1Modes = []l1Mode{
	{"tracking", func(o *options) {}},
	{"ttl", func(o *options) { o.defaults.TTLModeForAll = true }},
	{"off", func(o *options) { o.defaults.L1 = false }},
}

// TestReadYourWrites: after a client's write returns, its next read through the same agent
// sees the new state, while other clients keep reading (and filling L1 with) the same key.
// Writers await each command; a second pass pipelines GET, write, GET in one round trip.
func TestReadYourWrites(t *testing.T) {
	const writers, rounds = 4, 2500
	shards := twoShards(t)
	for _, mode := range l1Modes {
		t.Run(mode.name, func(t *testing.T) {
			a := mode.agentIn(t, shards, noMinUsable)
			var wrong, total atomic.Int64
			var firstWrong atomic.Value
			report := func(format string, args ...any) {
				wrong.Add(1)
				firstWrong.CompareAndSwap(nil, fmt.Sprintf(format, args...))
			}
			stop := make(chan struct{})
			var readers, wg sync.WaitGroup
			for w := range writers {
				key := fmt.Sprintf("ryw:%s:%d", mode.name, w)
				// Two readers per key keep filling the agent's L1 with whatever is current.
				for range 2 {
					rc := a.dial(t)
					readers.Go(func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
							if _, err := tu.RoundTrip(rc.nc, rc.rd, "GET", key); err != nil {
								return
							}
						}
					})
				}
				c := a.dial(t)
				wg.Go(func() {
					for i := range rounds {
						v := strconv.Itoa(i)
						total.Add(1)
						switch i % 5 {
						case 0: // SET then GET
							c.do("SET", key, "old"+v)
							c.do("GET", key)
							c.do("SET", key, "new"+v)
							if got := c.do("GET", key); got != "new"+v {
								report("SET new%s then GET = %q", v, got)
							}
						case 1: // SET then MGET, which reads the L1 too
							c.do("SET", key, "old"+v)
							c.do("GET", key)
							c.do("SET", key, "new"+v)
							if got := c.do("MGET", key, key); got != "[new"+v+" new"+v+"]" {
								report("SET new%s then MGET = %q", v, got)
							}
						case 2: // DEL then GET
							c.do("GET", key)
							c.do("DEL", key)
							if got := c.do("GET", key); got != "(nil)" {
								report("DEL then GET = %q", got)
							}
						case 3: // INCR then GET
							c.do("SET", key, "10")
							c.do("GET", key)
							c.do("INCR", key)
							if got := c.do("GET", key); got != "11" {
								report("INCR 10 then GET = %q", got)
							}
						case 4: // GETDEL then GET
							c.do("SET", key, "x"+v)
							c.do("GET", key)
							c.do("GETDEL", key)
							if got := c.do("GET", key); got != "(nil)" {
								report("GETDEL then GET = %q", got)
							}
						}
					}
					// Pipelined: GET k; SET k v2; GET k (or MGET k) in one write.
					for i := range rounds / 5 {
						v := "p" + strconv.Itoa(i)
						read, want := tu.Encode("GET", key), v
						if i%2 == 1 {
							read, want = tu.Encode("MGET", key), "["+v+"]"
						}
						total.Add(1)
						c.nc.SetDeadline(time.Now().Add(5 * time.Second))
						c.nc.Write(append(append(tu.Encode("GET", key), tu.Encode("SET", key, v)...), read...))
						var got [3]string
						for j := range got {
							var err error
							if got[j], err = tu.ReadReply(c.rd); err != nil {
								report("pipeline: %v", err)
								return
							}
						}
						if got[1] != "OK" || got[2] != want {
							report("pipelined GET, SET %s, GET or MGET = %q", v, got)
						}
					}
				})
			}
			wg.Wait()
			close(stop)
			readers.Wait()
			t.Logf("read-your-writes %s: %d wrong reads in %d rounds", mode.name, wrong.Load(), total.Load())
			if n := wrong.Load(); n != 0 {
				t.Errorf("%d of %d rounds read a state older than the client's own write; first: %s", n, total.Load(), firstWrong.Load())
			}
		})
	}
}

// TestReadYourWritesAfterExpire: EXPIRE/PERSIST through the agent are seen by the next TTL
// read, and a key expired by PEXPIRE 1 is gone for the next GET even if L1 held it.
func TestReadYourWritesAfterExpire(t *testing.T) {
	shards := twoShards(t)
	for _, mode := range l1Modes {
		t.Run(mode.name, func(t *testing.T) {
			a := mode.agentIn(t, shards, noMinUsable)
			c := a.dial(t)
			for i := range 200 {
				key := "exp:" + mode.name + strconv.Itoa(i)
				c.do("SET", key, "v")
				c.do("GET", key)
				c.do("PEXPIRE", key, "1")
				time.Sleep(2 * time.Millisecond)
				if got := c.do("GET", key); got != "(nil)" && !strings.HasPrefix(got, "ERR") {
					t.Fatalf("GET after PEXPIRE 1 = %q", got)
				}
			}
		})
	}
}

// TestOneConnectionPerShard: valkey-go's writes and tracked reads of a key must share one
// connection, or the shard may answer them out of order (valkey-go's default is up to four per
// client). The event loop's own connection (named) carries plain GETs and SETs only; its writes
// are fenced before their replies like any other (TestReadYourWrites).
func TestOneConnectionPerShard(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	var wg sync.WaitGroup
	for g := range 8 {
		c := a.dial(t)
		wg.Go(func() {
			for i := range 200 {
				k := fmt.Sprintf("conn:%d:%d", g, i%10)
				c.do("SET", k, "v")
				c.do("GET", k)
				c.do("MGET", k, "other")
			}
		})
	}
	wg.Wait()
	for i, sh := range shards {
		list, err := sh.Do("CLIENT", "LIST")
		if err != nil {
			t.Fatal(err)
		}
		n, loop := 0, 0
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			switch {
			case strings.Contains(line, "cmd=client|list"):
			case strings.Contains(line, " name="+upstream.Name+" "):
				loop++
			default:
				n++
			}
		}
		if n != 1 || loop > 1 {
			t.Errorf("shard %d has %d valkey-go connections from the agent (want 1) and %d of the loop's (want at most 1):\n%s", i, n, loop, list)
		}
	}
}
