// Package tracking is the agent's half of client-side caching (CLIENT TRACKING): it remembers
// which of the agent's clients may hold which keys in their own process, and tells them when a
// key changes anywhere in the fleet. The semantics are Valkey's: in the default mode a read
// registers its keys and the next change of a key invalidates it once; in BCAST mode a client
// hears every change of the keys under its prefixes, read or not.
package tracking

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sink receives a client's invalidations: the changed keys, or nil when everything the
// client holds must go (a flush, or changes the agent may have missed).
type Sink interface {
	Invalidate(keys []string)
}

// Table is safe for concurrent use.
type Table struct {
	maxKeys int

	// tracking mirrors len(clients), so the agent's every write skips the lock while no client
	// tracks (the common case).
	tracking atomic.Int32

	mu sync.Mutex
	// The agent hears of its own writes twice: at once (Invalidate), and from the shard's
	// watcher (Changed), before or after. Each client hears of a write once:
	//   - writing: the writes of keys the agent sent and has not settled (Writing); a client
	//     told of the key since (its report came first) is not told again at once, and a
	//     NOLOOP writer is not told by that report;
	//   - echoes: key -> clients the agent told of its write at once (or, NOLOOP writers, did
	//     not); the watcher's next report of the key is that write's, and is not told to them.
	//     The report consumes the marks of every client, read since or not. Safe: the shard
	//     reports every write of one event-loop cycle together, after the cycle, and a client
	//     can read the key again only after that.
	writing map[string]*pendingWrite
	echoes  map[string]map[int64]time.Time
	// keys: key -> clients that read it since its last invalidation (default mode). Clients
	// that stopped tracking are dropped lazily, when the key is next invalidated.
	keys    map[string][]int64
	clients map[int64]*entry
	bcast   map[string]map[int64]bool // prefix ("" is every key) -> BCAST clients
	// flushing: when the agent began its own flush (Flushing), zero when none is under way.
	flushing time.Time
}

type entry struct {
	sink     Sink
	noLoop   bool
	prefixes []string // BCAST only
	// holds: the client may hold keys, having read since it was last told to drop everything
	// (ChangedAll tells only such clients).
	holds bool
	// toldAll: when it was last told to drop everything.
	toldAll time.Time
	// told: when the client was last told of each key (see Table.echoes).
	told map[string]time.Time
}

// echoWindow bounds how long a write of the agent's waits for the watcher's report of it.
const echoWindow = time.Second

// maxEchoes bounds echoes per client; past it they are cleared, and the client may be told of
// a change twice (never less).
const maxEchoes = 1 << 16

// DefaultMaxKeys is Valkey's tracking-table-max-keys default.
const DefaultMaxKeys = 1_000_000

// NewTable bounds the default-mode table at maxKeys keys: past it the oldest-looking keys are
// invalidated (the clients drop them) rather than remembered forever.
func NewTable(maxKeys int) *Table {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Table{maxKeys: maxKeys, keys: map[string][]int64{}, clients: map[int64]*entry{}, bcast: map[string]map[int64]bool{},
		writing: map[string]*pendingWrite{}, echoes: map[string]map[int64]time.Time{}}
}

// Options are a client's CLIENT TRACKING ON options that the table needs.
type Options struct {
	NoLoop   bool
	BCAST    bool
	Prefixes []string // BCAST; none means every key
}

// Enable starts (or changes) tracking for client id. BCAST prefixes add to the ones it has.
func (t *Table) Enable(id int64, sink Sink, o Options) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.clients[id]
	if e == nil {
		e = &entry{}
		t.clients[id] = e
		t.tracking.Store(int32(len(t.clients)))
	}
	e.sink, e.noLoop = sink, o.NoLoop
	if !o.BCAST {
		return
	}
	prefixes := o.Prefixes
	if len(prefixes) == 0 {
		prefixes = []string{""}
	}
	for _, p := range prefixes {
		if t.bcast[p] == nil {
			t.bcast[p] = map[int64]bool{}
		}
		if !t.bcast[p][id] {
			t.bcast[p][id] = true
			e.prefixes = append(e.prefixes, p)
		}
	}
}

// Prefixes are client id's BCAST prefixes.
func (t *Table) Prefixes(id int64) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.clients[id]; e != nil {
		return append([]string(nil), e.prefixes...)
	}
	return nil
}

// Disable stops tracking for client id (CLIENT TRACKING OFF, or the connection closed).
func (t *Table) Disable(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.clients[id]
	if e == nil {
		return
	}
	for _, p := range e.prefixes {
		delete(t.bcast[p], id)
		if len(t.bcast[p]) == 0 {
			delete(t.bcast, p)
		}
	}
	delete(t.clients, id)
	t.tracking.Store(int32(len(t.clients)))
	if len(t.clients) == 0 {
		clear(t.keys) // what the last clients read, nobody can still hold
	}
}

// Active reports whether any client tracks: a writer checks it before building what Writing
// takes, so the hot path allocates nothing while nobody tracks.
func (t *Table) Active() bool { return t.tracking.Load() != 0 }

