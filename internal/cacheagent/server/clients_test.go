package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/testenv"
)

// TestGoRedisThroughTheAgent drives the agent with go-redis as an application would: plain
// commands, pipelines, TxPipelined (MULTI/EXEC), optimistic locking with Watch, hashes,
// scripts and SCAN, in RESP2 and RESP3 (go-redis' default).
func TestGoRedisThroughTheAgent(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			ctx := context.Background()
			rdb := redis.NewClient(&redis.Options{Addr: a.addr, Protocol: proto, DisableIdentity: false})
			defer rdb.Close()
			p := fmt.Sprintf("gr%d:", proto)
			if err := rdb.Set(ctx, p+"k", "v", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if v, err := rdb.Get(ctx, p+"k").Result(); err != nil || v != "v" {
				t.Errorf("GET = %q, %v", v, err)
			}
			if _, err := rdb.Get(ctx, p+"missing").Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("GET of a missing key: %v, want redis.Nil", err)
			}
			cmds, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
				for i := range 50 {
					pipe.Set(ctx, fmt.Sprintf("%sp:%d", p, i), i, 0)
				}
				pipe.MGet(ctx, p+"p:1", p+"p:49", p+"missing")
				return nil
			})
			if err != nil || fmt.Sprint(cmds[50].(*redis.SliceCmd).Val()) != "[1 49 <nil>]" {
				t.Errorf("pipeline: %v, %v", err, cmds[len(cmds)-1])
			}
			key := "{" + p + "acct}:balance"
			rdb.Set(ctx, key, 100, 0)
			_, err = rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.DecrBy(ctx, key, 30)
				pipe.Incr(ctx, "{"+p+"acct}:ops")
				return nil
			})
			if v, _ := rdb.Get(ctx, key).Int(); err != nil || v != 70 {
				t.Errorf("TxPipelined: %v, balance %d", err, v)
			}
			// Watch: a change by another client in between fails the transaction.
			err = rdb.Watch(ctx, func(tx *redis.Tx) error {
				n, err := tx.Get(ctx, key).Int()
				if err != nil {
					return err
				}
				rdb.IncrBy(ctx, key, 5) // someone else
				_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
					pipe.Set(ctx, key, n-10, 0)
					return nil
				})
				return err
			}, key)
			if !errors.Is(err, redis.TxFailedErr) {
				t.Errorf("Watch after a concurrent change: %v, want TxFailedErr", err)
			}
			if v, _ := rdb.Get(ctx, key).Int(); v != 75 {
				t.Errorf("balance %d after the failed transaction, want 75", v)
			}
			rdb.HSet(ctx, p+"h", "a", "1", "b", "2")
			if m, err := rdb.HGetAll(ctx, p+"h").Result(); err != nil || m["a"] != "1" || m["b"] != "2" {
				t.Errorf("HGETALL = %v, %v", m, err)
			}
			script := redis.NewScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
			if n, err := script.Run(ctx, rdb, []string{p + "ctr"}, 3).Int(); err != nil || n != 3 {
				t.Errorf("script (EVALSHA, then EVAL on NOSCRIPT) = %d, %v", n, err)
			}
			var seen []string
			iter := rdb.Scan(ctx, 0, p+"p:*", 20).Iterator()
			for iter.Next(ctx) {
				seen = append(seen, iter.Val())
			}
			slices.Sort(seen)
			if iter.Err() != nil || len(slices.Compact(seen)) != 50 {
				t.Errorf("SCAN found %d keys, %v", len(seen), iter.Err())
			}
		})
	}
}

// TestPythonAndNodeClients runs redis-py (Debian's python3-redis), ioredis and node-redis
// (test/clients/node, installed from the npm registry with npm ci) against an agent over real
// shards: transactions, pipelines, WATCH, hashes, scripts, SCAN, client-side caching
// (node-redis' clientSideCache in RESP3; redis-py with CLIENT TRACKING REDIRECT in RESP2) and
// pub/sub between two agents, as applications use them.
func TestPythonAndNodeClients(t *testing.T) {
	shards := twoShards(t)
	a, other := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	dir := filepath.Join(testenv.RepoRoot(), "test", "clients")
	// OTHER_AGENT_ADDR is another node's agent: pub/sub is checked across the two.
	env := append(os.Environ(), "AGENT_ADDR="+a.addr, "OTHER_AGENT_ADDR="+other.addr)
	run := func(name string, cmd *exec.Cmd) {
		t.Helper()
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	python := "/usr/bin/python3" // Debian's, with python3-redis (CI installs it)
	if err := exec.Command(python, "-c", "import redis").Run(); err != nil {
		t.Fatalf("redis-py is required (apt-get install python3-redis): %v", err)
	}
	run("redis-py", exec.Command(python, filepath.Join(dir, "redis_py_client.py")))

	node := filepath.Join(dir, "node")
	if _, err := os.Stat(filepath.Join(node, "node_modules")); err != nil {
		install := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		install.Dir = node
		if out, err := install.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", node, err, out)
		}
	}
	cmd := exec.Command("node", "clients.mjs")
	cmd.Dir = node
	run("ioredis and node-redis", cmd)
}

