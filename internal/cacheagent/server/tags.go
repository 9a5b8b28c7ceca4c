package server

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/resp"
)

// Tags: CF.SET records a key under tags in a per-shard index (a sorted set per tag, scored by
// the key's expiry time, on the key's own shard), so the index entries expire with their keys.
// CF.INVALIDATE TAG removes every live key of the tags on every shard, and from every L1.

const tagPrefix = "cf:tag:"

// tagSetScript: KEYS = key, index...; ARGV = value, ttl ms, now ms.
const tagSetScript = `
local ttl = tonumber(ARGV[2])
local expires = tonumber(ARGV[3]) + ttl
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[3])
  redis.call('ZADD', KEYS[i], expires, KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 'OK'`

// tagInvalidateScript: KEYS = index...; ARGV = now ms. Returns the removed keys.
const tagInvalidateScript = `
local removed = {}
for i = 1, #KEYS do
  local keys = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[1], '+inf')
  for _, k in ipairs(keys) do
    if redis.call('UNLINK', k) == 1 then table.insert(removed, k) end
  end
  redis.call('DEL', KEYS[i])
end
return removed`

// cmdTagSet: CF.SET key value [EX s|PX ms] TAGS tag [tag ...]
func cmdTagSet(ctx context.Context, s *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	key, value := str(args[1]), str(args[2])
	rules := b.rulesFor(args[1])
	if s.oversize(b, rules, key, len(value)) {
		return
	}
	value = stored(rules, value)
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
	keys := []string{key}
	for _, t := range rest[1:] {
		keys = append(keys, tagPrefix+str(t))
	}
	s.forget(key)
	ttlMs, now := strconv.FormatInt(ttl.Milliseconds(), 10), strconv.FormatInt(time.Now().UnixMilli(), 10)
	b.writeJob(ctx, w, args[1], true, func(bd valkey.Builder) valkey.Completed {
		return bd.Eval().Script(tagSetScript).Numkeys(int64(len(keys))).Key(keys...).Arg(value, ttlMs, now).Build()
	})
}

// InvalidateTags removes every live key carrying one of tags, on every shard, and broadcasts
// the removed keys to every agent's L1. It returns how many keys were removed.
func (s *Server) InvalidateTags(ctx context.Context, tags []string) (int64, error) {
	idx := make([]string, len(tags))
	for i, t := range tags {
		idx[i] = tagPrefix + t
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var mu sync.Mutex
	var removed []string
	var firstErr error
	var wg sync.WaitGroup
	for _, sh := range s.Router().Shards {
		wg.Go(func() {
			res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
				return bd.Eval().Script(tagInvalidateScript).Numkeys(int64(len(idx))).Key(idx...).Arg(now).Build()
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = err
				return
			}
			keys, _ := res.AsStrSlice()
			removed = append(removed, keys...)
		})
	}
	wg.Wait()
	for _, k := range removed {
		s.L1().Delete(k)
	}
	if len(removed) > 0 {
		if err := s.broadcast(ctx, bus.OpDelete, removed...); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return int64(len(removed)), firstErr
}
