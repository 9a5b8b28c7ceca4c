package resp

import (
	"bufio"
	"strconv"
	"strings"
)

// Writer writes replies in the protocol version the client chose with HELLO (2 by default).
type Writer struct {
	bw    *bufio.Writer
	Proto int
	// Errors counts error replies written, so callers can attribute results to commands.
	Errors int
	num    [24]byte
}

// NewWriter writes RESP2 replies to bw until Proto is changed.
func NewWriter(bw *bufio.Writer) *Writer { return &Writer{bw: bw, Proto: 2} }

// Flush sends buffered replies.
func (w *Writer) Flush() error { return w.bw.Flush() }

func (w *Writer) line(prefix byte, s string) {
	w.bw.WriteByte(prefix)
	w.bw.WriteString(s)
	w.bw.WriteString("\r\n")
}

func (w *Writer) header(prefix byte, n int64) {
	w.bw.WriteByte(prefix)
	w.bw.Write(strconv.AppendInt(w.num[:0], n, 10))
	w.bw.WriteString("\r\n")
}

// Simple writes a status reply such as +OK.
func (w *Writer) Simple(s string) { w.line('+', s) }

// Raw writes bytes that are already a RESP reply.
func (w *Writer) Raw(s string) { w.bw.WriteString(s) }

// OK writes +OK.
func (w *Writer) OK() { w.bw.WriteString("+OK\r\n") }

// Error writes an error reply; msg should start with an error code such as "ERR". CR and LF
// become spaces (as in Valkey): one in an error line would put the client's replies out of step.
func (w *Writer) Error(msg string) {
	w.Errors++
	if strings.ContainsAny(msg, "\r\n") {
		msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	}
	w.line('-', msg)
}

// Int writes an integer reply.
func (w *Writer) Int(n int64) { w.header(':', n) }

// Bulk writes a bulk string.
func (w *Writer) Bulk(b []byte) {
	w.header('$', int64(len(b)))
	w.bw.Write(b)
	w.bw.WriteString("\r\n")
}

// BulkString writes a bulk string.
func (w *Writer) BulkString(s string) {
	w.header('$', int64(len(s)))
	w.bw.WriteString(s)
	w.bw.WriteString("\r\n")
}

// Null writes a null bulk string (RESP2) or null (RESP3).
func (w *Writer) Null() {
	if w.Proto >= 3 {
		w.bw.WriteString("_\r\n")
		return
	}
	w.bw.WriteString("$-1\r\n")
}

// NullArray writes a null array (RESP2) or null (RESP3).
func (w *Writer) NullArray() {
	if w.Proto >= 3 {
		w.bw.WriteString("_\r\n")
		return
	}
	w.bw.WriteString("*-1\r\n")
}

// Array writes an array header; n elements must follow.
func (w *Writer) Array(n int) { w.header('*', int64(n)) }

// Map writes a map header of n pairs (RESP3), or an array of 2n elements (RESP2).
func (w *Writer) Map(n int) {
	if w.Proto >= 3 {
		w.header('%', int64(n))
		return
	}
	w.header('*', int64(2*n))
}

// Verbatim writes a RESP3 verbatim text reply, or a bulk string in RESP2 (used by INFO).
func (w *Writer) Verbatim(s string) {
	if w.Proto >= 3 {
		w.header('=', int64(len(s)+4))
		w.bw.WriteString("txt:")
		w.bw.WriteString(s)
		w.bw.WriteString("\r\n")
		return
	}
	w.BulkString(s)
}

// Push writes a RESP3 push header of n elements (out-of-band data such as invalidations), or
// an array header in RESP2, where pub/sub messages take that form.
func (w *Writer) Push(n int) {
	if w.Proto >= 3 {
		w.header('>', int64(n))
		return
	}
	w.header('*', int64(n))
}

// Set writes a RESP3 set header of n elements, or an array header in RESP2.
func (w *Writer) Set(n int) {
	if w.Proto >= 3 {
		w.header('~', int64(n))
		return
	}
	w.header('*', int64(n))
}
