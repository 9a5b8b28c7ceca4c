//go:build unix

package upstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// replies records what its requests got.
type replies struct {
	got  []string
	errs []error
}

func (r *replies) Reply(p []byte, err error) {
	r.got = append(r.got, string(p))
	r.errs = append(r.errs, err)
}

// await reads until want replies have come, or the connection ends.
func await(t *testing.T, c *Conn, r *replies, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.got) < want && c.Err() == nil {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := c.OnReadable(); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d replies of %d after 5s", len(r.got), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func dial(t *testing.T, addr, password string) *Conn {
	t.Helper()
	fd, err := Dial(context.Background(), addr, password, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := New(fd)
	t.Cleanup(func() { CloseFd(fd) })
	return c
}

func TestRepliesComeBackInOrderFromAPipeline(t *testing.T) {
	srv := tu.StartRedis(t, "secret")
	c := dial(t, srv.Addr(), "secret")
	r := &replies{}
	big := strings.Repeat("v", 3<<20) // a reply read in many pieces
	c.Send(r, tu.Encode("SET", "big", big))
	for i := range 500 {
		c.Send(r, tu.Encode("SET", fmt.Sprint("k", i), fmt.Sprint(i)))
		c.Send(r, tu.Encode("GET", fmt.Sprint("k", i)))
	}
	c.Send(r, tu.Encode("GET", "big"))
	c.Send(r, tu.Encode("GET", "missing"))
	await(t, c, r, 1003)
	if r.got[0] != "+OK\r\n" {
		t.Fatalf("first reply %q", r.got[0])
	}
	for i := range 500 {
		if set, get := r.got[1+2*i], r.got[2+2*i]; set != "+OK\r\n" || get != fmt.Sprintf("$%d\r\n%d\r\n", len(fmt.Sprint(i)), i) {
			t.Fatalf("request %d: %q %q", i, set, get)
		}
	}
	if r.got[1001] != fmt.Sprintf("$%d\r\n%s\r\n", len(big), big) || r.got[1002] != "_\r\n" {
		t.Fatalf("last replies %.40q %q", r.got[1001], r.got[1002])
	}
	list, _ := srv.Do("CLIENT", "LIST")
	if !strings.Contains(list, "name="+Name) {
		t.Fatalf("the connection is not named:\n%s", list)
	}
}

func TestAClosedConnectionFailsEveryRequestWaiting(t *testing.T) {
	srv := tu.StartRedis(t, "")
	c := dial(t, srv.Addr(), "")
	r := &replies{}
	c.Send(r, tu.Encode("SET", "k", "v"))
	await(t, c, r, 1)
	srv.Freeze()
	c.Send(r, tu.Encode("GET", "k"))
	c.Send(r, tu.Encode("GET", "k"))
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if !c.Stalled(time.Now().Add(time.Second), 500*time.Millisecond) || c.Stalled(time.Now(), time.Second) {
		t.Fatal("Stalled does not follow the oldest request's wait")
	}
	srv.Stop() // killed while frozen: thawed first, it could answer the reads before it died
	await(t, c, r, 3)
	if c.Err() == nil || len(r.got) != 3 || r.errs[1] == nil || r.errs[2] == nil || !errors.Is(r.errs[2], c.Err()) {
		t.Fatalf("after the shard stopped: err %v, replies %q, errors %v", c.Err(), r.got, r.errs)
	}
}

func TestDialRefusesAWrongPassword(t *testing.T) {
	srv := tu.StartRedis(t, "secret")
	if fd, err := Dial(context.Background(), srv.Addr(), "wrong", time.Second); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		CloseFd(fd)
		t.Fatalf("Dial with a wrong password: %v", err)
	}
}

// pushCount is a reply callback that also records how many pushes had come before its reply.
type pushCount struct {
	replies
	c      *Conn
	before []uint64
}

func (p *pushCount) Reply(b []byte, err error) {
	p.replies.Reply(b, err)
	p.before = append(p.before, p.c.Pushes())
}

