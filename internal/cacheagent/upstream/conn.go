//go:build unix

// Package upstream is a shard connection owned by one event loop, as in twemproxy: requests
// from every client the loop read in one turn are appended to one buffer and written with one
// system call, and replies are matched to their requests in order. Nothing on it blocks or
// locks; only the loop that owns it may call it.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cachefleet/cachefleet/internal/resp"
)

// Callback receives a request's reply: the reply's bytes (valid during the call only), or the
// error that ended the connection before it came.
type Callback interface {
	Reply(reply []byte, err error)
}

// Conn is one shard connection; see the package comment.
type Conn struct {
	fd      int
	out     []byte     // requests not yet written
	in      []byte     // replies read, not yet matched
	waiting []Callback // one per request sent or to send, in order
	head    int        // waiting[head] is the oldest
	sent    int        // waiting[head:sent] are written (or being written): a batch in flight
	since   time.Time  // when the oldest request was queued or the last reply came
	err     error      // why the connection ended
	pushes  uint64     // RESP3 pushes seen

	// OnPush takes the shard's RESP3 pushes (invalidations of tracked keys), in their place
	// among the replies; the bytes are valid during the call only.
	OnPush func(push []byte)
}

// New takes over fd, a connected non-blocking socket.
func New(fd int) *Conn { return &Conn{fd: fd} }

// Fd is the connection's descriptor.
func (c *Conn) Fd() int { return c.fd }

// Err is why the connection ended; nil while it serves.
func (c *Conn) Err() error { return c.err }

// Pushes is how many RESP3 pushes have come: a request that compares it before and after its
// replies knows whether an invalidation came between them.
func (c *Conn) Pushes() uint64 { return c.pushes }

// Pending is how many requests wait for their replies.
func (c *Conn) Pending() int { return len(c.waiting) - c.head }

// InFlight reports whether requests written to the shard still wait for their replies.
func (c *Conn) InFlight() bool { return c.sent > c.head }

// Send queues a request, its whole frame, whose reply goes to cb; Flush writes it.
func (c *Conn) Send(cb Callback, frame []byte) {
	c.out = append(c.out, frame...)
	c.Expect(cb)
}

// Out is the buffer requests are written to: append a frame and pass it to SetOut, then Expect
// its reply (Send does all three for a frame already whole).
func (c *Conn) Out() []byte { return c.out }

// SetOut replaces the buffer Out returned, with a request appended to it.
func (c *Conn) SetOut(out []byte) { c.out = out }

// Expect queues cb for the reply to the request just appended with SetOut.
func (c *Conn) Expect(cb Callback) {
	if c.Pending() == 0 {
		c.since = time.Now()
	}
	c.waiting = append(c.waiting, cb)
}

// Flush writes what the socket takes of the queued requests; the rest waits for the socket to
// drain (the loop calls Flush again on EPOLLOUT). An error ends the connection.
func (c *Conn) Flush() error {
	if len(c.out) > 0 {
		c.sent = len(c.waiting) // a write cut short leaves some unsent: counted as in flight
	}
	for len(c.out) > 0 && c.err == nil {
		n, err := unix.Write(c.fd, c.out)
		switch {
		case n > 0:
			c.out = c.out[:copy(c.out, c.out[n:])]
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return nil
		default:
			c.Fail(fmt.Errorf("write: %w", err))
		}
	}
	if cap(c.out) > 1<<20 && len(c.out) == 0 {
		c.out = nil
	}
	return c.err
}

// readChunk is the least a read asks for.
const readChunk = 16 << 10

// OnReadable reads every reply that has come and hands each to its callback, in order. A
// closed or failed socket, or a reply nobody asked for, ends the connection: the requests
// still waiting get the error.
func (c *Conn) OnReadable() error {
	for c.err == nil {
		if cap(c.in)-len(c.in) < readChunk {
			c.in = append(c.in, make([]byte, max(readChunk, cap(c.in)))...)[:len(c.in)]
		}
		space := cap(c.in) - len(c.in)
		n, err := unix.Read(c.fd, c.in[len(c.in):cap(c.in)])
		switch {
		case n > 0:
			c.in = c.in[:len(c.in)+n]
			c.deliver()
			if n < space {
				// The socket is drained: what comes next is a new edge. Reading on to EAGAIN
				// cost a second read per event, a sixth of a forwarded request's system calls.
				return c.err
			}
		case n == 0 && err == nil:
			c.Fail(io.EOF)
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return nil
		default:
			c.Fail(fmt.Errorf("read: %w", err))
		}
	}
	return c.err
}

