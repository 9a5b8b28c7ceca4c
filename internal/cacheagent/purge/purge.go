// Package purge removes keys from L2: named keys on their shards (queued for a shard that is
// down) and every key with a prefix on every shard (SCAN, so a large keyspace never blocks a
// shard).
package purge

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// ErrEmptyPrefix refuses an invalidation of every key where FLUSHALL is refused.
var ErrEmptyPrefix = errors.New("an empty prefix names every key of the fleet: refused as FLUSHALL is. " +
	"Set spec.tiers.l2.allowFlush: true on the CacheFleet (--allow-flush in static mode) to allow it")

// Keys unlinks keys on their shards and cancels their fill leases (a late fill would restore
// the value). A down shard gets the deletes queued, counted as removed.
func Keys(ctx context.Context, r *router.Router, keys []string) int64 {
	groups := map[*router.Shard][]string{}
	leases := map[*router.Shard][]string{}
	for _, k := range keys {
		sh := r.ShardFor([]byte(k))
		groups[sh] = append(groups[sh], k)
		leases[sh] = append(leases[sh], lease.Key(k))
	}
	var removed atomic.Int64
	var wg sync.WaitGroup
	for sh, ks := range groups {
		wg.Go(func() {
			res, err := sh.DoMulti(ctx, func(bd valkey.Builder) []valkey.Completed {
				return []valkey.Completed{bd.Unlink().Key(ks...).Build(), bd.Unlink().Key(leases[sh]...).Build()}
			})
			if err != nil {
				sh.QueueDelete(append(ks, leases[sh]...)...)
				removed.Add(int64(len(ks)))
				return
			}
			n, _ := res[0].AsInt64()
			removed.Add(n)
		})
	}
	wg.Wait()
	return removed.Load()
}

// Prefixes unlinks every key starting with one of prefixes on every shard.
func Prefixes(ctx context.Context, shards []*router.Shard, prefixes []string) (int64, error) {
	var removed atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Go(func() {
			for _, p := range prefixes {
				n, err := unlinkPrefix(ctx, sh, p)
				removed.Add(n)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return removed.Load(), errors.Join(errs...)
}

func unlinkPrefix(ctx context.Context, sh *router.Shard, prefix string) (int64, error) {
	pattern := GlobEscape(prefix) + "*"
	var removed int64
	cursor := uint64(0)
	for {
		res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed {
			return bd.Scan().Cursor(cursor).Match(pattern).Count(1000).Build()
		})
		if err != nil {
			return removed, err
		}
		entry, err := res.AsScanEntry()
		if err != nil {
			return removed, err
		}
		if len(entry.Elements) > 0 {
			res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.Unlink().Key(entry.Elements...).Build() })
			if err != nil {
				return removed, err
			}
			n, _ := res.AsInt64()
			removed += n
		}
		if cursor = entry.Cursor; cursor == 0 {
			return removed, nil
		}
	}
}

// GlobEscape makes a prefix match literally in SCAN MATCH.
func GlobEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
