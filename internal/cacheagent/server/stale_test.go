package server_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestStaleWhileRevalidateAnswersAtOnceAndRefreshesOnce(t *testing.T) {
	agents, o := originAgents(t, 3, func(o *testOrigin) contract.Policy {
		p := originPolicy(o, time.Second, 30*time.Second, 0)
		p.Origin.TimeoutMillis = 2000
		return p
	})
	if got := agents[0].dial(t).do("GET", "item:s"); got != "s@v0 auth=Bearer t0ken" {
		t.Fatal(got)
	}
	o.version.Store(1)
	o.delay.Store(int64(300 * time.Millisecond))
	time.Sleep(1100 * time.Millisecond) // past the TTL, inside the window
	var slowest atomic.Int64
	var wrong atomic.Value
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		c := agents[i%3].dial(t)
		wg.Go(func() {
			start := time.Now()
			if got := c.do("GET", "item:s"); got != "s@v0 auth=Bearer t0ken" {
				wrong.Store(got)
			}
			if d := int64(time.Since(start)); d > slowest.Load() {
				slowest.Store(d)
			}
		})
	}
	wg.Wait()
	if w := wrong.Load(); w != nil {
		t.Fatalf("a reader of the stale value got %q", w)
	}
	if d := time.Duration(slowest.Load()); d >= 300*time.Millisecond {
		t.Errorf("the slowest stale read took %s: it waited for the origin (300 ms)", d)
	}
	c := agents[1].dial(t)
	eventually(t, "the refreshed value", func() error {
		if got := c.do("GET", "item:s"); got != "s@v1 auth=Bearer t0ken" {
			return fmt.Errorf("GET = %q", got)
		}
		return nil
	})
	if n := o.requests("s"); n != 2 {
		t.Errorf("origin requests = %d, want 2 (the fill and one refresh for 30 readers on 3 agents)", n)
	}
	var stale int64
	for _, a := range agents {
		stale += a.srv.Stats.Origin.StaleRevalidate.Load()
	}
	if stale < 30 {
		t.Errorf("stale answers counted = %d, want >= 30", stale)
	}
}

func TestStaleIfErrorAnswersWithinTheOriginTimeout(t *testing.T) {
	agents, o := originAgents(t, 1, func(o *testOrigin) contract.Policy { return originPolicy(o, time.Second, 0, time.Minute) })
	c := agents[0].dial(t)
	c.do("GET", "item:e")
	time.Sleep(1100 * time.Millisecond)
	for _, failure := range []string{"503", "hang"} {
		if failure == "hang" {
			o.hang.Store(true)
		} else {
			o.status.Store(503)
		}
		start := time.Now()
		if got := c.do("GET", "item:e"); got != "e@v0 auth=Bearer t0ken" {
			t.Errorf("origin %s: GET = %q, want the stale value", failure, got)
		}
		if d := time.Since(start); d > 300*time.Millisecond+200*time.Millisecond {
			t.Errorf("origin %s: the read took %s, more than the origin timeout (300 ms) allows", failure, d)
		}
		time.Sleep(1100 * time.Millisecond) // the failure note expires: the next read asks again
	}
	if n := agents[0].srv.Stats.Origin.StaleError.Load(); n != 2 {
		t.Errorf("stale-if-error answers = %d, want 2", n)
	}
	// Without a stale value to fall back on, the failure is the answer.
	start := time.Now()
	if got := c.do("GET", "item:cold"); !strings.HasPrefix(got, "ERR:CFORIGIN origin did not answer within its timeout of 300ms") {
		t.Errorf("cold GET with the origin hanging = %q", got)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("cold GET took %s", d)
	}
	o.hang.Store(false)
	o.status.Store(0)
	o.version.Store(1)
	time.Sleep(1100 * time.Millisecond)
	if got := c.do("GET", "item:e"); got != "e@v1 auth=Bearer t0ken" {
		t.Errorf("GET once the origin is back = %q, want the new value", got)
	}
}

