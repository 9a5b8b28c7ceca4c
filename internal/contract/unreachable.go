package contract

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FormatUnreachable is AnnotationUnreachable's value: "shard-0=<unix ms>,shard-2=<unix ms>",
// the shards in order; empty when every primary is reached.
func FormatUnreachable(lost map[string]time.Time) string {
	parts := make([]string, 0, len(lost))
	for _, shard := range slices.Sorted(maps.Keys(lost)) {
		parts = append(parts, shard+"="+strconv.FormatInt(lost[shard].UnixMilli(), 10))
	}
	return strings.Join(parts, ",")
}

// ParseUnreachable reads AnnotationUnreachable's value; entries it cannot read are left out.
func ParseUnreachable(v string) map[string]time.Time {
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
