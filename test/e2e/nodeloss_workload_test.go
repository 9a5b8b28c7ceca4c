//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"
)

// nodeDialer dials from inside node's network namespace (hack/node-cluster.sh names it after
// the node): a client there is an application on that node, which keeps talking to its node's
// agent while the node is cut off from this machine.
func nodeDialer(node string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		// A socket belongs to the namespace of the thread that creates it.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + node)
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		c, dialErr := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Left locked: the thread ends with its goroutine instead of serving others.
			return nil, errors.Join(dialErr, err)
		}
		runtime.UnlockOSThread()
		return c, dialErr
	}
}

// nodeClient is a go-redis client of the agent on node, from inside node.
func nodeClient(t *testing.T, ns, fleet, node, agentPod string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: podAddr(t, ns, agentPod, 6380), Password: fleetPassword(t, ns, fleet), Dialer: nodeDialer(node),
		// go-redis's own timeouts (3 s), as an application has them; no retries, to see each error.
		MaxRetries: -1, DialTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, PoolSize: 4,
	})
	t.Cleanup(func() { c.Close() })
	eventually(t, 30*time.Second, "agent "+agentPod+" answers PING from inside "+node, func() error {
		return c.Ping(context.Background()).Err()
	})
	return c
}

// lossWriter writes keys of its own one after another (prefix:0, prefix:1, ..., each holding its
// number), spread over every shard, and remembers which were acknowledged and when.
type lossWriter struct {
	prefix     string
	stop, done chan struct{}

	mu         sync.Mutex
	acked      map[string]time.Time
	failed     int
	errs       map[string]int       // by the error's first word
	lastErr    map[string]time.Time // when each kind of error was last seen
	firstMsg   map[string]string    // each kind's first message
	failures   []time.Time
	lastAck    time.Time
	longestGap time.Duration // between two acknowledged writes
}

func startLossWriter(c *redis.Client, prefix string) *lossWriter {
	w := &lossWriter{prefix: prefix, stop: make(chan struct{}), done: make(chan struct{}), acked: map[string]time.Time{}, errs: map[string]int{}, lastErr: map[string]time.Time{}, firstMsg: map[string]string{}}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			k := prefix + ":" + strconv.Itoa(i)
			err := c.Set(context.Background(), k, i, 0).Err()
			now := time.Now()
			w.mu.Lock()
			if err != nil {
				w.failed++
				kind := strings.Fields(err.Error())[0]
				w.errs[kind]++
				w.lastErr[kind] = now
				if _, seen := w.firstMsg[kind]; !seen {
					w.firstMsg[kind] = err.Error()
				}
				w.failures = append(w.failures, now)
			} else {
				w.acked[k] = now
				if !w.lastAck.IsZero() {
					w.longestGap = max(w.longestGap, now.Sub(w.lastAck))
				}
				w.lastAck = now
			}
			w.mu.Unlock()
			if err != nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return w
}

// writesBack is when (after t0) the refusals the loss caused ended: the last of those that
// follow one another from the loss on, each within 2 s of the one before; 0 if none started
// within 3 s of the loss. A lone refusal much later is not the loss's.
func (w *lossWriter) writesBack(t0 time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var end time.Time
	for _, f := range w.failures {
		switch {
		case f.Before(t0):
		case end.IsZero() && f.Sub(t0) <= 3*time.Second, !end.IsZero() && f.Sub(end) <= 2*time.Second:
			end = f
		case !end.IsZero():
			return end.Sub(t0)
		}
	}
	if end.IsZero() {
		return 0
	}
	return end.Sub(t0)
}

func (w *lossWriter) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// lost reads back every acknowledged key through c: those missing or holding another value are
// acknowledged writes lost, returned with when each was acknowledged.
func (w *lossWriter) lost(t *testing.T, c *redis.Client) map[string]time.Time {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]time.Time{}
	keys := make([]string, 0, len(w.acked))
	for k := range w.acked {
		keys = append(keys, k)
	}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 200)]
		keys = keys[len(batch):]
		vals, err := c.MGet(context.Background(), batch...).Result()
		if err != nil {
			t.Fatalf("reading back %s's writes: %v", w.prefix, err)
		}
		for i, k := range batch {
			_, n, _ := strings.Cut(k[len(w.prefix):], ":")
			if s, _ := vals[i].(string); s != n {
				out[k] = w.acked[k]
			}
		}
	}
	return out
}

// summary says what was acknowledged and refused, and until when (after t0) each kind of refusal
// went on.
func (w *lossWriter) summary(t0 time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var kinds []string
	for kind, n := range w.errs {
		kinds = append(kinds, fmt.Sprintf("%s %d until +%s, first %q", kind, n, w.lastErr[kind].Sub(t0).Round(100*time.Millisecond), w.firstMsg[kind]))
	}
	slices.Sort(kinds)
	return fmt.Sprintf("%d acknowledged, %d refused (%s)", len(w.acked), w.failed, strings.Join(kinds, ", "))
}

// lossReader reads seeded keys in turn and counts the reads that fail (a miss is no failure).
type lossReader struct {
	stop, done   chan struct{}
	reads, fails int
	firstErr     error
	failedAt     []time.Time // the first few
	slow         []string    // the first few reads that took over 1.5 s: key, start, duration
	slowest      time.Duration
}

func startLossReader(c *redis.Client, keys []string) *lossReader {
	r := &lossReader{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for i := 0; ; i++ {
			select {
			case <-r.stop:
				return
			default:
			}
			start := time.Now()
			err := c.Get(context.Background(), keys[i%len(keys)]).Err()
			took := time.Since(start)
			r.slowest = max(r.slowest, took)
			if took > 1500*time.Millisecond && len(r.slow) < 10 {
				r.slow = append(r.slow, fmt.Sprintf("%s at %s took %s", keys[i%len(keys)], start.Format("15:04:05.000"), took.Round(10*time.Millisecond)))
			}
			r.reads++
			if err != nil && !errors.Is(err, redis.Nil) {
				r.fails++
				if r.firstErr == nil {
					r.firstErr = err
				}
				if len(r.failedAt) < 10 {
					r.failedAt = append(r.failedAt, time.Now())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return r
}

// failures says how many reads failed, when (after t0) and the first error.
func (r *lossReader) failures(t0 time.Time) string {
	var at []string
	for _, f := range r.failedAt {
		at = append(at, "+"+f.Sub(t0).Round(100*time.Millisecond).String())
	}
	return fmt.Sprintf("%d at %s: %v; slow reads: %s", r.fails, strings.Join(at, " "), r.firstErr, strings.Join(r.slow, "; "))
}

func (r *lossReader) finish() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}
