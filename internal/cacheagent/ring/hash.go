// Package ring is the agent's consistent hashing over the shards of a ring document
// (rendezvous or ketama, hash tags honoured): which shard owns a key.
package ring

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// Hash hashes a key. Injectable so tests can be deterministic about placement.
type Hash func(key []byte) uint64

// Ring maps keys to shard indexes. It is immutable and safe for concurrent use.
type Ring interface {
	// Owner returns the index (into the member list the ring was built from) of key's shard.
	Owner(key []byte) int
}

// New builds the ring the document describes over its shards, in document order.
func New(algorithm string, members []string, virtualNodes int) (Ring, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("ring has no members")
	}
	switch algorithm {
	case contract.AlgorithmRendezvous, "":
		return NewRendezvous(members, xxhash.Sum64), nil
	case contract.AlgorithmKetama:
		return NewKetama(members, virtualNodes, xxhash.Sum64), nil
	default:
		return nil, fmt.Errorf("unknown hash algorithm %q", algorithm)
	}
}

// HashTag returns the part of key that is hashed: the first non-empty {...} section when there
// is one (so "{user:42}:cart" and "{user:42}:profile" share a shard, as in Valkey Cluster),
// else the whole key.
func HashTag(key []byte) []byte {
	for i, c := range key {
		if c != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j == i+1 {
					return key // "{}" is not a tag
				}
				return key[i+1 : j]
			}
		}
		return key
	}
	return key
}

// Rendezvous is highest-random-weight hashing: each key goes to the member with the highest
// score mix(hash(key), seed(member)). Adding a member moves only the keys it now wins, and load
// is as even as the hash. One hash of the key plus one cheap mix per member.
type Rendezvous struct {
	seeds []uint64
	hash  Hash
}

// NewRendezvous builds a rendezvous ring over members (stable names, never addresses).
func NewRendezvous(members []string, hash Hash) *Rendezvous {
	r := &Rendezvous{seeds: make([]uint64, len(members)), hash: hash}
	for i, m := range members {
		r.seeds[i] = hash([]byte(m))
	}
	return r
}

// Owner implements Ring.
func (r *Rendezvous) Owner(key []byte) int {
	h := r.hash(HashTag(key))
	best, bestScore := 0, uint64(0)
	for i, s := range r.seeds {
		if score := mix64(h ^ s); score > bestScore || i == 0 {
			best, bestScore = i, score
		}
	}
	return best
}

// mix64 is the splitmix64 finaliser: a bijection that spreads every input bit over the output,
// so combining a key hash with a member seed gives independent-looking scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Ketama places virtualNodes points per member on a 64-bit circle; a key belongs to the first
// point clockwise from its hash. Kept for compatibility with ketama-based proxies' behaviour.
type Ketama struct {
	points []uint64
	owners []int
	hash   Hash
}

// NewKetama builds a ketama ring with virtualNodes points per member.
func NewKetama(members []string, virtualNodes int, hash Hash) *Ketama {
	if virtualNodes < 1 {
		virtualNodes = 160
	}
	type point struct {
		at    uint64
		owner int
	}
	pts := make([]point, 0, len(members)*virtualNodes)
	for i, m := range members {
		for v := 0; v < virtualNodes; v++ {
			pts = append(pts, point{hash([]byte(m + "-" + strconv.Itoa(v))), i})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		if a.at != b.at {
			if a.at < b.at {
				return -1
			}
			return 1
		}
		return a.owner - b.owner // deterministic on (unlikely) collisions
	})
	k := &Ketama{points: make([]uint64, len(pts)), owners: make([]int, len(pts)), hash: hash}
	for i, p := range pts {
		k.points[i], k.owners[i] = p.at, p.owner
	}
	return k
}

// Owner implements Ring.
func (k *Ketama) Owner(key []byte) int {
	h := k.hash(HashTag(key))
	i, _ := slices.BinarySearch(k.points, h)
	if i == len(k.points) {
		i = 0
	}
	return k.owners[i]
}

// For builds the hash ring over a document's shards, by their names.
func For(d *contract.Document) (Ring, error) {
	return New(d.Algorithm, d.Members(), d.VirtualNodes)
}

// ForWarming builds the ring of a document's previous layout, by its members' names.
func ForWarming(w *contract.Warming) (Ring, error) {
	return New(w.Algorithm, w.Members, w.VirtualNodes)
}
