package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"slices"
	"time"
	"unsafe"

	"github.com/cachefleet/cachefleet/internal/cacheagent/codec"
	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/cacheagent/fence"
	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/cacheagent/upstream"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Forwarding on the loop, as twemproxy does: the GETs and SETs of plain keys that the loop reads
// go to shard connections the loop owns, one write per shard per turn, and their replies go
// back to the clients in order, one write per client per turn. No goroutine wakes on that path.
// Whatever needs more than the shard's plain reply (an L1 fill, a read-through, a replica, a
// switchover's held write) keeps the full path: it is never taken here, or it is re-run there.

// loopState is one loop's own: its shard connections and the replies due. Only its loop
// touches it.
type loopState struct {
	s    *Server
	loop *evloop.Loop
	iw   *inlineWriter
	// hw renders L1 hits answered behind forwarded requests (hitBehind) into hits.
	hw   *inlineWriter
	hits []byte
	ups  map[*router.Shard]*upstream.Conn
	// stores keep what the shard connections read as tracked reads (the tracking L1's misses).
	stores map[*router.Shard]*router.LoopStore
	keys   [][]byte // an invalidation's keys
	// dialing: shards being connected to, off the loop; failed: when a dial last failed.
	dialing map[*router.Shard]bool
	failed  map[*router.Shard]time.Time
	touched []*upstream.Conn // with requests to write at the end of the turn
	due     []*inlineConn    // with replies to write at the end of the turn
	r       *router.Router   // the ring the shard connections were last checked against
	swept   time.Time        // when they were last checked for replies overdue
	free    []*fwdReq
	frames  [maxLoopPipeline]frame // a read's frames (inline.go), kept: a new array per read is 5 KB to clear
	// A forwarded MGET's scratch (fanout.go): its keys' rules and L1 answers, its shards.
	mrules   [maxInlineMgetKeys]policy.Rules
	mhits    [maxInlineMgetKeys]pending
	mtracked [maxInlineMgetKeys]bool // misses read as tracked reads
	mshards  []int
	mups     [maxInlineMgetKeys]*upstream.Conn
}

func newLoopState(s *Server) *loopState {
	bw := bufio.NewWriterSize(nil, 16<<10)
	ls := &loopState{s: s, iw: &inlineWriter{bw: bw, w: resp.NewWriter(bw)},
		ups: map[*router.Shard]*upstream.Conn{}, stores: map[*router.Shard]*router.LoopStore{}, dialing: map[*router.Shard]bool{}, failed: map[*router.Shard]time.Time{}}
	hbw := bufio.NewWriterSize(sliceWriter{&ls.hits}, 4<<10)
	ls.hw = &inlineWriter{bw: hbw, w: resp.NewWriter(hbw)}
	return ls
}

// fwdReq is one forwarded command, from the client's read until its reply is written.
type fwdReq struct {
	ls      *loopState
	ic      *inlineConn
	r       *router.Router
	cmd     *command
	start   time.Time
	key     []byte
	val     []byte // a SET's value, kept for a re-run on the full path
	proto   int
	pc      *policyCounters
	reply   []byte // a reply that came before the ones ahead of it
	done    bool
	l1      bool // a read of an L1 key that missed: tracked (tr), or one the L1 did not admit
	tracked bool // a tracked read, until the PTTL's reply
	tr      trackedRead
	caching cachingReply
	tail    pttlReply
	// A forwarded MGET (fanout.go): its keys, and its parts' replies.
	keys [][]byte
	mget *mgetFwd
	// A GET's reply holding a value the agent encoded (fanout.go: finishOffLoop decodes it).
	encoded []byte
}

// trackedRead is a tracked read of a tracking L1's miss on a loop's connection: CLIENT CACHING
// YES, GET and PTTL. The GET's reply waits in got for the PTTL's, which decides what the
// connection's store keeps.
type trackedRead struct {
	st        *router.LoopStore
	up        *upstream.Conn
	ticket    fence.Ticket
	ttl       time.Duration
	got       []byte
	gotErr    error
	pushes    uint64 // the connection's pushes when the GET's reply came
	untracked bool   // CLIENT CACHING YES failed: no push would drop the copy
}

