package server_test

import (
	"fmt"
	"testing"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestAFencedPrimarysRefusalReachesTheClient: a primary fenced for want of a replica (Valkey's
// min-replicas-to-write, which the operator sets) refuses writes; the agent answers each one as
// Valkey does, byte for byte, acknowledges none, and keeps serving reads from that shard: the
// refusals are answers, not a shard that is down (its breaker stays closed).
func TestAFencedPrimarysRefusalReachesTheClient(t *testing.T) {
	const refused = "-NOREPLICAS Not enough good replicas to write.\r\n"
	for _, l1 := range []bool{true, false} {
		t.Run(fmt.Sprintf("l1=%v", l1), func(t *testing.T) {
			shard := tu.StartRedis(t, "")
			if got, _ := shard.Do("SET", "before", "v"); got != "OK" {
				t.Fatal(got)
			}
			if got, _ := shard.Do("CONFIG", "SET", "min-replicas-to-write", "1"); got != "OK" {
				t.Fatal(got)
			}
			o := defaults()
			o.defaults.L1 = l1
			a := startAgent(t, []*tu.Redis{shard}, o)
			c := a.dial(t)
			for i := range 3 * o.config.FailuresToOpen {
				k := fmt.Sprintf("k%d", i)
				for _, cmd := range [][]string{{"SET", k, "v"}, {"INCR", k}, {"MSET", k, "v", "other", "v"}, {"HSET", "h" + k, "f", "v"}, {"DEL", "before"}} {
					if got := rawReply(t, c, len(refused), cmd...); got != refused {
						t.Fatalf("%v answered %q, want Valkey's %q", cmd, got, refused)
					}
				}
			}
			if got := c.do("GET", "before"); got != "v" {
				t.Fatalf("a read of the fenced shard answered %q", got)
			}
			if got := c.do("EXISTS", "k0", "other"); got != "0" {
				t.Fatalf("refused writes were applied: EXISTS %s", got)
			}
		})
	}
}
