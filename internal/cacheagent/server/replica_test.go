package server_test

import (
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

func TestReadsFallBackToAReplicaWhileThePrimaryIsDown(t *testing.T) {
	for name, l1 := range map[string]bool{"tracking L1": true, "no L1": false} {
		t.Run(name, func(t *testing.T) {
			primary := tu.StartRedis(t, "")
			replica := tu.StartReplica(t, primary)
			o := defaults()
			o.defaults.L1 = l1
			a := startAgent(t, []*tu.Redis{primary}, o)
			doc := *a.srv.Router().Doc
			doc.Shards = append(doc.Shards[:0:0], doc.Shards...)
			doc.Shards[0].Replicas = []string{replica.Addr()}
			doc.Seal(a.srv.Router().Doc)
			if err := a.srv.SetRing(&doc); err != nil {
				t.Fatal(err)
			}
			c := a.dial(t)
			c.do("SET", "k1", "v1")
			c.do("SET", "k2", "v2")
			deadline := time.Now().Add(10 * time.Second)
			for got, _ := replica.Do("GET", "k2"); got != "v2"; got, _ = replica.Do("GET", "k2") {
				if time.Now().After(deadline) {
					t.Fatal("the replica never caught up")
				}
				time.Sleep(10 * time.Millisecond)
			}
			primary.Stop()

			for i := range 8 { // before and after the primary's breaker opens
				if got := c.do("GET", "k1"); got != "v1" {
					t.Fatalf("GET #%d with the primary down = %q, want the replica's v1", i+1, got)
				}
			}
			if got := c.do("MGET", "k1", "k2", "nope"); got != "[v1 v2 (nil)]" {
				t.Errorf("MGET from the replica = %q", got)
			}
			if got := c.do("SET", "k3", "v"); !strings.HasPrefix(got, "ERR:CFDOWN shard shard-0") {
				t.Errorf("a write with the primary down = %q, want CFDOWN", got)
			}
			// A queued delete wins over the replica's copy.
			if got := c.do("DEL", "k1"); got != "1" {
				t.Errorf("DEL = %q", got)
			}
			if got := c.do("GET", "k1"); got != "(nil)" {
				t.Errorf("GET of a key deleted while the primary is down = %q, want nil", got)
			}
			if got := c.do("GET", "k2"); got != "v2" {
				t.Errorf("GET k2 after deleting k1 = %q", got)
			}
			if n := a.srv.Router().Shards[0].Stats.ReplicaReads.Load(); n < 9 {
				t.Errorf("%d replica reads counted", n)
			}
		})
	}
}
