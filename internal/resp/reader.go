// Package resp reads Redis protocol commands and writes RESP2/RESP3 replies. Hand-written for
// the agent's hot path: a command's arguments are slices into one reused buffer, so reading a
// pipelined GET allocates nothing.
package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ProtocolError is a malformed frame. The connection cannot be resynchronised after one, so the
// server answers it and closes that connection (as Valkey does).
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// TooLargeError is a well-formed command with an argument over Limits.MaxBulkBytes, or more
// bytes in all than Limits.MaxCommandBytes. The reader read and dropped what was over, so the
// connection stays in step: the caller refuses the command (never runs it with an argument
// cut short) and goes on with the next.
type TooLargeError struct {
	Args  [][]byte // the command's arguments, those dropped left empty
	Arg   int      // index of the first dropped argument
	Size  int64    // its length in bytes
	Limit int64    // the limit it broke
	Total bool     // true when the command as a whole was over MaxCommandBytes
}

func (e *TooLargeError) Error() string {
	if e.Total {
		return fmt.Sprintf("command of more than %d bytes", e.Limit)
	}
	return fmt.Sprintf("argument %d of %d bytes is over the limit of %d bytes", e.Arg, e.Size, e.Limit)
}

// Limits bound what one command may make the reader buffer.
type Limits struct {
	MaxArgs         int   // arguments per command
	MaxBulkBytes    int   // bytes buffered per argument; longer ones are dropped (TooLargeError)
	MaxCommandBytes int   // bytes buffered per command; past it, arguments are dropped likewise
	MaxDiscardBytes int64 // longest argument read at all; past it, a protocol error
	MaxInline       int   // bytes per inline (telnet-style) command line
}

// Before AUTH, Valkey's own bounds: a longer array or argument is a protocol error that
// closes the connection, so a client without the password cannot make the reader buffer more.
const (
	unauthenticatedArgs      = 10
	unauthenticatedBulkBytes = 16 << 10
)

// argOverhead is what the reader keeps per argument besides its bytes (its end and its view),
// counted against MaxCommandBytes so that millions of empty arguments are bounded too.
const argOverhead = 32

// Buffers over these are let go after their command, so one large command does not pin its
// memory to the connection for good.
const (
	keepBufBytes = 1 << 20
	keepArgs     = 1 << 14
)

// DefaultLimits follow Valkey's defaults: proto-max-bulk-len (512 MiB) is the longest argument,
// client-query-buffer-limit (1 GiB) the most one command may buffer.
var DefaultLimits = Limits{MaxArgs: 1<<31 - 1, MaxBulkBytes: 512 << 20, MaxCommandBytes: 1 << 30,
	MaxDiscardBytes: 512 << 20, MaxInline: 64 << 10}

// Reader reads commands from a buffered connection.
type Reader struct {
	br     *bufio.Reader
	limits Limits
	authed bool
	buf    []byte   // argument bytes of the current command
	ends   []int    // end offset of each argument in buf
	args   [][]byte // views into buf, rebuilt per command
}

// NewReader reads commands from br within limits.
func NewReader(br *bufio.Reader, limits Limits) *Reader {
	return &Reader{br: br, limits: limits, authed: true, buf: make([]byte, 0, 512)}
}

// SetAuthenticated lifts the bounds of a connection that has not authenticated yet (see
// unauthenticatedArgs); a Reader starts authenticated.
func (r *Reader) SetAuthenticated(authed bool) { r.authed = authed }

// Buffered reports whether another command's bytes are already buffered (pipelining), so the
// caller can defer flushing replies.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// ReadCommand returns the next command's arguments. They stay valid until the next call.
// io.EOF means the peer closed cleanly between commands; a *TooLargeError comes with the
// arguments that were kept, and the connection can go on.
func (r *Reader) ReadCommand() ([][]byte, error) {
	// A loop, not recursion: a client may send millions of empty commands in a row.
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return nil, err
		}
		if b == '*' {
			args, err := r.readArray()
			if err != nil || args != nil {
				return args, err
			}
			continue // "*0" / "*-1": nothing to run, as in Valkey
		}
		if err := r.br.UnreadByte(); err != nil {
			return nil, err
		}
		args, err := r.readInline()
		if err != nil || len(args) > 0 {
			return args, err
		}
		// Empty inline line: ignored, as by Valkey.
	}
}

