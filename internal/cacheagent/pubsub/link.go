package pubsub

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// linkKey names a shard connection: the shard (name and address) and whether it carries
// sharded channels (their messages look like channels' and need a connection of their own).
type linkKey struct {
	shard   string
	sharded bool
}

func keyOf(sh *router.Shard, sharded bool) linkKey {
	return linkKey{sh.Name() + "@" + sh.Addr(), sharded}
}

type subKey struct {
	kind Kind
	name string
}

// link is the agent's subscribing connection to one shard. It holds what the agent's clients
// want subscribed there and sends it all again whenever it connects (again).
type link struct {
	hub     *Hub
	addr    string
	sharded bool
	stop    context.CancelFunc
	done    chan struct{}

	// ops serializes what is sent (subscriptions, the reconnect's resubscription).
	ops     sync.Mutex
	dc      valkey.DedicatedClient // nil while not connected; set and read under ops
	release func()                 // gives dc back

	// mu guards want and ready; it is never held while waiting for anything.
	mu    sync.Mutex
	want  map[subKey]bool // wanted names: true once the live connection confirmed them
	ready chan struct{}   // closed while connected
}

// linkFor returns the shard's link, starting it; the caller holds h.mu.
func (h *Hub) linkFor(sh *router.Shard, sharded bool) *link {
	k := keyOf(sh, sharded)
	if l := h.links[k]; l != nil {
		return l
	}
	ctx, stop := context.WithCancel(context.Background())
	l := &link{hub: h, addr: sh.Addr(), sharded: sharded, stop: stop, done: make(chan struct{}),
		want: map[subKey]bool{}, ready: make(chan struct{})}
	h.links[k] = l
	go l.run(ctx)
	return l
}

// wants reports whether the link holds (or is making) a subscription.
func (l *link) wants(kind Kind, name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.want[subKey{kind, name}]
	return ok
}

// subscribe makes the link hold names, returning once the shard confirmed them.
func (l *link) subscribe(ctx context.Context, kind Kind, names []string) error {
	l.mu.Lock()
	for _, n := range names {
		if _, ok := l.want[subKey{kind, n}]; !ok {
			l.want[subKey{kind, n}] = false
		}
	}
	l.mu.Unlock()
	for {
		l.ops.Lock()
		if l.dc == nil {
			l.ops.Unlock()
			l.mu.Lock()
			ready := l.ready
			l.mu.Unlock()
			select {
			case <-ready:
				continue
			case <-ctx.Done():
				return fmt.Errorf("CFDOWN no connection to the shard at %s for pub/sub: %w", l.addr, ctx.Err())
			}
		}
		var unconfirmed []string
		l.mu.Lock()
		for _, n := range names {
			if confirmed, ok := l.want[subKey{kind, n}]; ok && !confirmed {
				unconfirmed = append(unconfirmed, n)
			}
		}
		l.mu.Unlock()
		var err error
		if len(unconfirmed) > 0 {
			if err = l.dc.Do(ctx, build(l.dc.B(), kind, true, unconfirmed)).Error(); err == nil {
				l.confirm(kind, unconfirmed)
			}
		}
		l.ops.Unlock()
		if err != nil {
			return fmt.Errorf("CFDOWN the shard at %s did not confirm the subscription: %w", l.addr, err)
		}
		return nil
	}
}

func (l *link) confirm(kind Kind, names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		if _, ok := l.want[subKey{kind, n}]; ok {
			l.want[subKey{kind, n}] = true
		}
	}
}

// unsubscribe drops names in the background, unless a client of this agent took them again
// meanwhile.
func (l *link) unsubscribe(kind Kind, names []string) {
	go func() {
		l.ops.Lock()
		defer l.ops.Unlock()
		l.hub.mu.RLock()
		var drop []string
		for _, n := range names {
			if len(l.hub.subs[kind][n]) == 0 {
				drop = append(drop, n)
			}
		}
		l.hub.mu.RUnlock()
		l.mu.Lock()
		for _, n := range drop {
			delete(l.want, subKey{kind, n})
		}
		l.mu.Unlock()
		if l.dc != nil && len(drop) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), l.hub.timeout)
			defer cancel()
			_ = l.dc.Do(ctx, build(l.dc.B(), kind, false, drop)).Error() // a lost connection forgets them anyway
		}
	}()
}

