// Package router owns the connections to the shards: one valkey-go client and one circuit
// breaker per shard, the queue of deletes a down shard still owes, and the ring that picks
// a key's shard.
package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/sony/gobreaker/v2"
	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/upstream"

	"github.com/cachefleet/cachefleet/internal/cacheagent/l1"
)

// ShardConfig configures one shard connection.
type ShardConfig struct {
	Name, Addr string
	Password   string
	// CacheBytes bounds valkey-go's tracking cache for this shard; 0 disables client-side caching.
	CacheBytes int
	// MinUsable: tracked values with less server TTL left are not kept.
	MinUsable time.Duration
	// Replicas (comma-separated host:port) answer reads while the primary is unavailable.
	Replicas string
	Timeout  time.Duration // per request
	// FailuresToOpen consecutive failures open the breaker; it half-opens after Cooldown.
	FailuresToOpen uint32
	Cooldown       time.Duration
	MaxQueuedDels  int
	// MaxDedicated bounds the connections clients hold of their own (WATCH, scripts); one
	// more waits up to Timeout for a place, then is refused. 0 is DefaultMaxDedicated.
	MaxDedicated int
	// PoolIdle: pooled connections idle this long are closed, down to a few (0: 30 s).
	PoolIdle time.Duration
}

// DefaultMaxDedicated leaves most of valkey-go's pool of 1,024 for the agent's own work.
const DefaultMaxDedicated = 256

// DownError is returned for requests to a shard whose breaker is open or that cannot be reached.
type DownError struct {
	Shard string
	Err   error
}

func (e *DownError) Error() string {
	return fmt.Sprintf("CFDOWN shard %s is unavailable: %v", e.Shard, e.Err)
}

func (e *DownError) Unwrap() error { return e.Err }

// pipelineMultiplex is valkey-go's PipelineMultiplex. A negative value means 2^0: one
// connection per shard (0 would mean valkey-go's default, up to 4). One connection is what
// makes read-your-writes hold: the shard answers a write and a later tracked read of the same
// key in order only when both travel on the same connection. It also coalesces the most
// concurrent requests into each write.
const pipelineMultiplex = -1

// Shard is one ring member's connection. Safe for concurrent use.
type Shard struct {
	cfg     ShardConfig
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	// dedicated holds a place per connection a client holds of its own (takePlace).
	dedicated chan struct{}

	mu      sync.Mutex
	client  valkey.Client
	pending []string     // deletes owed while the shard was down, replayed before any other request
	owed    atomic.Int64 // len(pending), read without the lock
	queued  map[string]struct{}
	closed  bool

	plain  combiner[valkey.Completed]    // DoMulti rounds
	cached combiner[valkey.CacheableTTL] // DoMultiCache rounds

	replicas *replicaReader // nil without replicas
	// stores are the live tracking stores: valkey-go makes one per connection it opens.
	stores   atomic.Pointer[[]*trackStore]
	storesMu sync.Mutex                                      // serialises changes of stores (valkey-go makes stores while mu is held)
	kept     atomic.Pointer[otter.Cache[string, trackEntry]] // the copies all stores keep
	admit    atomic.Pointer[l1.Admission]                    // which misses kept copies

	// demoted: this address answered READONLY (it handed its role to a replica) and no ring
	// naming another primary came within the hold, so writes are no longer held for one.
	demoted atomic.Bool
	// breakerClosed follows the breaker's changes: a read of it takes no lock nor clock.
	breakerClosed atomic.Bool

	Stats ShardStats
}

// ShardStats are the shard's counters, exported to Prometheus by the agent.
type ShardStats struct {
	Errors, QueuedDeletes, ReplayedDeletes, DroppedDeletes, ReplicaReads atomic.Int64
	// StaleRetries counts requests retried because their connection had been closed by the
	// shard before they were sent (a shard restart seen by an idle connection), and rounds of
	// reads sent again because it was closed under them.
	StaleRetries atomic.Int64
	// SwitchoverResends counts commands sent to this shard again after its previous primary had
	// refused them with READONLY (it handed its role over before the agent had the new ring).
	SwitchoverResends atomic.Int64
}

