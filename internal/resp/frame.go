package resp

import (
	"errors"
	"strconv"
	"strings"
)

// errMalformed is a reply that is not RESP: the connection cannot be trusted past it.
var errMalformed = errors.New("malformed reply from the shard")

// maxNesting bounds aggregate replies within aggregate replies; a shard's replies to the
// commands sent here nest one level at most.
const maxNesting = 32

// FrameLen is the size of the complete RESP2 or RESP3 reply p starts with: 0 when p holds only
// part of one, an error when p is not RESP. A RESP3 attribute counts with the reply it
// precedes.
func FrameLen(p []byte) (int, error) {
	return replyLen(p, 0)
}

func replyLen(p []byte, depth int) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if depth > maxNesting {
		return 0, errMalformed
	}
	line := lineEnd(p)
	if line == -2 || (line < 0 && len(p) > maxLine) {
		return 0, errMalformed
	}
	if line < 0 {
		return 0, nil
	}
	switch p[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return line + 2, nil
	case '$', '=', '!':
		return bulkLen(p, line)
	case '*', '~', '>', '%', '|':
		return aggregateLen(p, line, depth)
	default:
		return 0, errMalformed
	}
}

// bulkLen is replyLen for a string whose length ends at line.
func bulkLen(p []byte, line int) (int, error) {
	n, err := length(p[1:line])
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return line + 2, nil // $-1: the null bulk string
	}
	total := line + 2 + n + 2
	if len(p) < total {
		return 0, nil
	}
	if p[total-2] != '\r' || p[total-1] != '\n' {
		return 0, errMalformed
	}
	return total, nil
}

// aggregateLen is replyLen for an array, set, push, map or attribute whose size ends at line.
func aggregateLen(p []byte, line, depth int) (int, error) {
	n, err := length(p[1:line])
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return line + 2, nil // *-1: the null array
	}
	if p[0] == '%' || p[0] == '|' {
		n *= 2 // keys and values
	}
	if p[0] == '|' {
		n++ // an attribute: the reply it describes follows
	}
	off := line + 2
	for range n {
		m, err := replyLen(p[off:], depth+1)
		if err != nil || m == 0 {
			return 0, err
		}
		off += m
	}
	return off, nil
}

// maxLine bounds a reply's first line: a length or a status, never kilobytes.
const maxLine = 64 << 10

// lineEnd is the index of the CRLF ending p's first line: -1 if it has not arrived, -2 for a
// CR without its LF.
func lineEnd(p []byte) int {
	for i := 1; i < len(p); i++ {
		if p[i] != '\r' {
			continue
		}
		switch {
		case i+1 == len(p):
			return -1
		case p[i+1] != '\n':
			return -2
		}
		return i
	}
	return -1
}

// length parses a bulk or array length: -1, or 0 up to 512 MB.
func length(p []byte) (int, error) {
	if string(p) == "-1" {
		return -1, nil
	}
	if len(p) == 0 || len(p) > 10 {
		return 0, errMalformed
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, errMalformed
		}
		n = n*10 + int(c-'0')
	}
	if n > 512<<20 {
		return 0, errMalformed
	}
	return n, nil
}

// BulkAt reads the bulk string "$n\r\n...\r\n" at p[i:] of at most limit bytes: its bytes (not
// nil, even when empty) and the index after it; nil if it is not one, or not whole.
func BulkAt(p []byte, i, limit int) ([]byte, int) {
	if i >= len(p) || p[i] != '$' {
		return nil, 0
	}
	i++
	start, n := i, 0
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		n = n*10 + int(p[i]-'0')
		if n > limit {
			return nil, 0
		}
	}
	if i == start || i+2 > len(p) || p[i] != '\r' || p[i+1] != '\n' {
		return nil, 0
	}
	i += 2
	if i+n+2 > len(p) || p[i+n] != '\r' || p[i+n+1] != '\n' {
		return nil, 0
	}
	return p[i : i+n : i+n], i + n + 2
}

// Invalidated reads a RESP3 push: for an invalidation, the keys it names (appended to keys)
// or all, for a flush (a null list); ok is false for any other push.
func Invalidated(push []byte, keys [][]byte) (_ [][]byte, all, ok bool) {
	const head = ">2\r\n$10\r\ninvalidate\r\n"
	if !strings.HasPrefix(string(push), head) {
		return keys, false, false
	}
	p := push[len(head):]
	if strings.HasPrefix(string(p), "_\r\n") || strings.HasPrefix(string(p), "*-1\r\n") {
		return keys, true, true
	}
	line := lineEnd(p)
	if line < 0 || p[0] != '*' {
		return keys, false, false
	}
	n, err := length(p[1:line])
	if err != nil {
		return keys, false, false
	}
	off := line + 2
	for range n {
		m, err := FrameLen(p[off:])
		if err != nil || m == 0 || p[off] != '$' {
			return keys, false, false
		}
		keys = append(keys, BulkValue(p[off:off+m]))
		off += m
	}
	return keys, false, true
}

// BulkValue is the value of a whole bulk string reply ("$3\r\nfoo\r\n"); nil for any other.
func BulkValue(reply []byte) []byte {
	if len(reply) < 5 || reply[0] != '$' || reply[1] == '-' {
		return nil
	}
	e := lineEnd(reply)
	return reply[e+2 : len(reply)-2]
}

// IntValue is the value of a whole integer reply (":-2\r\n").
func IntValue(reply []byte) (int64, bool) {
	if len(reply) < 4 || reply[0] != ':' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(reply[1:len(reply)-2]), 10, 64)
	return n, err == nil
}
