package upstream

import "errors"

// errMalformed is a reply that is not RESP: the connection cannot be trusted past it.
var errMalformed = errors.New("upstream: malformed reply from the shard")

// maxNesting bounds aggregate replies within aggregate replies; a shard's replies to the
// commands sent here nest one level at most.
const maxNesting = 32

// ReplyLen is the size of the complete RESP2 reply p starts with: 0 when p holds only part of
// one, an error when p is not RESP.
func ReplyLen(p []byte) (int, error) {
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
	case '+', '-', ':':
		return line + 2, nil
	case '$':
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
	case '*':
		n, err := length(p[1:line])
		if err != nil {
			return 0, err
		}
		if n < 0 {
			return line + 2, nil // *-1: the null array
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
	default:
		return 0, errMalformed
	}
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
