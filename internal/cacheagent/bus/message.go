// Package bus carries signed invalidations between a fleet's agents over Valkey pub/sub.
// Messages are signed with HMAC-SHA256 over a canonical binary encoding of fleet, sender,
// per-sender sequence number, timestamp, operation and arguments; receivers reject unsigned,
// forged, expired and replayed messages, and treat a gap in a sender's sequence as a possible
// loss (the caller flushes what relies on the bus).
package bus

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Operations.
const (
	OpDelete = "del"    // Args are keys
	OpPrefix = "prefix" // Args are key prefixes
	OpFlush  = "flush"  // no Args: drop everything that relies on the bus
	OpFilled = "filled" // Args are keys just filled under a lease: wake the agents' waiters
)

// Message is one invalidation.
type Message struct {
	Fleet  string
	Sender string
	Seq    uint64
	TimeMs int64
	Op     string
	Args   []string
}

const (
	magic    = "CF1"
	macSize  = sha256.Size
	maxField = 1 << 16
	maxArgs  = 4096
)

// Rejection reasons, exported for metrics.
var (
	ErrMalformed = errors.New("malformed")
	ErrSignature = errors.New("bad signature")
	ErrFleet     = errors.New("other fleet")
	ErrExpired   = errors.New("expired")
	ErrReplayed  = errors.New("replayed")
	ErrDuplicate = errors.New("duplicate") // the same message through another shard: expected
)

func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// canonical is the signed part: every field length-prefixed, so no two messages share bytes.
func (m *Message) canonical() []byte {
	b := make([]byte, 0, 64)
	b = append(b, magic...)
	b = appendField(b, m.Fleet)
	b = appendField(b, m.Sender)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(m.TimeMs))
	b = appendField(b, m.Op)
	b = binary.AppendUvarint(b, uint64(len(m.Args)))
	for _, a := range m.Args {
		b = appendField(b, a)
	}
	return b
}

// Seal encodes and signs m with key.
func (m *Message) Seal(key []byte) []byte {
	b := m.canonical()
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b)
}

// Open verifies the signature of data with key and decodes it. It never panics on any input.
func Open(data, key []byte) (*Message, error) {
	if len(data) < len(magic)+macSize || string(data[:len(magic)]) != magic {
		return nil, ErrMalformed
	}
	body, sum := data[:len(data)-macSize], data[len(data)-macSize:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), sum) {
		return nil, ErrSignature
	}
	r := reader{b: body[len(magic):]}
	m := &Message{Fleet: r.field(), Sender: r.field(), Seq: r.u64(), TimeMs: int64(r.u64()), Op: r.field()}
	n := r.uvarint()
	if n > maxArgs {
		return nil, ErrMalformed
	}
	for i := uint64(0); i < n && r.err == nil; i++ {
		m.Args = append(m.Args, r.field())
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, ErrMalformed
	}
	switch m.Op {
	case OpDelete, OpPrefix, OpFlush, OpFilled:
	default:
		return nil, fmt.Errorf("%w: unknown operation %q", ErrMalformed, m.Op)
	}
	return m, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = ErrMalformed
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) field() string {
	n := r.uvarint()
	if r.err != nil || n > maxField || n > uint64(len(r.b)) {
		r.err = ErrMalformed
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = ErrMalformed
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}
