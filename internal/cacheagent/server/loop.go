package server

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// The event loop (evloop) reads the connections whose goroutines wait for a command, and
// answers here, on the loop, the GETs the L1 holds, and forwards plain GETs and SETs to the
// shards (forward.go): no goroutine wakes for them. Anything else, from the first command the
// loop does not take, goes to the connection's goroutine.

// inlineConn is what the loop's handler needs of a connection.
type inlineConn struct {
	c  *client
	b  *batch // the goroutine's batch: it is idle while the goroutine waits for input
	ec *evloop.Conn
	// Forwarded commands (forward.go), the loop's alone: those whose replies are due, in the
	// client's order; the replies to write at the end of the turn (due), and how many
	// commands they answer (released).
	queue    []*fwdReq
	rerun    []*fwdReq // those going through the full path, one after the other (forward.go)
	out      []byte
	due      bool
	released int
	win      int // forwarded requests it may have in flight (window), the loop's alone
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
		for range s.loopCount() {
			ls := newLoopState(s)
			l, err := evloop.New(func(ec *evloop.Conn, data []byte) int { return s.answerInline(ls, ec, data) })
			if err != nil {
				s.loopErr = err
				return
			}
			ls.loop = l
			l.OnTurn(ls.turn)
			s.loops = append(s.loops, l)
		}
	})
	return s.loopErr
}

// loopCount is how many event loops StartLoops starts.
func (s *Server) loopCount() int {
	if runtime.GOMAXPROCS(0) < 2 {
		return 0
	}
	return s.cfg.EventLoops
}

// adopt moves an accepted TCP connection onto a loop.
func (s *Server) adopt(nc net.Conn) (net.Conn, error) {
	tc, ok := nc.(*net.TCPConn)
	if len(s.loops) == 0 || !ok {
		return nc, nil
	}
	_ = tc.SetNoDelay(true)
	ec, err := s.loops[s.adopted.Add(1)%int64(len(s.loops))].Adopt(tc)
	if err != nil {
		return nil, err
	}
	ec.MaxBacklog, ec.SoftBacklog, ec.SoftFor = int(s.cfg.Output.HardBytes), int(s.cfg.Output.SoftBytes), s.cfg.Output.SoftFor
	return ec, nil
}

// answerInline answers the commands at the start of data that the loop can (L1 hits here,
// forwarded GETs and SETs: forward.go), and returns how many bytes they took. It takes nothing
// from a connection in any state but the plain one (not authenticated, in a transaction,
// tracking, subscribed, quitting), nor while its writer is busy or has replies still to write:
// those replies would be overtaken.
func (s *Server) answerInline(ls *loopState, ec *evloop.Conn, data []byte) int {
	ic, ok := ec.Context.(*inlineConn)
	if !ok {
		return 0
	}
	c, b := ic.c, ic.b
	if !c.wmu.TryLock() {
		return 0
	}
	defer c.wmu.Unlock()
	if !c.authed || c.tx != nil || c.track != nil || c.quit || c.replyOff || c.skipNext || c.subscribed.Load() || ec.Backlogged() {
		return 0
	}
	frames := &ls.frames
	n, deep := scanFrames(data, frames)
	r := s.router.Load()
	if r == nil || n == 0 || deep {
		return 0
	}
	b.reset(r)
	warming := r.Warming()
	used, hits, counted := 0, 0, 0
	for i := range frames[:n] {
		if hits += b.hitBytes(counted); hits > loopReplyBudget {
			break // the rest waits for the reader, which writes as the client takes them
		}
		counted = len(b.replies)
		f := &frames[i]
		if f.cmd == mgetCommand { // answered whole by the L1 with no reply due before it, or forwarded
			if (len(ic.queue) > 0 || ic.due || !s.inlineMget(b, c, r, f)) && (warming || !ls.forwardMget(ic, r, f)) {
				break
			}
			used += len(f.raw)
			continue
		}
		rules := policy.For(r.Doc, f.key)
		// A hit is written now, or, behind replies still due, in its place among them.
		hit := false
		if f.cmd == getCommand && rules.L1 {
			if len(ic.queue) == 0 && !ic.due {
				hit = s.inlineGet(b, c, f.key, &rules)
			} else {
				hit = ls.hitBehind(ic, r, f, &rules)
			}
		}
		if !hit && (warming || !forwardable(f, &rules) || !ls.forward(ic, r, f, &rules)) {
			break
		}
		used += len(f.raw)
	}
	if len(b.replies) > 0 {
		ls.iw.bw.Reset(noWait{ec})
		ls.iw.w.Proto, ls.iw.w.Errors = c.w.Proto, 0
		b.exec(context.Background(), ls.iw.w)
		_ = ls.iw.w.Flush() // an error is the goroutine's to see, on its next read
	}
	b.r = nil
	return used
}

// loopReplyBudget bounds the L1 hits the loop answers from one read: the loop cannot wait for
// a client to take its replies, so a pipeline of large hits goes on in the connection's
// reader, whose writes wait (and stop it reading more) while the client does not read.
const loopReplyBudget = 1 << 20

// hitBytes is the size of the L1 hits the batch holds from reply from on.
func (b *batch) hitBytes(from int) int {
	n := 0
	for i := from; i < len(b.replies); i++ {
		switch p := &b.replies[i]; p.hit {
		case keptHit:
			n += len(p.kept.Val)
		case copyHit:
			n += len(p.copyVal)
		}
	}
	return n
}

// forwardable reports whether the loop executes f as planned (package plan): the shard's reply is
// the whole answer, with at most a tracked read's copy to keep. A ring being warmed up reads
// and drops keys' previous owners: the goroutine path does that.
func forwardable(f *frame, rules *policy.Rules) bool {
	if f.cmd == getCommand {
		return plan.LoopRunsGet(rules, plan.ForGet(rules, false, false))
	}
	return plan.LoopSendsSet(rules, f.val)
}

