package reply

import (
	"encoding/binary"
	"errors"
	"strconv"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/resp"
)

// A shard's reply as the shard sent it: valkey-go's typed accessors lose what a faithful
// Relay needs (map order, simple versus bulk strings, doubles, an error's own text), but its
// CacheMarshal encoding keeps all of it: 7 bytes of TTL, then per node a type byte, an 8-byte
// length (or integer value) and, for strings, the bytes; aggregates are followed by their
// elements (a map's keys and values alternate). Tested against real servers by the parity test.

type rawNode struct {
	typ      byte
	n        int64 // integer value, or element count of an aggregate
	str      string
	children []rawNode
}

var errRawFormat = errors.New("unexpected reply encoding")

func rawReply(m *valkey.ValkeyMessage) (rawNode, error) {
	b := m.CacheMarshal(nil)
	if len(b) < 7 {
		return rawNode{}, errRawFormat
	}
	node, rest, err := parseRaw(b[7:], 0)
	if err == nil && len(rest) != 0 {
		err = errRawFormat
	}
	return node, err
}

// maxDepth bounds a relayed reply's nesting: a script returning a table that holds itself
// gets Valkey's deepest reply, about 8,000 arrays deep before "reached lua stack limit".
const maxDepth = 16 << 10

func parseRaw(b []byte, depth int) (rawNode, []byte, error) {
	if len(b) < 9 || depth > maxDepth {
		return rawNode{}, nil, errRawFormat
	}
	n := rawNode{typ: b[0], n: int64(binary.BigEndian.Uint64(b[1:9]))}
	b = b[9:]
	switch n.typ {
	case ':', '_', '#':
	case '*', '%', '~', '>', '|':
		if n.n < 0 || n.n > int64(len(b)) {
			return rawNode{}, nil, errRawFormat
		}
		n.children = make([]rawNode, n.n)
		for i := range n.children {
			var err error
			if n.children[i], b, err = parseRaw(b, depth+1); err != nil {
				return rawNode{}, nil, err
			}
		}
	default:
		if n.n < 0 || n.n > int64(len(b)) {
			return rawNode{}, nil, errRawFormat
		}
		n.str, b = string(b[:n.n]), b[n.n:]
	}
	return n, b, nil
}

// writeRaw writes a shard's reply in the client's protocol (RESP3 types become their RESP2
// forms for RESP2 clients, as Valkey does).
func writeRaw(w *resp.Writer, n *rawNode) {
	v3 := w.Proto >= 3
	switch n.typ {
	case '+':
		w.Simple(n.str)
	case '-', '!':
		w.Error(n.str)
	case ':':
		w.Int(n.n)
	case '_':
		w.Null()
	case nullArray:
		w.NullArray()
	case '#':
		switch {
		case v3 && n.n == 1:
			w.Raw("#t\r\n")
		case v3:
			w.Raw("#f\r\n")
		default:
			w.Int(n.n)
		}
	case ',':
		if v3 {
			w.Raw("," + n.str + "\r\n")
		} else {
			w.BulkString(n.str)
		}
	case '(':
		if v3 {
			w.Raw("(" + n.str + "\r\n")
		} else {
			w.BulkString(n.str)
		}
	case '=':
		w.Verbatim(trimVerbatim(n.str))
	case '%':
		if v3 {
			w.Raw("%" + strconv.Itoa(len(n.children)/2) + "\r\n")
		} else {
			w.Array(len(n.children))
		}
		writeRawChildren(w, n)
	case '~':
		if v3 {
			w.Raw("~" + strconv.Itoa(len(n.children)) + "\r\n")
		} else {
			w.Array(len(n.children))
		}
		writeRawChildren(w, n)
	case '*':
		w.Array(len(n.children))
		writeRawChildren(w, n)
	default: // '$' and anything else that carries a string
		w.BulkString(n.str)
	}
}

func writeRawChildren(w *resp.Writer, n *rawNode) {
	for i := range n.children {
		writeRaw(w, &n.children[i])
	}
}

// trimVerbatim drops a verbatim string's "txt:" format prefix (Verbatim adds it back).
func trimVerbatim(s string) string {
	if len(s) >= 4 && s[3] == ':' {
		return s[4:]
	}
	return s
}

// Relay writes a forwarded command's reply exactly as the shard gave it.
func Relay(w *resp.Writer, r valkey.ValkeyResult) { RelayShaped(w, r, AsIs) }

// Shape says how a command's RESP3 reply (the agent's shard connections speak RESP3) becomes
// the reply Valkey gives a RESP2 client where the types alone do not say it: Valkey shapes
// some replies by protocol, not by type.
type Shape uint8

// The shapes, combined as bits.
const (
	AsIs          Shape = 0         // the types say it all
	FlatPairs     Shape = 1 << iota // arrays of [member, score] pairs are flat in RESP2 (ZRANGE WITHSCORES, HRANDFIELD WITHVALUES; not ZMPOP)
	NullArrays                      // a null element of the reply is a null array in RESP2 (GEOPOS of a missing member)
	NullLastArray                   // a null last element is a null array in RESP2 (XPENDING's summary without consumers)
	NullIsArray                     // a null reply is a null array in RESP2 (BLPOP that timed out, LPOP key count of a missing key)
	MapAsPairs                      // a map reply is an array of [key, value] pairs in RESP2 (XREAD)
)

// nullArray marks a null that RESP2 writes as a null array.
const nullArray = 'N'

// RelayShaped is Relay for a command whose RESP2 reply has the given shape.
func RelayShaped(w *resp.Writer, r valkey.ValkeyResult, shape Shape) {
	if err := r.NonValkeyError(); err != nil {
		WriteErr(w, err)
		return
	}
	msg, _ := r.ToMessage()
	n, err := rawReply(&msg)
	if err != nil {
		w.Error("ERR the agent could not read the shard's reply: " + err.Error())
		return
	}
	if w.Proto < 3 {
		reshape(&n, shape)
	}
	writeRaw(w, &n)
}

// reshape turns n into the RESP2 reply Valkey gives for a command of the given shape.
func reshape(n *rawNode, shape Shape) {
	if shape&FlatPairs != 0 {
		flattenPairs(n)
	}
	if shape&NullArrays != 0 {
		for i := range n.children {
			if n.children[i].typ == '_' {
				n.children[i].typ = nullArray
			}
		}
	}
	if last := len(n.children) - 1; shape&NullLastArray != 0 && last >= 0 && n.children[last].typ == '_' {
		n.children[last].typ = nullArray
	}
	if shape&NullIsArray != 0 && n.typ == '_' {
		n.typ = nullArray
	}
	if shape&MapAsPairs != 0 && n.typ == '%' {
		pairs := make([]rawNode, 0, len(n.children)/2)
		for i := 0; i+1 < len(n.children); i += 2 {
			pairs = append(pairs, rawNode{typ: '*', n: 2, children: n.children[i : i+2]})
		}
		n.typ, n.n, n.children = '*', int64(len(pairs)), pairs
	}
}

// flattenPairs replaces, in n and below, the children of every array that holds only pairs by
// the pairs' elements.
func flattenPairs(n *rawNode) {
	if len(n.children) == 0 {
		return
	}
	pairs := true
	for i := range n.children {
		c := &n.children[i]
		pairs = pairs && c.typ == '*' && len(c.children) == 2
	}
	if !pairs {
		for i := range n.children {
			flattenPairs(&n.children[i])
		}
		return
	}
	flat := make([]rawNode, 0, 2*len(n.children))
	for _, c := range n.children {
		flat = append(flat, c.children...)
	}
	n.children, n.n = flat, int64(len(flat))
}