// Clients is the number of tracking clients.
func (t *Table) Clients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.clients)
}

// Keys is the number of keys remembered for default-mode clients.
func (t *Table) Keys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys)
}

// Remember registers that client id may now cache keys. Call it before the read that returns
// them is sent to the shard: a change after that point must find the registration. A BCAST
// client's keys are not registered (it hears of every change under its prefixes), but that it
// read is.
func (t *Table) Remember(id int64, keys ...string) {
	var evicted outbox
	t.mu.Lock()
	e := t.clients[id]
	if e == nil {
		t.mu.Unlock()
		return
	}
	e.holds = true
	if len(e.prefixes) > 0 {
		keys = nil
	}
	for _, k := range keys {
		ids := t.keys[k]
		if !containsID(ids, id) {
			t.keys[k] = append(ids, id)
		}
	}
	for len(t.keys) > t.maxKeys {
		for k, ids := range t.keys { // map order: an arbitrary key goes, as Valkey's random eviction
			delete(t.keys, k)
			evicted = t.collect(evicted, k, ids)
			break
		}
	}
	t.mu.Unlock()
	deliver(evicted)
}

// pendingWrite is a write the agent sent and has not settled.
type pendingWrite struct {
	sent   time.Time
	by     int64 // the writing client, 0 for none
	echoed bool  // the shard reported the key meanwhile
}

// Writing records that client by (0: none) is sending a write of keys; Invalidate settles it.
func (t *Table) Writing(by int64, keys ...string) {
	if t.tracking.Load() == 0 {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.writing) >= maxEchoes {
		clear(t.writing) // a write whose settle never came: its key may be told twice
	}
	for _, k := range keys {
		if _, ok := t.writing[k]; !ok {
			t.writing[k] = &pendingWrite{sent: now, by: by}
		}
	}
}

// Invalidate tells the clients that may hold keys that this agent changed them. by is the
// client whose write changed them (0 when none): a NOLOOP client does not hear of its own
// writes. The shard's watcher reports the same writes again (Changed); each client hears once.
func (t *Table) Invalidate(by int64, keys ...string) { t.invalidate(by, true, keys) }

// Changed tells the clients that may hold keys that the shard reported them changed, by anyone.
func (t *Table) Changed(keys ...string) { t.invalidate(0, false, keys) }

func (t *Table) invalidate(by int64, own bool, keys []string) {
	if t.tracking.Load() == 0 {
		return // a client enabling now has read nothing yet
	}
	t.mu.Lock()
	var out outbox
	for _, k := range keys {
		ch := change{key: k, by: by, own: own, now: time.Now()}
		pw := t.writing[k]
		if pw != nil && ch.now.Sub(pw.sent) > echoWindow {
			delete(t.writing, k) // never settled (refused, say): it speaks for no report
			pw = nil
		}
		switch {
		case own && pw != nil:
			ch.sent, ch.echoed = pw.sent, pw.echoed
			delete(t.writing, k)
		case !own:
			if ch.echoes = t.echoes[k]; ch.echoes != nil {
				delete(t.echoes, k)
			}
			if pw != nil { // the report came before the write's reply
				pw.echoed, ch.by = true, pw.by
			}
		}
		out = t.tellRegistered(out, &ch)
		for p, ids := range t.bcast {
			if strings.HasPrefix(k, p) {
				for id := range ids {
					out, _ = t.tell(out, id, &ch, &p)
				}
			}
		}
	}
	t.mu.Unlock()
	deliver(out)
}

// change is one key's change as invalidate tells it.
type change struct {
	key    string
	by     int64 // the writing client: of an own write, or of the pending write a report is about
	own    bool  // the agent's own write (Invalidate), else the watcher's report (Changed)
	sent   time.Time
	echoed bool                // own: the shard reported the key while the write was pending
	echoes map[int64]time.Time // for a report: the clients it is the echo for
	now    time.Time
}

// tellRegistered tells the default-mode clients that read the key; one that is not told of an
// echo keeps its registration (what it holds was read after the write).
func (t *Table) tellRegistered(out outbox, ch *change) outbox {
	ids, ok := t.keys[ch.key]
	if !ok {
		return out
	}
	delete(t.keys, ch.key)
	var kept []int64
	for _, id := range ids {
		if e := t.clients[id]; e == nil || len(e.prefixes) > 0 {
			continue // gone, or read before a switch to BCAST: forgotten, as Valkey
		}
		var told bool
		if out, told = t.tell(out, id, ch, nil); !told && !ch.own {
			kept = append(kept, id)
		}
	}
	if len(kept) > 0 {
		t.keys[ch.key] = kept
	}
	return out
}