// NewShard prepares a shard connection; it connects lazily, so a shard that is down when the
// agent starts does not stop the agent.
func NewShard(cfg ShardConfig) *Shard {
	// cfg is kept as given: it is what a new ring's shard is matched against (router.New).
	maxDedicated := cfg.MaxDedicated
	if maxDedicated <= 0 {
		maxDedicated = DefaultMaxDedicated
	}
	s := &Shard{cfg: cfg, replicas: newReplicaReader(cfg), dedicated: make(chan struct{}, maxDedicated)}
	s.breakerClosed.Store(true)
	s.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: 1,
		Timeout:     cfg.Cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.FailuresToOpen },
		OnStateChange: func(_ string, _, to gobreaker.State) {
			s.breakerClosed.Store(to == gobreaker.StateClosed)
			if to == gobreaker.StateOpen {
				s.dropClient()
			}
		},
	})
	return s
}

// dropClient forgets the connection when the breaker opens, so the probe after the cooldown
// is judged on a connection made after the outage, not on one that may be half dead.
func (s *Shard) dropClient() {
	s.mu.Lock()
	old := s.client
	s.client = nil
	s.mu.Unlock()
	if old != nil {
		go old.Close() // the requests still on it are failing anyway
	}
}

// Demoted says whether writes refused with READONLY by this address are passed on at once.
func (s *Shard) Demoted() bool { return s.demoted.Load() }

// MarkDemoted records that holding writes for this address's successor was in vain.
func (s *Shard) MarkDemoted() { s.demoted.Store(true) }

// Name is the shard's stable ring name.
func (s *Shard) Name() string { return s.cfg.Name }

// Addr is the shard's address.
func (s *Shard) Addr() string { return s.cfg.Addr }

// Config is the configuration the shard was built from.
func (s *Shard) Config() ShardConfig { return s.cfg }

// BreakerState is 0 closed, 1 half-open, 2 open.
func (s *Shard) BreakerState() int { return int(s.breaker.State()) }

func (s *Shard) getClient() (valkey.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("shard connection closed")
	}
	if s.client != nil {
		return s.client, nil
	}
	opt := valkey.ClientOption{
		InitAddress:       []string{s.cfg.Addr},
		Password:          s.cfg.Password,
		ForceSingleClient: true,
		DisableRetry:      true,
		PipelineMultiplex: pipelineMultiplex,
		ConnWriteTimeout:  s.cfg.Timeout,
		// Waiting up to 20µs for more requests turns many small writes into one syscall:
		// on loopback the syscalls, not the bytes, are the cost.
		MaxFlushDelay: 20 * time.Microsecond,
		Dialer:        netDialer(s.cfg.Timeout),
		DialCtxFn:     dialerFor(s.cfg.Password),
		// Connections a burst of WATCHes or scripts took go back when idle.
		BlockingPoolCleanup: cmp.Or(s.cfg.PoolIdle, 30*time.Second),
		BlockingPoolMinSize: 4,
	}
	if s.cfg.CacheBytes > 0 {
		// valkey-go's default is 128 MiB per connection; bound it by the fleet's L1 setting.
		opt.CacheSizeEachConn = max(s.cfg.CacheBytes, 1<<16)
		opt.NewCacheStoreFn = func(o valkey.CacheStoreOption) valkey.CacheStore {
			ts := newSharedTrackStore(s.keptCache(), s.cfg.MinUsable)
			ts.onClose = s.dropStore
			s.updateStores(func(l []*trackStore) []*trackStore { return append(l, ts) })
			return ts
		}
	} else {
		opt.DisableCache = true
	}
	c, err := valkey.NewClient(opt)
	if err != nil {
		return nil, err
	}
	s.client = c
	return c, nil
}

