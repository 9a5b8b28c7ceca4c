package tracking

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

type recorder struct {
	mu  sync.Mutex
	got []string // "k1,k2" per call; "*" for everything
}

func (r *recorder) Invalidate(keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if keys == nil {
		r.got = append(r.got, "*")
		return
	}
	s := slices.Clone(keys)
	slices.Sort(s)
	r.got = append(r.got, fmt.Sprint(s))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

func TestDefaultModeInvalidatesOncePerRead(t *testing.T) {
	tb := NewTable(0)
	a, b := &recorder{}, &recorder{}
	tb.Enable(1, a, Options{})
	tb.Enable(2, b, Options{})
	tb.Remember(1, "k", "j")
	tb.Remember(2, "k")
	tb.Invalidate(0, "k", "other")
	if got := a.take(); !slices.Equal(got, []string{"[k]"}) {
		t.Errorf("client 1 got %v", got)
	}
	if got := b.take(); !slices.Equal(got, []string{"[k]"}) {
		t.Errorf("client 2 got %v", got)
	}
	tb.Invalidate(0, "k") // one-shot: nobody read it since
	if got := a.take(); len(got) != 0 {
		t.Errorf("second change of an unread key reached client 1: %v", got)
	}
	tb.Invalidate(0, "j")
	if got := a.take(); !slices.Equal(got, []string{"[j]"}) {
		t.Errorf("client 1 got %v for j", got)
	}
}

func TestNoLoopSkipsTheWritersOwnChanges(t *testing.T) {
	tb := NewTable(0)
	a, b := &recorder{}, &recorder{}
	tb.Enable(1, a, Options{NoLoop: true})
	tb.Enable(2, b, Options{})
	tb.Remember(1, "k")
	tb.Remember(2, "k")
	tb.Invalidate(1, "k")
	if got := a.take(); len(got) != 0 {
		t.Errorf("NOLOOP client heard its own write: %v", got)
	}
	if got := b.take(); !slices.Equal(got, []string{"[k]"}) {
		t.Errorf("other client got %v", got)
	}
	tb.Remember(2, "k")
	tb.Invalidate(2, "k") // not NOLOOP: hears its own write
	if got := b.take(); !slices.Equal(got, []string{"[k]"}) {
		t.Errorf("client without NOLOOP got %v for its own write", got)
	}
}

func TestBroadcastPrefixes(t *testing.T) {
	tb := NewTable(0)
	users, all := &recorder{}, &recorder{}
	tb.Enable(1, users, Options{BCAST: true, Prefixes: []string{"user:", "sess:"}})
	tb.Enable(2, all, Options{BCAST: true})
	tb.Invalidate(0, "user:1", "order:9", "sess:x")
	if got := users.take(); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"[sess:x]", "[user:1]"}) { // a message per prefix, as Valkey
		t.Errorf("prefix client got %v", got)
	}
	if got := all.take(); !slices.Equal(got, []string{"[order:9 sess:x user:1]"}) {
		t.Errorf("every-key client got %v", got)
	}
	tb.Invalidate(0, "user:1") // BCAST needs no read: every change is sent
	if got := users.take(); !slices.Equal(got, []string{"[user:1]"}) {
		t.Errorf("second change: %v", got)
	}
	if got := tb.Prefixes(1); !slices.Equal(got, []string{"user:", "sess:"}) {
		t.Errorf("Prefixes = %v", got)
	}
	tb.Disable(1)
	tb.Invalidate(0, "user:2")
	if got := users.take(); len(got) != 0 {
		t.Errorf("disabled client got %v", got)
	}
}