// send queues the read of key on up (get: the client's GET frame, or nil), taking the fence's
// ticket first.
func (t *trackedRead) send(st *router.LoopStore, up *upstream.Conn, key, get []byte, ttl time.Duration, caching, reply, tail upstream.Callback) {
	t.st, t.up, t.ttl = st, up, ttl
	t.ticket = st.Ticket(unsafe.String(unsafe.SliceData(key), len(key))) //nolint:gosec // a view for hashing only, never kept
	out := append(up.Out(), cachingYes...)
	if get != nil {
		out = append(out, get...)
	} else {
		out = appendCommand(out, "GET", key)
	}
	up.SetOut(appendCommand(out, "PTTL", key))
	up.Expect(caching)
	up.Expect(reply)
	up.Expect(tail)
}

// cachingDone takes CLIENT CACHING YES's reply: +OK, as tracking is on from Dial. Anything
// else leaves the read untracked, and its copy is not kept.
func (t *trackedRead) cachingDone(p []byte, err error) {
	t.untracked = err != nil || string(p) != "+OK\r\n"
}

// gotReply takes the GET's reply, which waits for the PTTL's.
func (t *trackedRead) gotReply(p []byte, err error) {
	t.got, t.gotErr, t.pushes = append(t.got[:0], p...), err, t.up.Pushes()
}

// keep takes the PTTL's reply: the GET's reply is kept unless the read was not tracked, an
// invalidation came between the two (it may be of this value), or the client's requests
// before it are being re-run.
func (t *trackedRead) keep(key string, pttl []byte, err error, rerunning bool) {
	if err == nil && t.gotErr == nil && !t.untracked && !rerunning && t.up.Pushes() == t.pushes {
		if v, ms, ok := keptRead(t.got, pttl); ok {
			t.st.Keep(t.ticket, key, v, t.ttl, ms)
		}
	}
}

// pttlReply takes a forwarded GET's tracked read's PTTL reply.
type pttlReply struct{ q *fwdReq }

func (t *pttlReply) Reply(p []byte, err error) { t.q.keep(p, err) }

// cachingReply takes a forwarded GET's tracked read's CLIENT CACHING YES reply.
type cachingReply struct{ q *fwdReq }

func (c *cachingReply) Reply(p []byte, err error) { c.q.tr.cachingDone(p, err) }

// redialAfter spaces out dials to a shard that refused one; meanwhile its requests take the
// full path, which has the breaker.
const redialAfter = time.Second

// upstreamFor is the loop's connection to sh, when sh is healthy and connected; otherwise nil,
// and a connection is on its way.
func (ls *loopState) upstreamFor(sh *router.Shard) *upstream.Conn {
	if !sh.Serving() { // down, or deletes to replay first
		return nil
	}
	if up := ls.ups[sh]; up != nil {
		return up
	}
	if ls.dialing[sh] || time.Since(ls.failed[sh]) < redialAfter {
		return nil
	}
	ls.dialing[sh] = true
	cfg := sh.Config()
	go func() {
		fd, err := upstream.Dial(context.Background(), cfg.Addr, cfg.Password, cfg.Timeout)
		ls.loop.Post(func() { ls.connected(sh, fd, err) })
	}()
	return nil
}

func (ls *loopState) connected(sh *router.Shard, fd int, err error) {
	delete(ls.dialing, sh)
	if err != nil {
		ls.failed[sh] = time.Now()
		return
	}
	if r := ls.s.router.Load(); r == nil || !inRing(r, sh) {
		upstream.CloseFd(fd)
		return
	}
	up := upstream.New(fd)
	if err := ls.loop.Watch(fd, func(ev uint32) { ls.onEvent(sh, up, ev) }); err != nil {
		upstream.CloseFd(fd)
		ls.failed[sh] = time.Now()
		return
	}
	ls.ups[sh] = up
	if st := sh.OpenLoopStore(); st != nil {
		ls.stores[sh] = st
		up.OnPush = func(p []byte) { ls.invalidate(st, p) }
	}
}

// invalidate applies a shard's invalidation push to what the loop's connection kept.
func (ls *loopState) invalidate(st *router.LoopStore, push []byte) {
	keys, all, ok := resp.Invalidated(push, ls.keys[:0])
	switch {
	case all:
		st.InvalidateAll()
	case ok:
		for _, k := range keys {
			st.Invalidate(string(k))
		}
	}
	clear(keys)
	ls.keys = keys[:0]
}

func inRing(r *router.Router, sh *router.Shard) bool {
	for _, s := range r.Shards {
		if s == sh {
			return true
		}
	}
	return false
}

