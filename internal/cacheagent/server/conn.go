package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// A client connection on its goroutine: read a pipeline of commands, dispatch each, execute the
// batch, write the replies.

// client is one connection's state.
type client struct {
	id     int64
	authed bool
	quit   bool
	// overLimit: the client's replies went over the hard output limit; nothing more runs.
	overLimit   bool
	deadlineSet bool  // a write deadline for replies over the soft output limit
	batchLimit  int   // commands the next batch may take (adaptBatch)
	held        int64 // reply bytes counted in Server.outputHeld until written
	lower       []byte
	tx          *txState // open transaction (MULTI), nil outside one
	// CLIENT REPLY: replyOff silences replies, skipNext the next command's (muted).
	replyOff, skipNext bool
	watch              *watchState // WATCHed keys and their dedicated connection

	// What CLIENT LIST shows of this connection to other connections' goroutines.
	addr, laddr     string
	fd              int
	created         time.Time
	lastAt          atomic.Int64           // unix nanoseconds of the last command
	lastCmd         atomic.Pointer[string] // its full name: "client|list" (began)
	commands        atomic.Int64           // tot-cmds
	watched         atomic.Int32           // keys WATCHed
	blocked         atomic.Bool            // waiting in a blocking command
	trackFlags      atomic.Pointer[string] // CLIENT LIST's tracking flags: "t", "tB", nil when off
	proto           atomic.Int32
	multi           atomic.Int32 // commands queued in an open MULTI, -1 outside one
	name            atomic.Pointer[string]
	libName, libVer atomic.Pointer[string]

	// Client-side caching (tracking.go). wmu is held by whoever writes to the connection: its
	// goroutine for a whole batch (reading the first command to flushing the replies), or its
	// pusher for queued invalidations while the connection is idle.
	wmu        sync.Mutex
	w          *resp.Writer
	nc         net.Conn
	track      *trackState
	redirect   atomic.Int64
	subscribed atomic.Bool
	subs       subscriptions // pub/sub (cmd_pubsub.go)
	pushes     pushQueue
	pushOnce   sync.Once
	done       chan struct{} // closed when the connection ends
}

func loadString(p *atomic.Pointer[string]) string {
	if v := p.Load(); v != nil {
		return *v
	}
	return ""
}

func (s *Server) serveConn(nc net.Conn) {
	defer s.wg.Done()
	defer s.survive()
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	s.Stats.Clients.Add(1)
	defer s.Stats.Clients.Add(-1)
	c := s.register(nc)
	defer s.unregister(nc, c)
	rd := resp.NewReader(bufio.NewReaderSize(nc, 16<<10), s.readLimits())
	w := c.w
	b := &batch{s: s, cid: c.id, c: c}
	ec, _ := nc.(*evloop.Conn)
	if ec != nil {
		ec.Context = &inlineConn{c: c, b: b, ec: ec}
	}
	ctx := context.Background()
	n := 0
	locked := false
	defer func() {
		if locked {
			c.wmu.Unlock()
		}
	}()
	for {
		if ec != nil && n == 0 && ec.Backlogged() && !s.drainBacklog(c, ec) {
			return // its replies from the loop were not taken in time: see OutputLimits
		}
		if ec != nil && rd.Buffered() == 0 {
			ec.AtBoundary() // no frame is half read: the loop may answer what comes next
		}
		rd.SetAuthenticated(c.authed)
		args, tooLarge, err := readCommand(rd)
		if !locked { // held until this batch's replies are flushed: see client.wmu
			c.wmu.Lock()
			locked = true
		}
		if err != nil {
			s.endOnReadError(ctx, b, w, err)
			return
		}
		if b.r == nil {
			r := s.router.Load()
			if r == nil {
				w.Error("ERR the agent has no ring yet")
				w.Flush()
				continue
			}
			b.reset(r)
		}
		if tooLarge != nil {
			s.refuseTooLarge(b, c, tooLarge)
		} else {
			s.dispatch(ctx, b, c, w, args)
		}
		n++
		if rd.Buffered() == 0 || n >= c.batchLimit || c.quit {
			if !s.endBatch(ctx, b, c, w) {
				return
			}
			c.wmu.Unlock()
			locked = false
			n = 0
			b.r = nil // pick up a new ring epoch between batches
		}
	}
}

// readCommand reads the next command; one over the read limits comes back as tooLarge, read
// whole and dropped: it is refused and the connection goes on.
// survive ends a connection whose goroutine panicked instead of the agent every pod of the
// node uses: the panic is logged with its stack and counted (tests fail on any), and the
// connection closes as the deferred cleanup runs.
func (s *Server) survive() {
	if v := recover(); v != nil {
		s.Stats.Panics.Add(1)
		s.log.Error("a client connection's goroutine panicked; the connection is closed", "panic", v, "stack", string(debug.Stack()))
	}
}

// fdOf is a connection's file descriptor, -1 when it has none.
func fdOf(nc net.Conn) int {
	if ec, ok := nc.(*evloop.Conn); ok {
		return ec.Fd()
	}
	fd := -1
	if raw, ok := rawConn(nc); ok {
		_ = raw.Control(func(f uintptr) { fd = int(f) }) //nolint:gosec // a file descriptor fits
	}
	return fd
}

