package codec

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func TestEncodeDecode(t *testing.T) {
	json := strings.Repeat(`{"sku":"A-1","name":"blue mug","price":12.5,"tags":["kitchen","mugs"]},`, 40)
	random := make([]byte, 4096)
	rand.Read(random)
	for _, tc := range []struct {
		name, algorithm, value string
		minSize                int64
		compressed             bool
	}{
		{"compressible value", Zstd, json, 1024, true},
		{"below minSize", Zstd, json[:500], 1024, false},
		{"counter", Zstd, "12345", 1, false},
		{"incompressible", Zstd, string(random), 1024, false},
		{"algorithm none", "none", json, 1024, false},
		{"empty", Zstd, "", 0, false},
		// Raw values that begin with the marker are always framed, so reading is unambiguous.
		{"marker-prefixed, none", "none", Marker + "abc", 1024, true},
		{"marker-prefixed, zstd", Zstd, Marker + "abc", 1024, true},
		{"the absent marker as data", "none", Absent, 1024, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored := Encode(tc.algorithm, tc.minSize, tc.value)
			if got := strings.HasPrefix(stored, Marker); got != tc.compressed {
				t.Fatalf("compressed = %v, want %v", got, tc.compressed)
			}
			if !tc.compressed && stored != tc.value {
				t.Fatal("a value that is not compressed must be stored as written")
			}
			if tc.compressed && tc.value == json && len(stored)*4 > len(json) {
				t.Errorf("stored %d bytes of %d: zstd should shrink repetitive JSON at least 4x", len(stored), len(json))
			}
			if got := Decode(stored, 1<<20); got != tc.value {
				t.Errorf("Decode(Encode(v)) differs from v (%d vs %d bytes)", len(got), len(tc.value))
			}
		})
	}
}

func TestDecodeRefusesCorruptAndOversizedValues(t *testing.T) {
	big := strings.Repeat("a", 64<<10)
	stored := Encode(Zstd, 1, big)
	for name, tc := range map[string]struct {
		stored string
		limit  int64
	}{
		"corrupt frame":         {Marker + "not a zstd frame", 1 << 20},
		"truncated frame":       {stored[:len(stored)/2], 1 << 20},
		"larger than the limit": {stored, 1 << 10},
	} {
		before := Corrupt.Load()
		if got := Decode(tc.stored, tc.limit); got != tc.stored {
			t.Errorf("%s: returned %d bytes, want the stored value unchanged", name, len(got))
		}
		if Corrupt.Load() != before+1 {
			t.Errorf("%s: not counted as corrupt", name)
		}
	}
}

func BenchmarkEncode4KiBJSON(b *testing.B) {
	v := strings.Repeat(`{"sku":"A-1","name":"blue mug","price":12.5},`, 92)
	b.SetBytes(int64(len(v)))
	var out string
	for b.Loop() {
		out = Encode(Zstd, 1024, v)
	}
	b.ReportMetric(float64(len(v))/float64(len(out)), "ratio")
}

func BenchmarkDecode4KiBJSON(b *testing.B) {
	v := strings.Repeat(`{"sku":"A-1","name":"blue mug","price":12.5},`, 92)
	stored := Encode(Zstd, 1024, v)
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		Decode(stored, 1<<20)
	}
}

// BenchmarkEncodeConcurrentWriters: compressing writes from many client connections at once
// (the agent's normal load). Compare ns/op with BenchmarkEncode4KiBJSON: with one shared
// encoder they queue behind each other.
func BenchmarkEncodeConcurrentWriters(b *testing.B) {
	v := strings.Repeat(`{"sku":"A-1","name":"blue mug","price":12.5},`, 92)
	b.SetBytes(int64(len(v)))
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			Encode(Zstd, 1024, v)
		}
	})
}

func TestStampRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_790_000_000_123)
	for _, stored := range []string{"", "plain", Marker + "frame", "\xffCFo0000000000000001x"} {
		until, got, ok := Unstamp(Stamp(at, stored))
		if !ok || !until.Equal(at) || got != stored {
			t.Errorf("Unstamp(Stamp(%q)) = %v %q %v", stored, until, got, ok)
		}
	}
	// Values written by clients are not stamped, whatever they start with.
	for _, v := range []string{"", "x", FreshMarker, FreshMarker + "12ab", FreshMarker + "notdigits-16char"} {
		if _, got, ok := Unstamp(v); ok || got != v {
			t.Errorf("Unstamp(%q) = %q, %v; want the value as is, unstamped", v, got, ok)
		}
	}
}
