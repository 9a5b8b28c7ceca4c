package server

import (
	"strconv"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/plan"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Forwarded MGETs: an MGET the L1 cannot answer whole is split by shard, as twemproxy splits it:
// the kept keys are answered from the L1, and each shard's share of the rest is read on the
// loop's connection to it, as the full path reads it (mgetCopies): as tracked reads (CLIENT
// CACHING YES, GET, PTTL, as a forwarded GET's) that are kept when every key of the share is a
// tracking-L1 key the admission takes, else with one MGET. The reply is put together in the
// client's order when every shard has answered. An MGET that needs more than the shards' values
// takes the full path: a key with an origin or a compressing policy, a ring being warmed up.
// Once the shards answered, the keys of a shard that did not serve them are read again on the
// full path, and values the agent encoded are decoded off the loop, as read (finishOffLoop).

// mgetFwd is a forwarded MGET: each key's reply element, from the L1 or its shard.
type mgetFwd struct {
	q       *fwdReq
	elems   [][]byte // by position: the element written for the key
	waiting int      // shard replies still to come
	failed  []byte   // a shard's error reply, which answers the whole MGET
	redo    []int    // positions the full path reads again: their shard did not serve them
	decode  bool     // some element holds a value the agent encoded
}

// mgetPart takes one shard's reply to its share of the keys.
type mgetPart struct {
	m   *mgetFwd
	pos []int // the positions of the shard's keys
}

// forwardMget forwards MGET f on the loop, and reports whether it did; false, with nothing
// done, for an MGET the full path must answer.
func (ls *loopState) forwardMget(ic *inlineConn, r *router.Router, f *frame) bool {
	if len(ic.rerun) > 0 || len(ic.queue) >= ic.window() {
		return false // its reads follow the requests being re-run, there; or too many wait
	}
	b, s := ic.b, ls.s
	t0 := time.Now()
	rules, hits, tracked := ls.mrules[:len(f.keys)], ls.mhits[:len(f.keys)], ls.mtracked[:len(f.keys)]
	for pos, key := range f.keys {
		rules[pos], hits[pos], tracked[pos] = policy.For(r.Doc, key), pending{}, false
		rl := &rules[pos]
		if rl.Origin != nil || rl.Encoded() { // read through, or a value to decode
			return false
		}
		if !rl.L1 {
			continue
		}
		if !ic.writes(key) { // a forwarded SET of the key ahead of it: the shard answers
			if p, ok := b.lookupL1(s, key, rl, t0); ok {
				hits[pos] = p
				continue
			}
		}
	}
	shards, positions := ls.splitMisses(r, f.keys, hits)
	ups := ls.mups[:len(shards)]
	for j, i := range shards {
		sh := r.Shards[i]
		if ups[j] = ls.upstreamFor(sh); ups[j] == nil {
			return false
		}
		if ls.stores[sh] == nil && anyTracking(rules, positions[j]) {
			return false // its keys may be tracked reads: on a connection with its store
		}
	}
	m := &mgetFwd{elems: make([][]byte, len(f.keys))}
	q := ls.newReq(ic, r, f, &rules[0])
	q.mget, m.q = m, q
	q.keys, q.val = q.keys[:0], q.val[:0] // val holds the keys' bytes
	for _, key := range f.keys {
		q.val = append(q.val, key...)
	}
	off := 0
	for _, key := range f.keys {
		q.keys = append(q.keys, q.val[off:off+len(key):off+len(key)])
		off += len(key)
	}
	ls.mgetHits(ic, m, hits, rules, f.keys)
	ls.mgetTracked(r, f.keys, rules, positions, tracked)
	ls.trackedReads(m, r, rules, tracked, f.keys)
	for j := range shards {
		if tracked[positions[j][0]] {
			continue // the shard's keys are tracked reads
		}
		part := &mgetPart{m: m, pos: positions[j]}
		out := ups[j].Out()
		out = resp.AppendBulkString(resp.AppendArray(out, len(part.pos)+1), "MGET")
		for _, pos := range part.pos {
			out = resp.AppendBulk(out, f.keys[pos])
		}
		ups[j].SetOut(out)
		ups[j].Expect(part)
		ls.touch(ups[j])
		m.waiting++
	}
	ic.queue = append(ic.queue, q)
	ic.ec.Hold()
	ic.c.began(mgetCommand, nil, q.start)
	s.Stats.LoopForwards.Add(1)
	if m.waiting == 0 {
		m.done()
	}
	return true
}

// splitMisses groups the keys of an MGET the L1 did not answer by owner (groupByShard).
func (ls *loopState) splitMisses(r *router.Router, keys [][]byte, hits []pending) (shards []int, positions [][]int) {
	shards, positions = groupByShard(len(keys), ls.mshards[:0], func(k int) (int, bool) {
		return r.Index(keys[k]), hits[k].hit == noHit
	})
	ls.mshards = shards
	return shards, positions
}

// anyTracking reports whether a key at one of pos has a tracking L1.
func anyTracking(rules []policy.Rules, pos []int) bool {
	for _, at := range pos {
		if rules[at].L1 && rules[at].L1Tracking {
			return true
		}
	}
	return false
}

// mgetTracked marks the keys read as tracked reads, and kept, as shareKept decides for each
// shard's share.
func (ls *loopState) mgetTracked(r *router.Router, keys [][]byte, rules []policy.Rules, positions [][]int, tracked []bool) {
	for _, share := range positions {
		kept, refused := plan.ShareKept(len(share), func(k int) *policy.Rules { return &rules[share[k]] },
			func(k int) bool { return r.ShardFor(keys[share[k]]).Admit(keys[share[k]]) })
		if !kept {
			ls.s.Stats.L1NotAdmitted.Add(int64(refused))
			continue
		}
		for _, at := range share {
			tracked[at] = true
		}
	}
}

// mgetHits renders the L1's answers into m and counts each key's L1 lookup.
func (ls *loopState) mgetHits(ic *inlineConn, m *mgetFwd, hits []pending, rules []policy.Rules, keys [][]byte) {
	s := ls.s
	for pos := range keys {
		rl := &rules[pos]
		if !rl.L1 {
			continue
		}
		pc := s.Stats.forPolicy(rl.Name)
		if hits[pos].hit == noHit {
			s.missL1(pc)
			continue
		}
		m.elems[pos] = append([]byte(nil), ls.render(&hits[pos], ic.c.w.Proto)...)
		s.hitL1(pc)
		s.Stats.LoopHits.Add(1)
	}
}

// mgetRead is a tracked read of one of a forwarded MGET's keys, as a forwarded GET's: its GET's
// reply, once the PTTL's has come, takes its place in the MGET's.
type mgetRead struct {
	m   *mgetFwd
	pos int
	tr  trackedRead
}

// The three replies of a tracked read, each taken by its own view of the read.
type (
	mgetReadCaching mgetRead
	mgetReadTail    mgetRead
)

// trackedReads sends a tracked read of each key at a tracked position to its shard.
func (ls *loopState) trackedReads(m *mgetFwd, r *router.Router, rules []policy.Rules, tracked []bool, keys [][]byte) {
	n := 0
	for _, t := range tracked {
		if t {
			n++
		}
	}
	if n == 0 {
		return
	}
	reads := make([]mgetRead, 0, n)
	for pos, key := range keys {
		if !tracked[pos] {
			continue
		}
		reads = append(reads, mgetRead{m: m, pos: pos})
		rd, sh := &reads[len(reads)-1], r.ShardFor(key)
		rd.tr.send(ls.stores[sh], ls.ups[sh], key, nil, rules[pos].L1TTL,
			(*mgetReadCaching)(rd), rd, (*mgetReadTail)(rd))
		ls.touch(ls.ups[sh])
		m.waiting++
	}
}

func (c *mgetReadCaching) Reply(p []byte, err error) { c.tr.cachingDone(p, err) }

func (rd *mgetRead) Reply(p []byte, err error) { rd.tr.gotReply(p, err) }

// Reply takes the PTTL's reply (trackedRead.keep); then the GET's reply takes its place.
func (t *mgetReadTail) Reply(p []byte, err error) {
	rd := (*mgetRead)(t)
	m := rd.m
	rd.tr.keep(string(m.q.keys[rd.pos]), p, err, len(m.q.ic.rerun) > 0)
	got := rd.tr.got
	switch {
	case rd.tr.gotErr != nil || fullPathReply(got, false):
		m.redo = append(m.redo, rd.pos) // a replica, a retry: the full path knows
	case hasPrefix(got, "-WRONGTYPE"): // MGET reads a key of another type as nil
		m.placeElem(rd.pos, nullRESP3)
	case got[0] == '-':
		if m.failed == nil {
			m.failed = append([]byte(nil), got...)
		}
	case !m.placeElem(rd.pos, got):
		m.redo = append(m.redo, rd.pos)
	}
	if m.waiting--; m.waiting == 0 {
		m.done()
	}
}

// Reply takes a shard's reply to its share of an MGET's keys (RESP3, from the loop's
// connection).
func (p *mgetPart) Reply(reply []byte, err error) {
	m := p.m
	switch {
	case err != nil || fullPathReply(reply, false) || (reply[0] != '-' && !m.place(reply, p.pos)):
		m.redo = append(m.redo, p.pos...) // a replica, a retry, or a reply it cannot split
	case reply[0] == '-':
		if m.failed == nil {
			m.failed = append([]byte(nil), reply...)
		}
	}
	if m.waiting--; m.waiting == 0 {
		m.done()
	}
}

// place copies an MGET reply's elements to their keys' positions: false for anything but an
// array of as many values or nulls.
func (m *mgetFwd) place(reply []byte, pos []int) bool {
	if reply[0] != '*' {
		return false
	}
	line := lineLen(reply)
	if n, err := strconv.Atoi(string(reply[1:line])); err != nil || n != len(pos) {
		return false
	}
	rest := reply[line+2:]
	for _, at := range pos {
		n, err := resp.FrameLen(rest)
		if err != nil || n == 0 || !m.placeElem(at, rest[:n]) {
			return false
		}
		rest = rest[n:]
	}
	return true
}

// placeElem copies one key's reply, a value or a null (RESP3), to its position, in the client's
// protocol; false for anything else.
func (m *mgetFwd) placeElem(at int, elem []byte) bool {
	switch {
	case string(elem) == string(nullRESP3):
		if m.q.proto < 3 {
			elem = nullRESP2
		}
	case elem[0] != '$':
		return false
	case fullPathReply(elem, true):
		m.decode = true
	}
	m.elems[at] = append([]byte(nil), elem...)
	return true
}

// lineLen is the length of p's first line, without its CRLF (p holds a whole reply).
func lineLen(p []byte) int {
	i := 0
	for p[i] != '\r' {
		i++
	}
	return i
}

// done answers the MGET once every shard has: in its place among the client's replies, or,
// with keys to read again or values to decode, off the loop (finishOffLoop).
func (m *mgetFwd) done() {
	q := m.q
	if len(q.ic.rerun) > 0 {
		// A request of the client's ahead of it is being re-run (a write held for a new
		// primary): every key is read again after it.
		m.redo = identity(len(m.elems))
	}
	if m.failed == nil && (len(m.redo) > 0 || m.decode) {
		q.ls.fullPath(q)
		return
	}
	reply := m.reply()
	m.counted(reply)
	q.ls.complete(q, reply)
}

// reply is the MGET's reply: its elements, or a shard's error.
func (m *mgetFwd) reply() []byte {
	if m.failed != nil {
		return m.failed
	}
	reply := append([]byte(nil), '*')
	reply = strconv.AppendInt(reply, int64(len(m.elems)), 10)
	reply = append(reply, "\r\n"...)
	for _, e := range m.elems {
		reply = append(reply, e...)
	}
	return reply
}

func (m *mgetFwd) counted(reply []byte) {
	s := m.q.ls.s
	s.Stats.count(mgetCommand, reply[0] == '-')
	s.Stats.latency.Observe(time.Since(m.q.start).Seconds())
}

// finishOffLoop answers, on a goroutine, a GET whose value the agent encoded, or an MGET with
// keys to read again (on the full path, which reads replicas and holds writes for a new
// primary) or values to decode; then back on the loop, in its place. The values already read
// stay as they were read in their turn: read again, they could show writes the client sent
// after the command.
func (ls *loopState) finishOffLoop(q *fwdReq) {
	s, r, cid := ls.s, ls.ring(q), q.ic.c.id
	go func() {
		var out []byte
		if m := q.mget; m != nil {
			out = m.finish(s, r, cid)
			m.counted(out)
		} else {
			out = decoded(q.encoded, q.proto)
			s.Stats.count(getCommand, false)
			s.Stats.latency.Observe(time.Since(q.start).Seconds())
		}
		ls.loop.Post(func() { ls.reran(q, out) })
	}()
}

// finish reads the keys at m.redo on the full path, decodes the values the agent encoded, and
// returns the MGET's reply.
func (m *mgetFwd) finish(s *Server, r *router.Router, cid int64) []byte {
	if len(m.redo) > 0 {
		args := [][]byte{[]byte("MGET")}
		for _, pos := range m.redo {
			args = append(args, m.q.keys[pos])
		}
		out := s.runFullPath(r, cid, mgetCommand, args, m.q.proto, time.Time{}) // counted whole, by the caller
		if len(out) == 0 || out[0] != '*' {
			return out // an error answers the whole MGET, as on the full path
		}
		rest := out[lineLen(out)+2:]
		for _, pos := range m.redo { // the full path's elements are the client's, decoded
			n, err := resp.FrameLen(rest)
			if err != nil || n == 0 {
				return []byte("-ERR unreadable reply to MGET\r\n")
			}
			m.elems[pos], rest = rest[:n], rest[n:]
		}
	}
	for pos, e := range m.elems {
		if e[0] == '$' && fullPathReply(e, true) {
			m.elems[pos] = decoded(e, m.q.proto)
		}
	}
	return m.reply()
}

// decoded is the reply to a GET whose reply (bulk) holds a value the agent encoded.
func decoded(bulk []byte, proto int) []byte {
	v, present := reply.Readable(string(resp.BulkValue(bulk)))
	switch {
	case present:
		return resp.AppendBulkString(nil, v)
	case proto < 3:
		return nullRESP2
	}
	return nullRESP3
}