// readArray reads a command sent as an array; nil, nil for an empty one.
func (r *Reader) readArray() ([][]byte, error) {
	n, err := r.readInt("multibulk")
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, nil // "*0", "*-1", "*-10": nothing to run, as in Valkey 8
	}
	if !r.authed && n > unauthenticatedArgs {
		return nil, protoErr("unauthenticated multibulk length")
	}
	if n > int64(r.limits.MaxArgs) {
		return nil, protoErr("invalid multibulk length")
	}
	if cap(r.buf) > keepBufBytes {
		r.buf = make([]byte, 0, 512)
	}
	if cap(r.ends) > keepArgs {
		r.ends, r.args = nil, nil
	}
	r.buf, r.ends = r.buf[:0], r.ends[:0]
	var tooLarge *TooLargeError
	for i := int64(0); i < n; i++ {
		if err := r.readBulk(int(i), &tooLarge); err != nil {
			return nil, err
		}
	}
	if tooLarge != nil {
		tooLarge.Args = r.views()
		return tooLarge.Args, tooLarge
	}
	return r.views(), nil
}

// readBulk appends argument i to buf, or drops it (recording the first drop in tooLarge) when
// it is over the argument or command limit.
func (r *Reader) readBulk(i int, tooLarge **TooLargeError) error {
	b, err := r.br.ReadByte()
	if err != nil {
		return unexpected(err)
	}
	if b != '$' {
		return protoErr("expected '$', got '%c'", b)
	}
	size, err := r.readInt("bulk")
	if err != nil {
		return err
	}
	if !r.authed && size > unauthenticatedBulkBytes {
		return protoErr("unauthenticated bulk length")
	}
	if size < 0 || size > r.limits.MaxDiscardBytes {
		return protoErr("invalid bulk length")
	}
	overArg := size > int64(r.limits.MaxBulkBytes)
	kept := int64(len(r.buf)) + int64(len(r.ends)+1)*argOverhead
	overTotal := kept+size > int64(r.limits.MaxCommandBytes)
	if overArg || overTotal {
		if err := r.discard(size); err != nil {
			return err
		}
		if *tooLarge == nil {
			*tooLarge = &TooLargeError{Arg: i, Size: size, Limit: int64(r.limits.MaxBulkBytes)}
			if !overArg {
				(*tooLarge).Total, (*tooLarge).Limit = true, int64(r.limits.MaxCommandBytes)
			}
		}
		if kept <= int64(r.limits.MaxCommandBytes) {
			r.ends = append(r.ends, len(r.buf)) // an empty view in its place; past the total, none
		}
		return nil
	}
	start := len(r.buf)
	need := start + int(size) + 2
	if cap(r.buf) < need {
		grown := make([]byte, start, max(need, 2*cap(r.buf)))
		copy(grown, r.buf)
		r.buf = grown
	}
	r.buf = r.buf[:need]
	if _, err := io.ReadFull(r.br, r.buf[start:need]); err != nil {
		return unexpected(err)
	}
	if r.buf[need-2] != '\r' || r.buf[need-1] != '\n' {
		return protoErr("bulk string not terminated by CRLF")
	}
	r.buf = r.buf[:need-2]
	r.ends = append(r.ends, len(r.buf))
	return nil
}

// discard drops a bulk argument of size bytes and its CRLF without buffering it.
func (r *Reader) discard(size int64) error {
	for size > 0 {
		n, err := r.br.Discard(int(min(size, 1<<30)))
		size -= int64(n)
		if err != nil {
			return unexpected(err)
		}
	}
	var crlf [2]byte
	if _, err := io.ReadFull(r.br, crlf[:]); err != nil {
		return unexpected(err)
	}
	if crlf != [2]byte{'\r', '\n'} {
		return protoErr("bulk string not terminated by CRLF")
	}
	return nil
}

// views slices buf into arguments; done after reading because buf may move while growing.
func (r *Reader) views() [][]byte {
	r.args = r.args[:0]
	start := 0
	for _, end := range r.ends {
		r.args = append(r.args, r.buf[start:end:end])
		start = end
	}
	return r.args
}

// readInt reads a decimal integer line ending in CRLF.
func (r *Reader) readInt(kind string) (int64, error) {
	line, err := r.readLine(32)
	if err != nil {
		return 0, err
	}
	if len(line) == 0 {
		return 0, protoErr("invalid %s length", kind)
	}
	neg := line[0] == '-'
	if neg {
		line = line[1:]
		if len(line) == 0 {
			return 0, protoErr("invalid %s length", kind)
		}
	}
	var n int64
	for _, c := range line {
		if c < '0' || c > '9' {
			return 0, protoErr("invalid %s length", kind)
		}
		n = n*10 + int64(c-'0')
		if n > 1<<40 {
			return 0, protoErr("invalid %s length", kind)
		}
	}
	if neg {
		n = -n
	}
	return n, nil
}

