//go:build soak

// Package soak runs two agents (the binary, with a password) over two Valkey shards while
// well-behaved clients and hostile neighbours use them at once, for SOAK_DURATION (default
// 60 s): `make soak`. It prints what was served, the errors and wrong values well-behaved
// clients saw, the peak RSS of agents and shards, and fails when a goal is missed: no error
// and no wrong value for well-behaved clients, nothing acknowledged lost, agents alive and
// under 512 MiB.
package soak

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valkey-io/valkey-go"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

const password = "soak-s3cret"

type agentProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func startAgent(t *testing.T, bin string, shards []*tu.Redis) *agentProc {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(password), 0o600)
	port, httpPort := tu.FreePort(t), tu.FreePort(t)
	cmd := exec.Command(bin, "--shards=shard-0="+shards[0].Addr()+",shard-1="+shards[1].Addr(), "--password-file="+pwFile,
		fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--http-listen=127.0.0.1:%d", httpPort), "--max-value-bytes=1048576", "--l1=false")
	cmd.Stderr = os.Stderr
	// As the operator runs it: its container's memory limit (the default, 256 Mi) passed on.
	cmd.Env = append(os.Environ(), "MEMORY_LIMIT="+strconv.Itoa(256<<20))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	for range 100 {
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.Close()
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("agent did not listen")
	return nil
}

func (p *agentProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// rss is a process's resident set in bytes.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type tally struct {
	served, errors, wrong atomic.Int64
	firstErr              atomic.Pointer[string]
}

func (t *tally) fail(kind *atomic.Int64, format string, args ...any) {
	kind.Add(1)
	msg := fmt.Sprintf(format, args...)
	t.firstErr.CompareAndSwap(nil, &msg)
}

func TestSoak(t *testing.T) {
	duration := 60 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		duration = d
	}
	bin := os.Getenv("SOAK_AGENT") // another build to compare, say the last release
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "agent")
		if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/agent").CombinedOutput(); err != nil {
			t.Fatalf("building the agent: %v\n%s", err, out)
		}
	}
	shards := []*tu.Redis{tu.StartRedis(t, password), tu.StartRedis(t, password)}
	agents := []*agentProc{startAgent(t, bin, shards), startAgent(t, bin, shards)}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var good tally
	var hostile atomic.Int64 // hostile actions taken
	var wg sync.WaitGroup

	// Well-behaved: go-redis writers and readers with checksummed values, INCR counters whose
	// acknowledged count must equal the final value, valkey-go with client-side caching.
	var acked [8]atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			a := agents[i%2]
			c := redis.NewClient(&redis.Options{Addr: a.addr, Password: password, MaxRetries: -1, PoolSize: 2})
			defer c.Close()
			counter := fmt.Sprintf("soak:counter:%d", i)
			for n := 0; ctx.Err() == nil; n++ {
				k := fmt.Sprintf("soak:%d:%d", i, n%500)
				v := fmt.Sprintf("%d-%d-%x", i, n, sha256.Sum256([]byte(k)))
				if err := c.Set(ctx, k, v, time.Hour).Err(); err != nil {
					if ctx.Err() == nil {
						good.fail(&good.errors, "SET %s: %v", k, err)
					}
					continue
				}
				got, err := c.Get(ctx, k).Result()
				switch {
				case err != nil && ctx.Err() == nil:
					good.fail(&good.errors, "GET %s: %v", k, err)
				case err == nil && got != v:
					good.fail(&good.wrong, "GET %s = %q, wrote %q", k, got, v)
				}
				if err := c.Incr(ctx, counter).Err(); err == nil {
					acked[i].Add(1)
				} else if ctx.Err() == nil {
					good.fail(&good.errors, "INCR: %v", err)
				}
				good.served.Add(3)
			}
		})
	}
	for i := range 2 {
		wg.Go(func() {
			c, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{agents[i].addr}, Password: password, DisableRetry: true})
			if err != nil {
				good.fail(&good.errors, "valkey-go: %v", err)
				return
			}
			defer c.Close()
			for n := 0; ctx.Err() == nil; n++ {
				k := fmt.Sprintf("soak:vk:%d", n%50)
				if n%10 == 0 {
					if err := c.Do(ctx, c.B().Set().Key(k).Value(k).Build()).Error(); err != nil && ctx.Err() == nil {
						good.fail(&good.errors, "valkey-go SET: %v", err)
					}
				}
				got, err := c.DoCache(ctx, c.B().Get().Key(k).Cache(), time.Minute).ToString()
				switch {
				case valkey.IsValkeyNil(err):
				case err != nil && ctx.Err() == nil:
					good.fail(&good.errors, "valkey-go GET: %v", err)
				case err == nil && got != k:
					good.fail(&good.wrong, "valkey-go GET %s = %q", k, got)
				}
				good.served.Add(1)
			}
		})
	}

	// Hostile neighbours, all at once.
	for _, a := range agents {
		big := strings.Repeat("x", 1<<20)
		setup := redis.NewClient(&redis.Options{Addr: a.addr, Password: password})
		setup.Set(ctx, "soak:big", big, time.Hour)
		setup.Close()
		// Slow readers: pipelines of GETs of 1 MiB values, never read.
		for range slowReaders() {
			wg.Go(func() {
				for ctx.Err() == nil {
					nc, err := net.DialTimeout("tcp", a.addr, time.Second)
					if err != nil {
						continue
					}
					nc.Write(tu.Encode("AUTH", password))
					var pipe []byte
					for range 400 {
						pipe = append(pipe, tu.Encode("GET", "soak:big")...)
					}
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					nc.Write(pipe)
					select { // never reads: holds the connection for 10 s
					case <-ctx.Done():
					case <-time.After(10 * time.Second):
					}
					nc.Close()
					hostile.Add(1)
				}
			})
		}
		// Connection floods: 300 idle connections, held a moment, then dropped.
		wg.Go(func() {
			for ctx.Err() == nil {
				var held []net.Conn
				for range 300 {
					if nc, err := net.DialTimeout("tcp", a.addr, time.Second); err == nil {
						held = append(held, nc)
					}
				}
				time.Sleep(300 * time.Millisecond)
				for _, nc := range held {
					nc.Close()
				}
				hostile.Add(1)
			}
		})
		// Pre-auth: most of a 60 MiB command (an MSET of 60 values of 1 MiB), 15 clients at once.
		for range 15 {
			wg.Go(func() {
				chunk := []byte(strings.Repeat("z", 1<<20))
				for ctx.Err() == nil {
					nc, err := net.DialTimeout("tcp", a.addr, time.Second)
					if err != nil {
						continue
					}
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					nc.Write([]byte("*61\r\n$4\r\nMSET\r\n"))
					for i := range 60 {
						if _, err := fmt.Fprintf(nc, "$%d\r\n%s\r\n", len(chunk), chunk); err != nil || ctx.Err() != nil || i == 59 {
							break
						}
					}
					nc.Close()
					hostile.Add(1)
				}
			})
		}
		// Pre-auth garbage: huge announced commands, long arrays, random bytes.
		wg.Go(func() {
			frames := []string{"*2\r\n$3\r\nSET\r\n$65000000\r\n" + strings.Repeat("y", 100000), "*100\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n"}
			for n := 0; ctx.Err() == nil; n++ {
				nc, err := net.DialTimeout("tcp", a.addr, time.Second)
				if err != nil {
					continue
				}
				nc.SetDeadline(time.Now().Add(2 * time.Second))
				if n%4 == 3 {
					junk := make([]byte, 4096)
					for i := range junk {
						junk[i] = byte(rand.IntN(256))
					}
					nc.Write(junk)
				} else {
					nc.Write([]byte(frames[n%3]))
				}
				bufio.NewReader(nc).ReadString('\n')
				nc.Close()
				hostile.Add(1)
			}
		})
		// WATCH churn: WATCH, then hang up without EXEC.
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					nc, err := net.DialTimeout("tcp", a.addr, time.Second)
					if err != nil {
						continue
					}
					nc.SetDeadline(time.Now().Add(3 * time.Second))
					rd := bufio.NewReader(nc)
					tu.RoundTrip(nc, rd, "AUTH", password)
					tu.RoundTrip(nc, rd, "WATCH", fmt.Sprintf("soak:w:%d", rand.IntN(100)))
					nc.Close()
					hostile.Add(1)
				}
			})
		}
	}

	// RSS sampling.
	var agentPeak, shardPeak atomic.Int64
	wg.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, a := range agents {
				if r := rss(a.cmd.Process.Pid); r > agentPeak.Load() {
					agentPeak.Store(r)
				}
			}
			for _, s := range shards {
				if r := rss(s.Pid()); r > shardPeak.Load() {
					shardPeak.Store(r)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	wg.Wait()

	// Nothing acknowledged lost: each counter equals its acknowledged INCRs.
	lost := int64(0)
	check := redis.NewClient(&redis.Options{Addr: agents[0].addr, Password: password})
	defer check.Close()
	for i := range 8 {
		var v int64
		var err error
		for try := 0; try < 30; try++ { // a breaker the load opened closes within its cooldown
			if v, err = check.Get(context.Background(), fmt.Sprintf("soak:counter:%d", i)).Int64(); err == nil && v == acked[i].Load() {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil || v != acked[i].Load() {
			lost++
			t.Errorf("counter %d = %d (%v), %d INCRs acknowledged", i, v, err, acked[i].Load())
		}
	}
	alive := agents[0].alive() && agents[1].alive()
	fmt.Printf("soak: %v: %d requests served to well-behaved clients, %d errors, %d wrong values, %d counters off; "+
		"%d hostile actions; agent peak RSS %d MiB, shard peak RSS %d MiB; agents alive: %v\n",
		duration, good.served.Load(), good.errors.Load(), good.wrong.Load(), lost, hostile.Load(), agentPeak.Load()>>20, shardPeak.Load()>>20, alive)
	if p := good.firstErr.Load(); p != nil {
		t.Errorf("first error of a well-behaved client: %s", *p)
	}
	if good.errors.Load() > 0 || good.wrong.Load() > 0 {
		t.Errorf("well-behaved clients saw %d errors and %d wrong values", good.errors.Load(), good.wrong.Load())
	}
	if !alive {
		t.Error("an agent exited")
	}
	if agentPeak.Load() > 512<<20 {
		t.Errorf("agent peak RSS %d MiB, over 512 MiB", agentPeak.Load()>>20)
	}
}

func slowReaders() int {
	if v := os.Getenv("SOAK_SLOW"); v != "" {
		n, _ := strconv.Atoi(v)
		return n
	}
	return 20
}
