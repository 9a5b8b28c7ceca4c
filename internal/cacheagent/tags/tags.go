// Package tags is the fleet's tag index: CF.SET records a key under tags in a per-shard index
// (a sorted set per tag, scored by the key's expiry time, on the key's own shard), so index
// entries expire with their keys; invalidating a tag removes every live key carrying it, on
// every shard.
package tags

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

const prefix = "cf:tag:"

// Index is the sorted set of tag on a shard.
func Index(tag string) string { return prefix + tag }

// setScript: KEYS = key, index...; ARGV = value, ttl ms, now ms.
const setScript = `
local ttl = tonumber(ARGV[2])
local expires = tonumber(ARGV[3]) + ttl
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[3])
  redis.call('ZADD', KEYS[i], expires, KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 'OK'`

// invalidateScript: KEYS = index...; ARGV = now ms. Returns the removed keys.
const invalidateScript = `
local removed = {}
for i = 1, #KEYS do
  local keys = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[1], '+inf')
  for _, k in ipairs(keys) do
    if redis.call('UNLINK', k) == 1 then table.insert(removed, k) end
  end
  redis.call('DEL', KEYS[i])
end
return removed`

// Set builds the command that stores key = value for ttl and records it under tags (one
// atomic script on key's shard: the indexes live there too).
func Set(bd valkey.Builder, key, value string, ttl time.Duration, tags []string) valkey.Completed {
	keys := make([]string, 0, len(tags)+1)
	keys = append(keys, key)
	for _, t := range tags {
		keys = append(keys, Index(t))
	}
	return bd.Eval().Script(setScript).Numkeys(int64(len(keys))).Key(keys...).
		Arg(value, strconv.FormatInt(ttl.Milliseconds(), 10), strconv.FormatInt(time.Now().UnixMilli(), 10)).Build()
}

// Invalidate removes every live key carrying one of tags from every shard and returns them.
// A shard that fails is reported; the keys removed elsewhere are still returned.
func Invalidate(ctx context.Context, shards []*router.Shard, tags []string) ([]string, error) {
	idx := make([]string, len(tags))
	for i, t := range tags {
		idx[i] = Index(t)
	}
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var mu sync.Mutex
	var removed []string
	var errs []error
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Go(func() {
			res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
				return bd.Eval().Script(invalidateScript).Numkeys(int64(len(idx))).Key(idx...).Arg(now).Build()
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			keys, _ := res.AsStrSlice()
			removed = append(removed, keys...)
		})
	}
	wg.Wait()
	return removed, errors.Join(errs...)
}
