package bus

import (
	"sync"
	"time"
)

// Verifier accepts each sender's messages once and in order, within a clock-skew bound.
type Verifier struct {
	Fleet string
	Key   []byte
	Skew  time.Duration
	Now   func() time.Time

	mu   sync.Mutex
	last map[string]uint64
}

// NewVerifier accepts messages of fleet signed with key, at most skew away from now.
func NewVerifier(fleet string, key []byte, skew time.Duration) *Verifier {
	return &Verifier{Fleet: fleet, Key: key, Skew: skew, Now: time.Now, last: map[string]uint64{}}
}

// Check opens data and decides whether to apply it. gap is true when messages from the sender
// were skipped (some may be lost: the caller must not trust what relied on them).
func (v *Verifier) Check(data []byte) (m *Message, gap bool, err error) {
	m, err = Open(data, v.Key)
	if err != nil {
		return nil, false, err
	}
	if m.Fleet != v.Fleet {
		return nil, false, ErrFleet
	}
	if d := v.Now().Sub(time.UnixMilli(m.TimeMs)); d > v.Skew || d < -v.Skew {
		return nil, false, ErrExpired
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	last, seen := v.last[m.Sender]
	switch {
	case seen && m.Seq == last:
		return nil, false, ErrDuplicate
	case seen && m.Seq < last:
		return nil, false, ErrReplayed
	}
	v.last[m.Sender] = m.Seq
	return m, seen && m.Seq > last+1, nil
}