func TestATrackedReadsInvalidationComesInItsPlace(t *testing.T) {
	srv := tu.StartRedis(t, "secret")
	c := dial(t, srv.Addr(), "secret")
	var pushes []string
	c.OnPush = func(p []byte) { pushes = append(pushes, string(p)) }
	r := &pushCount{c: c}
	must(t, srv, "SET", "tracked", "v1")
	must(t, srv, "SET", "untracked", "v1")
	c.Send(r, tu.Encode("CLIENT", "CACHING", "YES"))
	c.Send(r, tu.Encode("GET", "tracked"))
	c.Send(r, tu.Encode("GET", "untracked")) // CACHING YES covers the next command only
	await(t, c, &r.replies, 3)
	if r.got[1] != "$2\r\nv1\r\n" || r.got[2] != "$2\r\nv1\r\n" {
		t.Fatalf("reads: %q", r.got)
	}
	must(t, srv, "SET", "untracked", "v2")
	must(t, srv, "SET", "tracked", "v2")
	c.Send(r, tu.Encode("PING"))
	await(t, c, &r.replies, 4)
	if len(pushes) != 1 || r.before[3] != 1 {
		t.Fatalf("pushes %q, %d of them before the PONG", pushes, r.before[3])
	}
	keys, all, ok := resp.Invalidated([]byte(pushes[0]), nil)
	if !ok || all || len(keys) != 1 || string(keys[0]) != "tracked" {
		t.Fatalf("resp.Invalidated(%q) = %q, %v, %v", pushes[0], keys, all, ok)
	}

	c.Send(r, tu.Encode("CLIENT", "CACHING", "YES"))
	c.Send(r, tu.Encode("GET", "tracked"))
	await(t, c, &r.replies, 6)
	must(t, srv, "FLUSHALL")
	c.Send(r, tu.Encode("PING"))
	await(t, c, &r.replies, 7)
	if len(pushes) != 2 {
		t.Fatalf("pushes after FLUSHALL: %q", pushes)
	}
	if _, all, ok := resp.Invalidated([]byte(pushes[1]), nil); !ok || !all {
		t.Fatalf("FLUSHALL's push %q read as all=%v ok=%v", pushes[1], all, ok)
	}
}

func must(t *testing.T, srv *tu.Redis, args ...string) {
	t.Helper()
	if _, err := srv.Do(args...); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidatedReadsOnlyInvalidations(t *testing.T) {
	for _, tc := range []struct {
		in      string
		keys    []string
		all, ok bool
	}{
		{">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n", []string{"a", ""}, false, true},
		{">2\r\n$10\r\ninvalidate\r\n_\r\n", nil, true, true},
		{">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", nil, false, false},
		{">2\r\n$10\r\ninvalidate\r\n*1\r\n:1\r\n", nil, false, false},
	} {
		keys, all, ok := resp.Invalidated([]byte(tc.in), nil)
		var got []string
		for _, k := range keys {
			got = append(got, string(k))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.keys) || all != tc.all || ok != tc.ok {
			t.Errorf("resp.Invalidated(%q) = %q, %v, %v", tc.in, got, all, ok)
		}
	}
}

// TestInFlightIsAWrittenBatchUntilItsLastReply: the loop holds a shard's next batch while one
// is in flight; a request queued but not written is not in flight, and the batch stops being
// in flight with its last reply.
func TestInFlightIsAWrittenBatchUntilItsLastReply(t *testing.T) {
	srv := tu.StartRedis(t, "")
	c := dial(t, srv.Addr(), "")
	r := &replies{}
	read := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); len(r.got) < want; time.Sleep(time.Millisecond) {
			if err := c.OnReadable(); err != nil || time.Now().After(deadline) {
				t.Fatalf("%d replies of %d: %v", len(r.got), want, err)
			}
		}
	}
	c.Send(r, tu.Encode("SET", "a", "1"))
	c.Send(r, tu.Encode("SET", "b", "2"))
	if c.InFlight() {
		t.Fatal("in flight before it was written")
	}
	if err := c.Flush(); err != nil || !c.InFlight() {
		t.Fatalf("after Flush: in flight %v, %v", c.InFlight(), err)
	}
	c.Send(r, tu.Encode("GET", "a")) // the next batch, held
	read(2)
	if c.InFlight() || c.Pending() != 1 {
		t.Fatalf("after the batch's replies: in flight %v, pending %d; want false, 1", c.InFlight(), c.Pending())
	}
	if err := c.Flush(); err != nil || !c.InFlight() {
		t.Fatalf("after the second Flush: in flight %v, %v", c.InFlight(), err)
	}
	read(3)
	if c.InFlight() || r.got[2] != "$1\r\n1\r\n" {
		t.Fatalf("in flight %v, GET a = %q", c.InFlight(), r.got[2])
	}
}