func TestDisabledClientsAreSkippedAndFlushReachesAll(t *testing.T) {
	tb := NewTable(0)
	a, b := &recorder{}, &recorder{}
	tb.Enable(1, a, Options{})
	tb.Enable(2, b, Options{BCAST: true})
	tb.Remember(1, "k")
	tb.Disable(1)
	tb.Invalidate(0, "k")
	if got := a.take(); len(got) != 0 {
		t.Errorf("client that turned tracking off got %v", got)
	}
	if tb.Keys() != 0 {
		t.Errorf("%d keys remembered after the invalidation", tb.Keys())
	}
	tb.Enable(1, a, Options{})
	tb.Remember(1, "x")
	tb.InvalidateAll()
	if got := a.take(); !slices.Equal(got, []string{"*"}) {
		t.Errorf("flush reached client 1 as %v", got)
	}
	if got := b.take(); !slices.Equal(got, []string{"[k]", "*"}) {
		t.Errorf("flush reached BCAST client as %v", got)
	}
	if tb.Keys() != 0 {
		t.Error("flush left keys remembered")
	}
}

// A shard's report of a flush (or of changes the agent may have missed) reaches the clients
// that may hold keys: one fleet-wide flush is reported by every shard, and twice by each, and
// a client that read nothing since it was told holds nothing.
func TestReportedFlushesReachClientsThatReadSince(t *testing.T) {
	tb := NewTable(0)
	def, bc, idle := &recorder{}, &recorder{}, &recorder{}
	tb.Enable(1, def, Options{})
	tb.Enable(2, bc, Options{BCAST: true})
	tb.Enable(3, idle, Options{})
	tb.Remember(1, "k")
	tb.Remember(2) // a BCAST client's read
	for range 3 {
		tb.ChangedAll() // three shards report one flush
	}
	for name, r := range map[string]*recorder{"default": def, "BCAST": bc} {
		if got := r.take(); !slices.Equal(got, []string{"*"}) {
			t.Errorf("%s client was told %v, want one flush", name, got)
		}
	}
	if got := idle.take(); len(got) != 0 {
		t.Errorf("a client that read nothing was told %v", got)
	}
	tb.Remember(1, "j") // read between two shards' reports: may hold j from a shard not flushed yet
	tb.ChangedAll()
	if got := def.take(); !slices.Equal(got, []string{"*"}) {
		t.Errorf("a client that read between reports was told %v", got)
	}
	tb.InvalidateAll() // the agent's own FLUSHALL: every client, as Valkey
	for name, r := range map[string]*recorder{"default": def, "BCAST": bc, "idle": idle} {
		if got := r.take(); !slices.Equal(got, []string{"*"}) {
			t.Errorf("the agent's flush reached the %s client as %v", name, got)
		}
	}
	tb.ChangedAll() // the shards' reports of that flush
	if got := def.take(); len(got) != 0 {
		t.Errorf("the shards' reports of the agent's flush were told again: %v", got)
	}

	// The agent's flush reported by a shard before the agent is done: each client once.
	tb.Remember(1, "k")
	tb.Flushing()
	tb.ChangedAll()
	tb.InvalidateAll()
	for name, r := range map[string]*recorder{"default": def, "BCAST": bc, "idle": idle} {
		if got := r.take(); !slices.Equal(got, []string{"*"}) {
			t.Errorf("a flush reported before the agent's own tell reached the %s client as %v", name, got)
		}
	}
}

func TestTableBoundInvalidatesWhatItForgets(t *testing.T) {
	tb := NewTable(100)
	a := &recorder{}
	tb.Enable(1, a, Options{})
	for i := range 150 {
		tb.Remember(1, fmt.Sprintf("k%d", i))
	}
	if tb.Keys() != 100 {
		t.Errorf("table holds %d keys, bound 100", tb.Keys())
	}
	if got := a.take(); len(got) != 50 {
		t.Errorf("%d evictions reached the client, want 50 (a forgotten key must be dropped by the client)", len(got))
	}
}

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		p      string
		others []string
		want   bool
	}{
		{"user:", []string{"sess:"}, false},
		{"user:1", []string{"user:"}, true},
		{"us", []string{"user:"}, true},
		{"", []string{"a"}, true},
	} {
		if _, got := Overlap(tc.p, tc.others); got != tc.want {
			t.Errorf("Overlap(%q, %v) = %v", tc.p, tc.others, got)
		}
	}
}

