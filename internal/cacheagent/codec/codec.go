// Package codec compresses values on their way to L2 and restores them on the way back, so
// a policy's `compression: zstd` saves shard memory and network without clients knowing.
//
// A compressed value is the marker followed by one zstd frame. The marker (not zstd's own
// magic number) keeps values that applications compressed themselves untouched. A value that
// would not shrink is stored as written, so small values, counters (INCR) and values written
// before compression was turned on all keep working; the only values stored compressed
// although they grow are those that begin with the agent's reserved prefix themselves, so
// reading them back is unambiguous.
package codec

import (
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// reserved starts every value with a meaning to the agent: 0xFF never starts UTF-8 text.
const reserved = "\xffCF"

// ReservedByte is reserved's first byte: every value the agent encodes starts with it.
const ReservedByte = 0xff

// Marker starts every compressed value.
const Marker = reserved + "z"

// Absent is stored for a key recorded as missing at the origin (negative caching); reads
// answer it as nil.
const Absent = reserved + "a"

// Zstd names the algorithm in policies.
const Zstd = "zstd"

var (
	// One encoder state per core: EncodeAll calls beyond the concurrency wait for a free one,
	// and every client connection compresses its own writes.
	encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	// DecodeAll guards itself with WithDecoderMaxMemory; Decode adds the caller's limit.
	decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(512<<20))

	// Corrupt counts marked values that did not decode; they are returned as stored.
	Corrupt atomic.Int64
)

// Encode returns what to store for value under algorithm: compressed when algorithm is zstd,
// value is at least minSize bytes and compression makes it smaller; value itself otherwise.
func Encode(algorithm string, minSize int64, value string) string {
	marked := strings.HasPrefix(value, reserved)
	if algorithm != Zstd && !marked {
		return value
	}
	if !marked && int64(len(value)) < max(minSize, 1) {
		return value
	}
	out := make([]byte, len(Marker), len(Marker)+len(value)/2+64)
	copy(out, Marker)
	out = encoder.EncodeAll([]byte(value), out)
	if !marked && len(out) >= len(value) {
		return value
	}
	return string(out)
}

// Decode restores a value read from L2. limit bounds the decompressed size (a value larger
// than any policy allows was not written by an agent); a value that fails to decode is
// returned as stored and counted.
func Decode(stored string, limit int64) string {
	if !strings.HasPrefix(stored, Marker) {
		return stored
	}
	frame := []byte(stored[len(Marker):])
	if h := (zstd.Header{}); h.Decode(frame) != nil || (h.HasFCS && h.FrameContentSize > uint64(limit)) {
		Corrupt.Add(1)
		return stored
	}
	out, err := decoder.DecodeAll(frame, make([]byte, 0, min(int64(len(frame))*4, limit)))
	if err != nil || int64(len(out)) > limit {
		Corrupt.Add(1)
		return stored
	}
	return string(out)
}
