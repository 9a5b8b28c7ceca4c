// Package server is the agent's Redis-protocol endpoint: it reads client commands, applies
// the fleet's policies, answers from L1 where it can and routes the rest to the owning shard.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/cacheagent/l1"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/pubsub"
	"github.com/cachefleet/cachefleet/internal/cacheagent/readthrough"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/cacheagent/tracking"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// Config configures the server.
type Config struct {
	// Password is required from clients (AUTH) and sent to shards; empty disables auth.
	Password         string
	ShardTimeout     time.Duration
	FailuresToOpen   uint32
	Cooldown         time.Duration
	MaxQueuedDeletes int
	// MaxArgs bounds the arguments of a command (Valkey's is 2^31-1); their memory is bounded
	// by the command limit (readLimits).
	MaxArgs int
	// MaxBatch bounds how many pipelined commands are executed together.
	MaxBatch int
	// MaxDedicated bounds, per shard, the connections clients hold of their own (WATCH,
	// scripts); 0 is router.DefaultMaxDedicated. PoolIdle closes idle ones (0: 30 s).
	MaxDedicated int
	PoolIdle     time.Duration
	// Output bounds what the agent holds for a client that does not read (outputlimit.go).
	Output OutputLimits
	// MaxClients bounds the open client connections, as Valkey's maxclients: one more is
	// answered "-ERR max number of clients reached" and closed.
	MaxClients int
	// Log takes what a client cannot be told (a connection ended by a bug); nil: stderr.
	Log *slog.Logger
	// EventLoops read TCP connections from epoll loops that answer L1 hits themselves
	// (inline.go); 0 leaves every connection to its goroutine.
	EventLoops int
}

// DefaultConfig has the documented defaults.
func DefaultConfig() Config {
	return Config{ShardTimeout: time.Second, FailuresToOpen: 5, Cooldown: 10 * time.Second,
		MaxQueuedDeletes: 100_000, MaxArgs: 1<<31 - 1, MaxBatch: 256, EventLoops: 1, MaxClients: 10_000, Output: DefaultOutputLimits}
}

// Server is safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	router atomic.Pointer[router.Router]
	l1     atomic.Pointer[l1.Cache]
	bus    atomic.Pointer[bus.Bus]
	Stats  *Stats

	leases lease.Leases         // CF.LGET callers waiting for a fill
	rt     *readthrough.Fetcher // fetches from the policies' origins

	tracking *tracking.Table    // client-side caching: who read what
	pubsub   *pubsub.Hub        // clients' subscriptions, held on the shards
	watchers *tracking.Watchers // one per shard, once a client tracks

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]*client
	byID      map[int64]*client
	wg        sync.WaitGroup
	closing   atomic.Bool
	draining  atomic.Bool // Drain: not ready, still serving
	clientIDs atomic.Int64
	stopping  chan struct{} // closed when Shutdown starts: ends CF.LGET waits
	pass      atomic.Pointer[string]

	loopOnce sync.Once
	loops    []*evloop.Loop // none without event loops
	loopErr  error          // why not, when some were asked for
	adopted  atomic.Int64   // connections adopted, to spread them over the loops

	outputHeld atomic.Int64 // reply bytes held for clients, in all (outputlimit.go)
}

// New returns a server that serves nothing until SetRing gives it a ring.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, Stats: newStats(), conns: map[net.Conn]*client{}, byID: map[int64]*client{},
		stopping: make(chan struct{}), tracking: tracking.NewTable(0)}
	s.rt = readthrough.New(&s.leases, &s.Stats.Origin, func(r *router.Router, key string) { s.settle(r, key) }, s.bus.Load, s.stopping)
	if s.log = cfg.Log; s.log == nil {
		s.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s.pubsub = pubsub.NewHub(s.password, max(cfg.ShardTimeout, time.Second))
	s.watchers = tracking.NewWatchers(s.password, s.shardChanged)
	s.SetPassword(cfg.Password)
	return s
}

