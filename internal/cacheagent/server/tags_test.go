package server_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestTagInvalidationRemovesExactlyTheTaggedKeysEverywhere(t *testing.T) {
	shards := twoShards(t)
	agents := startBusAgents(t, shards, 2)
	ca, cb := agents[0].dial(t), agents[1].dial(t)
	for i := 0; i < 30; i++ {
		tags := []string{"TAGS", "all"}
		if i%3 == 0 {
			tags = append(tags, "red")
		}
		if got := ca.do(append([]string{"CF.SET", "p:" + strconv.Itoa(i), "v", "EX", "600"}, tags...)...); got != "OK" {
			t.Fatalf("CF.SET = %q", got)
		}
	}
	time.Sleep(100 * time.Millisecond) // the writes' own invalidations pass first
	for i := 0; i < 30; i++ {
		cb.do("GET", "p:"+strconv.Itoa(i)) // B keeps copies in L1
	}
	if ttl, _ := strconv.Atoi(cb.do("TTL", "p:0")); ttl < 590 {
		t.Errorf("CF.SET EX 600 gave TTL %d", ttl)
	}
	if got := cb.do("CF.INVALIDATE", "TAG", "red"); got != "10" {
		t.Errorf("CF.INVALIDATE TAG red removed %s keys, want 10", got)
	}
	eventually(t, "tagged copies gone from B's L1", func() error {
		for i := 0; i < 30; i += 3 {
			if _, ok := agents[1].srv.L1().Get("p:" + strconv.Itoa(i)); ok {
				return fmt.Errorf("p:%d still in L1", i)
			}
		}
		return nil
	})
	for i := 0; i < 30; i++ {
		want := "1"
		if i%3 == 0 {
			want = "0"
		}
		if got := ca.do("EXISTS", "p:"+strconv.Itoa(i)); got != want {
			t.Errorf("p:%d exists=%s, want %s", i, got, want)
		}
		if _, ok := agents[1].srv.L1().Get("p:" + strconv.Itoa(i)); ok != (want == "1") {
			t.Errorf("p:%d in B's L1 = %v", i, ok)
		}
	}
	// Index entries expire with their keys.
	ca.do("CF.SET", "short", "v", "PX", "200", "TAGS", "brief")
	time.Sleep(300 * time.Millisecond)
	if got := ca.do("CF.INVALIDATE", "TAG", "brief"); got != "0" {
		t.Errorf("an expired key was counted: %s", got)
	}
	if got := ca.do("CF.SET", "k", "v", "TAGS"); !strings.HasPrefix(got, "ERR:") {
		t.Errorf("CF.SET without tags = %q", got)
	}
}

func TestInvalidatePolicyFlushesItsPrefix(t *testing.T) {
	agents := startBusAgents(t, twoShards(t), 1)
	c := agents[0].dial(t)
	c.do("SET", "x:1", "v") // the static catch-all policy "all" has the empty prefix
	if got := c.do("CF.INVALIDATE", "POLICY", "all"); !strings.HasPrefix(got, "ERR:ERR no such policy") {
		t.Errorf("a policy with the empty prefix = %q", got)
	}
	if got := c.do("CF.INVALIDATE", "POLICY", "nope"); !strings.HasPrefix(got, "ERR:") {
		t.Errorf("unknown policy = %q", got)
	}
	// A ring with a "sessions" policy: flushing it removes exactly its keys.
	doc := *agents[0].srv.Router().Doc
	doc.Policies = append([]contract.Policy{{Name: "sessions", Prefix: "session:", L1Enabled: true, L1Mode: "ttl", InvalidateOnWrite: true}}, doc.Policies...)
	contract.SortPolicies(doc.Policies)
	doc.Seal(agents[0].srv.Router().Doc)
	if err := agents[0].srv.SetRing(&doc); err != nil {
		t.Fatal(err)
	}
	c = agents[0].dial(t)
	c.do("SET", "session:a", "1")
	c.do("SET", "session:b", "1")
	if got := c.do("CF.INVALIDATE", "POLICY", "sessions"); got != "2" {
		t.Errorf("CF.INVALIDATE POLICY sessions = %q, want 2", got)
	}
	if got := c.do("EXISTS", "session:a", "x:1"); got != "1" {
		t.Errorf("after the policy flush EXISTS session:a x:1 = %s, want 1", got)
	}
}
