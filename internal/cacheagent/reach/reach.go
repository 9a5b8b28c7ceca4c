// Package reach is the agent's view of whether it can reach each shard's primary: a probe
// every second on a connection of its own (the pooled ones sit behind the breaker, whose
// cooldown would report a primary lost for seconds after it is back). The agent reports what
// it sees in its Lease; the controller counts the agents on other nodes than a primary's to
// tell a lost primary from a lost agent, well before Kubernetes marks the node NotReady. It also
// reports a primary that answers but refuses writes for want of a replica (fencing), so the
// controller can lift the fence when that replica could not take over anyway.
package reach

import (
	"bytes"
	"context"
	"maps"
	"sync"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/upstream"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// Prober probes targets and remembers since when each could not be reached.
type Prober struct {
	// Every is the probe interval and the timeout of one probe.
	Every time.Duration
	// Targets are the shards whose primaries to probe now (the current ring), and the password.
	Targets func() ([]contract.Shard, string)
	// Changed is called (off the probe) when the set of lost shards changes.
	Changed func()
	// probe is INFO replication by default; tests substitute it.
	probe func(ctx context.Context, sh contract.Shard, password string, timeout time.Duration) (refusing bool, err error)

	mu       sync.Mutex
	lost     map[string]time.Time // shard -> first failed probe of the current streak
	refusing map[string]time.Time // shard -> first probe that found its primary refusing writes
}

// Lost is the shards this agent cannot reach, and since when.
func (p *Prober) Lost() map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.lost)
}

// Refusing is the shards whose primary refuses writes for want of a replica, and since when.
func (p *Prober) Refusing() map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.refusing)
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
		probe = replication
	}
	failed, refusing := make([]bool, len(targets)), make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			var err error
			refusing[i], err = probe(ctx, t, password, timeout)
			failed[i] = err != nil
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	p.mu.Lock()
	lost, lostChanged := streaks(p.lost, targets, failed, now)
	refused, refusedChanged := streaks(p.refusing, targets, refusing, now)
	p.lost, p.refusing = lost, refused
	p.mu.Unlock()
	if (lostChanged || refusedChanged) && p.Changed != nil {
		p.Changed()
	}
}

// streaks is the next "since when" of the targets for which hit holds, keeping the time of a
// streak that goes on, and whether that set changed (a shard that left the ring is a change).
func streaks(prev map[string]time.Time, targets []contract.Shard, hit []bool, now time.Time) (map[string]time.Time, bool) {
	changed := false
	next := make(map[string]time.Time, len(prev))
	for i, t := range targets {
		since, was := prev[t.Name]
		switch {
		case hit[i] && was:
			next[t.Name] = since
		case hit[i]:
			next[t.Name], changed = now, true
		case was:
			changed = true
		}
	}
	return next, changed || len(next) != len(prev)
}

// replication asks for INFO replication on a connection of its own. Any reply but a failure to
// talk counts as reached: a primary busy with a script (BUSY) or loading is there. A primary
// refuses writes when it counts no good replica while it needs one (min-replicas-to-write 1,
// which is the only value the operator sets).
func replication(ctx context.Context, sh contract.Shard, password string, timeout time.Duration) (refusing bool, err error) {
	info, err := upstream.Command(ctx, sh.Primary, password, timeout, "INFO", "replication")
	if err != nil {
		return false, err
	}
	return bytes.Contains(info, []byte("role:master\r\n")) && bytes.Contains(info, []byte("min_slaves_good_slaves:0\r\n")), nil
}
