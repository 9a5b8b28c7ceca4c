package router

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestARequestsTimeoutGrowsWithItsArguments: an MGET of 100,000 keys once read as misses and
// counted toward the breaker after the plain shard timeout.
func TestARequestsTimeoutGrowsWithItsArguments(t *testing.T) {
	s := NewShard(ShardConfig{Name: "s", Addr: "127.0.0.1:1", Timeout: time.Second})
	for _, tc := range []struct {
		args int
		want time.Duration
	}{{0, time.Second}, {2, time.Second + 40*time.Microsecond}, {100001, time.Second + 100001*perArgument}} {
		ctx, cancel := s.timeout(context.Background(), tc.args)
		dl, _ := ctx.Deadline()
		cancel()
		if got := time.Until(dl); got > tc.want || got < tc.want-100*time.Millisecond {
			t.Errorf("%d arguments: timeout %v, want %v", tc.args, got, tc.want)
		}
	}
	if got := argumentsOf([]int{1, 2, 3}); got != 3 {
		t.Errorf("argumentsOf of 3 unknown commands = %d", got)
	}
}

func TestScriptUserCommand(t *testing.T) {
	for pw, want := range map[string]string{
		"":   "ACL SETUSER cachefleet-scripts reset on ~* &* +@all -@admin -@dangerous nopass",
		"pw": "ACL SETUSER cachefleet-scripts reset on ~* &* +@all -@admin -@dangerous >pw",
	} {
		if got := strings.Join(scriptUserCommand(pw), " "); got != want {
			t.Errorf("password %q: %s, want %s", pw, got, want)
		}
	}
}

// TestANewRingKeepsItsShards: a shard whose settings did not change is the same shard in the
// next ring (its connections, breaker and L1 copies stay). Defaults filled in by NewShard once
// made every ring change a new shard.
func TestANewRingKeepsItsShards(t *testing.T) {
	cfg := ShardConfig{Name: "s", Addr: "127.0.0.1:1", Timeout: time.Second}
	s := NewShard(cfg)
	if s.Config() != cfg {
		t.Errorf("NewShard changed its config: %+v, given %+v", s.Config(), cfg)
	}
}
