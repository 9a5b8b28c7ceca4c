package pubsub

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/contract"
)

type inbox struct {
	mu   sync.Mutex
	msgs []Message
}

func (b *inbox) Deliver(m Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *inbox) got() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

func ringOf(t *testing.T, shards ...*tu.Redis) *router.Router {
	t.Helper()
	d := &contract.Document{SchemaVersion: contract.SchemaVersion, Algorithm: contract.AlgorithmRendezvous}
	for i, s := range shards {
		d.Shards = append(d.Shards, contract.Shard{Name: "shard-" + strconv.Itoa(i), Primary: s.Addr()})
	}
	r, err := router.New(d, nil, func(sh contract.Shard) router.ShardConfig {
		return router.ShardConfig{Name: sh.Name, Addr: sh.Primary, Timeout: time.Second, FailuresToOpen: 5, Cooldown: time.Second}
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Two agents' hubs over the same two shards: what one publishes on a channel's home shard
// reaches subscribers of both, once each; patterns hear every shard; counts are per client.
func TestHubsCarryMessagesAcrossAgents(t *testing.T) {
	s0, s1 := tu.StartRedis(t, ""), tu.StartRedis(t, "")
	r := ringOf(t, s0, s1)
	hubs := []*Hub{NewHub(func() string { return "" }, time.Second), NewHub(func() string { return "" }, time.Second)}
	for _, h := range hubs {
		h.SetRing(r)
		t.Cleanup(h.Close)
	}
	ctx := context.Background()
	a, b, p := &inbox{}, &inbox{}, &inbox{}
	if err := hubs[0].Subscribe(ctx, a, Channel, []string{"news", "sports"}); err != nil {
		t.Fatal(err)
	}
	if err := hubs[1].Subscribe(ctx, b, Channel, []string{"news"}); err != nil {
		t.Fatal(err)
	}
	if err := hubs[1].Subscribe(ctx, p, Pattern, []string{"n*", "s*"}); err != nil {
		t.Fatal(err)
	}
	// Channels land on both shards over a handful of names; patterns hear all of them.
	names := []string{"news", "sports"}
	for i := range 6 {
		names = append(names, fmt.Sprintf("s%d", i))
	}
	for _, ch := range names {
		sh := Home(r, ch)
		res, err := sh.Do(ctx, func(b valkeyBuilder) valkeyCompleted { return b.Publish().Channel(ch).Message("m-" + ch).Build() })
		n, _ := res.AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		// Agent 0: a (news, sports); agent 1: b (news), p (n* matches news; s* matches sports, s0..).
		// Agent 1 counts its own clients one each and agent 0 as the shard sees it (once).
		want := map[string]int64{"news": 3, "sports": 2}[ch]
		if want == 0 {
			want = 1
		}
		if got := hubs[1].Receivers(Channel, sh, ch, n); got != want {
			t.Errorf("PUBLISH %s: the shard said %d, the fleet's count %d, want %d", ch, n, hubs[1].Receivers(Channel, sh, ch, n), want)
		}
	}
	waitFor(t, "every message", func() bool { return len(a.got()) == 2 && len(b.got()) == 1 && len(p.got()) == len(names) })
	if m := b.got()[0]; m.Kind != Channel || m.Channel != "news" || m.Payload != "m-news" {
		t.Errorf("b got %+v", m)
	}
	for _, m := range p.got() {
		if m.Kind != Pattern || (m.Pattern != "n*" && m.Pattern != "s*") || m.Payload != "m-"+m.Channel {
			t.Errorf("p got %+v", m)
		}
	}
	// The last client's unsubscribe leaves the shard; another client keeps its subscription.
	hubs[0].Unsubscribe(a, Channel, []string{"news"})
	waitFor(t, "the shard to drop agent 0's news", func() bool {
		res, _ := Home(r, "news").Do(ctx, func(b valkeyBuilder) valkeyCompleted { return b.PubsubNumsub().Channel("news").Build() })
		n, _ := res.ToArray()
		v, _ := n[1].AsInt64()
		return v == 1
	})
	if c, _, _ := hubs[0].Subscriptions(); c != 1 {
		t.Errorf("agent 0 holds %d channels, want 1 (sports)", c)
	}
}

// A shard that restarts loses every subscription; the link makes them again.
func TestALinkResubscribesAfterTheShardRestarts(t *testing.T) {
	s0 := tu.StartRedis(t, "")
	r := ringOf(t, s0)
	h := NewHub(func() string { return "" }, time.Second)
	h.SetRing(r)
	t.Cleanup(h.Close)
	in := &inbox{}
	if err := h.Subscribe(context.Background(), in, ShardChannel, []string{"orders"}); err != nil {
		t.Fatal(err)
	}
	s0.Stop()
	s0.Start()
	waitFor(t, "a resubscription", func() bool { return h.Stats.Resubscribes.Load() >= 1 })
	waitFor(t, "the message after the restart", func() bool {
		_, _ = s0.Do("SPUBLISH", "orders", "after")
		return len(in.got()) > 0
	})
	if m := in.got()[0]; m.Kind != ShardChannel || m.Channel != "orders" || m.Payload != "after" {
		t.Errorf("got %+v", m)
	}
}

type (
	valkeyBuilder   = valkey.Builder
	valkeyCompleted = valkey.Completed
)