// onEvent serves a shard connection's epoll events.
func (ls *loopState) onEvent(sh *router.Shard, up *upstream.Conn, ev uint32) {
	if ev&evloop.Writable != 0 {
		_ = up.Flush()
	}
	if ev&evloop.Readable != 0 {
		_ = up.OnReadable()
	}
	if up.Err() != nil {
		ls.drop(sh, up)
	}
}

// drop forgets a connection that ended; its requests have had their error.
func (ls *loopState) drop(sh *router.Shard, up *upstream.Conn) {
	if ls.ups[sh] == up {
		delete(ls.ups, sh)
		if st := ls.stores[sh]; st != nil {
			st.Close() // its invalidations came on up
			delete(ls.stores, sh)
		}
	}
	if err := up.Err(); !errors.Is(err, errRetired) && !errors.Is(err, io.EOF) {
		sh.Failed(err) // a close (a restart, CLIENT KILL) is for the full path's breaker to judge
	}
	ls.loop.Forget(up.Fd())
}

var errRetired = errors.New("the shard left the ring")

// errNoReply ends a connection to a shard that did not answer within its timeout.
var errNoReply = errors.New("no reply within the shard timeout")

// forward sends a GET or SET frame f to its shard on the loop, and reports whether it did.
func (ls *loopState) forward(ic *inlineConn, r *router.Router, f *frame, rules *policy.Rules) bool {
	if len(ic.queue) >= ic.window() {
		return false // the rest goes to the reader, which waits for the client to take replies
	}
	sh := r.ShardFor(f.key)
	up := ls.upstreamFor(sh)
	if up == nil {
		return false
	}
	l1Read := f.cmd == getCommand && plan.ForGet(rules, false, false).Keeps()
	st := ls.stores[sh]
	if l1Read && st == nil {
		return false
	}
	q := ls.newReq(ic, r, f, rules)
	q.l1 = l1Read
	switch {
	case l1Read && ls.s.counted(sh.Admit(f.key)):
		q.tracked = true
		q.tr.send(st, up, q.key, f.raw, rules.L1TTL, &q.caching, q, &q.tail)
	case f.cmd == getCommand:
		up.Send(q, f.raw)
	default:
		up.SetOut(appendSet(up.Out(), f, rules))
		up.Expect(q)
		if ls.s.tracking.Active() {
			ls.s.tracking.Writing(ic.c.id, string(f.key))
		}
		if plan.AnnouncesWrites(rules) {
			ls.s.announce(ic.c.id, string(f.key))
		}
	}
	ls.touch(up)
	ic.queue = append(ic.queue, q)
	ic.ec.Hold()
	ic.c.began(f.cmd, nil, q.start)
	ls.s.Stats.LoopForwards.Add(1)
	return true
}

// A connection's forwarded requests awaiting their replies are bounded by a window that
// starts at firstWindow, doubles up to maxForwardsInFlight while replies are small, and falls
// to one request while they are large: a client that pipelines reads of large values and
// does not read the replies makes the shards send little for it before the output limits
// judge it.
const (
	firstWindow         = 8
	maxForwardsInFlight = 32
	largeReply          = 64 << 10
)

// window is how many forwarded requests the connection may have in flight.
func (ic *inlineConn) window() int {
	if ic.win == 0 {
		ic.win = firstWindow
	}
	return ic.win
}

// sized adapts the window to replies of n bytes in all answering released requests.
func (ic *inlineConn) sized(n, released int) {
	if released == 0 {
		return
	}
	if n/released > largeReply {
		ic.win = 1
	} else {
		ic.win = min(max(ic.window()*2, firstWindow), maxForwardsInFlight)
	}
}

// touch has up's requests written at the end of the turn.
func (ls *loopState) touch(up *upstream.Conn) {
	if !slices.Contains(ls.touched, up) {
		ls.touched = append(ls.touched, up)
	}
}

// hitBehind answers GET f from the L1 behind the client's forwarded requests, its reply in its
// place among theirs; false, with nothing done, on a miss. Not while a forwarded SET of the key
// waits for its reply (the copy may be older than the write), nor while the client's requests
// are re-run on the full path (its reads follow them there).
func (ls *loopState) hitBehind(ic *inlineConn, r *router.Router, f *frame, rules *policy.Rules) bool {
	if len(ic.rerun) > 0 || ic.writes(f.key) {
		return false
	}
	b := ic.b
	if !ls.s.inlineGet(b, ic.c, f.key, rules) {
		return false
	}
	p := &b.replies[len(b.replies)-1]
	hit := ls.render(p, ic.c.w.Proto)
	ls.s.Stats.count(getCommand, false)
	ls.s.Stats.latency.Observe(time.Since(p.start).Seconds())
	b.replies = b.replies[:len(b.replies)-1]
	q := ls.newReq(ic, r, f, rules)
	ic.queue = append(ic.queue, q)
	ic.ec.Hold()
	ls.complete(q, hit)
	return true
}