// deliver hands complete replies to their callbacks.
func (c *Conn) deliver() {
	off, replied := 0, false
	for c.err == nil {
		n, err := resp.FrameLen(c.in[off:])
		if err == nil && n > 0 && c.Pending() == 0 && c.in[off] != '>' {
			err = errors.New("upstream: a reply to no request")
		}
		if err != nil {
			c.Fail(err)
			return
		}
		if n == 0 {
			break
		}
		if c.in[off] == '>' {
			c.pushes++
			if c.OnPush != nil {
				c.OnPush(c.in[off : off+n])
			}
			off += n
			continue
		}
		cb := c.waiting[c.head]
		c.waiting[c.head] = nil
		c.head++
		replied = true
		cb.Reply(c.in[off:off+n], nil)
		off += n
	}
	if replied {
		c.since = time.Now() // once per read: a clock read per reply was a tenth of a forward's CPU
	}
	if c.head == len(c.waiting) {
		c.waiting, c.head, c.sent = c.waiting[:0], 0, 0
	}
	rest := copy(c.in, c.in[off:])
	c.in = c.in[:rest]
	if cap(c.in) > 1<<20 && rest < readChunk {
		c.in = append([]byte(nil), c.in...) // a large reply's buffer need not stay
	}
}

// Stalled reports whether the oldest request has waited longer than timeout without any
// reply coming.
func (c *Conn) Stalled(now time.Time, timeout time.Duration) bool {
	return c.Pending() > 0 && now.Sub(c.since) > timeout
}

// Fail ends the connection (the caller closes the descriptor): every request waiting gets
// err, in order. Callbacks may not send on c.
func (c *Conn) Fail(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	waiting := c.waiting[c.head:]
	c.waiting, c.head, c.sent, c.out = nil, 0, 0, nil
	for _, cb := range waiting {
		cb.Reply(nil, err)
	}
}

// CloseFd closes a descriptor Dial returned that was never given to a loop.
func CloseFd(fd int) { _ = unix.Close(fd) }

// Name is what the shard's CLIENT LIST shows for a loop's connection.
const Name = "cachefleet-loop"

// Dial connects to a shard, blocking (call it off the loop), and returns a non-blocking
// descriptor for New. The connection speaks RESP3, is authenticated and named, and has
// tracking on in OPTIN mode: a read sent after CLIENT CACHING YES is tracked, and the shard's
// invalidation of it comes as a push on the same connection, ordered with the replies.
func Dial(ctx context.Context, addr, password string, timeout time.Duration) (int, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return -1, err
	}
	defer nc.Close() // the duplicate below keeps the socket open
	_ = nc.SetDeadline(time.Now().Add(timeout))
	hello := []string{"HELLO", "3", "SETNAME", Name}
	if password != "" {
		hello = append(hello, "AUTH", "default", password)
	}
	if err := Handshake(nc, hello, []string{"CLIENT", "TRACKING", "ON", "OPTIN"}); err != nil {
		return -1, err
	}
	_ = nc.SetDeadline(time.Time{})
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(orig uintptr) { fd, err = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0) })
	if err = errors.Join(cerr, err); err != nil {
		return -1, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Handshake sends commands and reads one reply to each: an error reply fails it.
func Handshake(nc net.Conn, cmds ...[]string) error {
	var out []byte
	for _, cmd := range cmds {
		out = resp.AppendCommand(out, cmd...)
	}
	if _, err := nc.Write(out); err != nil {
		return err
	}
	var in []byte
	buf := make([]byte, 4096)
	for range cmds {
		for {
			n, err := resp.FrameLen(in)
			if err != nil {
				return err
			}
			if n > 0 {
				if in[0] == '-' || in[0] == '!' {
					return fmt.Errorf("connecting: %s", strings.TrimSpace(string(in[1:n])))
				}
				in = in[n:]
				break
			}
			m, err := nc.Read(buf)
			if err != nil {
				return err
			}
			in = append(in, buf[:m]...)
		}
	}
	return nil
}

// Command runs one command on a connection of its own, authenticated and nothing more, and
// returns its reply as sent. It is for commands that must reach a shard busy with a script
// (SCRIPT KILL): a shard that is busy refuses CLIENT TRACKING, so no pooled connection can
// be made then.
func Command(ctx context.Context, addr, password string, timeout time.Duration, cmd ...string) ([]byte, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if password != "" {
		if err := Handshake(nc, []string{"AUTH", password}); err != nil {
			return nil, err
		}
	}
	if _, err := nc.Write(resp.AppendCommand(nil, cmd...)); err != nil {
		return nil, err
	}
	var in []byte
	buf := make([]byte, 4096)
	for {
		n, err := resp.FrameLen(in)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return in[:n], nil
		}
		m, err := nc.Read(buf)
		if err != nil {
			return nil, err
		}
		in = append(in, buf[:m]...)
	}
}
