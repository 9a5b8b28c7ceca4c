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
	Fleet   string
	Channel string
	Key     []byte
	// Node names this agent in sender IDs; a random suffix makes every process a new sender,
	// so a restarted agent's sequence numbers never look like replays.
	Node string
	Skew time.Duration
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

// Bus is one agent's end of the fleet's invalidation bus.
type Bus struct {
	cfg      Config
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
	subs    map[*router.Shard]context.CancelFunc
}

// New returns a bus; Run starts it.
func New(cfg Config) *Bus {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	if cfg.Skew == 0 {
		cfg.Skew = 30 * time.Second
	}
	b := &Bus{cfg: cfg, sender: cfg.Node + "-" + hex.EncodeToString(suffix),
		verifier: NewVerifier(cfg.Fleet, cfg.Key, cfg.Skew), pending: make(chan string, 65536),
		subs: map[*router.Shard]context.CancelFunc{}, outbox: map[*router.Shard]*outbox{}}
	b.allDown.Store(true)
	return b
}

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
			for _, cancel := range b.subs {
				cancel()
			}
			b.mu.Unlock()
			return
		case <-t.C:
		}
	}
}

func (b *Bus) syncSubscriptions(ctx context.Context) {
	b.mu.Lock()
	defer b.mu.Unlock()
	current := map[*router.Shard]bool{}
	for _, sh := range b.cfg.Shards() {
		current[sh] = true
		if _, ok := b.subs[sh]; !ok {
			sctx, cancel := context.WithCancel(ctx)
			b.subs[sh] = cancel
			go b.listen(sctx, sh)
		}
	}
	for sh, cancel := range b.subs {
		if !current[sh] {
			cancel()
			delete(b.subs, sh)
		}
	}
	b.closeRetiredOutboxes(current)
}

// listen subscribes on one shard, resubscribing after failures. Every message goes to every
// shard, so one broken subscription loses nothing while another is up; only when all are down
// can messages be lost, and then the copies that rely on the bus are flushed (when the last one
// drops, and again when listening resumes).
func (b *Bus) listen(ctx context.Context, sh *router.Shard) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if b.allDown.Load() {
			b.cfg.Flush()
		}
		b.active.Add(1)
		stable := time.AfterFunc(time.Second, func() { b.allDown.Store(false) })
		start := time.Now()
		_ = sh.Subscribe(ctx, b.cfg.Channel, func(payload string) { b.receive([]byte(payload)) })
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
	shards := b.cfg.Shards()
	sent := make(chan bool, len(shards))
	b.pubMu.Lock()
	m := &Message{Fleet: b.cfg.Fleet, Sender: b.sender, Seq: b.seq.Add(1), TimeMs: time.Now().UnixMilli(), Op: op, Args: args}
	payload := valkey.BinaryString(m.Seal(b.cfg.Key))
	for _, sh := range shards {
		ob := b.outbox[sh]
		if ob == nil {
			ob = newOutbox(sh, b.cfg.Channel)
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
			b.Publish(pctx, OpDelete, keys...)
			cancel()
		}
	}
}