// Fence drops the tracking L1's copies of keys this agent wrote and refuses earlier reads'
// fills of them. Call it after the shard acknowledged the write, before the client's reply.
func (s *Shard) Fence(keys ...string) {
	l, kept := s.stores.Load(), s.kept.Load()
	if l == nil || kept == nil {
		return
	}
	for _, key := range keys {
		for _, ts := range *l {
			ts.fence.Write(key)
		}
		dropKept(kept, key) // once: the stores share the cache
	}
}

// KeptGet is the tracking L1's copy of GET key, if it holds a fresh one: a hit is answered
// without a trip through valkey-go, the breaker and a request context (a fifth of an L1
// hit's CPU). It looks in valkey-go's stores and in the event loops' (LoopStore).
func (s *Shard) KeptGet(key string, now time.Time) (Kept, bool) {
	if c := s.kept.Load(); c != nil {
		if e, ok := fresh(c, key, "GET", now); ok {
			return e.kept, true
		}
	}
	return Kept{}, false
}

// keptCache is the cache the shard's tracking stores share, made on first use.
func (s *Shard) keptCache() *otter.Cache[string, trackEntry] {
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	if c := s.kept.Load(); c != nil {
		return c
	}
	bytes := max(s.cfg.CacheBytes, 1<<16)
	admit := l1.NewAdmissionFor(int64(bytes))
	c := newKeptCache(bytes, admit)
	s.admit.Store(admit)
	s.kept.Store(c)
	return c
}

// Admit reports whether a read of key that missed the tracking L1 should be a tracked read, to
// be copied (l1.Admission: once the L1 is full, keys read twice within a window).
func (s *Shard) Admit(key []byte) bool {
	a := s.admit.Load()
	return a == nil || a.Admit(key)
}

// FenceAll is Fence for every key: the shard was flushed.
func (s *Shard) FenceAll() {
	if l := s.stores.Load(); l != nil {
		for _, ts := range *l {
			ts.FenceAll()
		}
	}
}

func (s *Shard) dropStore(ts *trackStore) {
	s.updateStores(func(l []*trackStore) []*trackStore {
		return slices.DeleteFunc(l, func(x *trackStore) bool { return x == ts })
	})
}

// updateStores replaces the store list with a changed copy (readers never lock).
func (s *Shard) updateStores(change func([]*trackStore) []*trackStore) {
	s.storesMu.Lock()
	defer s.storesMu.Unlock()
	var l []*trackStore
	if cur := s.stores.Load(); cur != nil {
		l = slices.Clone(*cur)
	}
	l = change(l)
	s.stores.Store(&l)
}

// Close closes the connection; later requests fail.
func (s *Shard) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.client != nil {
		s.client.Close()
	}
	if s.replicas != nil {
		s.replicas.close()
	}
}

// isFailure says whether a result means the shard is unhealthy (as opposed to a valid answer
// such as nil or a WRONGTYPE error).
func isFailure(err error) bool {
	if err == nil || valkey.IsValkeyNil(err) {
		return false
	}
	if ve, ok := valkey.IsValkeyErr(err); ok {
		return ve.IsLoading() || ve.IsClusterDown()
	}
	return true
}

// call runs fn through the breaker with the request timeout. fn gets a client and returns the
// error that decides success.
func (s *Shard) call(ctx context.Context, fn func(ctx context.Context, c valkey.Client) error) error {
	done, err := s.breaker.Allow()
	if err != nil {
		return &DownError{Shard: s.cfg.Name, Err: err}
	}
	c, err := s.getClient()
	if err != nil {
		s.Stats.Errors.Add(1)
		done(err)
		return &DownError{Shard: s.cfg.Name, Err: err}
	}
	attempt := func() error {
		rctx, cancel := s.timeout(ctx, 0)
		err := s.replayPending(rctx, c)
		cancel()
		if err != nil {
			return err
		}
		return fn(ctx, c) // fn bounds its own request (timeout), by its size
	}
	err = attempt()
	if errors.Is(err, errStaleConnection) {
		// Nothing reached the shard; valkey-go has dropped that connection and dials anew.
		s.Stats.StaleRetries.Add(1)
		err = attempt()
	}
	if isFailure(err) {
		s.Stats.Errors.Add(1)
		done(err)
		return &DownError{Shard: s.cfg.Name, Err: err}
	}
	done(nil)
	return nil
}