// render is an L1 hit's reply in proto, valid until the next render.
func (ls *loopState) render(p *pending, proto int) []byte {
	ls.hits = ls.hits[:0]
	ls.hw.w.Proto = proto
	p.writeLocal(ls.hw.w)
	_ = ls.hw.w.Flush()
	return ls.hits
}

// writes reports whether a SET of key is among ic's forwarded requests.
func (ic *inlineConn) writes(key []byte) bool {
	for _, q := range ic.queue {
		if q.cmd == setCommand && string(q.key) == string(key) {
			return true
		}
	}
	return false
}

func (ls *loopState) newReq(ic *inlineConn, r *router.Router, f *frame, rules *policy.Rules) *fwdReq {
	var q *fwdReq
	if n := len(ls.free); n > 0 {
		q, ls.free = ls.free[n-1], ls.free[:n-1]
	} else {
		q = &fwdReq{ls: ls}
		q.tail.q, q.caching.q = q, q
	}
	q.ic, q.r, q.cmd, q.start, q.proto = ic, r, f.cmd, time.Now(), ic.c.w.Proto
	q.key = append(q.key[:0], f.key...)
	q.val = append(q.val[:0], f.val...)
	q.pc = ls.s.Stats.forPolicy(rules.Name)
	return q
}

// appendSet appends SET key value to out, with the expiry a write without one is given
// (writeExpiry).
func appendSet(out []byte, f *frame, rules *policy.Rules) []byte {
	px := plan.WriteExpiry(rules)
	if px == nil {
		return append(out, f.raw...)
	}
	out = append(out, "*5\r\n$3\r\nSET\r\n"...)
	out = resp.AppendBulk(out, f.key)
	out = resp.AppendBulk(out, f.val)
	out = append(out, "$2\r\nPX\r\n"...)
	return resp.AppendBulk(out, px)
}

// cachingYes makes the next command on a loop's connection a tracked read.
var cachingYes = []byte("*3\r\n$6\r\nCLIENT\r\n$7\r\nCACHING\r\n$3\r\nYES\r\n")

// appendCommand appends a command of one key.
func appendCommand(out []byte, name string, key []byte) []byte {
	return resp.AppendBulk(resp.AppendBulkString(resp.AppendArray(out, 2), name), key)
}

var (
	nullRESP2 = []byte("$-1\r\n")
	nullRESP3 = []byte("_\r\n")
)

// Reply takes the shard's reply to q (or the error that ended its connection), on the loop.
func (q *fwdReq) Reply(p []byte, err error) {
	if q.tracked { // a tracked read's GET: its PTTL comes next
		q.tr.gotReply(p, err)
		return
	}
	s := q.ls.s
	isGet := q.cmd == getCommand
	switch {
	case isGet && err != nil && time.Since(q.start) >= q.r.ShardFor(q.key).Config().Timeout:
		// It waited its shard's timeout (no reply, or a node cut off: an unreachable host after
		// ARP gave up): a down shard reads as a miss, as on the full path (onShardDown). Run again
		// there, the read would wait a second timeout.
		p = nullRESP3
	case err != nil && isGet, err == nil && p[0] == '-' && fullPathReply(p, isGet):
		q.ls.fullPath(q) // a replica, a retry: the full path knows
		return
	case isGet && len(q.ic.rerun) > 0:
		// A request of this client before it is being re-run (a write held for a new primary):
		// this read may have missed its effect, and is read again after it.
		q.ls.fullPath(q)
		return
	case err != nil: // a write whose fate is unknown, as on the full path
		sh := q.r.ShardFor(q.key)
		p = []byte("-" + (&router.DownError{Shard: sh.Name(), Err: err}).Error() + "\r\n")
	}
	if isGet {
		miss := string(p) == string(nullRESP3) // the loop's connections speak RESP3
		if q.l1 {
			s.missL1(q.pc)
		}
		s.countRead(miss, q.pc)
		if fullPathReply(p, true) {
			// A value the agent encoded: decoded off the loop as it was read in its turn (read
			// again on the full path, it could show a write the client sent after the GET).
			q.encoded = append(q.encoded[:0], p...)
			q.ls.fullPath(q)
			return
		}
		if miss && q.proto < 3 {
			p = nullRESP2
		}
	} else {
		s.settleBy(q.r, q.ic.c.id, string(q.key))
	}
	s.Stats.count(q.cmd, p[0] == '-')
	s.Stats.latency.Observe(time.Since(q.start).Seconds())
	q.ls.complete(q, p)
}

