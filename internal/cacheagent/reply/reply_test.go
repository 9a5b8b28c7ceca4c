package reply

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/resp"
)

func TestErrorWithCode(t *testing.T) {
	for in, want := range map[string]string{
		"WRONGTYPE Operation against a key":    "WRONGTYPE Operation against a key",
		"BUSY Valkey is busy running a script": "BUSY Valkey is busy running a script",
		"wrong number of arguments":            "ERR wrong number of arguments",
		"":                                     "ERR ",
	} {
		if got := ErrorWithCode(in); got != want {
			t.Errorf("ErrorWithCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadableUndoesWhatTheAgentStored(t *testing.T) {
	big := strings.Repeat("compressible ", 200)
	for _, tc := range []struct {
		name, stored, want string
		present            bool
	}{
		{"plain", "v", "v", true},
		{"compressed", codec.Encode("zstd", 16, big), big, true},
		{"stamped by a read-through", codec.Stamp(time.Now().Add(time.Minute), "fresh"), "fresh", true},
		{"recorded as absent", codec.Absent, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, present := Readable(tc.stored); got != tc.want || present != tc.present {
				t.Errorf("Readable = %.20q, %v; want %.20q, %v", got, present, tc.want, tc.present)
			}
		})
	}
}

// node encodes one node of valkey-go's CacheMarshal format: a type byte, then an 8-byte
// length or value, then a string's bytes.
func node(typ byte, n int64, s string) []byte {
	b := append([]byte{typ}, binary.BigEndian.AppendUint64(nil, uint64(n))...)
	return append(b, s...)
}

func TestRelayedRepliesKeepTheirTypesAndOrder(t *testing.T) {
	// A RESP3 map {"b": 1, "a": +OK}: order kept, simple string kept simple.
	raw := node('%', 4, "") // a map counts its keys and values
	raw = append(raw, node('$', 1, "b")...)
	raw = append(raw, node(':', 1, "")...)
	raw = append(raw, node('$', 1, "a")...)
	raw = append(raw, node('+', 2, "OK")...)
	n, rest, err := parseRaw(raw, 0)
	if err != nil || len(rest) != 0 {
		t.Fatalf("parseRaw: %v, %d bytes left", err, len(rest))
	}
	for proto, want := range map[int]string{
		2: "*4\r\n$1\r\nb\r\n:1\r\n$1\r\na\r\n+OK\r\n",
		3: "%2\r\n$1\r\nb\r\n:1\r\n$1\r\na\r\n+OK\r\n",
	} {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		w := resp.NewWriter(bw)
		w.Proto = proto
		writeRaw(w, &n)
		_ = w.Flush()
		if buf.String() != want {
			t.Errorf("RESP%d: %q, want %q", proto, buf.String(), want)
		}
	}
	if _, _, err := parseRaw(node('*', 5, ""), 0); err == nil {
		t.Error("an aggregate longer than its bytes parsed")
	}
}

func TestRESP2ShapesAsValkeyWritesThem(t *testing.T) {
	pair := func(m, score string) []byte {
		return append(append(node('*', 2, ""), node('$', int64(len(m)), m)...), node(',', int64(len(score)), score)...)
	}
	arr := func(children ...[]byte) []byte {
		b := node('*', int64(len(children)), "")
		for _, c := range children {
			b = append(b, c...)
		}
		return b
	}
	null := node('_', 0, "")
	for _, tc := range []struct {
		name  string
		raw   []byte
		shape Shape
		want  string
	}{
		{"pairs flat", arr(pair("a", "1"), pair("b", "2")), FlatPairs, "*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"},
		{"pairs kept as is", arr(pair("a", "1")), AsIs, "*1\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"},
		{"nested pairs flat", arr(node('$', 1, "k"), arr(pair("a", "1"))), FlatPairs, "*2\r\n$1\r\nk\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n"},
		{"null elements as null arrays", arr(null, null), NullArrays, "*2\r\n*-1\r\n*-1\r\n"},
		{"a null last element as a null array", arr(node(':', 0, ""), null, null), NullLastArray, "*3\r\n:0\r\n$-1\r\n*-1\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _, err := parseRaw(tc.raw, 0)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			w := resp.NewWriter(bw)
			reshape(&n, tc.shape)
			writeRaw(w, &n)
			_ = w.Flush()
			if buf.String() != tc.want {
				t.Errorf("%q, want %q", buf.String(), tc.want)
			}
		})
	}
}
