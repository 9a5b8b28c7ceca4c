package bus

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func msg(seq uint64, at time.Time) *Message {
	return &Message{Fleet: "shop/web", Sender: "node-a-1", Seq: seq, TimeMs: at.UnixMilli(), Op: OpDelete, Args: []string{"k1", "k2"}}
}

func TestSealOpenRoundTrip(t *testing.T) {
	m := msg(7, time.Now())
	got, err := Open(m.Seal(key), key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fleet != m.Fleet || got.Sender != m.Sender || got.Seq != 7 || got.TimeMs != m.TimeMs || got.Op != OpDelete || len(got.Args) != 2 || got.Args[1] != "k2" {
		t.Errorf("round trip: %+v", got)
	}
}

func TestVerifierRejects(t *testing.T) {
	now := time.Now()
	v := NewVerifier("shop/web", key, 30*time.Second)
	v.Now = func() time.Time { return now }
	if _, _, err := v.Check(msg(5, now).Seal(key)); err != nil {
		t.Fatalf("a valid message was rejected: %v", err)
	}
	forged := msg(6, now).Seal([]byte("not the fleet key"))
	tampered := msg(6, now).Seal(key)
	tampered[len(tampered)-40] ^= 1
	unsigned := msg(6, now).canonical()
	other := &Message{Fleet: "other/fleet", Sender: "x", Seq: 1, TimeMs: now.UnixMilli(), Op: OpFlush}
	badOp := &Message{Fleet: "shop/web", Sender: "x", Seq: 1, TimeMs: now.UnixMilli(), Op: "rm -rf"}
	sealed := msg(9, now).Seal(key)
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"forged", forged, ErrSignature},
		{"tampered", tampered, ErrSignature},
		{"unsigned", unsigned, ErrSignature},
		{"expired", msg(6, now.Add(-31*time.Second)).Seal(key), ErrExpired},
		{"from the future", msg(6, now.Add(31*time.Second)).Seal(key), ErrExpired},
		{"replayed", msg(4, now).Seal(key), ErrReplayed},
		{"duplicate", msg(5, now).Seal(key), ErrDuplicate},
		{"other fleet", other.Seal(key), ErrFleet},
		{"unknown op", badOp.Seal(key), ErrMalformed},
		{"truncated", sealed[:len(sealed)/2], ErrSignature},
		{"garbage", []byte("hello world, this is not a bus message at all!"), ErrMalformed},
		{"empty", nil, ErrMalformed},
	}
	for _, c := range cases {
		if _, _, err := v.Check(c.data); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Nothing above moved the sender's sequence: 6 is still next and not a gap.
	if _, gap, err := v.Check(msg(6, now).Seal(key)); err != nil || gap {
		t.Errorf("next message: gap %v, err %v", gap, err)
	}
	if _, gap, err := v.Check(msg(9, now).Seal(key)); err != nil || !gap {
		t.Errorf("skipping 7 and 8 must report a gap: gap %v, err %v", gap, err)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(msg(1, time.Unix(0, 0)).Seal(key))
	f.Add([]byte("CF1"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Open(data, key)
		if err == nil && (m.Op != OpDelete && m.Op != OpPrefix && m.Op != OpFlush && m.Op != OpFilled) {
			t.Fatalf("accepted op %q", m.Op)
		}
		// Anything signed with another key must never open.
		if _, err := Open(data, []byte("another key")); err == nil && len(data) > 0 {
			if _, err2 := Open(data, key); err2 == nil {
				t.Fatal("one message opened with two keys")
			}
		}
	})
}

// TestVerifierTellsDuplicatesFromReplays: every message travels through every shard, so a
// copy may arrive after a newer message that came through a faster shard. That copy is a
// duplicate, not a replay; a message never seen but inside the window is late, not a gap.
func TestVerifierTellsDuplicatesFromReplays(t *testing.T) {
	now := time.Now()
	v := NewVerifier("shop/web", key, 30*time.Second)
	v.Now = func() time.Time { return now }
	check := func(seq uint64) (bool, error) {
		_, gap, err := v.Check(msg(seq, now).Seal(key))
		return gap, err
	}
	for _, seq := range []uint64{10, 11, 12} { // shard A
		if gap, err := check(seq); err != nil || gap {
			t.Fatalf("seq %d: gap %v, err %v", seq, gap, err)
		}
	}
	for _, seq := range []uint64{10, 11, 12} { // the same messages through shard B, behind
		if _, err := check(seq); !errors.Is(err, ErrDuplicate) {
			t.Errorf("copy of %d through another shard: %v, want duplicate", seq, err)
		}
	}
	if gap, err := check(14); err != nil || !gap { // 13 lost on A so far: a gap
		t.Fatalf("seq 14: gap %v, err %v", gap, err)
	}
	if gap, err := check(13); err != nil || gap { // ... then 13 arrives through B: late, applied
		t.Errorf("late 13: gap %v, err %v, want accepted", gap, err)
	}
	if _, err := check(13); !errors.Is(err, ErrDuplicate) {
		t.Errorf("second 13: %v, want duplicate", err)
	}
	// Far ahead, then something older than the window: cannot be told from a replay.
	if _, err := check(14 + window + 10); err != nil {
		t.Fatal(err)
	}
	if _, err := check(14); !errors.Is(err, ErrReplayed) {
		t.Errorf("seq older than the window: %v, want replayed", err)
	}
}

// TestVerifierForgetsIdleSenders: a restarted agent is a new sender; the old one's state is
// dropped once its messages would be expired anyway.
func TestVerifierForgetsIdleSenders(t *testing.T) {
	now := time.Now()
	v := NewVerifier("shop/web", key, time.Second)
	v.Now = func() time.Time { return now }
	for i := range 100 {
		m := msg(1, now)
		m.Sender = fmt.Sprintf("agent-%d", i)
		if _, _, err := v.Check(m.Seal(key)); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(3 * time.Second)
	v.Check(msg(1, now).Seal(key))
	if n := v.Senders(); n != 1 {
		t.Errorf("%d senders remembered after the others went idle, want 1", n)
	}
}