// inlineGet answers GET key from the L1, as dispatch and cmdGet would; false on a miss, with
// nothing done.
func (s *Server) inlineGet(b *batch, c *client, key []byte, rules *policy.Rules) bool {
	pc := s.Stats.forPolicy(rules.Name)
	t0 := time.Now()
	if !b.answerFromL1(s, key, rules, pc, t0) {
		return false
	}
	s.Stats.LoopHits.Add(1)
	c.began(getCommand, nil, t0)
	b.tagFrom(len(b.replies)-1, getCommand, t0)
	return true
}

// inlineMget answers MGET from the L1 when it holds every key, as cmdMget would: an array
// header, then each key's hit, the command counted on the header. False, with nothing done, when
// it lacks one.
func (s *Server) inlineMget(b *batch, c *client, r *router.Router, f *frame) bool {
	t0 := time.Now()
	from := len(b.replies)
	b.replies = append(b.replies, pending{hit: arrayHead, arrayLen: len(f.keys), cmd: mgetCommand, start: t0})
	var counters [maxInlineMgetKeys]*policyCounters
	for j, key := range f.keys {
		rules := policy.For(r.Doc, key)
		p, ok := pending{}, false
		if rules.L1 {
			p, ok = b.lookupL1(s, key, &rules, t0)
		}
		if !ok {
			clear(b.replies[from:])
			b.replies = b.replies[:from]
			return false
		}
		counters[j] = s.Stats.forPolicy(rules.Name)
		b.replies = append(b.replies, p)
	}
	for _, pc := range counters[:len(f.keys)] {
		s.hitL1(pc)
	}
	s.Stats.LoopHits.Add(int64(len(f.keys)))
	c.began(mgetCommand, nil, t0)
	return true
}

// frame is one GET, SET or MGET command at the start of a read, as redis clients send it.
type frame struct {
	cmd      *command // a command with a loop shape
	key, val []byte
	keys     [][]byte // an MGET's (key is the first)
	raw      []byte   // the whole frame
}

// maxInlineMgetKeys bounds the MGETs the loop answers; larger ones take the full path.
const maxInlineMgetKeys = 64

// scanFrame matches one complete frame at the start of p of a command the loop runs, in its
// table row's loop shape ("GET key", "SET key value", "MGET key..."); false for anything else
// (left to the full parser).
func scanFrame(p []byte, f *frame) (ok bool) {
	if len(p) < 4+9+4 || p[0] != '*' {
		return false
	}
	args, i := 0, 1
	for ; i < 3 && p[i] >= '0' && p[i] <= '9'; i++ { // at most two digits
		args = args*10 + int(p[i]-'0')
	}
	if i == 1 || p[i] != '\r' || p[i+1] != '\n' {
		return false
	}
	name, i := resp.BulkAt(p, i+2, maxLoopName)
	if f.cmd = loopCommand(name); f.cmd == nil {
		return false
	}
	switch f.cmd.loop {
	case loopKey:
		ok = args == 2
	case loopKeyValue:
		ok = args == 3
	case loopKeys:
		ok = args >= 2 && args-1 <= maxInlineMgetKeys
	}
	if !ok {
		return false
	}
	if f.key, i = resp.BulkAt(p, i, maxInlineKey); f.key == nil {
		return false
	}
	f.val, f.keys = nil, f.keys[:0]
	switch f.cmd.loop {
	case loopKeys:
		f.keys = append(f.keys, f.key)
		for range args - 2 {
			var key []byte
			if key, i = resp.BulkAt(p, i, maxInlineKey); key == nil {
				return false
			}
			f.keys = append(f.keys, key)
		}
	case loopKeyValue:
		if f.val, i = resp.BulkAt(p, i, len(p)); f.val == nil {
			return false
		}
	}
	f.raw = p[:i]
	return true
}

// maxLoopName bounds the names the scanner looks up: longer ones are no loop command's.
const maxLoopName = 8

// loopCommand is the command named name when the event loop runs it (its table row has a loop
// shape); nil otherwise. Names are matched without case and without allocating.
func loopCommand(name []byte) *command {
	if name == nil || len(name) > maxLoopName {
		return nil
	}
	var lower [maxLoopName]byte
	for i, ch := range name {
		lower[i] = ch | 0x20 // letters only in loop commands' names; others never match
	}
	if cmd := commandTable[string(lower[:len(name)])]; cmd != nil && cmd.loop != loopNone {
		return cmd
	}
	return nil
}

// scanFrames finds the GET and SET frames data starts with, up to maxLoopPipeline of them, and
// reports whether there are more.
func scanFrames(data []byte, frames *[maxLoopPipeline]frame) (n int, deep bool) {
	off := 0
	for {
		if n == len(frames) {
			var f frame
			return n, scanFrame(data[off:], &f)
		}
		if !scanFrame(data[off:], &frames[n]) {
			return n, false
		}
		off += len(frames[n].raw)
		n++
	}
}

// maxLoopPipeline is the deepest pipeline the loop takes. Deep pipelines of L1 hits stay on the
// loop too: side by side, -P 16 GETs of 100 hot keys cost 0.85-1.0 µs of CPU each there
// (0.96-1.1M req/s), against 1.45-1.55 µs (645-680k req/s) handed to the goroutines, and
// random keys with half of them kept, 3.0-3.15 µs against 3.9-4.3.
const maxLoopPipeline = 64

// maxInlineKey bounds the keys the loop answers; longer ones take the full path.
const maxInlineKey = 1 << 12
