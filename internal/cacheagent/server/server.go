// Package server is the agent's Redis-protocol endpoint: it reads client commands, applies
// the fleet's policies, answers from L1 where it can and routes the rest to the owning shard.
package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/cacheagent/l1"
	"github.com/cachefleet/cachefleet/internal/cacheagent/lease"
	"github.com/cachefleet/cachefleet/internal/cacheagent/origin"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/cacheagent/tracking"
	"github.com/cachefleet/cachefleet/internal/contract"
	"github.com/cachefleet/cachefleet/internal/resp"
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
	router atomic.Pointer[router.Router]
	l1     atomic.Pointer[l1.Cache]
	bus    atomic.Pointer[bus.Bus]
	Stats  *Stats

	leases lease.Leases // CF.LGET callers waiting for a fill
	rt     readThrough  // fetches from the policies' origins

	tracking *tracking.Table // client-side caching: who read what
	watchMu  sync.Mutex
	watchers map[string]*tracking.Watcher // per shard, once a client tracks

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
	// httpWrites holds a place per HTTP PUT reading its body (bodyLimited).
	httpWrites chan struct{}

	loopOnce sync.Once
	loops    []*evloop.Loop // none without event loops
	loopErr  error          // why not, when some were asked for
	adopted  atomic.Int64   // connections adopted, to spread them over the loops

	outputHeld atomic.Int64 // reply bytes held for clients, in all (outputlimit.go)
}

// New returns a server that serves nothing until SetRing gives it a ring.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, Stats: newStats(), conns: map[net.Conn]*client{}, byID: map[int64]*client{},
		stopping: make(chan struct{}), httpWrites: make(chan struct{}, maxHTTPWrites), tracking: tracking.NewTable(0), rt: readThrough{client: origin.NewClient(), refreshes: make(chan struct{}, maxRefreshes)}}
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
	if s.l1.Load() == nil || prev == nil || prev.Doc.Tiers.L1MaxMemoryBytes != doc.Tiers.L1MaxMemoryBytes {
		s.l1.Store(l1.New(max(doc.Tiers.L1MaxMemoryBytes/2, 1<<20)))
	}
	s.router.Store(next)
	s.Stats.RingEpoch.Store(doc.Epoch)
	s.followRing(next)
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
	s.rt.client.SetHeaders(bySecret)
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
	s.stopWatchers()
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

// client is one connection's state.
type client struct {
	id     int64
	authed bool
	quit   bool
	// overLimit: the client's replies went over the hard output limit; nothing more runs.
	overLimit   bool
	deadlineSet bool  // a write deadline for replies over the soft output limit
	batchLimit  int   // commands the next batch may take (adaptBatch)
	held        int64 // reply bytes counted in Server.outputHeld until written
	lower       []byte
	tx          *txState    // open transaction (MULTI), nil outside one
	watch       *watchState // WATCHed keys and their dedicated connection

	// What CLIENT LIST shows of this connection to other connections' goroutines.
	addr, laddr     string
	created         time.Time
	lastAt          atomic.Int64 // unix nanoseconds of the last command
	lastCmd         atomic.Pointer[string]
	proto           atomic.Int32
	multi           atomic.Int32 // commands queued in an open MULTI, -1 outside one
	name            atomic.Pointer[string]
	libName, libVer atomic.Pointer[string]

	// Client-side caching (tracking.go). wmu is held by whoever writes to the connection: its
	// goroutine for a whole batch (reading the first command to flushing the replies), or its
	// pusher for queued invalidations while the connection is idle.
	wmu        sync.Mutex
	w          *resp.Writer
	nc         net.Conn
	track      *trackState
	redirect   atomic.Int64
	subscribed atomic.Bool
	pushes     pushQueue
	pushOnce   sync.Once
	done       chan struct{} // closed when the connection ends
}

func loadString(p *atomic.Pointer[string]) string {
	if v := p.Load(); v != nil {
		return *v
	}
	return ""
}

func (s *Server) serveConn(nc net.Conn) {
	defer s.wg.Done()
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	s.Stats.Clients.Add(1)
	defer s.Stats.Clients.Add(-1)
	c := s.register(nc)
	defer s.unregister(nc, c)
	rd := resp.NewReader(bufio.NewReaderSize(nc, 16<<10), s.readLimits())
	w := c.w
	b := &batch{s: s, cid: c.id, c: c}
	ec, _ := nc.(*evloop.Conn)
	if ec != nil {
		ec.Context = &inlineConn{c: c, b: b, ec: ec}
	}
	ctx := context.Background()
	n := 0
	locked := false
	defer func() {
		if locked {
			c.wmu.Unlock()
		}
	}()
	for {
		if ec != nil && n == 0 && ec.Backlogged() && !s.drainBacklog(c, ec) {
			return // its replies from the loop were not taken in time: see OutputLimits
		}
		if ec != nil && rd.Buffered() == 0 {
			ec.AtBoundary() // no frame is half read: the loop may answer what comes next
		}
		rd.SetAuthenticated(c.authed)
		args, tooLarge, err := readCommand(rd)
		if !locked { // held until this batch's replies are flushed: see client.wmu
			c.wmu.Lock()
			locked = true
		}
		if err != nil {
			s.endOnReadError(ctx, b, w, err)
			return
		}
		if b.r == nil {
			r := s.router.Load()
			if r == nil {
				w.Error("ERR the agent has no ring yet")
				w.Flush()
				continue
			}
			b.reset(r)
		}
		if tooLarge != nil {
			s.refuseTooLarge(b, c, tooLarge)
		} else {
			s.dispatch(ctx, b, c, w, args)
		}
		n++
		if rd.Buffered() == 0 || n >= c.batchLimit || c.quit {
			if !s.endBatch(ctx, b, c, w) {
				return
			}
			c.wmu.Unlock()
			locked = false
			n = 0
			b.r = nil // pick up a new ring epoch between batches
		}
	}
}