func readCommand(rd *resp.Reader) (args [][]byte, tooLarge *resp.TooLargeError, err error) {
	args, err = rd.ReadCommand()
	if err == nil {
		return args, nil, nil
	}
	var tl *resp.TooLargeError // here: errors.As takes its address, a heap allocation
	if errors.As(err, &tl) {
		return args, tl, nil
	}
	return nil, nil, err
}

// endBatch executes the batch and writes its replies and the client's pushes; false when the
// connection is to close (QUIT, or the client did not take its replies in time).
func (s *Server) endBatch(ctx context.Context, b *batch, c *client, w *resp.Writer) bool {
	b.flushTo(ctx, w)
	s.writePushes(c) // after the replies: none can overtake a reply it invalidates
	err := w.Flush()
	s.releaseOutput(c)
	if err != nil || c.quit {
		if err != nil && c.deadlineSet {
			s.Stats.OutputLimitClosed.Add(1) // over the soft limit for its time
		}
		return false
	}
	if c.deadlineSet { // set by exec for replies over the soft limit (outputlimit.go)
		_ = c.nc.SetWriteDeadline(time.Time{})
		c.deadlineSet = false
	}
	return true
}

// register creates the connection's client and makes it visible to CLIENT LIST and REDIRECT.
func (s *Server) register(nc net.Conn) *client {
	c := &client{id: s.clientIDs.Add(1), authed: s.password() == "", created: time.Now(),
		addr: nc.RemoteAddr().String(), laddr: nc.LocalAddr().String(), fd: fdOf(nc), nc: nc, done: make(chan struct{}),
		w: resp.NewWriter(bufio.NewWriterSize(nc, 16<<10))}
	c.proto.Store(2)
	c.multi.Store(-1)
	c.batchLimit = min(firstBatch, s.cfg.MaxBatch)
	c.lastAt.Store(c.created.UnixNano())
	s.mu.Lock()
	s.conns[nc] = c
	s.byID[c.id] = c
	s.mu.Unlock()
	return c
}

func (s *Server) unregister(nc net.Conn, c *client) {
	s.releaseOutput(c)
	c.unwatch()
	s.trackingOff(c)
	s.unsubscribeAll(c)
	close(c.done)
	s.mu.Lock()
	delete(s.conns, nc)
	delete(s.byID, c.id)
	s.mu.Unlock()
	nc.Close()
}

// endOnReadError answers what was read before a read error, and a malformed frame with an
// error reply; the connection then closes.
func (s *Server) endOnReadError(ctx context.Context, b *batch, w *resp.Writer, err error) {
	b.flushTo(ctx, w)
	var pe *resp.ProtocolError
	if errors.As(err, &pe) {
		s.Stats.ProtocolErrors.Add(1)
		w.Error("ERR " + pe.Error())
	}
	w.Flush()
}

// readLimits bound what one command may buffer: the largest value a policy allows (plus room
// for the other arguments), and in all four times that or 64 MiB. Longer arguments, up to
// Valkey's proto-max-bulk-len, are read and dropped so the client gets a clean error.
func (s *Server) readLimits() resp.Limits {
	l := resp.Limits{MaxArgs: s.cfg.MaxArgs, MaxBulkBytes: 1<<20 + 64<<10, MaxDiscardBytes: 512 << 20, MaxInline: 64 << 10}
	if r := s.router.Load(); r != nil {
		l.MaxBulkBytes = int(maxValueBytes(r.Doc)) + 64<<10
	}
	l.MaxCommandBytes = max(64<<20, 4*l.MaxBulkBytes)
	return l
}

// refuseTooLarge answers a command whose arguments were over the read limits; nothing runs.
func (s *Server) refuseTooLarge(b *batch, c *client, tl *resp.TooLargeError) {
	s.Stats.OversizeRejected.Add(1)
	var msg string
	switch {
	case !c.authed:
		msg = "NOAUTH Authentication required."
	case tl.Total:
		msg = fmt.Sprintf("ERR command of more than %d bytes exceeds the agent's limit", tl.Limit)
	case tl.Arg >= 2 && len(tl.Args) > 1:
		key := tl.Args[1]
		limit := b.rulesFor(key).MaxValueBytes
		if limit <= 0 {
			limit = tl.Limit
		}
		msg = fmt.Sprintf("ERR value of %d bytes for key '%s' exceeds the limit of %d bytes", tl.Size, truncate(key), limit)
	default:
		msg = fmt.Sprintf("ERR argument of %d bytes exceeds the limit of %d bytes", tl.Size, tl.Limit)
	}
	b.local(func(w *resp.Writer) { w.Error(msg) })
}

// flushTo executes what the batch holds, if anything.
func (b *batch) flushTo(ctx context.Context, w *resp.Writer) {
	if b.r == nil || len(b.replies) == 0 {
		return
	}
	b.exec(ctx, w)
}
