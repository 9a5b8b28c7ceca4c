package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Transactions (MULTI, EXEC, DISCARD): queued like Valkey queues them, executed atomically as
// MULTI ... EXEC in one pipeline on the shard that owns every key of the transaction. The
// queued commands go through their usual handlers at EXEC, so policies (TTL, size limits,
// compression) and the L1 fence apply inside as outside. Keys on two shards cannot be
// atomic: the command naming the second shard is refused and the transaction discarded.

// txState is a client's open transaction.
type txState struct {
	queued   [][][]byte // copies of the queued commands
	scripted bool       // one of them runs a script
	aborted  bool       // a queuing error: EXEC answers EXECABORT
	shard    int        // owner of every key so far; -1 before the first key
	firstKey string
}

const execAbort = "EXECABORT Transaction discarded because of previous errors."

// notInTx answers MULTI and WATCH inside a transaction, which Valkey 8 refuses and discards.
const notInTx = "ERR Command not allowed inside a transaction"

// watchState is a client's WATCH: the keys are watched on a dedicated connection to their shard,
// on which EXEC then runs, so a change by anyone between WATCH and EXEC aborts it as in Valkey.
type watchState struct {
	shard    int
	firstKey string
	dc       valkey.DedicatedClient
	release  func()
}

// unwatch ends a client's WATCH, if any, and gives the connection back.
func (c *client) unwatch() {
	if c.watch == nil {
		return
	}
	// Bounded: a shard that went away must not hold the connection (or a shutdown) open.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.watch.dc.Do(ctx, c.watch.dc.B().Unwatch().Build())
	cancel()
	c.watch.release()
	c.watch = nil
	c.watched.Store(0)
}

