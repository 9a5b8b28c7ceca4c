package bus

import (
	"testing"
	"time"
)

// TestKeyRotationSignsWithTheOldKeyDuringTheOverlap: an agent that has seen the new Secret
// keeps signing with the old key for the overlap, so agents that have not are not cut off; it
// accepts both meanwhile, and only the new key afterwards.
func TestKeyRotationSignsWithTheOldKeyDuringTheOverlap(t *testing.T) {
	b := New(Config{Fleet: "shop/web", Channel: "c", Key: []byte("k1"), Node: "n", KeyOverlap: time.Hour})
	now := time.Now()
	if got := string(b.signing.Load().current(now)); got != "k1" {
		t.Fatalf("signing with %q", got)
	}
	b.Configure("c", []byte("k2"))
	s := b.signing.Load()
	if got := string(s.current(now)); got != "k1" {
		t.Errorf("during the overlap signing with %q, want the old key", got)
	}
	if got := string(s.current(now.Add(2 * time.Hour))); got != "k2" {
		t.Errorf("after the overlap signing with %q, want the new key", got)
	}
	for _, k := range []string{"k1", "k2"} {
		m := &Message{Fleet: "shop/web", Sender: "other-" + k, Seq: 1, TimeMs: now.UnixMilli(), Op: OpDelete, Args: []string{"x"}}
		if _, _, err := b.verifier.Check(m.Seal([]byte(k))); err != nil {
			t.Errorf("message signed with %s during the overlap: %v", k, err)
		}
	}
	b.dropOldKey(s)
	m := &Message{Fleet: "shop/web", Sender: "late", Seq: 1, TimeMs: now.UnixMilli(), Op: OpDelete, Args: []string{"x"}}
	if _, _, err := b.verifier.Check(m.Seal([]byte("k1"))); err == nil {
		t.Error("the old key is still accepted after the overlap")
	}
	b.Configure("c", []byte("k2")) // the same key again: nothing changes
	if b.signing.Load() != s {
		t.Error("configuring the same key started another rotation")
	}
}

func TestBusWithoutAKeyWaits(t *testing.T) {
	b := New(Config{Fleet: "shop/web", Node: "n"})
	if b.Configured() {
		t.Fatal("a bus without a key reports itself configured")
	}
	if err := b.Publish(t.Context(), OpDelete, "k"); err == nil {
		t.Error("publishing without a key succeeded")
	}
	b.Configure("c", nil)
	if b.Configured() {
		t.Error("an empty key configured the bus")
	}
	b.Configure("c", []byte("k"))
	if !b.Configured() {
		t.Error("a key and a channel did not configure the bus")
	}
}
