//go:build linux

package evloop

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Who may read the socket. The reader goroutine owns it while it runs; it hands it to the loop
// when it has nothing left to parse, and the loop hands it back with the bytes it did not answer.
const (
	ownedByReader        int32 = iota // the reader goroutine reads the socket itself
	ownedByReaderPending              // the same, and the loop saw data arrive meanwhile
	ownedByLoop                       // the reader waits; the loop reads when epoll reports data
	loopReading                       // the loop is reading and answering right now
)

// Conn is a TCP connection served by a Loop. It is a net.Conn for one reader goroutine; Write
// and Close may be called from any goroutine.
type Conn struct {
	loop   *Loop
	fd     int
	laddr  net.Addr
	raddr  net.Addr
	state  atomic.Int32
	ready  chan struct{} // the loop handed the socket back (bytes in in, or rerr)
	closed chan struct{}
	once   sync.Once

	// Read side, owned by whoever owns the socket (see state).
	in   []byte
	off  int
	rerr error
	more bool // the last read filled its buffer: the socket may hold more
	// held counts what the handler took whose replies are still due (Hold, Release); parked:
	// the loop keeps what it read past those (in in, or rerr) from the reader until they are
	// written, which would otherwise overtake them. Both are the loop's alone.
	held   int
	parked bool
	// boundary: the reader waits for the start of a message, not for the rest of one; only
	// then may the loop's handler read what comes (a value's bytes can look like anything).
	boundary atomic.Bool
	// peerClosed: epoll reported the peer's end of the stream; there is no edge after it, so
	// the reader reads the socket to it instead of waiting for the loop.
	peerClosed atomic.Bool

	// Write side: wmu is held by a Write for as long as it waits for the socket to drain, so the
	// loop only ever tries it; bytes the loop could not write wait in backlog.
	wmu      sync.Mutex
	backlog  []byte
	writable chan struct{}
	// MaxBacklog closes the connection when more would wait unwritten (the peer does not
	// read); 0 for no bound. Over SoftBacklog, the peer has SoftFor to take the backlog below
	// it again, or the connection is closed. Set them before the connection is used.
	MaxBacklog  int
	SoftBacklog int
	SoftFor     time.Duration
	softArmed   bool // a check of the soft bound is due; under wmu

	deadlines sync.Mutex
	rdl, wdl  deadline

	// fdmu guards fd against being closed (by the loop) during a read or write.
	fdmu sync.RWMutex

	// Context is the server's state for this connection, for the loop's handler.
	Context any
}

var errClosed = net.ErrClosed

// read and write are the system calls on the descriptor, refused once the connection is closed.
func (c *Conn) read(p []byte) (int, error) {
	c.fdmu.RLock()
	defer c.fdmu.RUnlock()
	if c.isClosed() {
		return 0, errClosed
	}
	return unix.Read(c.fd, p)
}

func (c *Conn) write(p []byte) (int, error) {
	c.fdmu.RLock()
	defer c.fdmu.RUnlock()
	if c.isClosed() {
		return 0, errClosed
	}
	return unix.Write(c.fd, p)
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// HungUp reports whether the peer closed its end of the stream (or the connection is closed),
// without reading it: what the peer sent before stays for the reader. For a reader that is busy
// elsewhere (a blocking command) and must learn that nobody waits for it any more.
func (c *Conn) HungUp() bool {
	if c.peerClosed.Load() {
		return true
	}
	c.fdmu.RLock()
	defer c.fdmu.RUnlock()
	if c.isClosed() {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLRDHUP}} //nolint:gosec // a descriptor fits
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// Hold says that a reply to a message the handler took will be written later, by the loop:
// until the matching Release, what the handler does not answer stays away from the reader.
// Call both on the loop.
func (c *Conn) Hold() { c.held++ }

// Release says a held reply has been written; the last one hands the connection to its reader
// if the loop read something for it meanwhile.
func (c *Conn) Release() {
	if c.held--; c.held > 0 || !c.parked {
		return
	}
	c.parked = false
	if c.state.CompareAndSwap(ownedByLoop, loopReading) { // not taken back on a deadline or close
		c.loop.handBack(c)
	}
}

// AtBoundary tells the loop that the reader has consumed whole messages: bytes read from now
// on start a new one, until Read returns some.
func (c *Conn) AtBoundary() { c.boundary.Store(true) }

// Read returns bytes the loop passed on, or reads the socket while the reader owns it, or hands
// the socket to the loop and waits.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if c.off < len(c.in) {
			n := copy(p, c.in[c.off:])
			c.boundary.Store(false)
			c.off += n
			if c.off == len(c.in) {
				c.in, c.off = c.in[:0], 0
				if cap(c.in) > 16<<10 {
					c.in = nil // a pipeline's burst need not stay with the connection
				}
			}
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.readErr(); err != nil {
			return 0, err
		}
		if c.more || c.state.Load() == ownedByReaderPending || c.peerClosed.Load() {
			c.more = false
			c.state.CompareAndSwap(ownedByReaderPending, ownedByReader)
			n, err := c.read(p)
			switch {
			case n > 0:
				c.boundary.Store(false)
				c.more = n == len(p)
				return n, nil
			case n == 0 && err == nil:
				return 0, io.EOF
			case !errors.Is(err, unix.EAGAIN):
				return 0, err
			}
			// Drained: from here on epoll reports new data to the loop.
		}
		if !c.state.CompareAndSwap(ownedByReader, ownedByLoop) {
			continue // data arrived since the read: read again
		}
		if err := c.wait(); err != nil {
			return 0, err
		}
	}
}

