package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Config configures a bus.
type Config struct {
	Fleet string
	// Channel and Key may be empty: the bus waits until Configure gives them.
	Channel string
	Key     []byte
	// Node names this agent in sender IDs; a random suffix makes every process a new sender,
	// so a restarted agent's sequence numbers never look like replays.
	Node string
	Skew time.Duration
	// KeyOverlap (default DefaultKeyOverlap) is how long a rotated-out key still signs.
	KeyOverlap time.Duration
	// Shards returns the current ring's shards: the bus publishes to and listens on all of them,
	// so losing one shard does not stop it.
	Shards func() []*router.Shard
	// Apply runs an accepted message; Flush drops everything that relies on the bus (after a
	// gap in a sender's sequence or a resubscription, when messages may have been lost).
	Apply func(*Message)
	Flush func()
}

// Stats are the bus counters.
type Stats struct {
	Published, PublishFailed, Received, Applied, Duplicates, Gaps, Resubscribes atomic.Int64
	Rejected                                                                    sync.Map // reason -> *atomic.Int64
}

func (s *Stats) reject(reason string) {
	v, _ := s.Rejected.LoadOrStore(reason, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// DefaultKeyOverlap is how long after a key rotation the bus still signs with the old key while
// accepting both: agents follow the fleet's Secret within seconds, so when anyone signs with the
// new key every agent already accepts it, and no agent is cut off meanwhile.
const DefaultKeyOverlap = time.Minute

// signing is the bus's key state: messages are signed with old until switchAt, then with key.
type signing struct {
	key, old []byte
	switchAt time.Time
}

func (s *signing) current(now time.Time) []byte {
	if s.old != nil && now.Before(s.switchAt) {
		return s.old
	}
	return s.key
}

// Bus is one agent's end of the fleet's invalidation bus.
type Bus struct {
	cfg      Config
	channel  atomic.Pointer[string]
	signing  atomic.Pointer[signing]
	changed  chan struct{} // wakes Run after Configure
	sender   string
	seq      atomic.Uint64
	verifier *Verifier
	Stats    Stats

	pending chan string
	// pubMu orders publishing: a sequence number is assigned and queued to every shard's
	// outbox before the next one is.
	pubMu   sync.Mutex
	outbox  map[*router.Shard]*outbox
	active  atomic.Int32 // subscriptions currently open
	allDown atomic.Bool  // no subscription has been up for a second since the last total outage
	mu      sync.Mutex
	subs    map[*router.Shard]subscription
}

type subscription struct {
	channel string
	cancel  context.CancelFunc
}

// New returns a bus; Run starts it.
func New(cfg Config) *Bus {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	if cfg.Skew == 0 {
		cfg.Skew = 30 * time.Second
	}
	if cfg.KeyOverlap == 0 {
		cfg.KeyOverlap = DefaultKeyOverlap
	}
	b := &Bus{cfg: cfg, sender: cfg.Node + "-" + hex.EncodeToString(suffix),
		verifier: NewVerifier(cfg.Fleet, nil, cfg.Skew), pending: make(chan string, 65536),
		subs: map[*router.Shard]subscription{}, outbox: map[*router.Shard]*outbox{}, changed: make(chan struct{}, 1)}
	b.allDown.Store(true)
	b.Configure(cfg.Channel, cfg.Key)
	return b
}

// Configure sets the channel and signing key; call it whenever the fleet's document or bus
// Secret may have changed. A new channel resubscribes everywhere; a new key is accepted at
// once and signed with after Config.KeyOverlap. Until a key is given the bus neither sends nor listens.
func (b *Bus) Configure(channel string, key []byte) {
	now := time.Now()
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	cur := b.signing.Load()
	next := &signing{key: key}
	switch {
	case len(key) == 0:
		return
	case cur == nil:
	case string(cur.key) == string(key):
		next = cur
	default:
		next.old, next.switchAt = cur.current(now), now.Add(b.cfg.KeyOverlap)
	}
	if next != cur {
		b.signing.Store(next)
		accepted := [][]byte{next.key}
		if next.old != nil {
			accepted = append(accepted, next.old)
		}
		b.verifier.SetKeys(accepted...)
		if next.old != nil {
			// Stop accepting the old key once nobody signs with it any longer.
			time.AfterFunc(b.cfg.KeyOverlap+b.cfg.Skew, func() { b.dropOldKey(next) })
		}
	}
	if old := b.channel.Load(); old == nil || *old != channel {
		b.channel.Store(&channel)
		for sh, ob := range b.outbox { // queued messages still go out on the old channel
			close(ob.ch)
			delete(b.outbox, sh)
		}
	}
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *Bus) dropOldKey(s *signing) {
	if b.signing.Load() == s {
		b.verifier.SetKeys(s.key)
	}
}

// Configured reports whether the bus has a key and a channel.
func (b *Bus) Configured() bool { return b.signing.Load() != nil && b.channel.Load() != nil }

// Sender is this agent's sender ID.
func (b *Bus) Sender() string { return b.sender }

// Run keeps a subscription on every current shard and sends batched deletes until ctx ends.
func (b *Bus) Run(ctx context.Context) {
	go b.batchDeletes(ctx)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		b.syncSubscriptions(ctx)
		select {
		case <-ctx.Done():
			b.mu.Lock()
			for _, s := range b.subs {
				s.cancel()
			}
			b.mu.Unlock()
			return
		case <-t.C:
		case <-b.changed:
		}
	}
}

func (b *Bus) syncSubscriptions(ctx context.Context) {
	if !b.Configured() {
		return
	}
	channel := *b.channel.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	current := map[*router.Shard]bool{}
	for _, sh := range b.cfg.Shards() {
		current[sh] = true
		if s, ok := b.subs[sh]; ok && s.channel != channel {
			s.cancel()
			delete(b.subs, sh)
		}
		if _, ok := b.subs[sh]; !ok {
			sctx, cancel := context.WithCancel(ctx)
			b.subs[sh] = subscription{channel: channel, cancel: cancel}
			go b.listen(sctx, sh, channel)
		}
	}
	for sh, s := range b.subs {
		if !current[sh] {
			s.cancel()
			delete(b.subs, sh)
		}
	}
	b.closeRetiredOutboxes(current)
}

// listen subscribes on one shard, resubscribing after failures. Every message goes to every
// shard, so one broken subscription loses nothing while another is up; only when all are down
// can messages be lost, and then the copies that rely on the bus are flushed (when the last one
// drops, and again when listening resumes).
func (b *Bus) listen(ctx context.Context, sh *router.Shard, channel string) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if b.allDown.Load() {
			b.cfg.Flush()
		}
		b.active.Add(1)
		stable := time.AfterFunc(time.Second, func() { b.allDown.Store(false) })
		start := time.Now()
		_ = sh.Subscribe(ctx, channel, func(payload string) { b.receive([]byte(payload)) })
		stable.Stop()
		if b.active.Add(-1) == 0 && ctx.Err() == nil {
			b.allDown.Store(true)
			b.cfg.Flush()
		}
		b.Stats.Resubscribes.Add(1)
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (b *Bus) receive(data []byte) {
	b.Stats.Received.Add(1)
	m, gap, err := b.verifier.Check(data)
	switch {
	case errors.Is(err, ErrDuplicate):
		b.Stats.Duplicates.Add(1)
		return
	case err != nil:
		reason := err
		if u := errors.Unwrap(err); u != nil {
			reason = u
		}
		b.Stats.reject(reason.Error())
		return
	}
	if m.Sender == b.sender {
		return // our own message: already applied locally
	}
	if gap {
		b.Stats.Gaps.Add(1)
		b.cfg.Flush()
	}
	b.cfg.Apply(m)
	b.Stats.Applied.Add(1)
}

// Publish signs and sends one message to every shard; it fails only if no shard took it.
func (b *Bus) Publish(ctx context.Context, op string, args ...string) error {
	if !b.Configured() {
		b.Stats.PublishFailed.Add(1)
		return errors.New("the bus has no signing key yet")
	}
	shards := b.cfg.Shards()
	sent := make(chan bool, len(shards))
	b.pubMu.Lock()
	sg, channel := b.signing.Load(), b.channel.Load()
	now := time.Now()
	m := &Message{Fleet: b.cfg.Fleet, Sender: b.sender, Seq: b.seq.Add(1), TimeMs: now.UnixMilli(), Op: op, Args: args}
	payload := valkey.BinaryString(m.Seal(sg.current(now)))
	for _, sh := range shards {
		ob := b.outbox[sh]
		if ob == nil {
			ob = newOutbox(sh, *channel)
			b.outbox[sh] = ob
		}
		ob.ch <- outgoing{payload: payload, sent: sent}
	}
	b.pubMu.Unlock()
	ok := 0
	for range shards {
		select {
		case took := <-sent:
			if took {
				ok++
			}
		case <-ctx.Done():
			b.Stats.PublishFailed.Add(1)
			return ctx.Err()
		}
	}
	if ok == 0 {
		b.Stats.PublishFailed.Add(1)
		return errors.New("no shard accepted the invalidation")
	}
	b.Stats.Published.Add(1)
	return nil
}

// closeRetiredOutboxes stops the outboxes of shards that left the ring.
func (b *Bus) closeRetiredOutboxes(current map[*router.Shard]bool) {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	for sh, ob := range b.outbox {
		if !current[sh] {
			close(ob.ch)
			delete(b.outbox, sh)
		}
	}
}

// DeleteAsync queues key for a batched delete message (the write path must not wait for it).
func (b *Bus) DeleteAsync(key string) {
	select {
	case b.pending <- key:
	default:
		b.Stats.PublishFailed.Add(1) // full: other agents' copies expire with their L1 TTL
	}
}

func (b *Bus) batchDeletes(ctx context.Context) {
	const most = 256
	keys := make([]string, 0, most)
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-b.pending:
			keys = append(keys[:0], k)
		drain:
			for len(keys) < most {
				select {
				case k := <-b.pending:
					keys = append(keys, k)
				default:
					break drain
				}
			}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_ = b.Publish(pctx, OpDelete, keys...) // failures are counted; copies expire with their L1 TTL
			cancel()
		}
	}
}