// readLine reads up to CRLF (or LF) without it, refusing lines longer than limit.
func (r *Reader) readLine(limit int) ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > limit+2 {
		return nil, protoErr("line too long")
	}
	if err != nil {
		return nil, unexpected(err)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func (r *Reader) readInline() ([][]byte, error) {
	line, err := r.readLine(r.limits.MaxInline)
	if err != nil {
		return nil, err
	}
	r.ends = r.ends[:0]
	r.args = r.args[:0]
	args, buf, ok := splitArgs(line, r.args, r.buf[:0])
	r.buf = buf
	if !ok {
		return nil, protoErr("unbalanced quotes in request")
	}
	if len(args) > r.limits.MaxArgs {
		return nil, protoErr("too many arguments")
	}
	r.args = args
	return r.args, nil
}

// splitArgs splits an inline command line as Valkey's sdssplitargs does: arguments separated
// by blanks, "double quotes" with \n \r \t \b \a \xHH escapes, 'single quotes' with \'. The
// arguments are written to buf (grown once to the line's size, so they stay valid); false
// for unbalanced quotes or a closing quote not followed by a blank.
func splitArgs(line []byte, args [][]byte, buf []byte) ([][]byte, []byte, bool) {
	if cap(buf) < len(line) {
		buf = make([]byte, 0, len(line))
	}
	for i := 0; ; {
		for i < len(line) && isBlank(line[i]) {
			i++
		}
		if i >= len(line) {
			return args, buf, true
		}
		start := len(buf)
		var ok bool
		if buf, i, ok = splitArg(line, i, buf); !ok {
			return nil, buf, false
		}
		args = append(args, buf[start:len(buf):len(buf)])
	}
}

// splitArg appends the argument at line[i:] to buf and returns where the next may begin.
func splitArg(line []byte, i int, buf []byte) ([]byte, int, bool) {
	for i < len(line) {
		switch c := line[i]; {
		case isBlank(c) || c == 0:
			return buf, i + 1, true
		case c == '"':
			return quoted(line, i+1, buf, doubleQuoted)
		case c == '\'':
			return quoted(line, i+1, buf, singleQuoted)
		default:
			buf = append(buf, c)
			i++
		}
	}
	return buf, i, true
}

// quoted appends a quoted part starting at line[i] (after its opening quote) with unquote,
// which reads one character or escape and says whether it closed the quote; the closing
// quote must end the argument.
func quoted(line []byte, i int, buf []byte, unquote func(line []byte, i int, buf []byte) ([]byte, int, bool)) ([]byte, int, bool) {
	for i < len(line) {
		var closed bool
		if buf, i, closed = unquote(line, i, buf); closed {
			if i < len(line) && !isBlank(line[i]) {
				return buf, i, false
			}
			return buf, i, true
		}
	}
	return buf, i, false // unbalanced
}

// doubleQuoted reads one character of a "..." part: \n \r \t \b \a \xHH and \c escapes.
func doubleQuoted(line []byte, i int, buf []byte) ([]byte, int, bool) {
	at := func(j int) byte { // Valkey's line ends in a NUL it peeks at
		if j < len(line) {
			return line[j]
		}
		return 0
	}
	switch c := line[i]; {
	case c == '\\' && at(i+1) == 'x' && isHex(at(i+2)) && isHex(at(i+3)):
		return append(buf, unhex(line[i+2])<<4|unhex(line[i+3])), i + 4, false
	case c == '\\' && i+1 < len(line):
		return append(buf, unescape(line[i+1])), i + 2, false
	case c == '"':
		return buf, i + 1, true
	default:
		return append(buf, c), i + 1, false
	}
}

// singleQuoted reads one character of a '...' part: only \' is an escape.
func singleQuoted(line []byte, i int, buf []byte) ([]byte, int, bool) {
	switch c := line[i]; {
	case c == '\\' && i+1 < len(line) && line[i+1] == '\'':
		return append(buf, '\''), i + 2, false
	case c == '\'':
		return buf, i + 1, true
	default:
		return append(buf, c), i + 1, false
	}
}

func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
