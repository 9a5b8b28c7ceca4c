// Package contract is what the operator and the agents agree on: the ring document the
// controller publishes and every agent follows, and the names, labels and annotations by which
// each finds what the other wrote. Both import it; nothing else is shared. Hashing over the
// document lives with the agent (cacheagent/ring), which alone routes keys.
package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Hash algorithms.
const (
	AlgorithmRendezvous = "rendezvous"
	AlgorithmKetama     = "ketama"
)

// SchemaVersion is bumped on incompatible changes to Document.
const SchemaVersion = 1

// DocumentKey is the ConfigMap data key holding the JSON document.
const DocumentKey = "ring.json"

// Document is the versioned description of a fleet that agents route by.
type Document struct {
	SchemaVersion int    `json:"schemaVersion"`
	Fleet         string `json:"fleet"`
	Namespace     string `json:"namespace"`
	// Epoch grows by one whenever the content (everything but Epoch and Checksum) changes.
	Epoch int64 `json:"epoch"`
	// Checksum is the SHA-256 of the content, so agents and humans can compare documents.
	Checksum     string       `json:"checksum"`
	Algorithm    string       `json:"algorithm"`
	VirtualNodes int          `json:"virtualNodes,omitempty"`
	Shards       []Shard      `json:"shards"`
	Tiers        Tiers        `json:"tiers"`
	Invalidation Invalidation `json:"invalidation"`
	Auth         Auth         `json:"auth"`
	// Policies are sorted longest prefix first, then by prefix, so the first match wins.
	Policies []Policy `json:"policies,omitempty"`
	// Warming is the layout before the last change of ring members, while its warm-up window
	// lasts: a miss on a key's new owner is looked up on its previous owner.
	Warming *Warming `json:"warming,omitempty"`
}

// Warming is a previous ring layout: its members and hashing, not their addresses (a previous
// owner is consulted only while it is still a member, through the current layout's address).
type Warming struct {
	// Epoch is the last epoch that routed by this layout.
	Epoch        int64    `json:"epoch"`
	Algorithm    string   `json:"algorithm"`
	VirtualNodes int      `json:"virtualNodes,omitempty"`
	Members      []string `json:"members"`
	// UntilMillis ends the window (Unix milliseconds, the controller's clock).
	UntilMillis int64 `json:"untilMillis"`
}

// Members are the ring members' names in ring order.
func (d *Document) Members() []string {
	out := make([]string, len(d.Shards))
	for i, sh := range d.Shards {
		out[i] = sh.Name
	}
	return out
}

// SameLayout reports whether o hashes keys to the same members as d: same algorithm, virtual
// nodes and member names in the same order. Addresses (a failover) do not move keys.
func (d *Document) SameLayout(o *Document) bool {
	return d.Algorithm == o.Algorithm && d.VirtualNodes == o.VirtualNodes && slices.Equal(d.Members(), o.Members())
}

// Shard is one ring member.
type Shard struct {
	// Name is the stable ring member ("shard-0"): placement never depends on addresses.
	Name     string   `json:"name"`
	Primary  string   `json:"primary"`
	Replicas []string `json:"replicas,omitempty"`
}

// Tiers are the fleet-wide cache settings.
type Tiers struct {
	L1Enabled        bool  `json:"l1Enabled"`
	L1MaxMemoryBytes int64 `json:"l1MaxMemoryBytes"`
	L1MaxTTLMillis   int64 `json:"l1MaxTTLMillis"`
	DefaultTTLMillis int64 `json:"defaultTTLMillis"`
	MinUsableMillis  int64 `json:"minUsableTTLMillis"`
	MaxValueBytes    int64 `json:"maxValueBytes"`
	// AllowFlush lets clients run FLUSHALL/FLUSHDB through the agents.
	AllowFlush bool `json:"allowFlush,omitempty"`
}

// Invalidation names the bus.
type Invalidation struct {
	Channel string    `json:"channel"`
	Secret  SecretRef `json:"secret"`
}

// Auth says whether shards need a password and where it is.
type Auth struct {
	Enabled bool       `json:"enabled"`
	Secret  *SecretRef `json:"secret,omitempty"`
}