// Router is the router of the current epoch, nil before the first ring.
func (s *Server) Router() *router.Router { return s.router.Load() }

// L1 is the local cache for ttl-mode keys.
func (s *Server) L1() *l1.Cache { return s.l1.Load() }

// SetRing switches to a new ring document without dropping client connections; shard
// connections whose name and address are unchanged are kept (with their breaker and queue).
func (s *Server) SetRing(doc *contract.Document) error {
	prev := s.router.Load()
	// Half of the L1 bound goes to the tracking caches (split over shards; a shard's tracking
	// connections, valkey-go's and the event loops', share its cache), half to the ttl-mode
	// cache.
	var cacheBytes int
	if doc.Tiers.L1Enabled && len(doc.Shards) > 0 {
		cacheBytes = int(doc.Tiers.L1MaxMemoryBytes / 2 / int64(len(doc.Shards)))
	}
	next, err := router.New(doc, prev, func(sh contract.Shard) router.ShardConfig {
		return router.ShardConfig{
			Name: sh.Name, Addr: sh.Primary, Password: s.password(), CacheBytes: cacheBytes,
			MinUsable: time.Duration(doc.Tiers.MinUsableMillis) * time.Millisecond,
			Replicas:  strings.Join(sh.Replicas, ","),
			Timeout:   s.cfg.ShardTimeout, FailuresToOpen: s.cfg.FailuresToOpen, Cooldown: s.cfg.Cooldown,
			MaxQueuedDels: s.cfg.MaxQueuedDeletes, MaxDedicated: s.cfg.MaxDedicated, PoolIdle: s.cfg.PoolIdle,
		}
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.ShardTimeout)
	if err := router.CopyFunctions(ctx, prev, next); err != nil {
		s.Stats.FunctionCopyFailures.Add(1) // FCALLs on those shards answer that the function is missing
		s.log.Warn("function libraries not copied to a joining shard", "error", err)
	}
	cancel()
	if s.l1.Load() == nil || prev == nil || prev.Doc.Tiers.L1MaxMemoryBytes != doc.Tiers.L1MaxMemoryBytes {
		s.l1.Store(l1.New(max(doc.Tiers.L1MaxMemoryBytes/2, 1<<20)))
	}
	s.router.Store(next)
	s.Stats.RingEpoch.Store(doc.Epoch)
	s.watchers.Follow(next.Doc.Shards)
	s.pubsub.SetRing(next)
	if retired := router.Retired(prev, next); len(retired) > 0 {
		// Requests already routed with the old ring finish first.
		time.AfterFunc(2*s.cfg.ShardTimeout+time.Second, func() {
			for _, sh := range retired {
				sh.Close()
			}
		})
	}
	return nil
}

// SetOriginHeaders installs the headers origin requests send, by Secret name.
func (s *Server) SetOriginHeaders(bySecret map[string]map[string]string) {
	s.rt.SetHeaders(bySecret)
}

// SetBus connects the server to the fleet's invalidation bus.
func (s *Server) SetBus(b *bus.Bus) { s.bus.Store(b) }

// LeaseStats are the stampede-protection counters.
func (s *Server) LeaseStats() *lease.Stats { return &s.leases.Stats }

// Bus is the invalidation bus, nil when none is configured.
func (s *Server) Bus() *bus.Bus { return s.bus.Load() }

// ApplyInvalidation applies a bus message from another agent to the local ttl-mode L1.
func (s *Server) ApplyInvalidation(m *bus.Message) {
	c := s.L1()
	if c == nil {
		return
	}
	switch m.Op {
	case bus.OpDelete:
		for _, k := range m.Args {
			c.Delete(k)
		}
	case bus.OpPrefix:
		for _, p := range m.Args {
			c.DeletePrefix(p)
		}
	case bus.OpFlush:
		c.Clear()
	case bus.OpFilled:
		s.leases.Wake(m.Args...)
	}
}

// FlushL1 drops every ttl-mode copy: they relied on a bus that may have lost messages.
func (s *Server) FlushL1() {
	if c := s.L1(); c != nil {
		c.Clear()
	}
}

// Serve accepts connections until the listener is closed.
func (s *Server) Serve(ln net.Listener) error {
	_ = s.StartLoops() // an error leaves connections to their goroutines; the caller may log it
	s.mu.Lock()
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors (EMFILE), or any other failure: the agent serves every pod on
			// the node, so it waits and tries again rather than exit.
			s.Stats.AcceptErrors.Add(1)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		full := len(s.conns) >= s.cfg.MaxClients
		s.mu.Unlock()
		if full {
			s.refuseClient(nc)
			continue
		}
		if nc, err = s.adopt(nc); err != nil {
			continue // the connection is gone; the client sees it closed
		}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[nc] = nil // its client is registered when its goroutine starts
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(nc)
	}
}