// perArgument is the time a request is given per argument on top of the shard timeout: a
// client's MGET of 100,000 keys is slow, not a sign that the shard is down, and must neither
// read as misses nor open the breaker for everyone.
const perArgument = 20 * time.Microsecond

// timeout bounds a request of args arguments in all.
func (s *Shard) timeout(ctx context.Context, args int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.Timeout+time.Duration(args)*perArgument)
}

// argumentsOf counts the arguments of commands.
func argumentsOf[C any](cmds []C) int {
	n := 0
	for i := range cmds {
		switch c := any(&cmds[i]).(type) {
		case *valkey.Completed:
			n += len(c.Commands())
		case *valkey.CacheableTTL:
			n += len(c.Cmd.Commands())
		default:
			n++
		}
	}
	return n
}

// Failed counts a failure of a connection of the agent's own to the shard (the event loop's)
// toward the breaker, as a failed request would.
func (s *Shard) Failed(err error) {
	s.Stats.Errors.Add(1)
	if done, allowErr := s.breaker.Allow(); allowErr == nil {
		done(err)
	}
}

// Do runs one command built by build.
func (s *Shard) Do(ctx context.Context, build func(valkey.Builder) valkey.Completed) (valkey.ValkeyResult, error) {
	var res valkey.ValkeyResult
	err := s.call(ctx, func(ctx context.Context, c valkey.Client) error {
		cmd := build(c.B())
		ctx, cancel := s.timeout(ctx, len(cmd.Commands()))
		defer cancel()
		res = c.Do(ctx, cmd)
		return res.Error()
	})
	return res, err
}

// DoMulti pipelines commands in order; the shard fails the batch if any command hit the network.
// Reads fall back to a replica while the primary is unavailable.
// Concurrent callers share rounds (see combiner).
func (s *Shard) DoMulti(ctx context.Context, build func(valkey.Builder) []valkey.Completed) ([]valkey.ValkeyResult, error) {
	r := &multiReq{build: build}
	s.plain.submit(r, func(round []*multiReq) {
		runRound(ctx, s, round, func(ctx context.Context, c valkey.Client, cmds []valkey.Completed) []valkey.ValkeyResult {
			return c.DoMulti(ctx, cmds...)
		})
	})
	res, err := r.res, r.err
	if err != nil {
		if rres, ok := s.readReplica(ctx, err, build); ok {
			return rres, nil
		}
	}
	return res, err
}

// runRound sends a round's commands as one pipeline (with send) and splits the results. When
// the shard closed the connection under the round, whether its commands ran is unknown: writes
// keep the error (the full path answers CFDOWN), reads are sent again, once, on a new
// connection.
func runRound[C any](ctx context.Context, s *Shard, round []*roundReq[C], send func(context.Context, valkey.Client, []C) []valkey.ValkeyResult) {
	res, err := doRound(ctx, s, round, send)
	if lostInFlight(err) {
		var reads, writes []*roundReq[C]
		for _, r := range round {
			if r.readOnly {
				reads = append(reads, r)
			} else {
				writes = append(writes, r)
			}
		}
		split(writes, nil, err)
		if len(reads) > 0 {
			s.Stats.StaleRetries.Add(1)
			res, err = doRound(ctx, s, reads, send)
		}
		round = reads
	}
	split(round, res, err)
}

func doRound[C any](ctx context.Context, s *Shard, round []*roundReq[C], send func(context.Context, valkey.Client, []C) []valkey.ValkeyResult) ([]valkey.ValkeyResult, error) {
	var res []valkey.ValkeyResult
	err := s.call(ctx, func(ctx context.Context, c valkey.Client) error {
		cmds := buildRound(c.B(), round)
		ctx, cancel := s.timeout(ctx, argumentsOf(cmds))
		defer cancel()
		res = send(ctx, c, cmds)
		return firstFailure(res)
	})
	return res, err
}

