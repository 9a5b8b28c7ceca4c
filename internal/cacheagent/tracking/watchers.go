package tracking

import (
	"sync"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// Watchers keep one Watcher per shard while any client of the agent tracks: started with the
// first tracking client, moved with each ring, stopped with the agent.
type Watchers struct {
	password func() string
	onChange func(keys []string)

	mu   sync.Mutex
	byID map[string]*Watcher // shard name@address -> its watcher
}

// NewWatchers reports every watcher's changes to onChange; password is read when one connects.
func NewWatchers(password func() string, onChange func(keys []string)) *Watchers {
	return &Watchers{password: password, onChange: onChange, byID: map[string]*Watcher{}}
}

// Ensure starts a watcher for every shard (its primary) that has none, stops those of shards no longer
// listed, and returns the shards' watchers.
func (ws *Watchers) Ensure(shards []contract.Shard) []*Watcher {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	keep := make(map[string]bool, len(shards))
	out := make([]*Watcher, 0, len(shards))
	for _, sh := range shards {
		id := sh.Name + "@" + sh.Primary
		keep[id] = true
		w := ws.byID[id]
		if w == nil {
			w = Watch(WatchOptions{Addr: sh.Primary, Password: ws.password()}, ws.onChange)
			ws.byID[id] = w
		}
		out = append(out, w)
	}
	for id, w := range ws.byID {
		if !keep[id] {
			go w.Stop()
			delete(ws.byID, id)
		}
	}
	return out
}

// Follow moves the watchers to a new set of shards, if any are running.
func (ws *Watchers) Follow(shards []contract.Shard) {
	ws.mu.Lock()
	running := len(ws.byID) > 0
	ws.mu.Unlock()
	if running {
		ws.Ensure(shards)
	}
}

// Stop stops every watcher.
func (ws *Watchers) Stop() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for id, w := range ws.byID {
		w.Stop()
		delete(ws.byID, id)
	}
}
