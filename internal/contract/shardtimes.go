package contract

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FormatShardTimes is the value of AnnotationUnreachable and AnnotationRefusingWrites: the shards
// and since when, "shard-0=<unix ms>,shard-2=<unix ms>", in order; empty for none.
func FormatShardTimes(since map[string]time.Time) string {
	parts := make([]string, 0, len(since))
	for _, shard := range slices.Sorted(maps.Keys(since)) {
		parts = append(parts, shard+"="+strconv.FormatInt(since[shard].UnixMilli(), 10))
	}
	return strings.Join(parts, ",")
}

// ParseShardTimes reads FormatShardTimes' value; entries it cannot read are left out.
func ParseShardTimes(v string) map[string]time.Time {
	out := map[string]time.Time{}
	for part := range strings.SplitSeq(v, ",") {
		shard, ms, ok := strings.Cut(part, "=")
		if !ok || shard == "" {
			continue
		}
		if n, err := strconv.ParseInt(ms, 10, 64); err == nil && n > 0 {
			out[shard] = time.UnixMilli(n)
		}
	}
	return out
}