func TestHTTPReadThroughSaysHowItAnswered(t *testing.T) {
	agents, o := originAgents(t, 1, func(o *testOrigin) contract.Policy { return originPolicy(o, time.Second, 2*time.Second, time.Minute) })
	base := httptestServer(t, agents[0])
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Cache-Status"), string(body)
	}
	for _, step := range []struct {
		name, path string
		before     func()
		code       int
		status     string // Cache-Status, up to "ttl=" details
		body       string
	}{
		{name: "cold", path: "/v1/read/items/h%2F1", code: 200, status: "cachefleet; fwd=miss; fwd-status=200; stored", body: "h/1@v0 auth=Bearer t0ken"},
		{name: "fresh", path: "/v1/read/items/h%2F1", code: 200, status: "cachefleet; hit; ttl=1", body: "h/1@v0 auth=Bearer t0ken"},
		{name: "stale while revalidating", path: "/v1/read/items/h%2F1", before: func() { time.Sleep(1100 * time.Millisecond) },
			code: 200, status: "cachefleet; hit; ttl=-", body: "h/1@v0 auth=Bearer t0ken"},
		{name: "stale if error", path: "/v1/read/items/h%2F1", before: func() { time.Sleep(3100 * time.Millisecond); o.status.Store(500) },
			code: 200, status: "cachefleet; hit; ttl=-", body: "h/1@v"},
		{name: "error", path: "/v1/read/items/other", code: 502, status: "cachefleet; fwd=miss; fwd-status=500", body: "origin answered 500 Internal Server Error"},
		{name: "not found", path: "/v1/read/items/missing-h", before: func() { o.status.Store(0) }, code: 404, status: "cachefleet; fwd=miss; fwd-status=404; stored", body: "not found"},
		{name: "negative hit", path: "/v1/read/items/missing-h", code: 404, status: "cachefleet; hit", body: "not found"},
		{name: "no such policy", path: "/v1/read/nope/x", code: 404, body: `no policy named "nope"`},
	} {
		if step.before != nil {
			step.before()
		}
		code, status, body := get(step.path)
		if code != step.code || !strings.HasPrefix(status, step.status) || !strings.HasPrefix(body, step.body) {
			t.Errorf("%s: %d %q %q, want %d %q %q", step.name, code, status, body, step.code, step.status, step.body)
		}
		switch step.name {
		case "stale while revalidating":
			if !strings.HasSuffix(status, "; detail=stale-while-revalidate") {
				t.Errorf("%s: Cache-Status %q", step.name, status)
			}
		case "stale if error":
			if !strings.HasSuffix(status, "; fwd=stale; fwd-status=500; detail=stale-if-error") {
				t.Errorf("%s: Cache-Status %q", step.name, status)
			}
		}
	}
}

