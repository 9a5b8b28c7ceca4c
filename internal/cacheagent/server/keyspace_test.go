package server_test

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// scanAll walks SCAN from cursor to the end; after calls back once the walk is under way.
func scanAll(t *testing.T, c *conn, cursor string, opts []string, after func()) []string {
	t.Helper()
	var keys []string
	for i := 0; ; i++ {
		c.nc.Write(tu.Encode(append([]string{"SCAN", cursor}, opts...)...))
		raw, err := tu.ReadRaw(c.rd)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(raw), "\r\n"), "\r\n")
		// *2, $n, cursor, *k, then $len/key pairs
		cursor = lines[2]
		for j := 5; j < len(lines); j += 2 {
			keys = append(keys, lines[j])
		}
		if i == 1 && after != nil {
			after()
		}
		if cursor == "0" {
			return keys
		}
	}
}

// TestKeyspaceCommandsSpanTheFleet: SCAN walks every shard (and survives a ring change mid
// walk), KEYS and DBSIZE gather from all, internal keys stay hidden, and redis-cli's --scan and
// --bigkeys work through the agent.
func TestKeyspaceCommandsSpanTheFleet(t *testing.T) {
	shards := []*tu.Redis{tu.StartRedis(t, ""), tu.StartRedis(t, ""), tu.StartRedis(t, "")}
	a := startAgent(t, shards[:2], defaults())
	c := a.dial(t)
	var want []string
	for i := range 300 {
		k := fmt.Sprintf("user:%d", i)
		c.do("SET", k, "v")
		want = append(want, k)
	}
	c.do("HSET", "prof:1", "name", "ann")
	want = append(want, "prof:1")
	c.do("CF.SET", "tagged", "v", "TAGS", "t1") // writes the tag index, an internal key
	want = append(want, "tagged")
	slices.Sort(want)

	got := scanAll(t, c, "0", []string{"COUNT", "40"}, nil)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("SCAN found %d keys, want %d (first: %v)", len(got), len(want), got[:min(3, len(got))])
	}
	if users := scanAll(t, c, "0", []string{"MATCH", "user:1*", "COUNT", "100"}, nil); len(users) != 111 {
		t.Errorf("SCAN MATCH user:1* found %d keys, want 111", len(users))
	}
	if hashes := scanAll(t, c, "0", []string{"TYPE", "hash"}, nil); !slices.Equal(hashes, []string{"prof:1"}) {
		t.Errorf("SCAN TYPE hash = %v", hashes)
	}
	if keys := c.do("KEYS", "user:29*"); strings.Count(keys, "user:29") != 11 {
		t.Errorf("KEYS user:29* = %s", keys)
	}
	if n, _ := strconv.Atoi(c.do("DBSIZE")); n < len(want) {
		t.Errorf("DBSIZE = %d, want at least %d", n, len(want))
	}

	// A third shard joins while a walk is under way: every key (none moved: the agent does
	// not migrate data) is still found.
	grown := func() {
		doc := *a.srv.Router().Doc
		doc.Shards = append(slices.Clone(doc.Shards), contract.Shard{Name: "shard-2", Primary: shards[2].Addr()})
		doc.Seal(a.srv.Router().Doc)
		if err := a.srv.SetRing(&doc); err != nil {
			t.Fatal(err)
		}
	}
	got = scanAll(t, c, "0", []string{"COUNT", "40"}, grown)
	slices.Sort(got)
	if !slices.Equal(slices.Compact(got), want) {
		t.Errorf("SCAN across a ring change found %d keys, want %d", len(slices.Compact(got)), len(want))
	}

	host, port, _ := strings.Cut(a.addr, ":")
	out, err := exec.Command("redis-cli", "-h", host, "-p", port, "--scan", "--pattern", "user:*").CombinedOutput()
	if err != nil || strings.Count(string(out), "user:") != 300 {
		t.Errorf("redis-cli --scan: %v, %d keys", err, strings.Count(string(out), "user:"))
	}
	out, err = exec.Command("redis-cli", "-h", host, "-p", port, "--bigkeys").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Biggest string") || !strings.Contains(string(out), "Biggest   hash") {
		t.Errorf("redis-cli --bigkeys: %v\n%s", err, out)
	}
}

// TestFlushIsRefusedUnlessTheFleetAllowsIt: FLUSHALL would empty every shard of the fleet, so
// it needs the fleet's allowFlush; then it empties every shard, this agent's L1 at once (the
// next read sees nil) and the other agents' L1 through the bus.
func TestFlushIsRefusedUnlessTheFleetAllowsIt(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults())
	if got := a.dial(t).do("FLUSHALL"); !strings.Contains(got, "spec.tiers.l2.allowFlush: true") {
		t.Errorf("FLUSHALL without allowFlush = %q", got)
	}
	agents := startBusAgentsWith(t, shards, 2, 0, func(o *options) { o.defaults.AllowFlush = true })
	ca, cb := agents[0].dial(t), agents[1].dial(t)
	for i := range 20 {
		k := fmt.Sprintf("f:%d", i)
		ca.do("SET", k, "v")
		ca.do("GET", k)
		cb.do("GET", k)
	}
	if got := ca.do("FLUSHALL", "ASYNC"); got != "OK" {
		t.Fatalf("FLUSHALL = %q", got)
	}
	for _, sh := range shards {
		if n, _ := sh.Do("DBSIZE"); n != "0" {
			t.Errorf("shard %s holds %s keys after FLUSHALL", sh.Addr(), n)
		}
	}
	if got := ca.do("GET", "f:3"); got != "(nil)" {
		t.Errorf("GET on the flushing agent = %q", got)
	}
	eventually(t, "the other agent's L1 emptied", func() error {
		if _, ok := agents[1].srv.L1().Get("f:3"); ok {
			return fmt.Errorf("f:3 still in B's L1")
		}
		return nil
	})
	if got := cb.do("FLUSHDB", "NOW"); got != "ERR:ERR syntax error" {
		t.Errorf("FLUSHDB NOW = %q", got)
	}
}

