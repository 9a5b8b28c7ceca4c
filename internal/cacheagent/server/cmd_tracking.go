package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/pubsub"
	"github.com/cachefleet/cachefleet/internal/cacheagent/tracking"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Client-side caching through the agent (CLIENT TRACKING). An application's own in-process
// cache (valkey-go DoCache, node-redis clientSideCache) is told when a key it read changes
// anywhere in the fleet:
//   - the agent remembers which client read which key (package tracking), registering the keys
//     before the read leaves for the shard;
//   - it learns of changes from its own writes at once, and of every other change (other
//     agents, clients on the shard, expiry, eviction) from one BCAST watcher per shard;
//   - pushes to a client are written after the replies of the batch being answered, never
//     before: a reply carrying the old value can then never follow its invalidation.
// A tracking client is served the node L1's tracking copies (planGet). Those are kept current
// over other shard connections than the watcher's, so the two pushes of one change race; the
// agent fences a key's copies before it tells any client of the key's change (shardChanged,
// settleBy), and a client is never handed a copy older than a change it was told of.

// trackState is a connection's CLIENT TRACKING mode; nil when tracking is off. Only the
// connection's goroutine reads or changes it.
type trackState struct {
	optin, optout, bcast, noLoop bool
	caching                      bool // CLIENT CACHING YES/NO applies to the next command
	prefixes                     []string
}

// registers reports whether the reads of the command being run register their keys.
func (t *trackState) registers() bool {
	switch {
	case t.bcast:
		return false // a BCAST client hears of every change under its prefixes anyway
	case t.optin:
		return t.caching
	case t.optout:
		return !t.caching
	}
	return true
}

// pushQueue holds a connection's invalidations until they can be written.
type pushQueue struct {
	mu sync.Mutex
	// invalidations are messages of keys (Valkey's: one per key in the default mode, one per
	// prefix in BCAST), keys how many keys they hold.
	invalidations [][]string
	keys          int
	all           bool  // drop everything: earlier keys are moot
	broken        int64 // the redirect target that went away
	// msgs are pub/sub messages (cmd_pubsub.go), msgBytes what they hold.
	msgs     []pubsub.Message
	msgBytes int64
	cutOff   bool // over the output limit: disconnected, nothing more is queued
	wake     chan struct{}
}

// maxQueuedPushKeys: past this many keys waiting for a slow client, it gets one "drop
// everything" instead, so a client that does not read cannot grow the agent's memory.
const maxQueuedPushKeys = 1 << 16

// clientSink delivers a tracking client's invalidations: to itself, or to its REDIRECT target.
type clientSink struct {
	s *Server
	c *client
}

func (k clientSink) Invalidate(keys []string) {
	to := k.c
	if id := k.c.redirect.Load(); id != 0 {
		if to = k.s.clientByID(id); to == nil {
			k.c.pushes.mu.Lock()
			k.c.pushes.broken = id
			k.c.pushes.mu.Unlock()
			k.s.wakePusher(k.c)
			return
		}
	}
	q := &to.pushes
	q.mu.Lock()
	switch {
	case q.all:
	case keys == nil || q.keys+len(keys) > maxQueuedPushKeys:
		q.all, q.invalidations, q.keys = true, nil, 0
	default:
		q.invalidations = append(q.invalidations, keys)
		q.keys += len(keys)
	}
	q.mu.Unlock()
	k.s.Stats.TrackingPushes.Add(1)
	k.s.wakePusher(to)
}

// wakePusher makes c's pusher write what is queued once the connection's writer is free.
func (s *Server) wakePusher(c *client) {
	c.pushOnce.Do(func() {
		c.pushes.wake = make(chan struct{}, 1)
		go s.pusher(c)
	})
	select {
	case c.pushes.wake <- struct{}{}:
	default:
	}
}

// pusher writes c's pushes while its connection is idle; a connection answering a batch
// writes them itself, after the batch's replies.
func (s *Server) pusher(c *client) {
	for {
		select {
		case <-c.done:
			return
		case <-c.pushes.wake:
		}
		c.wmu.Lock()
		if s.writePushes(c) {
			// A client that stops reading cannot hold its connection's writer forever.
			_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := c.w.Flush(); err != nil {
				c.nc.Close()
			}
			_ = c.nc.SetWriteDeadline(time.Time{})
		}
		c.wmu.Unlock()
	}
}