// TestTTLBoundaryUnderSteadyLoad reads 1,000 keys steadily across several TTL windows, with
// and without stale-while-revalidate, and prints the origin refreshes per key per window and
// the p99 read latency during refresh bursts and between them.
func TestTTLBoundaryUnderSteadyLoad(t *testing.T) {
	const keys, ttl = 1000, 2 * time.Second
	for _, swr := range []time.Duration{10 * time.Second, 0} {
		t.Run("swr="+swr.String(), func(t *testing.T) {
			agents, o := originAgents(t, 3, func(o *testOrigin) contract.Policy {
				p := originPolicy(o, ttl, swr, 0)
				p.L1Enabled = false // every read reaches the shard and sees the stamp
				p.Origin.TimeoutMillis = 1000
				return p
			})
			var times sync.Map // key -> []time.Time of origin requests, recorded by a wrapped handler
			inner := o.Config.Handler
			o.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				k := strings.TrimPrefix(r.URL.Path, "/items/")
				v, _ := times.LoadOrStore(k, &stamps{})
				v.(*stamps).add(time.Now())
				inner.ServeHTTP(w, r)
			})
			fillKeys(t, agents[0], keys)
			o.delay.Store(int64(20 * time.Millisecond))
			type read struct {
				at  time.Time
				dur time.Duration
			}
			var mu sync.Mutex
			var reads []read
			var errs atomic.Int64
			stop := time.Now().Add(3*ttl + ttl/2)
			var wg sync.WaitGroup
			for g := 0; g < 6; g++ {
				c := agents[g%3].dial(t)
				wg.Go(func() {
					var mine []read
					for time.Now().Before(stop) {
						k := "item:k" + strconv.Itoa(rand.IntN(keys))
						start := time.Now()
						if got := c.do("GET", k); !strings.HasPrefix(got, k[len("item:"):]+"@") {
							errs.Add(1)
						}
						mine = append(mine, read{start, time.Since(start)})
					}
					mu.Lock()
					reads = append(reads, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			// Refreshes per key per window: after the fill, consecutive origin requests of a
			// key less than a TTL apart mean two refreshes in one window.
			var burst []time.Time
			tooClose, maxPerKey, refreshes := 0, 0, 0
			times.Range(func(_, v any) bool {
				ts := v.(*stamps).sorted()
				burst = append(burst, ts[1:]...)
				refreshes += len(ts) - 1
				maxPerKey = max(maxPerKey, len(ts)-1)
				for i := 2; i < len(ts); i++ {
					if ts[i].Sub(ts[i-1]) < ttl-50*time.Millisecond {
						tooClose++
					}
				}
				return true
			})
			// Reads during a refresh burst (within 100 ms of an origin request) against the others.
			slices.SortFunc(burst, func(a, b time.Time) int { return a.Compare(b) })
			var atBoundary, between []time.Duration
			for _, r := range reads {
				i, _ := slices.BinarySearchFunc(burst, r.at, func(a, b time.Time) int { return a.Compare(b) })
				near := (i < len(burst) && burst[i].Sub(r.at) < 100*time.Millisecond) || (i > 0 && r.at.Sub(burst[i-1]) < 100*time.Millisecond)
				if near {
					atBoundary = append(atBoundary, r.dur)
				} else {
					between = append(between, r.dur)
				}
			}
			fmt.Printf("ttl boundary (swr=%s): %d keys, %d reads over %.1f TTL windows, %d errors; %d refreshes, at most %d per key, %d pairs closer than a TTL; p99 %s at the boundary (%d reads), %s between (%d reads)\n",
				swr, keys, len(reads), float64(3*ttl+ttl/2)/float64(ttl), errs.Load(), refreshes, maxPerKey, tooClose,
				p99(atBoundary), len(atBoundary), p99(between), len(between))
			if errs.Load() != 0 {
				t.Errorf("%d reads failed", errs.Load())
			}
			if swr > 0 && tooClose != 0 {
				t.Errorf("%d times a key was refreshed twice within one TTL window", tooClose)
			}
		})
	}
}

// fillKeys reads item:k0..k(n-1) through a, 100 at a time (fetched in parallel), so their TTLs
// end together.
func fillKeys(t *testing.T, a *agent, n int) {
	c := a.dial(t)
	for i := 0; i < n; i += 100 {
		args := []string{"MGET"}
		for j := i; j < min(i+100, n); j++ {
			args = append(args, "item:k"+strconv.Itoa(j))
		}
		if got := c.do(args...); strings.Contains(got, "(nil)") || strings.Contains(got, "ERR") {
			t.Fatalf("filling: %s", got)
		}
	}
}

type stamps struct {
	mu sync.Mutex
	ts []time.Time
}

func (s *stamps) add(t time.Time) {
	s.mu.Lock()
	s.ts = append(s.ts, t)
	s.mu.Unlock()
}

func (s *stamps) sorted() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.ts)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*99/100].Round(10 * time.Microsecond)
}

// TestOriginOutageIsCoveredByStaleIfError takes the origin down for 60 s while 1,000 keys are
// read steadily past their TTL: every read is answered.
func TestOriginOutageIsCoveredByStaleIfError(t *testing.T) {
	const keys = 1000
	const outage = 60 * time.Second
	agents, o := originAgents(t, 3, func(o *testOrigin) contract.Policy {
		p := originPolicy(o, time.Second, 0, 10*time.Minute)
		p.L1Enabled = false
		return p
	})
	fillKeys(t, agents[0], keys)
	before := o.total.Load()
	o.status.Store(503)
	stop := time.Now().Add(outage)
	var answered, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		c := agents[g%3].dial(t)
		wg.Go(func() {
			for time.Now().Before(stop) {
				k := "item:k" + strconv.Itoa(rand.IntN(keys))
				if got := c.do("GET", k); strings.HasPrefix(got, k[len("item:"):]+"@v0") {
					answered.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, got)
				}
			}
		})
	}
	wg.Wait()
	var stale int64
	for _, a := range agents {
		stale += a.srv.Stats.Origin.StaleError.Load()
	}
	total := answered.Load() + failed.Load()
	fmt.Printf("origin outage of %s: %d reads of %d keys past their TTL, %.2f%% answered, %d errors; %d stale-if-error answers; %d origin requests (%.1f per key)\n",
		outage, total, keys, 100*float64(answered.Load())/float64(total), failed.Load(), stale, o.total.Load()-before, float64(o.total.Load()-before)/keys)
	if failed.Load() != 0 {
		t.Errorf("%d reads failed during the outage, first: %v", failed.Load(), firstErr.Load())
	}
}
