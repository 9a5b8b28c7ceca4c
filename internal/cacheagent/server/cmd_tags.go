package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/tags"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// The RESP face of the tag index (package tags): CF.SET ... TAGS, and tag invalidation.

// cmdTagSet: CF.SET key value [EX s|PX ms] TAGS tag [tag ...]
func cmdTagSet(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key, value := str(args[1]), str(args[2])
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(value)) {
		return
	}
	value = rules.Stored(value)
	ttl := rules.WriteTTL(nil)
	rest := args[3:]
	if len(rest) >= 2 && (strings.EqualFold(str(rest[0]), "EX") || strings.EqualFold(str(rest[0]), "PX")) {
		n, err := strconv.ParseInt(str(rest[1]), 10, 64)
		if err != nil || n <= 0 {
			b.local(func(w *resp.Writer) { w.Error("ERR invalid expire time in 'cf.set' command") })
			return
		}
		ttl = time.Duration(n) * time.Millisecond
		if strings.EqualFold(str(rest[0]), "EX") {
			ttl = time.Duration(n) * time.Second
		}
		rest = rest[2:]
	}
	if len(rest) < 2 || !strings.EqualFold(str(rest[0]), "TAGS") {
		b.local(func(w *resp.Writer) { w.Error("ERR syntax: CF.SET key value [EX s|PX ms] TAGS tag [tag ...]") })
		return
	}
	tagList := strs(rest[1:])
	s.announce(b.cid, key)
	b.writeJob(ctx, w, args[1], true, func(bd valkey.Builder) valkey.Completed {
		return tags.Set(bd, key, value, ttl, tagList)
	})
}

// InvalidateTags removes every live key carrying one of tagList, on every shard, and from
// every agent's L1. It returns how many keys were removed.
func (s *Server) InvalidateTags(ctx context.Context, tagList []string) (int64, error) {
	r := s.Router()
	removed, err := tags.Invalidate(ctx, r.Shards, tagList)
	s.settle(r, removed...)
	if len(removed) > 0 {
		err = errors.Join(err, s.broadcast(ctx, bus.OpDelete, removed...))
	}
	return int64(len(removed)), err
}