// build is the (un)subscribe command of kind for names.
func build(b valkey.Builder, kind Kind, on bool, names []string) valkey.Completed {
	switch {
	case kind == Pattern && on:
		return b.Psubscribe().Pattern(names...).Build()
	case kind == Pattern:
		return b.Punsubscribe().Pattern(names...).Build()
	case kind == ShardChannel && on:
		return b.Ssubscribe().Channel(names...).Build()
	case kind == ShardChannel:
		return b.Sunsubscribe().Channel(names...).Build()
	case on:
		return b.Subscribe().Channel(names...).Build()
	}
	return b.Unsubscribe().Channel(names...).Build()
}

// run keeps the link connected, re-making a lost connection with its subscriptions.
func (l *link) run(ctx context.Context) {
	defer close(l.done)
	backoff, connects := 50*time.Millisecond, 0
	for {
		client, lost, err := l.connect(ctx)
		if err == nil {
			if connects++; connects > 1 {
				l.hub.Stats.Resubscribes.Add(1)
			}
			backoff = 50 * time.Millisecond
			select {
			case err := <-lost:
				_ = err // why it ended changes nothing: the connection is made again
			case <-ctx.Done():
			}
			l.disconnect(client)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// connect dials the shard and subscribes everything wanted; lost reports the connection's end.
func (l *link) connect(ctx context.Context) (valkey.Client, <-chan error, error) {
	client, err := valkey.NewClient(valkey.ClientOption{
		InitAddress: []string{l.addr}, Password: l.hub.password(), ForceSingleClient: true,
		DisableCache: true, DisableRetry: true, Dialer: net.Dialer{Timeout: l.hub.timeout},
	})
	if err != nil {
		return nil, nil, err
	}
	dc, release := client.Dedicate()
	lost := dc.SetPubSubHooks(valkey.PubSubHooks{OnMessage: l.onMessage})
	l.ops.Lock()
	defer l.ops.Unlock()
	l.mu.Lock()
	byKind := map[Kind][]string{}
	for k := range l.want {
		byKind[k.kind] = append(byKind[k.kind], k.name)
		l.want[k] = false
	}
	l.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, l.hub.timeout)
	defer cancel()
	for kind, names := range byKind {
		for len(names) > 0 {
			n := min(len(names), 1000)
			if err := dc.Do(sctx, build(dc.B(), kind, true, names[:n])).Error(); err != nil {
				release()
				client.Close()
				return nil, nil, err
			}
			l.confirm(kind, names[:n])
			names = names[n:]
		}
	}
	l.dc, l.release = dc, release
	l.mu.Lock()
	close(l.ready)
	l.mu.Unlock()
	return client, lost, nil
}

// disconnect forgets a lost connection: what it held is sent again on the next one.
func (l *link) disconnect(client valkey.Client) {
	l.ops.Lock()
	l.release()
	l.dc, l.release = nil, nil
	l.mu.Lock()
	l.ready = make(chan struct{})
	for k := range l.want {
		l.want[k] = false
	}
	l.mu.Unlock()
	l.ops.Unlock()
	client.Close()
}

func (l *link) onMessage(m valkey.PubSubMessage) {
	kind := Channel
	switch {
	case l.sharded:
		kind = ShardChannel
	case m.Pattern != "":
		kind = Pattern
	}
	l.hub.deliver(Message{Kind: kind, Pattern: m.Pattern, Channel: m.Channel, Payload: m.Message})
}

func (l *link) close() {
	l.stop()
	<-l.done
}