// wait blocks until the loop hands the socket back, or the connection closes or times out; then
// the reader owns the socket again.
func (c *Conn) wait() error {
	rdl, moved := c.readDeadline()
	for {
		select {
		case <-moved: // SetReadDeadline was called: wait for the new one
			rdl, moved = c.readDeadline()
		case <-c.ready:
			if st := c.state.Load(); st == ownedByReader || st == ownedByReaderPending {
				return nil // handed back (and maybe more data came since)
			}
			// A hand-back the reader did not wait for earlier (it had timed out): wait on.
		case <-c.closed:
			c.reclaim()
			return errClosed
		case <-rdl:
			c.reclaim()
			return os.ErrDeadlineExceeded
		}
	}
}

// reclaim takes the socket back from the loop, waiting out a read the loop is doing.
func (c *Conn) reclaim() {
	for {
		switch c.state.Load() {
		case ownedByReader, ownedByReaderPending:
			return
		case ownedByLoop:
			if c.state.CompareAndSwap(ownedByLoop, ownedByReader) {
				return
			}
		}
		time.Sleep(time.Microsecond)
	}
}

func (c *Conn) readErr() error {
	select {
	case <-c.closed:
		return errClosed
	default:
	}
	if c.rdl.passed() {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// Write writes all of p, waiting for the socket to drain when it is full.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.backlog) > 0 {
		if err := c.writeAll(c.backlog); err != nil {
			return 0, err
		}
		c.backlog = c.backlog[:0]
	}
	if err := c.writeAll(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Conn) writeAll(p []byte) error {
	wdl, moved := c.writeDeadline()
	for len(p) > 0 {
		n, err := c.write(p)
		if n > 0 {
			p = p[n:]
			continue
		}
		if !errors.Is(err, unix.EAGAIN) {
			if err == nil {
				err = io.ErrShortWrite
			}
			return err
		}
		select {
		case <-c.writable:
		case <-moved:
			wdl, moved = c.writeDeadline()
		case <-c.closed:
			return errClosed
		case <-wdl:
			return os.ErrDeadlineExceeded
		}
	}
	return nil
}

// WriteNoWait is Write for the loop, which must never block: what the socket does not take now
// is kept and written first by the next Write, or by the loop once the socket drains. It fails
// if a Write is under way (the caller is to serialise its writers).
func (c *Conn) WriteNoWait(p []byte) (int, error) {
	if !c.wmu.TryLock() {
		return 0, ErrWriteBusy
	}
	defer c.wmu.Unlock()
	if len(c.backlog) == 0 {
		n, err := c.write(p)
		if n == len(p) {
			return n, nil
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return 0, err
		}
		p = p[max(n, 0):]
	}
	if c.MaxBacklog > 0 && len(c.backlog)+len(p) > c.MaxBacklog {
		c.backlog = nil
		_ = c.Close()
		return 0, ErrBacklogFull
	}
	c.backlog = append(c.backlog, p...)
	if c.SoftBacklog > 0 && len(c.backlog) > c.SoftBacklog && !c.softArmed {
		c.softArmed = true
		time.AfterFunc(c.SoftFor, c.checkSoft)
	}
	return len(p), nil
}

// checkSoft closes the connection if its backlog is still over SoftBacklog; a Write under way
// is draining it, so the check waits one more turn.
func (c *Conn) checkSoft() { c.checkSoftAgain(false) }

func (c *Conn) checkSoftAgain(again bool) {
	if !c.wmu.TryLock() {
		if again { // a Write has waited on the full socket for SoftFor more: the peer is not reading
			_ = c.Close()
			return
		}
		time.AfterFunc(c.SoftFor, func() { c.checkSoftAgain(true) })
		return
	}
	over := len(c.backlog) > c.SoftBacklog
	c.softArmed = false
	if over {
		c.backlog = nil
	}
	c.wmu.Unlock()
	if over {
		_ = c.Close()
	}
}

// ErrBacklogFull is WriteNoWait's refusal past MaxBacklog; the connection is closed.
var ErrBacklogFull = errors.New("evloop: the peer does not read: output over its limit")

// ErrWriteBusy is WriteNoWait's refusal while a Write is under way.
var ErrWriteBusy = errors.New("evloop: a write is under way")

// Backlogged reports whether bytes wait to be written, or a Write is under way.
func (c *Conn) Backlogged() bool {
	if !c.wmu.TryLock() {
		return true
	}
	defer c.wmu.Unlock()
	return len(c.backlog) > 0
}

// drain writes the backlog without waiting; the loop calls it when the socket is writable. A
// Write under way (waiting for this very event) writes the backlog itself.
func (c *Conn) drain() {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	for len(c.backlog) > 0 {
		n, err := c.write(c.backlog)
		if n <= 0 {
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				c.backlog = c.backlog[:0] // the peer is gone; the reader sees it too
			}
			return
		}
		c.backlog = c.backlog[:copy(c.backlog, c.backlog[n:])]
	}
}