// readCommand reads the next command; one over the read limits comes back as tooLarge, read
// whole and dropped: it is refused and the connection goes on.
func readCommand(rd *resp.Reader) (args [][]byte, tooLarge *resp.TooLargeError, err error) {
	args, err = rd.ReadCommand()
	if err == nil {
		return args, nil, nil
	}
	var tl *resp.TooLargeError // here: errors.As takes its address, a heap allocation
	if errors.As(err, &tl) {
		return args, tl, nil
	}
	return nil, nil, err
}

// endBatch executes the batch and writes its replies and the client's pushes; false when the
// connection is to close (QUIT, or the client did not take its replies in time).
func (s *Server) endBatch(ctx context.Context, b *batch, c *client, w *resp.Writer) bool {
	b.flushTo(ctx, w)
	s.writePushes(c) // after the replies: none can overtake a reply it invalidates
	err := w.Flush()
	s.releaseOutput(c)
	if err != nil || c.quit {
		if err != nil && c.deadlineSet {
			s.Stats.OutputLimitClosed.Add(1) // over the soft limit for its time
		}
		return false
	}
	if c.deadlineSet { // set by exec for replies over the soft limit (outputlimit.go)
		_ = c.nc.SetWriteDeadline(time.Time{})
		c.deadlineSet = false
	}
	return true
}

// register creates the connection's client and makes it visible to CLIENT LIST and REDIRECT.
func (s *Server) register(nc net.Conn) *client {
	c := &client{id: s.clientIDs.Add(1), authed: s.password() == "", created: time.Now(),
		addr: nc.RemoteAddr().String(), laddr: nc.LocalAddr().String(), nc: nc, done: make(chan struct{}),
		w: resp.NewWriter(bufio.NewWriterSize(nc, 16<<10))}
	c.proto.Store(2)
	c.multi.Store(-1)
	c.batchLimit = min(firstBatch, s.cfg.MaxBatch)
	c.lastAt.Store(c.created.UnixNano())
	s.mu.Lock()
	s.conns[nc] = c
	s.byID[c.id] = c
	s.mu.Unlock()
	return c
}

func (s *Server) unregister(nc net.Conn, c *client) {
	s.releaseOutput(c)
	c.unwatch()
	s.trackingOff(c)
	close(c.done)
	s.mu.Lock()
	delete(s.conns, nc)
	delete(s.byID, c.id)
	s.mu.Unlock()
	nc.Close()
}

// endOnReadError answers what was read before a read error, and a malformed frame with an
// error reply; the connection then closes.
func (s *Server) endOnReadError(ctx context.Context, b *batch, w *resp.Writer, err error) {
	b.flushTo(ctx, w)
	var pe *resp.ProtocolError
	if errors.As(err, &pe) {
		s.Stats.ProtocolErrors.Add(1)
		w.Error("ERR " + pe.Error())
	}
	w.Flush()
}

// readLimits bound what one command may buffer: the largest value a policy allows (plus room
// for the other arguments), and in all four times that or 64 MiB. Longer arguments, up to
// Valkey's proto-max-bulk-len, are read and dropped so the client gets a clean error.
func (s *Server) readLimits() resp.Limits {
	l := resp.Limits{MaxArgs: s.cfg.MaxArgs, MaxBulkBytes: 1<<20 + 64<<10, MaxDiscardBytes: 512 << 20, MaxInline: 64 << 10}
	if r := s.router.Load(); r != nil {
		l.MaxBulkBytes = int(maxValueBytes(r.Doc)) + 64<<10
	}
	l.MaxCommandBytes = max(64<<20, 4*l.MaxBulkBytes)
	return l
}

// refuseTooLarge answers a command whose arguments were over the read limits; nothing runs.
func (s *Server) refuseTooLarge(b *batch, c *client, tl *resp.TooLargeError) {
	s.Stats.OversizeRejected.Add(1)
	var msg string
	switch {
	case !c.authed:
		msg = "NOAUTH Authentication required."
	case tl.Total:
		msg = fmt.Sprintf("ERR command of more than %d bytes exceeds the agent's limit", tl.Limit)
	case tl.Arg >= 2 && len(tl.Args) > 1:
		key := tl.Args[1]
		limit := b.rulesFor(key).MaxValueBytes
		if limit <= 0 {
			limit = tl.Limit
		}
		msg = fmt.Sprintf("ERR value of %d bytes for key '%s' exceeds the limit of %d bytes", tl.Size, truncate(key), limit)
	default:
		msg = fmt.Sprintf("ERR argument of %d bytes exceeds the limit of %d bytes", tl.Size, tl.Limit)
	}
	b.local(func(w *resp.Writer) { w.Error(msg) })
}

// flushTo executes what the batch holds, if anything.
func (b *batch) flushTo(ctx context.Context, w *resp.Writer) {
	if b.r == nil || len(b.replies) == 0 {
		return
	}
	b.exec(ctx, w)
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
