package router

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/sony/gobreaker/v2"
	"github.com/valkey-io/valkey-go"
)

// replicaReader answers reads from a shard's replicas while its primary is unavailable, so a
// primary restart (node drain, rollout, crash) costs hits only for what was written in the last
// moments before it. Reads only: writes still fail with the primary's error. A key with a
// queued delete is never read from a replica, which still holds the value the delete removed.
// Replication is asynchronous: a write acknowledged just before the primary died may be missing.
type replicaReader struct {
	cfg   ShardConfig
	addrs []string

	mu       sync.Mutex
	clients  map[string]valkey.Client
	breakers map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]
	closed   bool
}

func newReplicaReader(cfg ShardConfig) *replicaReader {
	if cfg.Replicas == "" {
		return nil
	}
	r := &replicaReader{cfg: cfg, addrs: strings.Split(cfg.Replicas, ","),
		clients: map[string]valkey.Client{}, breakers: map[string]*gobreaker.TwoStepCircuitBreaker[struct{}]{}}
	for _, addr := range r.addrs {
		r.breakers[addr] = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name: cfg.Name + "/" + addr, MaxRequests: 1, Timeout: cfg.Cooldown,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.FailuresToOpen },
		})
	}
	return r
}

func (r *replicaReader) client(addr string) (valkey.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("shard connection closed")
	}
	if c := r.clients[addr]; c != nil {
		return c, nil
	}
	c, err := valkey.NewClient(valkey.ClientOption{
		InitAddress: []string{addr}, Password: r.cfg.Password, ForceSingleClient: true,
		DisableRetry: true, DisableCache: true, ConnWriteTimeout: r.cfg.Timeout, Dialer: netDialer(r.cfg.Timeout),
		DialCtxFn: dialerFor(r.cfg.Password),
	})
	if err != nil {
		return nil, err
	}
	r.clients[addr] = c
	return c, nil
}

// read sends cmds to the first replica that answers. ok is false when cmds are not all reads,
// touch a key with a queued delete, or no replica answers.
func (r *replicaReader) read(ctx context.Context, build func(valkey.Builder) []valkey.Completed, deleted func(key string) bool) ([]valkey.ValkeyResult, bool) {
	for _, addr := range r.addrs {
		done, err := r.breakers[addr].Allow()
		if err != nil {
			continue
		}
		c, err := r.client(addr)
		if err != nil {
			done(err)
			continue
		}
		cmds := build(c.B())
		for i := range cmds {
			if !cmds[i].IsReadOnly() {
				done(nil)
				return nil, false
			}
			for _, k := range cmds[i].Commands()[1:] { // every argument of our reads is a key
				if deleted(k) {
					done(nil)
					return nil, false
				}
			}
		}
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		res := c.DoMulti(rctx, cmds...)
		if errors.Is(firstFailure(res), errStaleConnection) {
			res = c.DoMulti(rctx, build(c.B())...) // nothing was sent: once more, on a fresh connection
		}
		cancel()
		if err := firstFailure(res); err != nil {
			done(err)
			continue
		}
		done(nil)
		return res, true
	}
	return nil, false
}

func (r *replicaReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, c := range r.clients {
		c.Close()
	}
}