// TestInfoAndClientAsToolsExpect: INFO with a section, the server fields clients parse, and
// CLIENT LIST/INFO describing this agent's connections.
func TestInfoAndClientAsToolsExpect(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	c, other := a.dial(t), a.dial(t)
	other.do("CLIENT", "SETNAME", "worker-7")
	other.do("CLIENT", "SETINFO", "lib-name", "go-redis")
	server := c.do("INFO", "server")
	for _, field := range []string{"redis_version:7.2.4", "valkey_version:", "os:", "process_id:", "uptime_in_seconds:"} {
		if !strings.Contains(server, field) {
			t.Errorf("INFO server lacks %q:\n%s", field, server)
		}
	}
	if strings.Contains(server, "# Stats") {
		t.Error("INFO server answered other sections too")
	}
	if all := c.do("INFO"); !strings.Contains(all, "# Clients") || !strings.Contains(all, "# Cachefleet") {
		t.Errorf("INFO without a section:\n%s", all)
	}
	// The data's sections are the fleet's: every shard's, counts summed.
	c.do("SET", keyOn(t, a, "ks", 0), "v")
	c.do("SET", keyOn(t, a, "ks", 1), "v")
	if got := c.do("INFO", "keyspace"); !strings.HasPrefix(got, "# Keyspace\r\ndb0:keys=2,expires=2,avg_ttl=") { // the policy TTL on both
		t.Errorf("INFO keyspace = %q", got)
	}
	if got := c.do("INFO", "persistence"); !strings.Contains(got, "rdb_changes_since_last_save:") || !strings.HasPrefix(got, "# Persistence\r\n") {
		t.Errorf("INFO persistence = %q", got)
	}
	if got := c.do("INFO", "nosuchsection"); got != "" {
		t.Errorf("INFO of an unknown section = %q, want empty", got)
	}
	c.do("MULTI")
	c.do("SET", "k", "v")
	seen := other.do("CLIENT", "LIST") // read by another connection while c is in MULTI
	c.do("DISCARD")
	if !strings.Contains(seen, "flags=x db=0 sub=0 psub=0 ssub=0 multi=1 ") || !strings.Contains(seen, "cmd=set ") {
		t.Errorf("CLIENT LIST while a transaction is open:\n%s", seen)
	}
	if info := other.do("CLIENT", "INFO"); !strings.Contains(info, "name=worker-7") || !strings.Contains(info, "multi=-1 ") || !strings.Contains(info, " cmd=client|info ") || !strings.Contains(info, "resp=2") {
		t.Errorf("CLIENT INFO = %q", info)
	}
	list := c.do("CLIENT", "LIST")
	if n := strings.Count(list, "\n"); n != 2 || !strings.Contains(list, "name=worker-7") || !strings.Contains(list, "lib-name=go-redis") {
		t.Errorf("CLIENT LIST (%d lines):\n%s", n, list)
	}
	// After EXEC, the client's last command is exec, not the last one EXEC ran (as Valkey).
	c.do("MULTI")
	c.do("GET", "k")
	c.do("EXEC")
	if got := a.dial(t).do("CLIENT", "LIST", "ID", c.do("CLIENT", "ID")); !strings.Contains(got, " cmd=client|id ") {
		t.Errorf("CLIENT LIST of c:\n%s", got)
	}
	c.do("MULTI")
	c.do("GET", "k")
	c.do("EXEC")
	if got := a.dial(t).do("CLIENT", "LIST", "TYPE", "normal"); !strings.Contains(got, " cmd=exec ") {
		t.Errorf("CLIENT LIST after EXEC:\n%s", got)
	}
	// Valkey's options: by type (an agent's connections are normal or pubsub), by ID in the order asked.
	otherID := other.do("CLIENT", "ID")
	other.do("SUBSCRIBE", "ch")
	for _, tc := range []struct {
		args  []string
		lines int
		has   string
	}{
		{[]string{"TYPE", "pubsub"}, 1, "flags=P "}, {[]string{"TYPE", "normal"}, 3, "cmd=client|list "}, // c and the two that read its lines
		{[]string{"TYPE", "replica"}, 0, ""}, {[]string{"ID", "999", otherID}, 1, "name=worker-7 "},
	} {
		got := c.do(append([]string{"CLIENT", "LIST"}, tc.args...)...)
		if strings.Count(got, "\n") != tc.lines || !strings.Contains(got, tc.has) {
			t.Errorf("CLIENT LIST %v:\n%s", tc.args, got)
		}
	}
	for args, want := range map[string]string{"TYPE x": "ERR:ERR Unknown client type 'x'", "ID x": "ERR:ERR Invalid client ID", "BOGUS": "ERR:ERR syntax error"} {
		if got := c.do(append([]string{"CLIENT", "LIST"}, strings.Fields(args)...)...); got != want {
			t.Errorf("CLIENT LIST %s = %q, want %q", args, got, want)
		}
	}
}