// refuseClient answers a connection over MaxClients as Valkey does, and closes it.
func (s *Server) refuseClient(nc net.Conn) {
	s.Stats.RejectedClients.Add(1)
	_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = nc.Write([]byte("-ERR max number of clients reached\r\n"))
	nc.Close()
}

// Drain reports the server not ready while it goes on serving, so the Service stops sending
// new connections here before Shutdown closes the ones it has.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting, lets every connection finish the commands it has read, closes
// them and the shard connections. It returns when all are done or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closing.Swap(true) {
		close(s.stopping)
	}
	s.mu.Lock()
	for _, ln := range s.listeners {
		ln.Close()
	}
	for nc := range s.conns {
		// Wakes connections blocked reading; one running a batch finishes it first.
		_ = nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.watchers.Stop()
	s.pubsub.Close()
	if err == nil {
		for _, l := range s.loops {
			l.Close()
		}
	}
	if r := s.router.Load(); r != nil {
		for _, sh := range r.Shards {
			sh.Close()
		}
	}
	return err
}

// Ready reports whether a ring is loaded and at least one shard answers.
func (s *Server) Ready(ctx context.Context) bool {
	r := s.router.Load()
	if r == nil || s.draining.Load() {
		return false
	}
	for _, sh := range r.Shards {
		if sh.BreakerState() == 2 {
			continue
		}
		if _, err := sh.Do(ctx, pingCmd); err == nil {
			return true
		}
	}
	return false
}

func maxValueBytes(doc *contract.Document) int64 {
	m := doc.Tiers.MaxValueBytes
	for _, p := range doc.Policies {
		m = max(m, p.MaxValueBytes)
	}
	return max(m, 1<<20)
}

// SetPassword changes the password for new shard connections and new clients (Kubernetes mode
// reads it from the fleet's Secret with the first ring).
func (s *Server) SetPassword(p string) { s.pass.Store(&p) }

// password is the current password; connection handlers read it while SetPassword may change it.
func (s *Server) password() string {
	if p := s.pass.Load(); p != nil {
		return *p
	}
	return ""
}

// Password is the one clients must give (AUTH), "" when none is required.
func (s *Server) Password() string { return s.password() }

// ReadThrough answers reads of keys whose policy has an origin.
func (s *Server) ReadThrough() *readthrough.Fetcher { return s.rt }

// RefusedOversize counts a value refused for its size by another endpoint (the HTTP API).
func (s *Server) RefusedOversize() { s.Stats.OversizeRejected.Add(1) }

// Announce and Settle bracket a write made by another endpoint (the HTTP API) as the agent's
// own writes are bracketed (writes.go).
func (s *Server) Announce(keys ...string) { s.announce(0, keys...) }

// Settle is the end of that bracket (see Announce).
func (s *Server) Settle(r *router.Router, keys ...string) { s.settle(r, keys...) }