// TestApplicationDataTypesWithGoClients: what applications keep next to cached strings (a
// leaderboard, a rate limiter, a set of online users, a work queue), through go-redis in RESP2
// and RESP3 and through valkey-go.
func TestApplicationDataTypesWithGoClients(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	ctx := context.Background()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("go-redis RESP%d", proto), func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: a.addr, Protocol: proto})
			defer rdb.Close()
			p := fmt.Sprintf("app%d:", proto)
			rdb.ZAdd(ctx, p+"board", redis.Z{Score: 10, Member: "alice"}, redis.Z{Score: 20, Member: "bob"})
			rdb.ZIncrBy(ctx, p+"board", 15, "alice")
			top, err := rdb.ZRevRangeWithScores(ctx, p+"board", 0, -1).Result()
			if err != nil || fmt.Sprint(top) != "[{25 alice} {20 bob}]" {
				t.Errorf("leaderboard %v, %v", top, err)
			}
			limit := redis.NewScript("local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end return n")
			for want := int64(1); want <= 3; want++ {
				if n, err := limit.Run(ctx, rdb, []string{p + "rate"}).Int64(); err != nil || n != want {
					t.Errorf("rate limiter call %d: %d, %v", want, n, err)
				}
			}
			rdb.SAdd(ctx, p+"online", "u1", "u2", "u1")
			if n, err := rdb.SCard(ctx, p+"online").Result(); err != nil || n != 2 {
				t.Errorf("online set %d, %v", n, err)
			}
			rdb.LPush(ctx, p+"queue", "job1", "job2")
			if v, err := rdb.RPop(ctx, p+"queue").Result(); err != nil || v != "job1" {
				t.Errorf("queue RPOP %q, %v", v, err)
			}
		})
	}
	t.Run("valkey-go", func(t *testing.T) {
		c, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{a.addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Do(ctx, c.B().Zadd().Key("vg:board").ScoreMember().ScoreMember(10, "alice").ScoreMember(20, "bob").Build())
		top, err := c.Do(ctx, c.B().Zrange().Key("vg:board").Min("0").Max("-1").Rev().Withscores().Build()).AsZScores()
		if err != nil || fmt.Sprint(top) != "[{bob 20} {alice 10}]" {
			t.Errorf("leaderboard %v, %v", top, err)
		}
		if n, err := c.Do(ctx, c.B().Sadd().Key("vg:online").Member("u1", "u2").Build()).AsInt64(); err != nil || n != 2 {
			t.Errorf("SADD %d, %v", n, err)
		}
		c.Do(ctx, c.B().Lpush().Key("vg:queue").Element("job1", "job2").Build())
		if v, err := c.Do(ctx, c.B().Rpop().Key("vg:queue").Build()).ToString(); err != nil || v != "job1" {
			t.Errorf("queue RPOP %q, %v", v, err)
		}
	})
}

// TestPubSubWithGoClients: go-redis (RESP2 and RESP3) and valkey-go subscribe through one
// node's agent and hear what is published through another's.
func TestPubSubWithGoClients(t *testing.T) {
	shards := twoShards(t)
	a1, a2 := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub := redis.NewClient(&redis.Options{Addr: a2.addr})
	defer pub.Close()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("go-redis RESP%d", proto), func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: a1.addr, Protocol: proto})
			defer rdb.Close()
			p := fmt.Sprintf("gr%d:", proto)
			for _, tc := range []struct {
				sub              *redis.PubSub
				publish, channel string
				pattern          string
			}{
				{rdb.Subscribe(ctx, p+"news"), "PUBLISH", p + "news", ""},
				{rdb.PSubscribe(ctx, p+"orders.*"), "PUBLISH", p + "orders.1", p + "orders.*"},
				{rdb.SSubscribe(ctx, p+"cart"), "SPUBLISH", p + "cart", ""},
			} {
				if _, err := tc.sub.Receive(ctx); err != nil { // the confirmation
					t.Fatal(err)
				}
				if n, err := pub.Do(ctx, tc.publish, tc.channel, "hello").Int64(); err != nil || n != 1 {
					t.Errorf("%s %s: %d, %v", tc.publish, tc.channel, n, err)
				}
				m, err := tc.sub.ReceiveMessage(ctx)
				if err != nil || m.Channel != tc.channel || m.Pattern != tc.pattern || m.Payload != "hello" {
					t.Errorf("%s %s: received %+v, %v", tc.publish, tc.channel, m, err)
				}
				tc.sub.Close()
			}
		})
	}
	t.Run("valkey-go", func(t *testing.T) {
		c, err := valkey.NewClient(valkey.ClientOption{InitAddress: []string{a1.addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := make(chan valkey.PubSubMessage, 1)
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		subscribed := make(chan struct{})
		go func() {
			_ = c.Receive(rctx, c.B().Subscribe().Channel("vg:news").Build(), func(m valkey.PubSubMessage) { got <- m })
		}()
		go func() { // Receive returns only at the end: wait for the shard to see the subscription
			for {
				if n, _ := pub.PubSubNumSub(ctx, "vg:news").Result(); n["vg:news"] == 1 {
					close(subscribed)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		<-subscribed
		if n, err := pub.Publish(ctx, "vg:news", "hi").Result(); err != nil || n != 1 {
			t.Errorf("PUBLISH: %d, %v", n, err)
		}
		select {
		case m := <-got:
			if m.Channel != "vg:news" || m.Message != "hi" {
				t.Errorf("received %+v", m)
			}
		case <-ctx.Done():
			t.Fatal("no message")
		}
	})
}
