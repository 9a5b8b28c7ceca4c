// Package reach is the agent's view of whether it can reach each shard's primary: a probe
// every second on a connection of its own (the pooled ones sit behind the breaker, whose
// cooldown would report a primary lost for seconds after it is back). The agent reports what
// it sees in its Lease; the controller counts the agents on other nodes than a primary's to
// tell a lost primary from a lost agent, well before Kubernetes marks the node NotReady.
package reach

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/upstream"
)

// Target is one shard's primary.
type Target struct{ Shard, Addr string }

// Prober probes targets and remembers since when each could not be reached.
type Prober struct {
	// Every is the probe interval and the timeout of one probe.
	Every time.Duration
	// Targets are the shards to probe now (the current ring), and the password.
	Targets func() ([]Target, string)
	// Changed is called (off the probe) when the set of lost shards changes.
	Changed func()
	// probe is PING by default; tests substitute it.
	probe func(ctx context.Context, t Target, password string, timeout time.Duration) error

	mu   sync.Mutex
	lost map[string]time.Time // shard -> first failed probe of the current streak
}

// Lost is the shards this agent cannot reach, and since when.
func (p *Prober) Lost() map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.lost)
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	every := p.Every
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		p.Once(ctx, every)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Once probes every target once, at the same time, each for at most timeout.
func (p *Prober) Once(ctx context.Context, timeout time.Duration) {
	targets, password := p.Targets()
	probe := p.probe
	if probe == nil {
		probe = ping
	}
	failed := make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() { failed[i] = probe(ctx, t, password, timeout) != nil })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	p.mu.Lock()
	changed := false
	next := make(map[string]time.Time, len(p.lost))
	for i, t := range targets {
		since, was := p.lost[t.Shard]
		switch {
		case failed[i] && was:
			next[t.Shard] = since
		case failed[i]:
			next[t.Shard], changed = now, true
		case was:
			changed = true
		}
	}
	changed = changed || len(next) != len(p.lost) // a shard that left the ring
	p.lost = next
	p.mu.Unlock()
	if changed && p.Changed != nil {
		p.Changed()
	}
}

// ping is a PING on a connection of its own; any reply but an error counts: a primary busy
// with a script (BUSY) or loading is there.
func ping(ctx context.Context, t Target, password string, timeout time.Duration) error {
	_, err := upstream.Command(ctx, t.Addr, password, timeout, "PING")
	return err
}
