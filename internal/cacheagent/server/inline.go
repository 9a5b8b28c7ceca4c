package server

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/cacheagent/resp"
)

// The event loop (evloop) reads the connections whose goroutines wait for a command, and
// answers here, on the loop, the GETs the L1 holds: no goroutine wakes for an L1 hit. Anything
// else, from the first command this does not answer, goes to the connection's goroutine.

// inlineConn is what the loop's handler needs of a connection.
type inlineConn struct {
	c *client
	b *batch // the goroutine's batch: it is idle while the goroutine waits for input
}

// inlineWriter writes a loop's replies; a loop runs one handler at a time.
type inlineWriter struct {
	bw *bufio.Writer
	w  *resp.Writer
}

// noWait is a connection the loop writes to without waiting for a full socket to drain.
type noWait struct{ c *evloop.Conn }

func (n noWait) Write(p []byte) (int, error) { return n.c.WriteNoWait(p) }

// StartLoops starts the event loops, each with its share of the connections; Serve does it
// too. Without them (EventLoops 0, one thread, or the error: not Linux) connections are read by
// their goroutines alone. On one thread (--procs=1) the netpoller is already a single event
// loop, and a loop waiting in epoll_wait would hold the only thread: measured side by side, it
// saved nothing on L1 hits there and cost up to 57 ms of p99.
func (s *Server) StartLoops() error {
	s.loopOnce.Do(func() {
		if runtime.GOMAXPROCS(0) < 2 {
			return
		}
		for range s.cfg.EventLoops {
			bw := bufio.NewWriterSize(nil, 16<<10)
			iw := &inlineWriter{bw: bw, w: resp.NewWriter(bw)}
			l, err := evloop.New(func(ec *evloop.Conn, data []byte) int { return s.answerInline(iw, ec, data) })
			if err != nil {
				s.loopErr = err
				return
			}
			s.loops = append(s.loops, l)
		}
	})
	return s.loopErr
}

// adopt moves an accepted TCP connection onto a loop while the ring has an L1; other
// connections stay with their goroutines. Without an L1 a loop could answer nothing, and
// handing every request from the loop to a goroutine costs more than the goroutine's own read.
func (s *Server) adopt(nc net.Conn) (net.Conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if r := s.router.Load(); len(s.loops) == 0 || !ok || r == nil || !r.Doc.Tiers.L1Enabled {
		return nc, nil
	}
	_ = tc.SetNoDelay(true)
	return s.loops[s.adopted.Add(1)%int64(len(s.loops))].Adopt(tc)
}

// answerInline answers the GETs at the start of data that the L1 holds, and returns how many
// bytes they took. It answers nothing for a connection in any state but the plain one (not
// authenticated, in a transaction, tracking, subscribed, quitting), nor while its writer is
// busy or has replies still to write: those replies would be overtaken.
func (s *Server) answerInline(iw *inlineWriter, ec *evloop.Conn, data []byte) int {
	ic, ok := ec.Context.(*inlineConn)
	if !ok {
		return 0
	}
	c, b := ic.c, ic.b
	if !c.wmu.TryLock() {
		return 0
	}
	defer c.wmu.Unlock()
	if !c.authed || c.tx != nil || c.track != nil || c.quit || c.subscribed.Load() || ec.Backlogged() {
		return 0
	}
	var gets [maxInlinePipeline]getFrame
	n, deep := scanGets(data, &gets)
	r := s.router.Load()
	if r == nil || n == 0 || deep {
		return 0
	}
	b.reset(r)
	used := 0
	for _, g := range gets[:n] {
		if !s.inlineGet(b, c, g.key) {
			break
		}
		used += g.size
	}
	if len(b.replies) > 0 {
		iw.bw.Reset(noWait{ec})
		iw.w.Proto, iw.w.Errors = c.w.Proto, 0
		b.exec(context.Background(), iw.w)
		_ = iw.w.Flush() // an error is the goroutine's to see, on its next read
	}
	b.r = nil
	return used
}

// inlineGet answers GET key from the L1, as dispatch and cmdGet would; false on a miss, with
// nothing done.
func (s *Server) inlineGet(b *batch, c *client, key []byte) bool {
	rules := b.rulesFor(key)
	if !rules.L1 {
		return false
	}
	pc := s.Stats.forPolicy(rules.Name)
	t0 := time.Now()
	if !b.answerFromL1(s, key, &rules, pc) {
		return false
	}
	s.Stats.LoopHits.Add(1)
	c.began(getCommand, t0)
	b.tagFrom(len(b.replies)-1, getCommand, t0)
	return true
}

// scanGet matches one complete "GET key" frame, as redis clients send it, at the start of p:
// the key and the frame's size, or size 0 for anything else (left to the full parser).
func scanGet(p []byte) (key []byte, size int) {
	const head = "*2\r\n$3\r\n"
	if len(p) < len(head)+5+4 || string(p[:len(head)]) != head {
		return nil, 0
	}
	g := p[len(head):]
	if g[0]|0x20 != 'g' || g[1]|0x20 != 'e' || g[2]|0x20 != 't' || g[3] != '\r' || g[4] != '\n' || g[5] != '$' {
		return nil, 0
	}
	i := len(head) + 6
	n := 0
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		n = n*10 + int(p[i]-'0')
		if n > maxInlineKey {
			return nil, 0
		}
	}
	if i == len(head)+6 || i+2 > len(p) || p[i] != '\r' || p[i+1] != '\n' {
		return nil, 0
	}
	i += 2
	if i+n+2 > len(p) || p[i+n] != '\r' || p[i+n+1] != '\n' {
		return nil, 0
	}
	return p[i : i+n], i + n + 2
}

// getFrame is one GET frame at the start of a read: its key and its size in bytes.
type getFrame struct {
	key  []byte
	size int
}

// scanGets finds the GET frames data starts with, up to maxInlinePipeline of them, and reports
// whether there are more. The loop runs on one thread; a deep pipeline of hits is answered
// faster by the connection's goroutine, while the loop reads the next connection on another
// thread (-P 16 hits: 807-885k req/s through goroutines, 694-704k through one loop, side by side).
func scanGets(data []byte, gets *[maxInlinePipeline]getFrame) (n int, deep bool) {
	off := 0
	for {
		key, size := scanGet(data[off:])
		if size == 0 {
			return n, false
		}
		if n == len(gets) {
			return n, true
		}
		gets[n] = getFrame{key: key, size: size}
		n++
		off += size
	}
}

// maxInlinePipeline is the deepest pipeline the loop answers itself.
const maxInlinePipeline = 4

// maxInlineKey bounds the keys the loop answers; longer ones take the full path.
const maxInlineKey = 1 << 12