// lostInFlight says whether err is the shard closing the connection under requests already
// sent (CLIENT KILL, a restart, a proxy's idle timeout), rather than the shard being down.
func lostInFlight(err error) bool {
	var down *DownError
	return errors.As(err, &down) &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// buildRound builds every request's commands, in order, noting how many each has.
func buildRound[C any](b valkey.Builder, round []*roundReq[C]) []C {
	cmds := make([]C, 0, len(round))
	for _, r := range round {
		own := r.build(b)
		r.n = len(own)
		r.readOnly = readOnly(own)
		cmds = append(cmds, own...)
	}
	return cmds
}

// readOnly reports whether commands only read (tracked reads always do).
func readOnly[C any](cmds []C) bool {
	for i := range cmds {
		if c, ok := any(&cmds[i]).(*valkey.Completed); ok && !c.IsReadOnly() {
			return false
		}
	}
	return true
}

// readReplica answers reads from a replica when err says the primary is unavailable.
func (s *Shard) readReplica(ctx context.Context, err error, build func(valkey.Builder) []valkey.Completed) ([]valkey.ValkeyResult, bool) {
	var down *DownError
	if s.replicas == nil || !errors.As(err, &down) {
		return nil, false
	}
	res, ok := s.replicas.read(ctx, build, s.deleteQueued)
	if ok {
		s.Stats.ReplicaReads.Add(int64(len(res)))
	}
	return res, ok
}

// deleteQueued says whether a delete of key waits for the shard to return.
func (s *Shard) deleteQueued(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.queued[key]
	return ok
}

// firstFailure is the first result that says the shard is unhealthy, if any.
func firstFailure(res []valkey.ValkeyResult) error {
	for _, r := range res {
		if err := r.Error(); isFailure(err) {
			return err
		}
	}
	return nil
}

// DoCache reads through valkey-go's server-assisted client-side cache.
func (s *Shard) DoCache(ctx context.Context, build func(valkey.Builder) valkey.Cacheable, ttl time.Duration) (valkey.ValkeyResult, error) {
	var res valkey.ValkeyResult
	err := s.call(ctx, func(ctx context.Context, c valkey.Client) error {
		cmd := build(c.B())
		ctx, cancel := s.timeout(ctx, len(cmd.Commands()))
		defer cancel()
		res = c.DoCache(ctx, cmd, ttl)
		return res.Error()
	})
	return res, err
}

// QueueDelete records keys to delete once the shard is back. It returns false when the queue is
// full (the keys still expire with their TTL; the drop is counted).
func (s *Shard) QueueDelete(keys ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending)+len(keys) > s.cfg.MaxQueuedDels {
		s.Stats.DroppedDeletes.Add(int64(len(keys)))
		return false
	}
	s.pending = append(s.pending, keys...)
	s.owed.Store(int64(len(s.pending)))
	if s.queued == nil {
		s.queued = map[string]struct{}{}
	}
	for _, k := range keys {
		s.queued[k] = struct{}{}
	}
	s.Stats.QueuedDeletes.Add(int64(len(keys)))
	return true
}

// Pending is the number of queued deletes.
func (s *Shard) Pending() int { return int(s.owed.Load()) }

// Serving reports, without a lock, whether the shard takes requests straight away: its breaker
// is closed and it owes no deletes.
func (s *Shard) Serving() bool { return s.breakerClosed.Load() && s.owed.Load() == 0 }

// replayPending sends queued deletes before anything else reaches the shard, so a read after
// recovery never sees a value that was deleted while the shard was down.
func (s *Shard) replayPending(ctx context.Context, c valkey.Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return nil
	}
	const batch = 512
	for len(s.pending) > 0 {
		n := min(batch, len(s.pending))
		if err := c.Do(ctx, c.B().Unlink().Key(s.pending[:n]...).Build()).Error(); isFailure(err) {
			return err
		}
		for _, k := range s.pending[:n] {
			delete(s.queued, k)
		}
		s.pending = s.pending[n:]
		s.owed.Store(int64(len(s.pending)))
		s.Stats.ReplayedDeletes.Add(int64(n))
	}
	s.pending, s.queued = nil, nil
	s.owed.Store(0)
	return nil
}

