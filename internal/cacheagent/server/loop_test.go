package server_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// warmL1 reads key through a until its L1 holds it (the second read of a tracked key).
func warmL1(t *testing.T, a *agent, key string) {
	t.Helper()
	c := a.dial(t)
	for range 50 {
		hits := a.srv.Stats.L1Hits.Load()
		c.do("GET", key)
		if a.srv.Stats.L1Hits.Load() > hits {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never reached the L1", key)
}

// TestTheLoopAnswersL1HitsInThePipelinesOrder: L1 hits answered by the event loop, and the
// commands around them answered by the connection's goroutine, reach the client in the order
// sent, and a GET after a SET in the same pipeline sees the SET.
func TestTheLoopAnswersL1HitsInThePipelinesOrder(t *testing.T) {
	for _, mode := range l1Modes[:2] {
		t.Run(mode.name, func(t *testing.T) {
			a := mode.agentIn(t, twoShards(t), noMinUsable)
			c := a.dial(t)
			c.do("SET", "hot", "v1")
			warmL1(t, a, "hot")
			looped := a.srv.Stats.LoopHits.Load()
			var pipe []byte
			for _, cmd := range [][]string{{"GET", "hot"}, {"GET", "hot"}, {"SET", "hot", "v2"}, {"GET", "hot"}, {"PING"}, {"GET", "hot"}} {
				pipe = append(pipe, tu.Encode(cmd...)...)
			}
			c.nc.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.nc.Write(pipe); err != nil {
				t.Fatal(err)
			}
			got := c.replies(6)
			if want := "v1 v1 OK v2 PONG v2"; strings.Join(got, " ") != want {
				t.Fatalf("replies %q, want %q", got, want)
			}
			for range 20 {
				if got := c.do("GET", "hot"); got != "v2" {
					t.Fatalf("GET hot = %q, want v2", got)
				}
			}
			if a.srv.Stats.LoopHits.Load() <= looped {
				t.Fatal("no L1 hit was answered by the event loop")
			}
		})
	}
}

// TestTheLoopNeverAnswersInsideAFrame: a SET whose value is itself a GET frame, arriving in
// two parts, is one command: the loop must not take its second part for a GET it can answer.
func TestTheLoopNeverAnswersInsideAFrame(t *testing.T) {
	a := l1Modes[0].agentIn(t, twoShards(t), noMinUsable)
	c := a.dial(t)
	c.do("SET", "k", "hit")
	warmL1(t, a, "k")
	value := string(tu.Encode("GET", "k"))
	frame := tu.Encode("SET", "framed", value)
	cut := len(frame) - len(value) - 2 // up to the value's length line
	c.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(frame[:cut]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the agent reads the first part and waits for the rest
	if _, err := c.nc.Write(append(frame[cut:], tu.Encode("GET", "framed")...)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"OK", value} {
		got, err := tu.ReadReply(c.rd)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
}

// TestOneThreadHasNoLoop: with one thread running Go code (--procs=1) connections stay with
// their goroutines: a loop waiting in epoll_wait would hold the only thread.
func TestOneThreadHasNoLoop(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	a := l1Modes[0].agentIn(t, twoShards(t), noMinUsable)
	c := a.dial(t)
	c.do("SET", "hot", "v")
	warmL1(t, a, "hot")
	for range 10 {
		if got := c.do("GET", "hot"); got != "v" {
			t.Fatalf("GET hot = %q", got)
		}
	}
	if n := a.srv.Stats.LoopHits.Load(); n != 0 {
		t.Fatalf("%d L1 hits answered by a loop on one thread", n)
	}
}