// keep takes a tracked read's PTTL reply (trackedRead.keep), then answers the GET.
func (q *fwdReq) keep(p []byte, err error) {
	q.tracked = false
	q.tr.keep(string(q.key), p, err, len(q.ic.rerun) > 0)
	q.Reply(q.tr.got, q.tr.gotErr)
}

// keptRead reads a tracked read's replies (RESP3): the GET's value or miss, to keep, and the
// key's server TTL in milliseconds (negative for none); false for anything not to keep: an
// error, a value the agent encoded (the full path decodes it).
func keptRead(get, pttl []byte) (router.Kept, int64, bool) {
	ms, isInt := resp.IntValue(pttl)
	switch {
	case !isInt || fullPathReply(get, true):
		return router.Kept{}, 0, false
	case string(get) == string(nullRESP3):
		return router.Kept{Nil: true}, ms, true
	case get[0] == '$':
		return router.Kept{Val: string(resp.BulkValue(get))}, ms, true
	}
	return router.Kept{}, 0, false
}

// fullPathReply reports whether a shard's reply needs the full path: errors that say the shard
// is not serving (the full path reads a replica, or holds a write for the new primary), and
// values the agent encoded (compressed, stamped or marked absent).
func fullPathReply(p []byte, isGet bool) bool {
	if p[0] == '-' {
		return hasPrefix(p, "-LOADING") || hasPrefix(p, "-READONLY") || hasPrefix(p, "-CLUSTERDOWN")
	}
	v := resp.BulkValue(p)
	return isGet && len(v) > 0 && v[0] == codec.ReservedByte
}

func hasPrefix(p []byte, prefix string) bool {
	return len(p) >= len(prefix) && string(p[:len(prefix)]) == prefix
}

// fullPath runs q's command again on the full path, after the client's requests already
// there: on a goroutine, one at a time, each reply back to the loop in its request's place.
func (ls *loopState) fullPath(q *fwdReq) {
	ic := q.ic
	ic.rerun = append(ic.rerun, q)
	if len(ic.rerun) == 1 {
		ls.rerun(q)
	}
}

func (ls *loopState) rerun(q *fwdReq) {
	if q.encoded != nil || q.mget != nil {
		ls.finishOffLoop(q)
		return
	}
	r, cid := ls.ring(q), q.ic.c.id
	args := [][]byte{[]byte(q.cmd.name), q.key}
	if q.cmd == setCommand {
		args = append(args, q.val)
	}
	go func() {
		out := ls.s.runFullPath(r, cid, q.cmd, args, q.proto, q.start)
		ls.loop.Post(func() { ls.reran(q, out) })
	}()
}

// ring is the ring a re-run of q reads: the current one, or q's if there is none.
func (ls *loopState) ring(q *fwdReq) *router.Router {
	if r := ls.s.router.Load(); r != nil {
		return r
	}
	return q.r
}

// runFullPath runs one command of client cid on the full path, off the loop, and returns its
// reply in proto. With a start time the request is counted, as the full path counts it.
func (s *Server) runFullPath(r *router.Router, cid int64, cmd *command, args [][]byte, proto int, start time.Time) []byte {
	var out []byte
	w := resp.NewWriter(bufio.NewWriterSize(sliceWriter{&out}, 512))
	w.Proto = proto
	ctx := context.Background()
	b := &batch{s: s, cid: cid}
	b.reset(r)
	b.cmd, b.class = cmd, cmd.class
	cmd.handler(ctx, s, b, nil, w, args)
	if !start.IsZero() {
		b.tagFrom(0, cmd, start) // counted by exec
	}
	b.exec(ctx, w)
	_ = w.Flush()
	return out
}

// reran answers q, re-run, in its place, and starts the client's next re-run.
func (ls *loopState) reran(q *fwdReq, out []byte) {
	ic := q.ic
	n := copy(ic.rerun, ic.rerun[1:])
	ic.rerun[n] = nil
	ic.rerun = ic.rerun[:n]
	ls.complete(q, out)
	if len(ic.rerun) > 0 {
		ls.rerun(ic.rerun[0])
	}
}