// writePushes writes c's queued pushes in its protocol; the caller holds c.wmu and flushes.
// RESP3 gets invalidate pushes; RESP2 only as pub/sub messages on __redis__:invalidate, when
// subscribed (the REDIRECT target of a RESP2 client); otherwise they are dropped, as Valkey does.
func (s *Server) writePushes(c *client) bool {
	q := &c.pushes
	q.mu.Lock()
	invalidations, all, broken, msgs := q.invalidations, q.all, q.broken, q.msgs
	q.invalidations, q.keys, q.all, q.broken, q.msgs, q.msgBytes = nil, 0, false, 0, nil, 0
	q.mu.Unlock()
	if invalidations == nil && !all && broken == 0 && msgs == nil {
		return false
	}
	w := c.w
	writeMessages(w, msgs)
	resp3 := w.Proto >= 3
	if broken != 0 && resp3 {
		w.Push(2)
		w.BulkString("tracking-redir-broken")
		w.Int(broken)
	}
	if !resp3 && !c.subscribed.Load() {
		return msgs != nil // RESP2 without a subscription: nowhere to send invalidations (or broken, RESP3 only)
	}
	invalidation := func() {
		if resp3 {
			w.Push(2)
			w.BulkString("invalidate")
			return
		}
		w.Push(3)
		w.BulkString("message")
		w.BulkString(invalidateChannel)
	}
	if all {
		invalidation()
		w.Null()
		return true
	}
	for _, keys := range invalidations {
		invalidation()
		w.Array(len(keys))
		for _, k := range keys {
			w.BulkString(k)
		}
	}
	return true
}

const invalidateChannel = "__redis__:invalidate"

// clientByID finds a connection of this agent.
func (s *Server) clientByID(id int64) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

// ---- CLIENT TRACKING, CACHING, GETREDIR, TRACKINGINFO ----

func (s *Server) clientTracking(b *batch, c *client, args [][]byte) {
	fail := func(msg string) { b.local(func(w *resp.Writer) { w.Error(msg) }) }
	var (
		o        trackState
		redirect int64
	)
	for j := 3; j < len(args); j++ {
		more := j+1 < len(args)
		switch opt := strings.ToLower(str(args[j])); {
		case opt == "redirect" && more:
			j++
			if redirect != 0 {
				fail("ERR A client can only redirect to a single other client")
				return
			}
			id, err := strconv.ParseInt(str(args[j]), 10, 64)
			if err != nil {
				fail("ERR value is not an integer or out of range")
				return
			}
			if s.clientByID(id) == nil {
				fail("ERR The client ID you want redirect to does not exist")
				return
			}
			redirect = id
		case opt == "bcast":
			o.bcast = true
		case opt == "optin":
			o.optin = true
		case opt == "optout":
			o.optout = true
		case opt == "noloop":
			o.noLoop = true
		case opt == "prefix" && more:
			j++
			o.prefixes = append(o.prefixes, str(args[j]))
		default:
			fail("ERR syntax error")
			return
		}
	}
	switch strings.ToLower(str(args[2])) {
	case "on":
		if msg := s.checkTrackingOn(c, &o); msg != "" {
			fail(msg)
			return
		}
		s.trackingOn(c, &o, redirect)
		b.local(func(w *resp.Writer) { w.OK() })
	case "off":
		s.trackingOff(c)
		b.local(func(w *resp.Writer) { w.OK() })
	default:
		fail("ERR syntax error")
	}
}

// checkTrackingOn applies Valkey's rules on combining options, in Valkey's order.
func (s *Server) checkTrackingOn(c *client, o *trackState) string {
	cur := c.track
	switch {
	case !o.bcast && len(o.prefixes) > 0:
		return "ERR PREFIX option requires BCAST mode to be enabled"
	case cur != nil && cur.bcast != o.bcast:
		return "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."
	case o.bcast && (o.optin || o.optout):
		return "ERR OPTIN and OPTOUT are not compatible with BCAST"
	case o.optin && o.optout:
		return "ERR You can't specify both OPTIN mode and OPTOUT mode"
	case cur != nil && ((o.optin && cur.optout) || (o.optout && cur.optin)):
		return "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."
	}
	if o.bcast {
		existing := s.tracking.Prefixes(c.id)
		for i, p := range o.prefixes {
			if other, ok := tracking.Overlap(p, existing); ok {
				return fmt.Sprintf("ERR Prefix '%s' overlaps with an existing prefix '%s'. Prefixes for a single client must not overlap.", p, other)
			}
			if other, ok := tracking.Overlap(p, o.prefixes[i+1:]); ok {
				return fmt.Sprintf("ERR Prefix '%s' overlaps with another provided prefix '%s'. Prefixes for a single client must not overlap.", p, other)
			}
		}
	}
	return ""
}

