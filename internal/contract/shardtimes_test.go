package contract

import (
	"maps"
	"testing"
	"time"
)

func TestUnreachableRoundTrip(t *testing.T) {
	lost := map[string]time.Time{"shard-2": time.UnixMilli(1700000000123), "shard-0": time.UnixMilli(1700000001000)}
	v := FormatShardTimes(lost)
	if v != "shard-0=1700000001000,shard-2=1700000000123" {
		t.Errorf("formatted %q", v)
	}
	if got := ParseShardTimes(v); !maps.EqualFunc(got, lost, time.Time.Equal) {
		t.Errorf("parsed %v, want %v", got, lost)
	}
	if FormatShardTimes(nil) != "" || len(ParseShardTimes("")) != 0 {
		t.Error("nothing lost is the empty value")
	}
	if got := ParseShardTimes("shard-0=x,=5,shard-1,shard-3=-1,shard-4=7"); len(got) != 1 || !got["shard-4"].Equal(time.UnixMilli(7)) {
		t.Errorf("unreadable entries: %v", got)
	}
}
