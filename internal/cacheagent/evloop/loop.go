//go:build linux

// Package evloop serves TCP connections from one epoll loop, as an event-driven proxy does,
// while each connection keeps a reader goroutine for whatever the loop does not answer.
//
// With a goroutine per connection, every request costs a read that finds the socket empty
// before the goroutine parks, and a wake-up through Go's netpoller. The loop instead reads only
// sockets epoll reports, and offers the bytes to a handler that runs on the loop: what it
// answers (an L1 hit) never leaves the loop. The rest is handed to the connection's reader, a
// plain net.Conn reader, which runs the full protocol; when it has nothing left to parse, it
// hands the socket back to the loop instead of reading it.
package evloop

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Handler answers what it can of data, bytes just read from c, on the loop: it must not block.
// It returns how many leading bytes it answered, whole messages only; the rest go to c's
// reader, in order. It is called only when c's reader is at a message boundary (AtBoundary).
type Handler func(c *Conn, data []byte) int

// readBuf is what one read may take; a full read means the socket may hold more, and that
// goes to the reader.
const readBuf = 64 << 10

// Readable and Writable are the events a watched descriptor hears of (Watch).
const (
	Readable = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	Writable = unix.EPOLLOUT
)

// Loop is one epoll instance and the goroutine that waits on it.
type Loop struct {
	epfd, wakefd int
	handler      Handler
	buf          []byte
	handedBack   bool // the last round gave a reader work
	// watched are descriptors the loop owns outright (shard connections), with what to call
	// on their events; only the loop touches them.
	watched map[int32]func(events uint32)
	// turn runs after each round of events, on the loop; it returns how long the loop may
	// then wait for the next event, in milliseconds (-1: as long as it takes).
	turn func() int

	mu       sync.Mutex
	conns    map[int32]*Conn
	released []*Conn  // closed connections whose descriptors the loop closes
	posted   []func() // to run on the loop (Post)
	stopped  bool
	done     chan struct{}
}

// New starts a loop; handler may be nil (everything goes to the readers). The loop waits in
// epoll_wait on a thread of its own: with GOMAXPROCS 1 it would hold the only processor while
// it waits, until the runtime takes it back.
func New(handler Handler) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil { // so that Go's netpoller takes it
		unix.Close(epfd)
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	l := &Loop{epfd: epfd, wakefd: wakefd, handler: handler, buf: make([]byte, readBuf),
		conns: map[int32]*Conn{}, watched: map[int32]func(uint32){}, done: make(chan struct{})}
	go l.run()
	return l, nil
}

// OnTurn sets what runs on the loop after each round of events (see Loop.turn); the loop
// itself sets it, as it reads it.
func (l *Loop) OnTurn(turn func() int) { l.Post(func() { l.turn = turn }) }

// Post runs fn on the loop, soon; from any goroutine.
func (l *Loop) Post(fn func()) {
	l.mu.Lock()
	l.posted = append(l.posted, fn)
	l.mu.Unlock()
	l.wake()
}

// Watch gives the loop a descriptor of its own (a shard connection, non-blocking): onEvent
// runs on the loop with epoll's events (edge-triggered: read and write until EAGAIN). Call it
// from the loop; Forget ends it.
func (l *Loop) Watch(fd int, onEvent func(events uint32)) error {
	l.watched[int32(fd)] = onEvent
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(l.watched, int32(fd))
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// Forget stops watching fd and closes it; from the loop.
func (l *Loop) Forget(fd int) {
	if _, ok := l.watched[int32(fd)]; !ok {
		return
	}
	delete(l.watched, int32(fd))
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	unix.Close(fd)
}

// Adopt moves a TCP connection onto the loop: the returned Conn owns a duplicate of its socket,
// and tc is closed.
func (l *Loop) Adopt(tc *net.TCPConn) (*Conn, error) {
	laddr, raddr := tc.LocalAddr(), tc.RemoteAddr()
	rc, err := tc.SyscallConn()
	if err != nil {
		tc.Close()
		return nil, err
	}
	fd := -1
	cerr := rc.Control(func(orig uintptr) { fd, err = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0) })
	tc.Close() // Go's poller lets go of the socket; the duplicate keeps it open
	if err = errors.Join(cerr, err); err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	c := &Conn{loop: l, fd: fd, laddr: laddr, raddr: raddr, more: true,
		ready: make(chan struct{}, 1), closed: make(chan struct{}), writable: make(chan struct{}, 1)}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		unix.Close(fd)
		return nil, net.ErrClosed
	}
	l.conns[int32(fd)] = c
	l.mu.Unlock()
	// Edge-triggered: the loop hears of data that arrives, once; a write that found the socket
	// full hears when it drains.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.mu.Lock()
		delete(l.conns, int32(fd))
		l.mu.Unlock()
		unix.Close(fd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return c, nil
}

// Close stops the loop once its connections are closed; it does not close them.
func (l *Loop) Close() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	l.wake()
	<-l.done
}

