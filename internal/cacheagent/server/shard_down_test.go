package server

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// TestOnShardDownDecidesByClass: the one place that turns a down shard into a reply.
func TestOnShardDownDecidesByClass(t *testing.T) {
	down := &router.DownError{Shard: "shard-1", Err: errors.New("connection refused")}
	for _, c := range []struct {
		name     string
		p        pending
		parts    int // parts; the last one is down
		answered bool
		reply    string
		queued   int
	}{
		{"single-key read answers its miss", pending{class: classRead, miss: nullReply}, 1, true, "$-1\r\n", 0},
		{"multi-key read leaves it to finish", pending{class: classRead}, 2, false, "", 0},
		{"write names the shard", pending{class: classWrite}, 2, true, "-CFDOWN shard shard-1 is unavailable: connection refused\r\n", 0},
		{"a write over two shards names the keys written and not", pending{class: classWrite, keys: [][]string{{"a", "c"}, {"b"}}}, 2, true,
			"-CFDOWN shard shard-1 is unavailable: connection refused; written: 'a' 'c'; not written: 'b'\r\n", 0},
		{"GETDEL queues the delete and answers nil", pending{class: classDelete, miss: nullReply, keys: [][]string{{"k"}}}, 1, true, "$-1\r\n", 1},
		{"DEL queues and lets finish count", pending{class: classDelete, keys: [][]string{{"a"}, {"b", "c"}}}, 2, false, "", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := New(DefaultConfig())
			sh := router.NewShard(router.ShardConfig{Name: "shard-1", Addr: "127.0.0.1:1", MaxQueuedDels: 10})
			results := make([]partResult, c.parts)
			for i := range results {
				results[i].shard = sh
			}
			results[c.parts-1].err = down
			var buf bytes.Buffer
			w := resp.NewWriter(bufio.NewWriter(&buf))
			answered := s.onShardDown(&c.p, results, w)
			w.Flush()
			if answered != c.answered || buf.String() != c.reply {
				t.Errorf("answered %v %q, want %v %q", answered, buf.String(), c.answered, c.reply)
			}
			if sh.Pending() != c.queued {
				t.Errorf("%d deletes queued, want %d", sh.Pending(), c.queued)
			}
			if c.p.class == classDelete && !results[c.parts-1].queued {
				t.Error("the down part is not marked queued")
			}
		})
	}
}