// trackingOn starts following the shards (once per agent) before the client is registered:
// nothing it reads from then on can change unseen.
func (s *Server) trackingOn(c *client, o *trackState, redirect int64) {
	if r := s.router.Load(); r != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShardTimeout)
		for _, w := range s.watchers.Ensure(r.Doc.Shards) {
			// A shard not followed yet is reported as "everything changed" once it is.
			w.WaitFollowing(ctx)
		}
		cancel()
	}
	s.tracking.Enable(c.id, clientSink{s: s, c: c}, tracking.Options{NoLoop: o.noLoop, BCAST: o.bcast, Prefixes: o.prefixes})
	c.redirect.Store(redirect)
	o.prefixes = s.tracking.Prefixes(c.id)
	c.track = o
	flags := "t"
	if o.bcast {
		flags = "tB"
	}
	c.trackFlags.Store(&flags)
	s.Stats.TrackingClients.Store(int64(s.tracking.Clients()))
}

func (s *Server) trackingOff(c *client) {
	if c.track == nil {
		return
	}
	s.tracking.Disable(c.id)
	c.track = nil
	c.trackFlags.Store(nil)
	c.redirect.Store(0)
	s.Stats.TrackingClients.Store(int64(s.tracking.Clients()))
}

func (s *Server) clientCaching(b *batch, c *client, args [][]byte) {
	msg := ""
	switch opt := strings.ToLower(str(args[2])); {
	case c.track == nil:
		msg = "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
	case opt == "yes" && !c.track.optin:
		msg = "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
	case opt == "no" && !c.track.optout:
		msg = "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
	case opt != "yes" && opt != "no":
		msg = "ERR syntax error"
	}
	if msg != "" {
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	c.track.caching = true
	b.local(func(w *resp.Writer) { w.OK() })
}

func (s *Server) clientGetredir(b *batch, c *client) {
	id := int64(-1)
	if c.track != nil {
		id = c.redirect.Load()
	}
	b.local(func(w *resp.Writer) { w.Int(id) })
}

func (s *Server) clientTrackinginfo(b *batch, c *client) {
	flags, redirect, prefixes := []string{"off"}, int64(-1), []string(nil)
	if t := c.track; t != nil {
		flags = []string{"on"}
		for _, f := range []struct {
			on   bool
			name string
		}{
			{t.bcast, "bcast"}, {t.optin, "optin"}, {t.optin && t.caching, "caching-yes"},
			{t.optout, "optout"}, {t.optout && t.caching, "caching-no"}, {t.noLoop, "noloop"},
		} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		if id := c.redirect.Load(); id != 0 && s.clientByID(id) == nil {
			flags = append(flags, "broken_redirect")
		}
		redirect, prefixes = c.redirect.Load(), slices.Sorted(slices.Values(t.prefixes)) // Valkey lists them in order
	}
	b.local(func(w *resp.Writer) {
		w.Map(3)
		w.BulkString("flags")
		w.Set(len(flags))
		for _, f := range flags {
			w.BulkString(f)
		}
		w.BulkString("redirect")
		w.Int(redirect)
		w.BulkString("prefixes")
		w.Array(len(prefixes))
		for _, p := range prefixes {
			w.BulkString(p)
		}
	})
}

// ---- reads and writes of tracking clients ----

// trackRead registers the keys of a read by a tracking client, before the read is sent or the
// L1 looked in, and reports whether the client tracks (planGet serves it accordingly).
func (s *Server) trackRead(c *client, cmd *command, args [][]byte) bool {
	if c.track == nil {
		return false
	}
	switch {
	case c.track.bcast:
		s.tracking.Remember(c.id) // its keys are not registered; that it may hold some is
	case c.track.registers():
		s.tracking.Remember(c.id, cmd.keys.of(args)...)
	}
	return true
}

// afterCommand ends a CLIENT CACHING YES/NO: it covers one command, or one whole MULTI/EXEC.
func (c *client) afterCommand(name string) {
	if c.track != nil && c.tx == nil && name != "client" {
		c.track.caching = false
	}
}

// shardChanged forwards a watcher's report to the tracking clients, after fencing the node
// L1's copies of the keys: they are kept current over other connections, whose own pushes may
// come later, and a client that reads a key again on this push must not be handed the old
// copy, nor one a read sent before the change fills afterwards (see the tracking section of
// docs/architecture.md).
func (s *Server) shardChanged(keys []string) {
	r := s.Router()
	if keys == nil {
		if r != nil {
			for _, sh := range r.Shards {
				sh.FenceAll()
			}
		}
		s.tracking.ChangedAll()
		return
	}
	if r != nil {
		for _, k := range keys {
			r.ShardFor([]byte(k)).Fence(k)
		}
	}
	s.tracking.Changed(keys...)
}
