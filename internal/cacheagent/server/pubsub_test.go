package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// A subscriber on one agent hears a publisher on another: channels on their home shard,
// patterns on every shard, sharded channels; PUBLISH and PUBSUB NUMSUB count this agent's
// clients one each.
func TestPubSubAcrossAgents(t *testing.T) {
	shards := twoShards(t)
	a1, a2 := startAgent(t, shards, defaults()), startAgent(t, shards, defaults())
	sub := a1.dial(t) // RESP2
	if got := sub.do("SUBSCRIBE", "news", "sports"); got != "[subscribe news 1]" {
		t.Fatalf("SUBSCRIBE = %q", got)
	}
	if got := sub.replies(1)[0]; got != "[subscribe sports 2]" {
		t.Fatalf("second confirmation = %q", got)
	}
	if got := sub.do("PSUBSCRIBE", "orders.*"); got != "[psubscribe orders.* 3]" {
		t.Fatalf("PSUBSCRIBE = %q", got)
	}
	if got := sub.do("GET", "k"); !strings.Contains(got, "only (P|S)SUBSCRIBE") {
		t.Errorf("GET while subscribed in RESP2 = %q", got)
	}
	sub3 := a2.dial(t)
	sub3.do("HELLO", "3")
	if got := sub3.do("SSUBSCRIBE", "cart"); got != "push[ssubscribe cart 1]" {
		t.Fatalf("SSUBSCRIBE = %q", got)
	}
	pub := a2.dial(t)
	for _, tc := range []struct {
		cmd  []string
		want string
		from *conn
		msg  string
	}{
		{[]string{"PUBLISH", "news", "hello"}, "1", sub, "[message news hello]"},
		{[]string{"PUBLISH", "orders.7", "paid"}, "1", sub, "[pmessage orders.* orders.7 paid]"},
		{[]string{"SPUBLISH", "cart", "c1"}, "1", sub3, "push[smessage cart c1]"},
		{[]string{"PUBLISH", "cart", "classic"}, "0", nil, ""}, // classic and shard channels are apart
	} {
		if got := pub.do(tc.cmd...); got != tc.want {
			t.Errorf("%v = %q, want %q", tc.cmd, got, tc.want)
		}
		if tc.from != nil {
			if got := tc.from.replies(1)[0]; got != tc.msg {
				t.Errorf("after %v the subscriber read %q, want %q", tc.cmd, got, tc.msg)
			}
		}
	}
	// A script runs on the ring's first shard with numkeys 0; what it publishes is heard on a
	// channel whose name hashes elsewhere: channels are held on every shard.
	far := keyOn(t, a1, "far", 1)
	sub.do("SUBSCRIBE", far)
	if got := pub.do("EVAL", "return redis.call('PUBLISH', ARGV[1], 'from a script')", "0", far); got != "1" {
		t.Errorf("a script's PUBLISH = %q", got)
	}
	if got := sub.replies(1)[0]; got != "[message "+far+" from a script]" {
		t.Errorf("after a script's PUBLISH the subscriber read %q", got)
	}
	sub.do("UNSUBSCRIBE", far)
	// A second client of a1 on news: a1's clients count one each, whoever asks.
	sub2 := a1.dial(t)
	sub2.do("SUBSCRIBE", "news")
	for _, a := range []*agent{a1, a2} {
		c := a.dial(t)
		if got := c.do("PUBSUB", "NUMSUB", "news", "nobody"); got != "[news 2 nobody 0]" && a == a1 {
			t.Errorf("NUMSUB through a1 = %q, want [news 2 nobody 0]", got)
		} else if a == a2 && got != "[news 1 nobody 0]" {
			t.Errorf("NUMSUB through a2 = %q, want a1 counted once: [news 1 nobody 0]", got)
		}
		if got := c.do("PUBSUB", "NUMPAT"); got != "1" {
			t.Errorf("NUMPAT = %q", got)
		}
		if got := c.do("PUBSUB", "CHANNELS", "[ns]*"); got != "[news sports]" && got != "[sports news]" {
			t.Errorf("CHANNELS = %q", got)
		}
	}
	if got := a1.dial(t).do("PUBLISH", "news", "twice"); got != "2" {
		t.Errorf("PUBLISH through a1 to two of its clients = %q", got)
	}
	sub.replies(1)
	sub2.replies(1)
	// A client that hangs up leaves the shard once no other client of its agent holds the name.
	sub.nc.Close()
	sub2.nc.Close()
	eventually(t, "a1's subscriptions to leave the shards", func() error {
		if got := pub.do("PUBSUB", "NUMSUB", "news", "sports"); got != "[news 0 sports 0]" {
			return fmt.Errorf("NUMSUB = %s", got)
		}
		if got := pub.do("PUBSUB", "NUMPAT"); got != "0" {
			return fmt.Errorf("NUMPAT = %s", got)
		}
		return nil
	})
}