// DoMultiCache reads several keys through the client-side cache in one round trip.
// Without the primary, the reads go uncached to a replica.
// Concurrent callers share rounds (see combiner).
func (s *Shard) DoMultiCache(ctx context.Context, build func(valkey.Builder) []valkey.CacheableTTL) ([]valkey.ValkeyResult, error) {
	r := &roundReq[valkey.CacheableTTL]{build: build}
	s.cached.submit(r, func(round []*roundReq[valkey.CacheableTTL]) {
		runRound(ctx, s, round, func(ctx context.Context, c valkey.Client, cmds []valkey.CacheableTTL) []valkey.ValkeyResult {
			return c.DoMultiCache(ctx, cmds...)
		})
	})
	res, err := r.res, r.err
	if err != nil {
		uncached := func(b valkey.Builder) []valkey.Completed {
			cts := build(b)
			out := make([]valkey.Completed, len(cts))
			for i, ct := range cts {
				out[i] = valkey.Completed(ct.Cmd)
			}
			return out
		}
		if rres, ok := s.readReplica(ctx, err, uncached); ok {
			return rres, nil
		}
	}
	return res, err
}

// Command runs one command on a connection of its own, past the breaker and the pool (see
// upstream.Command), and returns its reply as the shard sent it.
func (s *Shard) Command(ctx context.Context, cmd ...string) ([]byte, error) {
	return upstream.Command(ctx, s.cfg.Addr, s.cfg.Password, s.cfg.Timeout, cmd...)
}

// Dedicate returns a connection of the shard's own, for WATCH: the keys stay watched on it
// until the transaction ends. release gives it back.
func (s *Shard) Dedicate() (valkey.DedicatedClient, func(), error) {
	leave, err := s.takePlace()
	if err != nil {
		return nil, nil, err
	}
	c, err := s.getClient()
	if err != nil {
		leave()
		return nil, nil, &DownError{Shard: s.cfg.Name, Err: err}
	}
	dc, release := c.Dedicate()
	return dc, func() { release(); leave() }, nil
}

// ErrTooManyDedicated refuses a connection of a client's own past ShardConfig.MaxDedicated.
type ErrTooManyDedicated struct {
	Shard string
	Max   int
}

func (e *ErrTooManyDedicated) Error() string {
	return fmt.Sprintf("%d clients already hold a connection of their own to shard %s (WATCH, scripts); try again later", e.Max, e.Shard)
}

// takePlace waits up to the shard timeout for a place among the dedicated connections.
func (s *Shard) takePlace() (leave func(), err error) {
	select {
	case s.dedicated <- struct{}{}:
	default:
		t := time.NewTimer(s.cfg.Timeout)
		defer t.Stop()
		select {
		case s.dedicated <- struct{}{}:
		case <-t.C:
			return nil, &ErrTooManyDedicated{Shard: s.cfg.Name, Max: cap(s.dedicated)}
		}
	}
	var once sync.Once
	return func() { once.Do(func() { <-s.dedicated }) }, nil
}

// Subscribe receives messages of channel until ctx ends or the connection breaks. It bypasses
// the breaker: a subscription is a long-lived connection, not a request.
func (s *Shard) Subscribe(ctx context.Context, channel string, fn func(payload string)) error {
	c, err := s.getClient()
	if err != nil {
		return err
	}
	err = c.Receive(ctx, c.B().Subscribe().Channel(channel).Build(), func(m valkey.PubSubMessage) {
		fn(m.Message)
	})
	if ctx.Err() != nil {
		// valkey-go only drops its local handler when ctx ends; the subscription lives on the
		// shared connection until the shard is told.
		uctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
		c.Do(uctx, c.B().Unsubscribe().Channel(channel).Build())
		cancel()
	}
	return err
}