func cmdWatch(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	if c.tx != nil {
		c.tx.aborted = true
		b.local(func(w *resp.Writer) { w.Error(notInTx) })
		return
	}
	keys := strs(args[1:])
	shard, first := -1, ""
	if c.watch != nil {
		shard, first = c.watch.shard, c.watch.firstKey
	}
	for _, k := range keys {
		i := b.r.Index([]byte(k))
		if shard < 0 {
			shard, first = i, k
		} else if i != shard {
			msg := crossShard(k, first)
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
	}
	// WATCH reaches the shard exactly between what the client sent before and after it.
	b.exec(ctx, w)
	sh := b.r.Shards[shard]
	b.local(func(w *resp.Writer) {
		if c.watch == nil {
			dc, release, err := sh.Dedicate()
			if err != nil {
				reply.WriteErr(w, err)
				return
			}
			c.watch = &watchState{shard: shard, firstKey: first, dc: dc, release: release}
		}
		res := c.watch.dc.Do(ctx, c.watch.dc.B().Watch().Key(keys...).Build())
		if err := res.Error(); err != nil {
			c.unwatch()
			reply.Write(w, res, true)
			return
		}
		c.watched.Add(int32(len(keys))) //nolint:gosec // bounded by the arguments
		w.OK()
	})
	b.exec(ctx, w)
}

func cmdUnwatch(_ context.Context, _ *Server, b *batch, c *client, _ *resp.Writer, _ [][]byte) {
	b.local(func(w *resp.Writer) {
		c.unwatch()
		w.OK()
	})
}

// crossShard refuses a key that is not on the shard of the transaction's (or WATCH's) first key.
func crossShard(key, first string) string {
	return fmt.Sprintf("CROSSSLOT Keys in request don't hash to the same shard: '%s' is not on the shard of '%s'. "+
		"A transaction's keys (and WATCHed keys) must share one shard to run atomically; give them a common {hashtag}",
		truncate([]byte(key)), truncate([]byte(first)))
}

func cmdMulti(_ context.Context, _ *Server, b *batch, c *client, _ *resp.Writer, _ [][]byte) {
	if c.tx != nil {
		c.tx.aborted = true // as Valkey 8: refused, and the transaction is discarded
		b.local(func(w *resp.Writer) { w.Error(notInTx) })
		return
	}
	c.tx = &txState{shard: -1}
	c.multi.Store(0)
	if c.watch != nil {
		c.tx.shard, c.tx.firstKey = c.watch.shard, c.watch.firstKey
	}
	b.local(func(w *resp.Writer) { w.OK() })
}

func cmdDiscard(_ context.Context, _ *Server, b *batch, c *client, _ *resp.Writer, _ [][]byte) {
	if c.tx == nil {
		b.local(func(w *resp.Writer) { w.Error("ERR DISCARD without MULTI") })
		return
	}
	c.tx = nil
	c.multi.Store(-1)
	b.local(func(w *resp.Writer) {
		c.unwatch() // DISCARD ends the WATCH too, as in Valkey
		w.OK()
	})
}

// queueTx answers a command sent inside MULTI: QUEUED, or an error that discards the
// transaction (unknown command, wrong arity, a command that cannot be queued, a key on
// another shard, a value over its limit).
func (s *Server) queueTx(b *batch, c *client, cmd *command, args [][]byte) {
	name := string(c.lower)
	refuse := func(msg string) {
		c.tx.aborted = true
		b.local(func(w *resp.Writer) { w.Error(msg) })
	}
	if cmd.class == classLocal && cmd.flags&queuedInTx == 0 {
		refuse(fmt.Sprintf("ERR '%s' cannot be queued in a transaction through the cachefleet agent", strings.ToUpper(name)))
		return
	}
	keys := cmd.keys.of(args)
	for _, k := range cmd.keys.placedBy(args) {
		i := b.r.Index([]byte(k))
		switch {
		case c.tx.shard < 0:
			c.tx.shard, c.tx.firstKey = i, k
		case i != c.tx.shard:
			refuse(crossShard(k, c.tx.firstKey))
			return
		}
	}
	if len(keys) > 0 {
		rules := b.rulesFor([]byte(keys[0]))
		for _, a := range args[2:] {
			if s.oversize(b, rules, keys[0], len(a)) { // answers the error itself
				c.tx.aborted = true
				return
			}
		}
	}
	queued := make([][]byte, len(args))
	for i, a := range args {
		queued[i] = append([]byte(nil), a...)
	}
	c.tx.queued = append(c.tx.queued, queued)
	c.tx.scripted = c.tx.scripted || cmd.flags&runsScript != 0
	c.multi.Add(1)
	b.local(func(w *resp.Writer) { w.Simple("QUEUED") })
}

func cmdExec(ctx context.Context, s *Server, b *batch, c *client, _ *resp.Writer, _ [][]byte) {
	tx := c.tx
	if tx == nil {
		b.local(func(w *resp.Writer) { w.Error("ERR EXEC without MULTI") })
		return
	}
	c.tx = nil
	c.multi.Store(-1)
	if tx.aborted {
		b.local(func(w *resp.Writer) {
			c.unwatch()
			w.Error(execAbort)
		})
		return
	}
	r := b.r
	// Run when the reply is due: everything the client sent before has been answered.
	b.local(func(w *resp.Writer) { s.runTx(ctx, r, c, tx, w) })
}

// runTx executes the queued commands as one MULTI ... EXEC on their shard and writes EXEC's
// reply: an array with each command's reply as the agent would give it outside.
func (s *Server) runTx(ctx context.Context, r *router.Router, c *client, tx *txState, w *resp.Writer) {
	defer c.unwatch() // EXEC ends the WATCH, whatever its result
	if len(tx.queued) == 0 && c.watch == nil {
		w.Array(0)
		return
	}
	idx := max(tx.shard, 0)
	tb := &batch{s: s, tx: true, txShard: idx, cid: c.id}
	tb.reset(r)
	for _, args := range tx.queued {
		s.dispatch(ctx, tb, c, w, args)
	}
	sw := &tb.work[idx]
	sh := r.Shards[idx]
	scripted := tx.scripted
	build := func(bd valkey.Builder) []valkey.Completed {
		cmds := make([]valkey.Completed, 0, len(sw.plain)+2)
		cmds = append(cmds, bd.Multi().Build())
		for _, f := range sw.plain {
			cmds = append(cmds, f(bd))
		}
		cmds = append(cmds, bd.Exec().Build())
		if scripted { // its scripts run as the script user, as they do outside (cmdEval)
			return sh.AsScriptUser(bd, cmds...)
		}
		return cmds
	}
	if r.Warming() {
		s.dropPrevious(ctx, r, tb.written)
	}
	var res []valkey.ValkeyResult
	var err error
	if c.watch != nil { // on the connection that holds the WATCH
		res = c.watch.dc.DoMulti(ctx, build(c.watch.dc.B())...)
		err = router.FirstNetworkError(res)
	} else {
		res, err = sh.DoMulti(ctx, build)
	}
	defer s.settleBy(r, c.id, tb.written...)
	if err != nil {
		reply.WriteErr(w, err) // the shard is down: nothing ran
		return
	}
	exec := res[len(res)-1]
	if scripted {
		if err := res[0].Error(); err != nil {
			reply.Write(w, res[0], false) // the script user refused: nothing ran
			return
		}
		exec = res[len(res)-2]
	}
	msg, _ := exec.ToMessage()
	if msg.IsNil() {
		w.NullArray()
		return
	}
	arr, aerr := msg.ToArray()
	if aerr != nil || len(arr) != len(sw.plain) {
		reply.Write(w, exec, false) // refused by the shard (EXECABORT): its own words
		return
	}
	sw.results = make([]valkey.ValkeyResult, len(arr))
	for i := range arr {
		sw.results[i] = valkey.NewResult(arr[i], nil)
	}
	w.Array(len(tb.replies))
	var results []partResult
	for _, p := range tb.replies {
		if p.writeLocal(w) {
			continue
		}
		results = tb.results(p, results[:0])
		p.finish(w, results)
	}
}
