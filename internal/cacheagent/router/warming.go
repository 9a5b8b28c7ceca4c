package router

import (
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/ring"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// warming routes keys by the layout before the last change of ring members, until the
// document's warm-up window ends. Only members still in the ring are consulted: a removed
// shard is drained, not kept for its keys.
type warming struct {
	ring   ring.Ring
	shards []*Shard // by previous member index; nil for a member that left the ring
	until  time.Time
}

func newWarming(w *contract.Warming, current *Router) (*warming, error) {
	rg, err := ring.ForWarming(w)
	if err != nil {
		return nil, err
	}
	byName := map[string]*Shard{}
	for _, s := range current.Shards {
		byName[s.Name()] = s
	}
	out := &warming{ring: rg, until: time.UnixMilli(w.UntilMillis)}
	for _, name := range w.Members {
		out.shards = append(out.shards, byName[name])
	}
	return out, nil
}

// PreviousOwner is the shard that owned key before the last change of members, when the
// warm-up window is open, that shard is still a member and it is not key's owner now;
// otherwise nil.
func (r *Router) PreviousOwner(key []byte) *Shard {
	w := r.warm
	if w == nil || !time.Now().Before(w.until) {
		return nil
	}
	prev := w.shards[w.ring.Owner(key)]
	if prev == nil || prev == r.ShardFor(key) {
		return nil
	}
	return prev
}

// Warming reports whether the warm-up window is open.
func (r *Router) Warming() bool { return r.warm != nil && time.Now().Before(r.warm.until) }