// A subscriber that does not read is cut off at the output limit, as Valkey's pub/sub class
// is, and its neighbours keep hearing everything.
func TestASubscriberThatDoesNotReadIsCutOff(t *testing.T) {
	o := defaults()
	o.config.Output.HardBytes = 256 << 10
	a := startAgent(t, twoShards(t), o)
	stalled, reader := a.dial(t), a.dial(t)
	_ = stalled.nc.(*net.TCPConn).SetReadBuffer(4 << 10) // the kernel holds little for it
	stalled.do("SUBSCRIBE", "firehose")
	reader.do("SUBSCRIBE", "firehose")
	got := make(chan int, 1)
	go func() {
		n := 0
		reader.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
		for n < 20000 {
			if _, err := tu.ReadReply(reader.rd); err != nil {
				break
			}
			n++
		}
		got <- n
	}()
	pub := a.dial(t)
	payload := strings.Repeat("x", 900)
	for range 200 {
		var batch []byte
		for range 100 {
			batch = append(batch, tu.Encode("PUBLISH", "firehose", payload)...)
		}
		pub.nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := pub.nc.Write(batch); err != nil {
			t.Fatal(err)
		}
		pub.replies(100)
	}
	if n := <-got; n != 20000 {
		t.Errorf("the reading subscriber got %d of 20000 messages", n)
	}
	if n := a.srv.Stats.OutputLimitClosed.Load(); n != 1 {
		t.Errorf("%d clients cut off for their output, want the stalled one", n)
	}
	if got := pub.do("PING"); got != "PONG" {
		t.Errorf("the agent after the firehose: %q", got)
	}
}

// CLIENT REPLY OFF and SKIP silence replies as on Valkey (same replies, side by side), and a
// subscriber with replies off still receives its messages.
func TestClientReplyOffAndSkipAsValkey(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	pipeline := [][]string{
		{"CLIENT", "REPLY", "SKIP"}, {"SET", "cr", "1"}, {"GET", "cr"}, {"CLIENT", "REPLY", "OFF"}, {"SET", "cr", "2"},
		{"CLIENT", "REPLY", "SKIP"}, {"GET", "cr"}, {"CLIENT", "REPLY", "ON"}, {"GET", "cr"}, {"CLIENT", "REPLY", "MAYBE"},
	}
	var sent []byte
	for _, cmd := range pipeline {
		sent = append(sent, tu.Encode(cmd...)...)
	}
	read := func(addr string) []string {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		rd := bufio.NewReader(nc)
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write(sent); err != nil {
			t.Fatal(err)
		}
		var out []string
		for range 4 {
			r, err := tu.ReadReply(rd)
			if err != nil {
				t.Errorf("%s: after %q: %v", addr, out, err)
				break
			}
			out = append(out, r)
		}
		return out
	}
	want := read(tu.StartRedis(t, "").Addr())
	if got := read(a.addr); fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(want) != "[1 OK 2 ERR:ERR syntax error]" {
		t.Errorf("through the agent %q, valkey %q", got, want)
	}

	sub := a.dial(t)
	sub.do("HELLO", "3")
	sub.do("SUBSCRIBE", "quiet")
	sub.nc.Write(append(tu.Encode("CLIENT", "REPLY", "OFF"), tu.Encode("SUBSCRIBE", "quiet2")...))
	if got := sub.replies(1)[0]; got != "push[subscribe quiet2 2]" { // a push, which CLIENT REPLY leaves alone
		t.Errorf("SUBSCRIBE with replies off in RESP3 read %q", got)
	}
	if got := a.dial(t).do("PUBLISH", "quiet", "still"); got != "1" {
		t.Errorf("PUBLISH = %q", got)
	}
	if got := sub.replies(1)[0]; got != "push[message quiet still]" {
		t.Errorf("a subscriber with replies off read %q", got)
	}
	resp2 := a.dial(t)
	resp2.nc.Write(append(tu.Encode("CLIENT", "REPLY", "OFF"), tu.Encode("PSUBSCRIBE", "*")...))
	if got := resp2.replies(1)[0]; got != "[psubscribe * 1]" { // as in RESP2 on Valkey
		t.Errorf("PSUBSCRIBE with replies off in RESP2 read %q", got)
	}
}

// (UN)SUBSCRIBE may be queued in a transaction, as on Valkey: EXEC's array holds their replies.
func TestUnsubscribeInsideMulti(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	want := "[abc push[unsubscribe bar 2] push[unsubscribe baz 1] def]"
	for _, addr := range []string{tu.StartRedis(t, "").Addr(), a.addr} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		c := &conn{t: t, nc: nc, rd: bufio.NewReader(nc)}
		c.do("HELLO", "3") // a subscribed RESP2 connection may not open MULTI
		c.do("SUBSCRIBE", "foo", "bar", "baz")
		c.replies(2)
		for _, cmd := range [][]string{{"MULTI"}, {"PING", "abc"}, {"UNSUBSCRIBE", "bar"}, {"UNSUBSCRIBE", "baz"}, {"PING", "def"}} {
			c.do(cmd...)
		}
		if got := c.do("EXEC"); got != want {
			t.Errorf("%s: EXEC = %q, want %q", addr, got, want)
		}
	}
}

// The fleet's invalidation channel is the agents' own: a client can neither subscribe nor
// publish to it, and a pattern matching it does not hear the agents' messages.
func TestTheBusChannelIsReserved(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	bus := a.srv.Router().Doc.Invalidation.Channel
	c := a.dial(t)
	for _, cmd := range [][]string{{"SUBSCRIBE", "fine", bus}, {"SSUBSCRIBE", bus}, {"PUBLISH", bus, "forged"}, {"SPUBLISH", bus, "x"}} {
		if got := c.do(cmd...); !strings.HasPrefix(got, "ERR:ERR '"+bus+"' is the fleet's invalidation channel") {
			t.Errorf("%v = %q", cmd, got)
		}
	}
	c.do("PSUBSCRIBE", "*")
	sh := a.srv.Router().ShardFor([]byte(bus)) // both on one shard: one connection, in order
	for _, ch := range []string{bus, "other"} {
		if _, err := sh.Do(context.Background(), func(b valkey.Builder) valkey.Completed { return b.Publish().Channel(ch).Message("m").Build() }); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.replies(1)[0]; got != "[pmessage * other m]" { // not the bus message before it
		t.Errorf("the pattern subscriber read %q", got)
	}
}