// Close shuts the socket down at once; the loop releases the descriptor.
func (c *Conn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		close(c.closed)
		c.fdmu.RLock()
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
		c.fdmu.RUnlock()
		c.loop.release(c)
	})
	if !first {
		return errClosed
	}
	return nil
}

// LocalAddr is the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline ends a Read waiting past t (a time passed ends it now); zero for none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.deadlines.Lock()
	defer c.deadlines.Unlock()
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline ends a Write waiting for the socket to drain past t; zero for none.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.deadlines.Lock()
	defer c.deadlines.Unlock()
	c.wdl.set(t)
	return nil
}

// readDeadline returns a channel closed when the read deadline passes (nil without one), and
// one closed when the deadline is changed.
func (c *Conn) readDeadline() (passed, moved <-chan struct{}) {
	c.deadlines.Lock()
	defer c.deadlines.Unlock()
	return c.rdl.ch, c.rdl.moved()
}

func (c *Conn) writeDeadline() (passed, moved <-chan struct{}) {
	c.deadlines.Lock()
	defer c.deadlines.Unlock()
	return c.wdl.ch, c.wdl.moved()
}

// deadline is a channel closed when the time passes; nil (blocks forever) without one.
type deadline struct {
	ch      chan struct{}
	changed chan struct{} // closed by set, for those waiting on the previous ch
	timer   *time.Timer
	at      atomic.Int64 // unix nanoseconds, 0 for none
}

func (d *deadline) moved() chan struct{} {
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.changed
}

func (d *deadline) set(t time.Time) {
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if t.IsZero() {
		d.ch = nil
		d.at.Store(0)
		return
	}
	ch := make(chan struct{})
	d.ch = ch
	d.at.Store(t.UnixNano())
	if wait := time.Until(t); wait <= 0 {
		close(ch)
	} else {
		d.timer = time.AfterFunc(wait, func() { close(ch) })
	}
}

func (d *deadline) passed() bool {
	at := d.at.Load()
	return at != 0 && time.Now().UnixNano() >= at
}

// Fd is the connection's file descriptor, for CLIENT LIST.
func (c *Conn) Fd() int { return c.fd }
