// Package pubsub carries the fleet's pub/sub through an agent. Channels and patterns are
// subscribed on every shard, so a message published anywhere (a PUBLISH through any agent, a
// script or transaction on any shard, a shard's own keyspace events) reaches every subscriber;
// a PUBLISH through an agent goes to one shard, the one the channel's name hashes to on the
// ring, so it is delivered once. Sharded channels (SSUBSCRIBE) live on their shard only. An
// agent holds one subscribing connection per shard (two: classic and sharded channels) for all
// of its clients, subscribes a name there when the first of its clients does and unsubscribes
// it after the last, and hands each message to the clients subscribed.
package pubsub

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Kind is what a subscription names.
type Kind uint8

// The kinds of subscription, each with its own names.
const (
	Channel      Kind = iota // SUBSCRIBE, PUBLISH
	Pattern                  // PSUBSCRIBE
	ShardChannel             // SSUBSCRIBE, SPUBLISH
	NumKinds                 // how many kinds there are
)

// Message is one delivery: Pattern is set for a pattern's message.
type Message struct {
	Kind                      Kind
	Pattern, Channel, Payload string
}

// Subscriber receives the messages of its subscriptions. Deliver is called from the hub's
// connections and must not block.
type Subscriber interface{ Deliver(m Message) }

// Stats count the hub's work.
type Stats struct {
	Delivered    atomic.Int64 // messages handed to clients
	Resubscribes atomic.Int64 // a shard connection re-made and its subscriptions sent again
}

// Hub is an agent's pub/sub: its clients' subscriptions and its connections to the shards.
type Hub struct {
	password func() string
	timeout  time.Duration // how long a subscription waits for a shard connection
	Stats    Stats

	// reserved is the fleet's invalidation bus channel: its messages are the agents' own, never
	// a client's (clients cannot subscribe or publish to it, and a pattern does not hear it).
	reserved atomic.Pointer[string]

	mu    sync.RWMutex
	ring  *router.Router
	subs  [NumKinds]map[string]map[Subscriber]struct{}
	links map[linkKey]*link
}

// NewHub returns a hub; password is the shards' (read on every connection), timeout bounds a
// subscription's wait for a shard.
func NewHub(password func() string, timeout time.Duration) *Hub {
	h := &Hub{password: password, timeout: timeout, links: map[linkKey]*link{}}
	for k := range h.subs {
		h.subs[k] = map[string]map[Subscriber]struct{}{}
	}
	return h
}

// everywhere reports whether a subscription of kind lives on every shard: channels and
// patterns do, as messages may be published on any shard; a sharded channel on its own.
func everywhere(kind Kind) bool { return kind != ShardChannel }

// Home is where a PUBLISH or SPUBLISH of channel goes through an agent: the shard its name
// hashes to, which holds the sharded channel's subscribers (and, as every shard, the others).
func Home(r *router.Router, channel string) *router.Shard { return r.ShardFor([]byte(channel)) }

// homes are the shards a subscription of kind to name is made on.
func homes(r *router.Router, kind Kind, name string) []*router.Shard {
	if everywhere(kind) {
		return r.Shards
	}
	return []*router.Shard{Home(r, name)}
}

// Subscribe adds sub's subscriptions of kind to names, and returns once every shard they live
// on has confirmed them (a PUBLISH after that reaches sub), or with the first shard's error.
func (h *Hub) Subscribe(ctx context.Context, sub Subscriber, kind Kind, names []string) error {
	h.mu.Lock()
	var added []string // names sub did not hold: given back if a shard fails
	for _, n := range names {
		set := h.subs[kind][n]
		if set == nil {
			set = map[Subscriber]struct{}{}
			h.subs[kind][n] = set
		}
		if _, ok := set[sub]; !ok {
			set[sub] = struct{}{}
			added = append(added, n)
		}
	}
	// Every name, not only new ones: a name another client is subscribing right now is
	// confirmed by the time its link answers this one.
	byLink := h.plan(h.ring, kind, names)
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	for l, ns := range byLink {
		if err := l.subscribe(ctx, kind, ns); err != nil {
			h.Unsubscribe(sub, kind, added)
			return err
		}
	}
	return nil
}

// Unsubscribe removes sub's subscriptions of kind to names; a name no client of this agent
// holds any more is unsubscribed on its shards in the background.
func (h *Hub) Unsubscribe(sub Subscriber, kind Kind, names []string) {
	h.mu.Lock()
	var last []string
	for _, n := range names {
		set := h.subs[kind][n]
		if _, ok := set[sub]; !ok {
			continue
		}
		delete(set, sub)
		if len(set) == 0 {
			delete(h.subs[kind], n)
			last = append(last, n)
		}
	}
	byLink := h.plan(h.ring, kind, last)
	h.mu.Unlock()
	for l, ns := range byLink {
		l.unsubscribe(kind, ns)
	}
}