// sliceWriter appends to a byte slice.
type sliceWriter struct{ p *[]byte }

func (w sliceWriter) Write(p []byte) (int, error) {
	*w.p = append(*w.p, p...)
	return len(p), nil
}

// complete puts q's reply in its place: written at the end of the turn with those before it,
// or kept until they have come.
func (ls *loopState) complete(q *fwdReq, reply []byte) {
	ic := q.ic
	if ic.queue[0] != q {
		q.reply, q.done = append(q.reply[:0], reply...), true
		return
	}
	ic.out = append(ic.out, reply...)
	ls.pop(ic)
	for len(ic.queue) > 0 && ic.queue[0].done {
		ic.out = append(ic.out, ic.queue[0].reply...)
		ls.pop(ic)
	}
	if !ic.due {
		ic.due = true
		ls.due = append(ls.due, ic)
	}
}

func (ls *loopState) pop(ic *inlineConn) {
	q := ic.queue[0]
	n := copy(ic.queue, ic.queue[1:])
	ic.queue[n] = nil
	ic.queue = ic.queue[:n]
	ic.released++
	q.ic, q.r, q.done, q.pc, q.l1, q.tracked = nil, nil, false, nil, false, false
	q.tr = trackedRead{got: q.tr.got[:0]}
	clear(q.keys)
	q.keys, q.mget, q.encoded = q.keys[:0], nil, nil
	if cap(q.tr.got) > 4<<10 {
		q.tr.got = nil
	}
	if cap(q.reply) > 4<<10 {
		q.reply = nil
	}
	if cap(q.val) > 4<<10 {
		q.val = nil
	}
	ls.free = append(ls.free, q)
}

// turn ends a round of the loop: requests go to the shards, replies to the clients, and a
// shard that stopped answering ends its connection. It returns how long the loop may wait.
func (ls *loopState) turn() int {
	held := ls.touched[:0]
	for _, up := range ls.touched {
		if up.InFlight() {
			held = append(held, up) // written when the batch ahead of it is answered
			continue
		}
		_ = up.Flush() // an error shows on the connection's next event
	}
	clear(ls.touched[len(held):])
	ls.touched = held
	wait := -1
	if len(ls.ups) > 0 {
		wait = ls.check() // before the replies: a connection it ends answers its requests
	}
	due := ls.due[:0]
	for _, ic := range ls.due {
		if !ls.writeDue(ic) {
			due = append(due, ic) // its writer is busy: again next turn
			wait = 1
		}
	}
	ls.due = due
	return wait
}

// check sweeps the shard connections when the ring changed or a while has passed, and returns
// how long the loop may wait: until the next sweep while requests wait for replies.
func (ls *loopState) check() int {
	now := time.Now()
	if r := ls.s.router.Load(); r != ls.r || now.Sub(ls.swept) >= stallCheck {
		ls.r, ls.swept = r, now
		ls.sweep(r, now)
	}
	for _, up := range ls.ups {
		if up.Pending() > 0 {
			return int(stallCheck / time.Millisecond)
		}
	}
	return -1
}

// writeDue writes ic's replies, then lets its reader have the connection if it is waiting for
// them; false if the connection's writer was busy.
func (ls *loopState) writeDue(ic *inlineConn) bool {
	if !ic.c.wmu.TryLock() {
		return false
	}
	_, err := ic.ec.WriteNoWait(ic.out)
	ic.c.wmu.Unlock()
	if errors.Is(err, evloop.ErrWriteBusy) {
		return false
	}
	ic.sized(len(ic.out), ic.released)
	ic.out, ic.due = ic.out[:0], false
	if cap(ic.out) > 64<<10 {
		ic.out = nil
	}
	for ; ic.released > 0; ic.released-- {
		ic.ec.Release()
	}
	return true
}

// stallCheck is how often the loop looks for shards that stopped answering while requests wait.
const stallCheck = 50 * time.Millisecond

// sweep ends connections to shards that left the ring (once idle) and to shards that stopped
// answering.
func (ls *loopState) sweep(r *router.Router, now time.Time) {
	for sh, up := range ls.ups {
		switch {
		case (r == nil || !inRing(r, sh)) && up.Pending() == 0:
			up.Fail(errRetired)
		case up.Stalled(now, sh.Config().Timeout):
			up.Fail(errNoReply)
		}
		if up.Err() != nil {
			ls.drop(sh, up)
		}
	}
}