// SecretRef names a key of a Secret in the fleet's namespace.
type SecretRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// Policy is a CachePolicy compiled for the agents; zero values mean "the fleet's setting".
type Policy struct {
	Name               string `json:"name"`
	Prefix             string `json:"prefix"`
	TTLMillis          int64  `json:"ttlMillis,omitempty"`
	JitterPercent      int32  `json:"jitterPercent,omitempty"`
	L1Enabled          bool   `json:"l1Enabled"`
	L1TTLMillis        int64  `json:"l1TTLMillis,omitempty"`
	L1Mode             string `json:"l1Mode"`
	MaxValueBytes      int64  `json:"maxValueBytes,omitempty"`
	NegativeTTLMillis  int64  `json:"negativeTTLMillis,omitempty"`
	InvalidateOnWrite  bool   `json:"invalidateOnWrite"`
	LeaseTTLMillis     int64  `json:"leaseTTLMillis,omitempty"`
	Compression        string `json:"compression,omitempty"`
	CompressionMinSize int64  `json:"compressionMinSize,omitempty"`
	// Origin, when set, makes reads of missing keys fill themselves from it (read-through).
	Origin *Origin `json:"origin,omitempty"`
	// StaleWhileRevalidateMillis and StaleIfErrorMillis: how long past its TTL an origin-filled
	// value is still answered, while it is refreshed / while the origin fails.
	StaleWhileRevalidateMillis int64 `json:"staleWhileRevalidateMillis,omitempty"`
	StaleIfErrorMillis         int64 `json:"staleIfErrorMillis,omitempty"`
}

// Origin is the HTTP service a policy's keys are read through from.
type Origin struct {
	// URL holds "{key}", replaced by the escaped key without the policy prefix.
	URL           string `json:"url"`
	TimeoutMillis int64  `json:"timeoutMillis"`
	// HeadersSecret names a Secret whose every key is a request header ("" for none).
	HeadersSecret string `json:"headersSecret,omitempty"`
	// AllowedStatus are the statuses whose body is stored as the value.
	AllowedStatus []int32 `json:"allowedStatus"`
}

// OriginHeaderSecrets are the Secrets the policies' origins take headers from, sorted, once each.
func (d *Document) OriginHeaderSecrets() []string {
	var out []string
	for _, p := range d.Policies {
		if p.Origin != nil && p.Origin.HeadersSecret != "" && !slices.Contains(out, p.Origin.HeadersSecret) {
			out = append(out, p.Origin.HeadersSecret)
		}
	}
	slices.Sort(out)
	return out
}

// SortPolicies orders policies longest prefix first, so PolicyFor can stop at the first match.
func SortPolicies(ps []Policy) {
	slices.SortFunc(ps, func(a, b Policy) int {
		if len(a.Prefix) != len(b.Prefix) {
			return len(b.Prefix) - len(a.Prefix)
		}
		return strings.Compare(a.Prefix, b.Prefix)
	})
}

// PolicyFor returns the policy with the longest prefix of key, or nil for the fleet defaults.
func (d *Document) PolicyFor(key []byte) *Policy {
	for i := range d.Policies {
		p := &d.Policies[i]
		if len(key) >= len(p.Prefix) && string(key[:len(p.Prefix)]) == p.Prefix {
			return p
		}
	}
	return nil
}

// ContentChecksum is the SHA-256 of the document without Epoch and Checksum.
func (d *Document) ContentChecksum() string {
	c := *d
	c.Epoch, c.Checksum = 0, ""
	b, err := json.Marshal(&c)
	if err != nil {
		panic(fmt.Sprintf("ring document cannot be encoded: %v", err)) // plain data: cannot happen
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Seal sets Checksum and the Epoch that follows previous: unchanged content keeps the
// previous epoch, changed content gets previous+1 (starting at 1).
func (d *Document) Seal(previous *Document) { d.SealAbove(previous, 0) }

// SealAbove is Seal for a publisher that knows epochs it published before (floor) even when
// the previous document is lost or unreadable: the epoch only ever grows, since agents refuse
// an older epoch (or would accept a rollback).
func (d *Document) SealAbove(previous *Document, floor int64) {
	d.Checksum = d.ContentChecksum()
	if previous != nil && previous.Checksum == d.Checksum && previous.Epoch >= floor {
		d.Epoch = previous.Epoch
		return
	}
	last := floor
	if previous != nil {
		last = max(last, previous.Epoch)
	}
	d.Epoch = last + 1
}

// PeekEpoch reads the epoch of a document that may not decode (another schema, a bad
// checksum); 0 when there is none.
func PeekEpoch(data []byte) int64 {
	var v struct {
		Epoch int64 `json:"epoch"`
	}
	if json.Unmarshal(data, &v) != nil {
		return 0
	}
	return v.Epoch
}

// Encode renders the document as indented JSON (it is read by people too).
func (d *Document) Encode() ([]byte, error) {
	return json.MarshalIndent(d, "", "  ")
}

// Decode parses and checks a document.
func Decode(data []byte) (*Document, error) {
	var d Document
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("decoding ring document: %w", err)
	}
	if d.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("ring document schema %d, this build understands %d", d.SchemaVersion, SchemaVersion)
	}
	if len(d.Shards) == 0 {
		return nil, fmt.Errorf("ring document has no shards")
	}
	if got := d.ContentChecksum(); got != d.Checksum {
		return nil, fmt.Errorf("ring document checksum %q does not match its content (%q)", d.Checksum, got)
	}
	return &d, nil
}