func (l *Loop) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
}

// release queues c's descriptor to be closed by the loop, which alone closes descriptors: one
// closed elsewhere could be reused by a new connection while the loop still reads the old one.
func (l *Loop) release(c *Conn) {
	l.mu.Lock()
	l.released = append(l.released, c)
	l.mu.Unlock()
	l.wake()
}

func (l *Loop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, 256)
	wait := -1
	for {
		n, err := unix.EpollWait(l.epfd, events, wait)
		if err != nil && !errors.Is(err, unix.EINTR) {
			panic(fmt.Sprintf("evloop: epoll_wait: %v", err)) // EBADF or EINVAL: a bug
		}
		l.dispatch(events[:max(n, 0)])
		l.runPosted()
		if wait = -1; l.turn != nil {
			wait = l.turn()
		}
		if l.closeReleased() {
			break
		}
		if l.handedBack {
			// Let the readers just handed connections run on this processor before the loop
			// blocks in epoll_wait, which would leave them waiting for another thread.
			runtime.Gosched()
		}
	}
	for fd := range l.watched {
		l.Forget(int(fd))
	}
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

func (l *Loop) runPosted() {
	l.mu.Lock()
	posted := l.posted
	l.posted = nil
	l.mu.Unlock()
	for _, fn := range posted {
		fn()
	}
}

func (l *Loop) dispatch(events []unix.EpollEvent) {
	l.handedBack = false
	for i := range events {
		ev := &events[i]
		if int(ev.Fd) == l.wakefd {
			var b [8]byte
			_, _ = unix.Read(l.wakefd, b[:])
			continue
		}
		if onEvent := l.watched[ev.Fd]; onEvent != nil {
			onEvent(ev.Events)
			continue
		}
		l.mu.Lock()
		c := l.conns[ev.Fd]
		l.mu.Unlock()
		if c == nil {
			continue
		}
		if ev.Events&unix.EPOLLOUT != 0 {
			c.drain()
			select {
			case c.writable <- struct{}{}:
			default:
			}
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.readable(c, ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
		}
	}
}

// closeReleased closes the descriptors of closed connections; true when the loop should stop.
func (l *Loop) closeReleased() bool {
	l.mu.Lock()
	rel := l.released
	l.released = nil
	for _, c := range rel {
		delete(l.conns, int32(c.fd))
	}
	stop := l.stopped && len(l.conns) == 0
	l.mu.Unlock()
	for _, c := range rel {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		c.fdmu.Lock() // no read or write of the descriptor is under way, and none will start
		unix.Close(c.fd)
		c.fdmu.Unlock()
	}
	return stop
}

// readable reads c if its reader has handed the socket over, else tells the reader data came.
// hup: the peer closed its side (or the socket failed), which the reads must reach.
func (l *Loop) readable(c *Conn, hup bool) {
	if hup {
		c.peerClosed.Store(true) // whoever reads next must read on to the end of the stream
	}
	for {
		switch c.state.Load() {
		case ownedByReader:
			if c.state.CompareAndSwap(ownedByReader, ownedByReaderPending) {
				return
			}
		case ownedByReaderPending:
			return
		case ownedByLoop:
			if c.state.CompareAndSwap(ownedByLoop, loopReading) {
				l.read(c, hup)
				return
			}
		default:
			return
		}
	}
}

func (l *Loop) read(c *Conn, hup bool) {
	if c.parked {
		// Replies to what the handler took are still due: what came since waits in the
		// socket for the reader, which gets the connection once they are written.
		c.more = true
		c.state.Store(ownedByLoop)
		return
	}
	for {
		n, err := c.read(l.buf)
		switch {
		case n > 0:
			data := l.buf[:n]
			full := n == len(l.buf)
			used := 0
			if !full && l.handler != nil && c.boundary.Load() {
				used = l.handler(c, data)
			}
			if used == n {
				if hup && !full {
					continue // the end of the stream follows what was answered: read it
				}
				c.state.Store(ownedByLoop)
				return
			}
			c.in = append(c.in[:0], data[used:]...)
			c.off, c.more = 0, full || hup // at the end of the stream the reader reads it itself
			if c.held > 0 {
				c.parked = true
				c.state.Store(ownedByLoop)
				return
			}
		case n == 0 && err == nil:
			c.rerr = io.EOF
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			c.state.Store(ownedByLoop) // nothing after all: an edge for data a read already took
			return
		default:
			c.rerr = err
		}
		if c.held > 0 {
			c.parked = true // the error waits for the replies due, as the bytes before it do
			c.state.Store(ownedByLoop)
			return
		}
		l.handBack(c)
		return
	}
}

// handBack gives the socket, and what was read, to c's reader.
func (l *Loop) handBack(c *Conn) {
	l.handedBack = true
	c.state.Store(ownedByReader)
	select {
	case c.ready <- struct{}{}:
	default:
	}
}