// plan groups names by the connections they live on; the caller holds h.mu.
func (h *Hub) plan(r *router.Router, kind Kind, names []string) map[*link][]string {
	if r == nil || len(names) == 0 {
		return nil
	}
	out := map[*link][]string{}
	for _, n := range names {
		for _, sh := range homes(r, kind, n) {
			l := h.linkFor(sh, kind == ShardChannel)
			out[l] = append(out[l], n)
		}
	}
	return out
}

// SetRing moves the subscriptions to a new ring: a channel whose shard changed is subscribed on
// its new shard, patterns on shards that joined; links to shards that left are closed.
func (h *Hub) SetRing(r *router.Router) {
	ch := r.Doc.Invalidation.Channel
	h.reserved.Store(&ch)
	h.mu.Lock()
	h.ring = r
	keep := map[*link]bool{}
	type add struct {
		kind  Kind
		names []string
	}
	adds := map[*link][]add{}
	if len(h.subs[Channel])+len(h.subs[Pattern])+len(h.subs[ShardChannel]) > 0 {
		for kind := range NumKinds {
			names := make([]string, 0, len(h.subs[kind]))
			for n := range h.subs[kind] {
				names = append(names, n)
			}
			for l, ns := range h.plan(r, kind, names) {
				keep[l] = true
				adds[l] = append(adds[l], add{kind, ns})
			}
		}
	}
	var gone []*link
	for k, l := range h.links {
		if !keep[l] {
			delete(h.links, k)
			gone = append(gone, l)
		}
	}
	h.mu.Unlock()
	for _, l := range gone {
		go l.close()
	}
	for l, as := range adds {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
			defer cancel()
			for _, a := range as {
				_ = l.subscribe(ctx, a.kind, a.names) // a link that fails resubscribes all it wants
			}
		}()
	}
}

// Close ends every shard connection.
func (h *Hub) Close() {
	h.mu.Lock()
	links := h.links
	h.links = map[linkKey]*link{}
	h.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// deliver hands a shard's message to the clients subscribed to it.
func (h *Hub) deliver(m Message) {
	if h.Reserved(m.Channel) {
		return
	}
	name := m.Channel
	if m.Kind == Pattern {
		name = m.Pattern
	}
	h.mu.RLock()
	for sub := range h.subs[m.Kind][name] {
		sub.Deliver(m)
		h.Stats.Delivered.Add(1)
	}
	h.mu.RUnlock()
}

// Reserved reports whether channel is the fleet's invalidation bus, which clients may not use.
func (h *Hub) Reserved(channel string) bool {
	r := h.reserved.Load()
	return r != nil && *r != "" && channel == *r
}

// Receivers turns a shard's answer to PUBLISH (SPUBLISH for ShardChannel) of channel into the
// fleet's: the shard counts this agent's connection once per channel or pattern it holds,
// this agent's clients count one each. Other agents are counted as the shard sees them (once
// per channel or pattern), so the count is exact when one agent serves every subscriber.
func (h *Hub) Receivers(kind Kind, sh *router.Shard, channel string, shardCount int64) int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ours, clients := h.counts(kind, sh, channel, kind != ShardChannel)
	return max(shardCount-ours+clients, 0)
}

// Subscribers is Receivers for PUBSUB NUMSUB (SHARDNUMSUB): channel subscriptions only.
func (h *Hub) Subscribers(kind Kind, sh *router.Shard, channel string, shardCount int64) int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ours, clients := h.counts(kind, sh, channel, false)
	return max(shardCount-ours+clients, 0)
}

// counts are, for channel on sh, the subscriptions this agent holds there (ours) and its
// clients' (clients), patterns included when withPatterns; the caller holds h.mu.
func (h *Hub) counts(kind Kind, sh *router.Shard, channel string, withPatterns bool) (ours, clients int64) {
	if n := len(h.subs[kind][channel]); n > 0 {
		clients += int64(n)
		if l := h.links[keyOf(sh, kind == ShardChannel)]; l != nil && l.wants(kind, channel) {
			ours++
		}
	}
	if !withPatterns {
		return ours, clients
	}
	for p, set := range h.subs[Pattern] {
		if Match(p, channel) {
			clients += int64(len(set))
			if l := h.links[keyOf(sh, false)]; l != nil && l.wants(Pattern, p) {
				ours++
			}
		}
	}
	return ours, clients
}

// Subscriptions is how many names this agent's clients hold, by kind.
func (h *Hub) Subscriptions() (channels, patterns, shardChannels int) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs[Channel]), len(h.subs[Pattern]), len(h.subs[ShardChannel])
}
