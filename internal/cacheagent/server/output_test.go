package server_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/server"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestClientsThatDoNotReadAreDisconnected: 40 clients pipelining GETs of 1 MiB values and never
// reading once grew the shards to gigabytes, tripped the breakers and made well-behaved
// clients read nil for keys that existed. The output limits disconnect them; the others see
// nothing of it. Both executors (event loop on and off).
func TestClientsThatDoNotReadAreDisconnected(t *testing.T) {
	for _, loops := range []int{1, 0} {
		t.Run(fmt.Sprintf("event-loops=%d", loops), func(t *testing.T) {
			shards := twoShards(t)
			o := defaults()
			o.defaults.L1 = false
			o.defaults.MaxValueBytes = 2 << 20
			o.config.EventLoops = loops
			o.config.ShardTimeout = time.Second * raceSlowdown // the shards work hard here: no CFDOWN
			o.config.Output = server.OutputLimits{HardBytes: 8 << 20, SoftBytes: 2 << 20, SoftFor: time.Second}
			a := startAgent(t, shards, o)
			good := a.dial(t)
			big := strings.Repeat("v", 1<<20)
			var keys []string
			for i := range 4 {
				k := fmt.Sprintf("big:%d", i)
				good.do("SET", k, big)
				keys = append(keys, k)
			}
			// Ten clients send 200 GETs of 1 MiB values each and never read.
			var hostile []*conn
			for range 10 {
				h := a.dial(t)
				var pipe []byte
				for i := range 200 {
					pipe = append(pipe, tu.Encode("GET", keys[i%4])...)
				}
				go h.nc.Write(pipe)
				hostile = append(hostile, h)
			}
			// One client asks for 30 MiB, a batch at a time under the hard limit and over the soft
			// one: once the kernel's buffers are full, the soft time runs out.
			slow := a.dial(t)
			for i := range 30 {
				slow.nc.Write(tu.Encode("GET", keys[i%4]))
			}
			// A well-behaved client meanwhile: every value right, no error.
			var wg sync.WaitGroup
			var errs atomic.Int64
			stop := time.Now().Add(3 * time.Second)
			for w := range 2 {
				wg.Go(func() {
					c := a.dial(t)
					for i := 0; time.Now().Before(stop); i++ {
						k := fmt.Sprintf("small:%d:%d", w, i)
						if got := c.do("SET", k, "x"); got != "OK" {
							errs.Add(1)
							t.Errorf("SET = %q", got)
						}
						if got := c.do("GET", k); got != "x" {
							errs.Add(1)
							t.Errorf("GET %s = %q", k, got)
						}
						if got := c.do("STRLEN", keys[i%4]); got != "1048576" {
							errs.Add(1)
							t.Errorf("STRLEN %s = %q", keys[i%4], got)
						}
					}
				})
			}
			wg.Wait()
			// Every hostile connection was closed by the agent: reading it ends.
			for i, h := range append(hostile, slow) {
				h.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := io.Copy(io.Discard, h.rd)
				// A reset is a close too: the kernel resets a socket closed with requests unread.
				if err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("client %d: the agent did not close it (read %d bytes, %v)", i, n, err)
				}
			}
			if errs.Load() > 0 {
				t.Errorf("%d errors to well-behaved clients", errs.Load())
			}
			if n := a.srv.Stats.OutputLimitClosed.Load(); n < 11 {
				t.Errorf("%d clients disconnected over the output limits, want the 11 that did not read", n)
			}
			for i, sh := range shards {
				out, _ := sh.Do("INFO", "memory")
				var peak int64
				for _, line := range strings.Split(out, "\n") {
					if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory_peak:"); ok {
						fmt.Sscan(v, &peak)
					}
				}
				if peak == 0 || peak > 200<<20 {
					t.Errorf("shard %d peak memory %d MiB (the hostile clients asked for 2,000 MiB)", i, peak>>20)
				}
			}
		})
	}
}
