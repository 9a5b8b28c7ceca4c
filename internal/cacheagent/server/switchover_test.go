package server_test

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestWritesDuringASwitchoverAreHeldNotRefused: a planned switchover demotes the primary before
// the agent has the ring naming its successor; writes sent in between get READONLY from the
// demoted node. The agent holds them until the new ring arrives and sends them to the new
// primary: the client sees no error, every acknowledged write is on the new primary, and a read
// pipelined after a write sees it (with the tracking L1 and without: the event loop forwards
// both kinds of read).
func TestWritesDuringASwitchoverAreHeldNotRefused(t *testing.T) {
	for _, l1 := range []bool{true, false} {
		t.Run(fmt.Sprintf("l1=%v", l1), func(t *testing.T) {
			o := defaults()
			o.defaults.L1 = l1
			testWritesDuringASwitchover(t, o)
		})
	}
}

func testWritesDuringASwitchover(t *testing.T, o options) {
	primary := tu.StartRedis(t, "")
	replica := tu.StartReplica(t, primary)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if info, _ := replica.Do("INFO", "replication"); strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica never linked")
		}
	}
	o.config.ShardTimeout = 2 * time.Second // Valkey pauses writes while the replica catches up
	a := startAgent(t, []*tu.Redis{primary}, o)

	var mu sync.Mutex
	var acked, refused, misread []string
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // a writer through the agent, pipelining a SET and a GET of the same key
		defer close(done)
		nc, err := net.Dial("tcp", a.addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer nc.Close()
		rd := bufio.NewReader(nc)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := "w" + strconv.Itoa(i)
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := nc.Write(append(tu.Encode("SET", k, k), tu.Encode("GET", k)...)); err != nil {
				t.Error(err)
				return
			}
			set, err := tu.ReadReply(rd)
			if err != nil {
				t.Error(err)
				return
			}
			get, err := tu.ReadReply(rd)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			if set == "OK" {
				acked = append(acked, k)
				if get != k {
					misread = append(misread, get)
				}
			} else {
				refused = append(refused, set)
			}
			mu.Unlock()
		}
	}()
	time.Sleep(200 * time.Millisecond)

	// The switchover: the primary hands its role over; the new ring follows a moment later, as
	// the controller publishes it once the handover is done.
	if got, err := primary.Do("FAILOVER"); err != nil || got != "OK" {
		t.Fatalf("FAILOVER: %q %v", got, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if info, _ := primary.Do("INFO", "replication"); strings.Contains(info, "role:slave") && strings.Contains(info, "master_failover_state:no-failover") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the primary never handed over")
		}
	}
	time.Sleep(150 * time.Millisecond)
	doc := *a.srv.Router().Doc
	doc.Shards = append(doc.Shards[:0:0], doc.Shards...)
	doc.Shards[0].Primary = replica.Addr()
	doc.Seal(a.srv.Router().Doc)
	if err := a.srv.SetRing(&doc); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done

	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for _, k := range acked {
		if v, _ := replica.Do("GET", k); v != k {
			lost++
		}
	}
	t.Logf("%d writes acknowledged, %d refused, %d lost", len(acked), len(refused), lost)
	if len(refused) > 0 {
		kinds := map[string]int{}
		for _, r := range refused {
			kinds[strings.Fields(r)[0]]++
		}
		t.Errorf("%d writes refused during the switchover: %v", len(refused), kinds)
	}
	if lost > 0 {
		t.Errorf("%d acknowledged writes are not on the new primary", lost)
	}
	if len(misread) > 0 {
		t.Errorf("%d GETs pipelined after their acknowledged SET did not see it, first: %q", len(misread), misread[0])
	}
	if n := a.srv.Router().Shards[0].Stats.SwitchoverResends.Load(); n == 0 {
		t.Error("no command was sent again to the new primary: the switchover missed the window this test is about")
	} else {
		t.Logf("%d commands sent again to the new primary", n)
	}
}

// TestAReadOnlyShardWithNoSuccessorIsHeldOnce: an address that refuses writes with READONLY and
// is not replaced by a new ring holds the first write for the shard timeout, then the client gets
// Valkey's READONLY error, and later writes get it at once.
func TestAReadOnlyShardWithNoSuccessorIsHeldOnce(t *testing.T) {
	primary := tu.StartRedis(t, "")
	replica := tu.StartReplica(t, primary)
	o := defaults()
	o.config.ShardTimeout = time.Second
	a := startAgent(t, []*tu.Redis{replica}, o) // the ring names a replica as the primary
	c := a.dial(t)
	start := time.Now()
	if got := c.do("SET", "k", "v"); !strings.HasPrefix(got, "ERR:READONLY") {
		t.Fatalf("SET on a replica = %q, want READONLY", got)
	}
	if held := time.Since(start); held < 900*time.Millisecond {
		t.Errorf("the first refused write came back after %s, before the hold of 1s ended", held)
	}
	start = time.Now()
	if got := c.do("SET", "k", "v"); !strings.HasPrefix(got, "ERR:READONLY") {
		t.Fatalf("second SET on a replica = %q, want READONLY", got)
	}
	if held := time.Since(start); held > 500*time.Millisecond {
		t.Errorf("the second refused write was held %s again", held)
	}
}
