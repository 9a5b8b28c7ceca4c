// Package policy resolves the rules for a key from the ring document and does the TTL
// arithmetic between tiers: TTLs are given to writes without one, never extended, and L1
// copies never outlive their L2 value.
package policy

import (
	"math/rand/v2"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/contract"
)

// Rules are the effective settings for one key.
type Rules struct {
	Name          string // policy name, "" for the fleet defaults
	TTL           time.Duration
	JitterPercent int32
	MaxValueBytes int64
	L1            bool
	L1Tracking    bool // server-assisted invalidation; otherwise a TTL-bounded local copy
	L1TTL         time.Duration
	MinUsable     time.Duration
	// InvalidateOnWrite makes a write through an agent drop other agents' ttl-mode copies.
	InvalidateOnWrite bool
	// LeaseTTL > 0 enables stampede protection (CF.LGET/CF.LSET) for the key.
	LeaseTTL time.Duration
	// NegativeTTL > 0 lets CF.LMISS record the key as absent at the origin for that long.
	NegativeTTL time.Duration
	// Compression ("zstd" or "") applies to values of at least CompressionMinSize bytes.
	Compression        string
	CompressionMinSize int64
	// Origin, when set, fills missing keys (read-through); Prefix is stripped from the key
	// for its URL. Its fetches hold the key's lease (LeaseTTL covers the origin timeout).
	Origin *contract.Origin
	Prefix string
	// StaleWhileRevalidate and StaleIfError: how long past its TTL an origin-filled value is
	// answered while it is refreshed in the background / while the origin fails.
	StaleWhileRevalidate, StaleIfError time.Duration
}

// For returns the rules for key: the longest matching policy over the fleet defaults.
func For(doc *contract.Document, key []byte) Rules {
	t := doc.Tiers
	r := Rules{
		TTL:               ms(t.DefaultTTLMillis),
		MaxValueBytes:     t.MaxValueBytes,
		L1:                t.L1Enabled,
		L1Tracking:        true,
		L1TTL:             ms(t.L1MaxTTLMillis),
		MinUsable:         ms(t.MinUsableMillis),
		InvalidateOnWrite: true,
	}
	p := doc.PolicyFor(key)
	if p == nil {
		return r
	}
	r.Name = p.Name
	if p.TTLMillis > 0 {
		r.TTL = ms(p.TTLMillis)
	}
	r.JitterPercent = p.JitterPercent
	if p.MaxValueBytes > 0 {
		r.MaxValueBytes = p.MaxValueBytes
	}
	r.L1 = t.L1Enabled && p.L1Enabled
	r.L1Tracking = p.L1Mode != "ttl"
	r.InvalidateOnWrite = p.InvalidateOnWrite
	r.LeaseTTL = ms(p.LeaseTTLMillis)
	r.NegativeTTL = ms(p.NegativeTTLMillis)
	r.Compression, r.CompressionMinSize = p.Compression, p.CompressionMinSize
	if o := p.Origin; o != nil {
		r.Origin, r.Prefix = o, p.Prefix
		r.StaleWhileRevalidate, r.StaleIfError = ms(p.StaleWhileRevalidateMillis), ms(p.StaleIfErrorMillis)
		// The lease outlives the fetch, so a holder that is still fetching is never overtaken.
		r.LeaseTTL = max(r.LeaseTTL, r.OriginTimeout()+time.Second)
	}
	if p.L1TTLMillis > 0 {
		r.L1TTL = min(ms(p.L1TTLMillis), ms(t.L1MaxTTLMillis))
	}
	return r
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }

// WriteTTL is the expiry given to a write that has none: the policy TTL plus up to
// JitterPercent more, so keys written together do not expire together.
func (r Rules) WriteTTL(rnd func(n int64) int64) time.Duration {
	if r.JitterPercent <= 0 || r.TTL <= 0 {
		return r.TTL
	}
	span := int64(r.TTL) * int64(r.JitterPercent) / 100
	if span <= 0 {
		return r.TTL
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	return r.TTL + time.Duration(rnd(span+1))
}

// L1Lifetime is how long an L1 copy may live given the value's remaining L2 TTL (pttl in
// milliseconds, as PTTL answers: -1 no expiry, -2 missing). Zero means "do not keep":
// the value is about to expire, or gone.
func (r Rules) L1Lifetime(pttl int64) time.Duration {
	if !r.L1 || pttl == -2 {
		return 0
	}
	life := r.L1TTL
	if pttl >= 0 {
		remaining := time.Duration(pttl) * time.Millisecond
		if remaining < r.MinUsable {
			return 0
		}
		life = min(life, remaining)
	}
	return life
}

// OriginTimeout bounds one origin request (0 without an origin).
func (r Rules) OriginTimeout() time.Duration {
	if r.Origin == nil {
		return 0
	}
	return ms(r.Origin.TimeoutMillis)
}

// StaleWindow is how long an origin-filled value is kept past its TTL: the longer of the two
// stale windows.
func (r Rules) StaleWindow() time.Duration { return max(r.StaleWhileRevalidate, r.StaleIfError) }

// Encoded reports whether values may be stored other than as written (compressed, or stamped
// with their freshness by a read-through): commands on part of the stored bytes cannot be
// passed through.
func (r Rules) Encoded() bool { return r.Compression != "" || r.Origin != nil }

// Stored is what goes to L2 for a value written under r: compressed if the policy says so.
func (r Rules) Stored(value string) string {
	return codec.Encode(r.Compression, r.CompressionMinSize, value)
}
