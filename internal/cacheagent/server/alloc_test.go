package server_test

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"
)

// TestAnL1HitAllocatesAlmostNothing: an L1 hit is the agent's hot path; every allocation on it
// is CPU now and a garbage collection (a tail-latency hit) later. Measured over
// a real connection, with the client's side reusing its buffers.
func TestAnL1HitAllocatesAlmostNothing(t *testing.T) {
	for _, mode := range []struct {
		name string
		set  func(*options)
	}{
		{"tracking", func(*options) {}},
		{"ttl", func(o *options) { o.defaults.TTLModeForAll = true }},
	} {
		t.Run(mode.name, func(t *testing.T) {
			o := defaults()
			mode.set(&o)
			perHit := allocationsPerL1Hit(t, startAgent(t, twoShards(t), o))
			t.Logf("%.2f allocations per L1 hit", perHit)
			if perHit > 0.5 {
				t.Errorf("%.2f allocations per L1 hit, want at most 0.5", perHit)
			}
		})
	}
}

func allocationsPerL1Hit(t *testing.T, a *agent) float64 {
	c := a.dial(t)
	if got := c.do("SET", "hot", "value"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	c.do("GET", "hot") // a miss that fills the L1
	const pipeline, rounds = 16, 200
	req := bytes.Repeat([]byte("*2\r\n$3\r\nGET\r\n$3\r\nhot\r\n"), pipeline)
	want := bytes.Repeat([]byte("$5\r\nvalue\r\n"), pipeline)
	got := make([]byte, len(want))
	round := func() {
		if _, err := c.nc.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.rd, got); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("replies %q, %v", got, err)
		}
	}
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	for range 20 {
		round() // warm: buffers grown, pools filled
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		round()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / (pipeline * rounds)
}