// The agent hears of its own writes twice: at once (Invalidate) and from the shard's watcher a
// moment later (Changed). Each client hears of a write once, in every mode; a change the agent
// did not make, or one reported after the window, is always told.
func TestEachWriteIsToldOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		steps func(tb *Table)
		want  []string
	}{
		{"BCAST: own write, then its report", Options{BCAST: true}, func(tb *Table) {
			tb.Invalidate(9, "a", "b")
			tb.Changed("a", "b")
		}, []string{"[a b]"}},
		{"BCAST: the report before the write's reply", Options{BCAST: true}, func(tb *Table) {
			tb.Writing(9, "a")
			tb.Changed("a") // the shard's report overtook the reply
			tb.Invalidate(9, "a")
			tb.Changed("a") // someone else, later
		}, []string{"[a]", "[a]"}},
		{"BCAST: a report before the write left is another change", Options{BCAST: true}, func(tb *Table) {
			tb.Changed("a")
			tb.Writing(9, "a")
			tb.Invalidate(9, "a")
		}, []string{"[a]", "[a]"}},
		{"BCAST NOLOOP: the report of its own write before the reply", Options{BCAST: true, NoLoop: true}, func(tb *Table) {
			tb.Writing(1, "k")
			tb.Changed("k")
			tb.Invalidate(1, "k")
			tb.Changed("k") // someone else's, later: news
		}, []string{"[k]"}},
		{"a write never settled speaks for no report after the window", Options{BCAST: true, NoLoop: true}, func(tb *Table) {
			tb.Writing(1, "k")
			tb.writing["k"].sent = tb.writing["k"].sent.Add(-2 * echoWindow)
			tb.Changed("k") // someone else's
		}, []string{"[k]"}},
		{"BCAST: a second, foreign change is told", Options{BCAST: true}, func(tb *Table) {
			tb.Invalidate(9, "a")
			tb.Changed("a") // the echo
			tb.Changed("a") // someone else
		}, []string{"[a]", "[a]"}},
		{"BCAST NOLOOP: own write neither at once nor from the watcher", Options{BCAST: true, NoLoop: true}, func(tb *Table) {
			tb.Invalidate(1, "loop")
			tb.Changed("loop")
			tb.Changed("other")
		}, []string{"[other]"}},
		{"default: re-read before the echo, then the echo", Options{}, func(tb *Table) {
			tb.Remember(1, "k")
			tb.Invalidate(9, "k")
			tb.Remember(1, "k") // read again: what it read is newer than the write echoed
			tb.Changed("k")
			tb.Changed("k") // a later change is news: the registration was kept
		}, []string{"[k]", "[k]"}},
		{"default NOLOOP: own write", Options{NoLoop: true}, func(tb *Table) {
			tb.Remember(1, "k")
			tb.Invalidate(1, "k")
			tb.Remember(1, "k")
			tb.Changed("k") // the echo
			tb.Changed("k") // someone else's
		}, []string{"[k]"}},
		{"default NOLOOP: the echo reaches nobody, a later change is told", Options{NoLoop: true}, func(tb *Table) {
			tb.Remember(1, "k")
			tb.Invalidate(1, "k") // its own write: not told, registration gone
			tb.Changed("k")       // the echo: consumed though nobody holds the key
			tb.Remember(1, "k")
			tb.Changed("k") // someone else's write
		}, []string{"[k]"}},
		{"switched to BCAST: keys read before are forgotten", Options{BCAST: true, Prefixes: []string{"p:"}}, func(tb *Table) {
			tb.Changed("k") // read in default mode before the switch (see below)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := NewTable(0)
			r := &recorder{}
			if tc.name == "switched to BCAST: keys read before are forgotten" {
				tb.Enable(1, r, Options{})
				tb.Remember(1, "k")
			}
			tb.Enable(1, r, tc.opts)
			tc.steps(tb)
			if got := r.take(); !slices.Equal(got, tc.want) {
				t.Errorf("told %v, want %v", got, tc.want)
			}
		})
	}
}