// tell adds key for client id unless it already knows (see Table.echoes): its own write
// (NOLOOP), the watcher's report of a write the agent told it of at once, or, at once, a write
// whose report reached it after the write was sent. told: it was added.
func (t *Table) tell(out outbox, id int64, ch *change, prefix *string) (_ outbox, told bool) {
	e := t.clients[id]
	if e == nil {
		return out, false
	}
	switch {
	case ch.own:
		if at, ok := e.told[ch.key]; ok && !ch.sent.IsZero() && !at.Before(ch.sent) {
			return out, false // its report came first
		}
		if !ch.echoed {
			t.markEcho(ch.key, id, ch.now)
		}
		if e.noLoop && id == ch.by {
			return out, false
		}
	case e.noLoop && id == ch.by:
		return out, false // the report of its own write, before the write's reply
	default:
		if at, ok := ch.echoes[id]; ok && ch.now.Sub(at) < echoWindow {
			return out, false
		}
	}
	if e.told == nil || len(e.told) >= maxEchoes {
		e.told = map[string]time.Time{}
	}
	e.told[ch.key] = ch.now
	return t.add(out, id, ch.key, prefix), true
}

func (t *Table) markEcho(key string, id int64, now time.Time) {
	if len(t.echoes) >= maxEchoes {
		clear(t.echoes) // reports never seen (a shard gone): the clients may be told twice
	}
	m := t.echoes[key]
	if m == nil {
		m = map[int64]time.Time{}
		t.echoes[key] = m
	}
	m[id] = now
}

// Flushing records that the agent is about to flush the shards: their reports of the flush
// may come before InvalidateAll, which then does not tell the clients they told again.
func (t *Table) Flushing() {
	t.mu.Lock()
	t.flushing = time.Now()
	t.mu.Unlock()
}

// InvalidateAll tells every tracking client to drop everything (the agent's own FLUSHALL,
// told to every client as Valkey tells it: once, counting the shards' reports since Flushing)
// and forgets what they read.
func (t *Table) InvalidateAll() { t.invalidateAll(false) }

// ChangedAll tells the tracking clients that may hold keys to drop everything: a shard was
// flushed, or the agent may have missed its changes. Each shard reports a fleet-wide flush,
// and again once it is followed again; a client that has read nothing since it was last told
// holds nothing, so it hears of one flush once (once, too, when the flush was this agent's).
func (t *Table) ChangedAll() { t.invalidateAll(true) }

func (t *Table) invalidateAll(holdersOnly bool) {
	now := time.Now()
	t.mu.Lock()
	clear(t.keys)
	sinks := make([]Sink, 0, len(t.clients))
	clear(t.echoes)
	clear(t.writing)
	flushing := t.flushing
	if !holdersOnly {
		t.flushing = time.Time{}
	}
	for _, e := range t.clients {
		clear(e.told)
		told := holdersOnly && e.holds ||
			!holdersOnly && (flushing.IsZero() || !e.toldAll.After(flushing)) // not told by a report of this flush
		if told {
			sinks = append(sinks, e.sink)
			e.toldAll = now
		}
		e.holds = false
	}
	t.mu.Unlock()
	for _, s := range sinks {
		s.Invalidate(nil)
	}
}

// collect adds key for the default-mode clients ids (a key read before a client switched to
// BCAST is forgotten, as Valkey does).
func (t *Table) collect(out outbox, key string, ids []int64) outbox {
	for _, id := range ids {
		if e := t.clients[id]; e != nil && len(e.prefixes) == 0 {
			out = t.add(out, id, key, nil)
		}
	}
	return out
}

// outbox is one call's invalidations by client, as Valkey words them: a message per key in the
// default mode, a message per prefix in BCAST.
type outbox map[Sink]*messages

type messages struct {
	list     [][]string
	byPrefix map[string]int // BCAST prefix -> its message
}

// add adds key for client id: its own message, or its BCAST prefix's.
func (t *Table) add(out outbox, id int64, key string, prefix *string) outbox {
	e := t.clients[id]
	if e == nil {
		return out
	}
	if out == nil {
		out = outbox{}
	}
	m := out[e.sink]
	if m == nil {
		m = &messages{}
		out[e.sink] = m
	}
	if prefix == nil {
		for _, msg := range m.list { // a key reaches a client once per call
			if len(msg) == 1 && msg[0] == key {
				return out
			}
		}
		m.list = append(m.list, []string{key})
		return out
	}
	i, ok := m.byPrefix[*prefix]
	if !ok {
		if m.byPrefix == nil {
			m.byPrefix = map[string]int{}
		}
		i = len(m.list)
		m.byPrefix[*prefix] = i
		m.list = append(m.list, nil)
	}
	if msg := m.list[i]; len(msg) == 0 || msg[len(msg)-1] != key {
		m.list[i] = append(msg, key)
	}
	return out
}

// deliver runs outside the table's lock: a sink may take its connection's locks.
func deliver(out outbox) {
	for s, m := range out {
		for _, keys := range m.list {
			s.Invalidate(keys)
		}
	}
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Overlap returns an existing or new prefix that overlaps p (one is a prefix of the other),
// which Valkey refuses for one client.
func Overlap(p string, others []string) (string, bool) {
	for _, o := range others {
		if strings.HasPrefix(p, o) || strings.HasPrefix(o, p) {
			return o, true
		}
	}
	return "", false
}
