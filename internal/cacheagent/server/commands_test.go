package server_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// TestMoreCommandsFollowThePolicies: keys created by the forwarded writes get the policy TTL,
// values over the limit are refused, scripts go to the shard of their keys, SCRIPT LOAD
// reaches every shard, and a script's write is visible to the next read (L1 fenced).
func TestMoreCommandsFollowThePolicies(t *testing.T) {
	shards := twoShards(t)
	a := startAgent(t, shards, defaults()) // default TTL 1h, max value 1 KiB, tracking L1
	c := a.dial(t)
	for _, cmd := range [][]string{
		{"SETNX", "n1", "v"}, {"HSET", "h1", "f", "v"}, {"HSETNX", "h2", "f", "v"}, {"HINCRBY", "h3", "f", "1"},
		{"APPEND", "a1", "x"}, {"INCRBYFLOAT", "f1", "0.5"}, {"SETRANGE", "r1", "2", "x"}, {"GETSET", "g1", "v"},
		{"MSETNX", "{ms}a", "1", "{ms}b", "2"},
	} {
		c.do(cmd...)
		key := cmd[1]
		if ttl, _ := strconv.Atoi(c.do("TTL", key)); ttl < 3590 {
			t.Errorf("%s created %s with TTL %d, want the policy's 1h", cmd[0], key, ttl)
		}
	}
	if ttl, _ := strconv.Atoi(c.do("TTL", "{ms}b")); ttl < 3590 {
		t.Errorf("MSETNX's second key has TTL %d", ttl)
	}
	big := strings.Repeat("x", 2000)
	for _, cmd := range [][]string{{"HSET", "h1", "f", big}, {"APPEND", "a1", big}, {"SETNX", "n2", big}, {"SETRANGE", "r1", "1500", "x"}} {
		if got := c.do(cmd...); !strings.Contains(got, "exceeds") || !strings.Contains(got, "limit of 1024 bytes") { // SETRANGE in Valkey's words
			t.Errorf("%s over the limit = %q", cmd[0], got)
		}
	}
	if got := c.do("EVAL", "return 1", "0"); got != "1" { // on the ring's first shard
		t.Errorf("EVAL with no keys = %q, want it run", got)
	}
	k0, k1 := keyOn(t, a, "ev:", 0), keyOn(t, a, "ev:", 1)
	if got := c.do("EVAL", "return 1", "2", k0, k1); !strings.HasPrefix(got, "ERR:CROSSSLOT") {
		t.Errorf("EVAL over two shards = %q", got)
	}
	sha := c.do("SCRIPT", "LOAD", "return redis.call('INCR', KEYS[1])")
	for _, k := range []string{k0, k1} { // loaded on both shards
		if got := c.do("EVALSHA", sha, "1", k); got != "1" {
			t.Errorf("EVALSHA on %s = %q", k, got)
		}
	}
	c.do("SET", "ev:seen", "old")
	c.do("GET", "ev:seen") // now in the tracking L1
	c.do("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "ev:seen", "new")
	if got := c.do("GET", "ev:seen"); got != "new" {
		t.Errorf("GET after a script's write = %q", got)
	}
}

// TestByteCommandsOnCompressedValues: the stored bytes of a compressed value are not the
// client's, so STRLEN and GETRANGE answer from the decoded value and APPEND/SETRANGE refuse.
func TestByteCommandsOnCompressedValues(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	withPolicy(t, a, contract.Policy{Name: "docs", Prefix: "doc:", L1Enabled: true, L1Mode: "tracking",
		MaxValueBytes: 64 << 10, Compression: codec.Zstd, CompressionMinSize: 64})
	c := a.dial(t)
	v := strings.Repeat(`{"sku":"A-1","name":"blue mug"},`, 40)
	c.do("SET", "doc:1", v)
	if got := c.do("STRLEN", "doc:1"); got != strconv.Itoa(len(v)) {
		t.Errorf("STRLEN of a compressed value = %s, want %d", got, len(v))
	}
	if got := c.do("GETRANGE", "doc:1", "0", "7"); got != v[:8] {
		t.Errorf("GETRANGE = %q", got)
	}
	if got := c.do("GETRANGE", "doc:1", "-6", "-1"); got != v[len(v)-6:] {
		t.Errorf("GETRANGE from the end = %q", got)
	}
	for _, cmd := range [][]string{{"APPEND", "doc:1", "x"}, {"SETRANGE", "doc:1", "0", "x"}} {
		if got := c.do(cmd...); !strings.Contains(got, "compresses values") {
			t.Errorf("%s on a compressed key = %q", cmd[0], got)
		}
	}
}
