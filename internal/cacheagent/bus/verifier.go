package bus

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// window is how many of a sender's most recent sequence numbers the verifier remembers. Every
// message travels through every shard, so a copy can trail the newest message by as much as
// one shard lags another; within the window a copy is a duplicate, beyond it a replay.
const window = 4096

// Verifier accepts each sender's messages once, within a clock-skew bound.
type Verifier struct {
	Fleet string
	Skew  time.Duration
	Now   func() time.Time

	keys    atomic.Pointer[[][]byte] // accepted signing keys; more than one during a rotation
	mu      sync.Mutex
	senders map[string]*senderState
	pruned  time.Time
}

// senderState remembers which of a sender's sequence numbers in [base, last] were seen.
type senderState struct {
	base, last uint64
	seen       [window / 64]uint64
	lastAt     time.Time
}

func (s *senderState) bit(seq uint64) (word int, mask uint64) {
	return int(seq/64) % len(s.seen), 1 << (seq % 64)
}

func (s *senderState) isSeen(seq uint64) bool {
	w, m := s.bit(seq)
	return s.seen[w]&m != 0
}

func (s *senderState) mark(seq uint64) {
	w, m := s.bit(seq)
	s.seen[w] |= m
}

// advance moves last to seq, forgetting the bits that fall out of the window.
func (s *senderState) advance(seq uint64) {
	if seq-s.last >= window {
		s.seen = [window / 64]uint64{}
	} else {
		for q := s.last + 1; q <= seq; q++ {
			w, m := s.bit(q)
			s.seen[w] &^= m
		}
	}
	s.last = seq
	if seq >= window && seq-window+1 > s.base {
		s.base = seq - window + 1
	}
}

// NewVerifier accepts messages of fleet signed with key, at most skew away from now.
func NewVerifier(fleet string, key []byte, skew time.Duration) *Verifier {
	v := &Verifier{Fleet: fleet, Skew: skew, Now: time.Now, senders: map[string]*senderState{}}
	v.SetKeys(key)
	return v
}

// SetKeys replaces the accepted keys (the current one first).
func (v *Verifier) SetKeys(keys ...[]byte) { v.keys.Store(&keys) }

// open verifies data with each accepted key in turn.
func (v *Verifier) open(data []byte) (m *Message, err error) {
	for _, k := range *v.keys.Load() {
		if m, err = Open(data, k); !errors.Is(err, ErrSignature) {
			return m, err
		}
	}
	return nil, err
}

// Check opens data and decides whether to apply it. gap is true when the message skips
// sequence numbers not yet seen (some may be lost: the caller must not trust what relied on
// them). A message already seen is ErrDuplicate; one older than what the verifier remembers of
// its sender is ErrReplayed; one not yet seen inside the window arrived late and is accepted.
func (v *Verifier) Check(data []byte) (m *Message, gap bool, err error) {
	m, err = v.open(data)
	if err != nil {
		return nil, false, err
	}
	if m.Fleet != v.Fleet {
		return nil, false, ErrFleet
	}
	now := v.Now()
	if d := now.Sub(time.UnixMilli(m.TimeMs)); d > v.Skew || d < -v.Skew {
		return nil, false, ErrExpired
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.forgetIdle(now)
	s := v.senders[m.Sender]
	switch {
	case s == nil:
		s = &senderState{base: m.Seq, last: m.Seq}
		v.senders[m.Sender] = s
	case m.Seq > s.last:
		gap = m.Seq > s.last+1
		s.advance(m.Seq)
	case m.Seq < s.base:
		return nil, false, ErrReplayed
	case s.isSeen(m.Seq):
		return nil, false, ErrDuplicate
	}
	s.mark(m.Seq)
	s.lastAt = now
	return m, gap, nil
}

// forgetIdle drops senders silent for twice the skew (every message of theirs would be expired
// by now), once per skew: restarted agents are new senders, so the map would otherwise grow.
func (v *Verifier) forgetIdle(now time.Time) {
	if now.Sub(v.pruned) < v.Skew {
		return
	}
	v.pruned = now
	for id, s := range v.senders {
		if now.Sub(s.lastAt) > 2*v.Skew {
			delete(v.senders, id)
		}
	}
}

// Senders is how many senders the verifier remembers.
func (v *Verifier) Senders() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.senders)
}
