package router

import (
	"net"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/ring"
	"github.com/cachefleet/cachefleet/internal/contract"
)

func netDialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
}

// Router maps keys to shards for one ring epoch. Immutable; a new epoch gets a new Router that
// reuses the shard connections whose name and address did not change.
type Router struct {
	Doc    *contract.Document
	ring   ring.Ring
	Shards []*Shard
	warm   *warming // nil when the document has no warm-up window
	// ReadsThrough: some policy has an origin (multi-key reads look at each key's policy).
	ReadsThrough bool
}

// New builds the router for doc. config gives each shard's connection settings; a shard of
// previous whose settings are unchanged is kept (with its connection, breaker and queue).
func New(doc *contract.Document, previous *Router, config func(contract.Shard) ShardConfig) (*Router, error) {
	r, err := ring.For(doc)
	if err != nil {
		return nil, err
	}
	reuse := map[ShardConfig]*Shard{}
	if previous != nil {
		for _, s := range previous.Shards {
			reuse[s.Config()] = s
		}
	}
	out := &Router{Doc: doc, ring: r}
	for _, p := range doc.Policies {
		out.ReadsThrough = out.ReadsThrough || p.Origin != nil
	}
	for _, sh := range doc.Shards {
		cfg := config(sh)
		s, ok := reuse[cfg]
		if ok {
			delete(reuse, cfg)
		} else {
			s = NewShard(cfg)
		}
		out.Shards = append(out.Shards, s)
	}
	if doc.Warming != nil {
		// A layout that cannot be hashed only costs the warm-up, never the ring itself.
		out.warm, _ = newWarming(doc.Warming, out)
	}
	return out, nil
}

// Retired lists the shards of previous that next no longer uses (to close after in-flight work).
func Retired(previous, next *Router) []*Shard {
	if previous == nil {
		return nil
	}
	kept := map[*Shard]bool{}
	for _, s := range next.Shards {
		kept[s] = true
	}
	var out []*Shard
	for _, s := range previous.Shards {
		if !kept[s] {
			out = append(out, s)
		}
	}
	return out
}

// ShardFor returns the owner of key.
func (r *Router) ShardFor(key []byte) *Shard { return r.Shards[r.ring.Owner(key)] }

// Index returns the index of key's owner.
func (r *Router) Index(key []byte) int { return r.ring.Owner(key) }
