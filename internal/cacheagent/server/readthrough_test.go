package server_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// testOrigin is a real HTTP origin that counts the requests it gets, per key.
type testOrigin struct {
	*httptest.Server
	total   atomic.Int64
	mu      sync.Mutex
	perKey  map[string]int
	version atomic.Int64 // bumped to change every value
	status  atomic.Int64 // when non-zero, every answer has this status
	delay   atomic.Int64 // nanoseconds before answering
	hang    atomic.Bool  // never answer (until the client gives up)
}

func startOrigin(t *testing.T) *testOrigin {
	o := &testOrigin{perKey: map[string]int{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/items/")
		o.total.Add(1)
		o.mu.Lock()
		o.perKey[key]++
		o.mu.Unlock()
		if o.hang.Load() {
			<-r.Context().Done()
			return
		}
		time.Sleep(time.Duration(o.delay.Load()))
		if st := o.status.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		switch {
		case strings.HasPrefix(key, "missing"):
			http.NotFound(w, r)
		case strings.HasPrefix(key, "huge"):
			io.WriteString(w, strings.Repeat("x", 2048))
		default:
			fmt.Fprintf(w, "%s@v%d auth=%s", key, o.version.Load(), r.Header.Get("Authorization"))
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *testOrigin) requests(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.perKey[key]
}

// originPolicy reads "item:" keys through o.
func originPolicy(o *testOrigin, ttl, swr, sie time.Duration) contract.Policy {
	return contract.Policy{Name: "items", Prefix: "item:", TTLMillis: ttl.Milliseconds(), L1Enabled: true, L1Mode: "ttl",
		InvalidateOnWrite: true, NegativeTTLMillis: 5000,
		Origin:                     &contract.Origin{URL: o.URL + "/items/{key}", TimeoutMillis: 300, HeadersSecret: "catalog-auth", AllowedStatus: []int32{200}},
		StaleWhileRevalidateMillis: swr.Milliseconds(), StaleIfErrorMillis: sie.Milliseconds()}
}

// withOriginPolicy gives every agent the ring plus policy p, and the origin's header Secret.
func withOriginPolicy(t *testing.T, agents []*agent, p contract.Policy) {
	t.Helper()
	for _, a := range agents {
		withPolicy(t, a, p)
		a.srv.SetOriginHeaders(map[string]map[string]string{"catalog-auth": {"Authorization": "Bearer t0ken"}})
	}
}

func originAgents(t *testing.T, n int, p func(*testOrigin) contract.Policy) ([]*agent, *testOrigin) {
	o := startOrigin(t)
	agents := startBusAgentsWith(t, twoShards(t), n, 5*time.Second)
	withOriginPolicy(t, agents, p(o))
	return agents, o
}

func TestColdKeyReadByAThousandReachesTheOriginOnce(t *testing.T) {
	agents, o := originAgents(t, 3, func(o *testOrigin) contract.Policy { return originPolicy(o, time.Minute, 0, 0) })
	o.delay.Store(int64(50 * time.Millisecond)) // long enough for every reader to arrive during the fetch
	const readers = 1000
	conns := make([]*conn, readers)
	for i := range conns {
		conns[i] = agents[i%3].dial(t)
	}
	var wrong atomic.Value
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			<-start
			if got := c.do("GET", "item:42"); got != "42@v0 auth=Bearer t0ken" {
				wrong.Store(got)
			}
		})
	}
	close(start)
	wg.Wait()
	if w := wrong.Load(); w != nil {
		t.Fatalf("a reader got %q", w)
	}
	var agentShared, fleetShared int64
	for _, a := range agents {
		agentShared += a.srv.Stats.Origin.CoalescedAgent.Load()
		fleetShared += a.srv.Stats.Origin.CoalescedFleet.Load()
	}
	fmt.Printf("read-through: %d concurrent GETs of one cold key over 3 agents: %d origin request(s); %d readers shared their agent's fetch, %d waited for another agent's\n",
		readers, o.total.Load(), agentShared, fleetShared)
	if n := o.total.Load(); n != 1 {
		t.Errorf("origin requests = %d, want 1", n)
	}
}

func TestReadThroughAnswers(t *testing.T) {
	agents, o := originAgents(t, 1, func(o *testOrigin) contract.Policy { return originPolicy(o, time.Minute, 0, 0) })
	c := agents[0].dial(t)

	// A fill is stored with the policy TTL and read back from the shard, not the origin.
	if got := c.do("GET", "item:a/b c"); got != "a/b c@v0 auth=Bearer t0ken" {
		t.Fatalf("GET = %q", got)
	}
	if got := c.do("GET", "item:a/b c"); got != "a/b c@v0 auth=Bearer t0ken" || o.requests("a/b c") != 1 {
		t.Fatalf("second GET = %q after %d origin requests, want the stored value after 1", got, o.requests("a/b c"))
	}
	if pttl := c.do("PTTL", "item:a/b c"); pttl < "59000" || len(pttl) != 5 {
		t.Errorf("PTTL = %s, want about 60000 (the policy TTL)", pttl)
	}

	// The stored bytes carry the freshness stamp: partial reads answer from the value, partial
	// writes are refused.
	if got := c.do("STRLEN", "item:a/b c"); got != "26" {
		t.Errorf("STRLEN = %s, want 26 (the value's length)", got)
	}
	if got := c.do("GETRANGE", "item:a/b c", "0", "4"); got != "a/b c" {
		t.Errorf("GETRANGE = %q", got)
	}
	if got := c.do("APPEND", "item:a/b c", "x"); !strings.HasPrefix(got, "ERR:ERR APPEND is not available on keys whose policy compresses values or reads them through an origin") {
		t.Errorf("APPEND = %q, want refused", got)
	}

	// 404 is cached for negativeCacheTTL and read as nil.
	for i := 0; i < 3; i++ {
		if got := c.do("GET", "item:missing-1"); got != "(nil)" {
			t.Fatalf("GET of a key the origin does not have = %q", got)
		}
	}
	if n := o.requests("missing-1"); n != 1 {
		t.Errorf("origin asked %d times for a missing key, want 1 (negative cache)", n)
	}

	// A failure is an error naming the origin's status; nothing is stored, and the fleet's
	// other readers of the key share the failure for a second instead of asking again.
	o.status.Store(503)
	want := "ERR:CFORIGIN origin answered 503 Service Unavailable (policy items); nothing was stored"
	if got := c.do("GET", "item:b"); got != want {
		t.Errorf("GET with the origin failing = %q, want %q", got, want)
	}
	if got := c.do("GET", "item:b"); got != want || o.requests("b") != 1 {
		t.Errorf("second GET = %q after %d origin requests, want the same error after 1", got, o.requests("b"))
	}
	o.status.Store(0)
	time.Sleep(1100 * time.Millisecond)
	if got := c.do("GET", "item:b"); got != "b@v0 auth=Bearer t0ken" {
		t.Errorf("GET after the origin recovered = %q", got)
	}

	// A value over the policy's limit (1024 bytes here) is refused, not truncated.
	if got := c.do("GET", "item:huge"); !strings.HasPrefix(got, "ERR:CFORIGIN origin's value exceeds the limit of 1024 bytes") {
		t.Errorf("GET of an oversized origin value = %q", got)
	}
	if got := c.do("EXISTS", "item:huge"); got != "0" {
		t.Errorf("oversized value stored: EXISTS = %s", got)
	}

	// MGET reads through every missing key, in the client's order; keys of other policies are
	// plain reads.
	c.do("SET", "plain", "p")
	if got := c.do("MGET", "item:a/b c", "item:m1", "plain", "item:missing-2", "nokey"); got != "[a/b c@v0 auth=Bearer t0ken m1@v0 auth=Bearer t0ken p (nil) (nil)]" {
		t.Errorf("MGET = %q", got)
	}

	// A client's own write wins: read back as written, no origin request.
	c.do("SET", "item:w", "mine")
	if got := c.do("GET", "item:w"); got != "mine" || o.requests("w") != 0 {
		t.Errorf("GET after SET = %q with %d origin requests", got, o.requests("w"))
	}

	// A transaction reads the shard only.
	c.do("MULTI")
	c.do("GET", "item:tx")
	if got := c.do("EXEC"); got != "[(nil)]" || o.requests("tx") != 0 {
		t.Errorf("EXEC = %q with %d origin requests, want [(nil)] and none", got, o.requests("tx"))
	}
}

func TestAWriteDuringAFetchWins(t *testing.T) {
	agents, o := originAgents(t, 2, func(o *testOrigin) contract.Policy { return originPolicy(o, time.Minute, 0, 0) })
	o.delay.Store(int64(200 * time.Millisecond))
	done := make(chan string)
	go func() { done <- agents[0].dial(t).do("GET", "item:race") }()
	time.Sleep(80 * time.Millisecond) // the fetch is under way
	if got := agents[1].dial(t).do("SET", "item:race", "written"); got != "OK" {
		t.Fatal(got)
	}
	if got := <-done; got != "race@v0 auth=Bearer t0ken" {
		t.Errorf("the reader that started before the write got %q", got)
	}
	for i, a := range agents {
		if got := a.dial(t).do("GET", "item:race"); got != "written" {
			t.Errorf("agent %d reads %q after the write, want the written value (the fetch must not overwrite it)", i, got)
		}
	}
}

func TestShardDownStillReadsThrough(t *testing.T) {
	o := startOrigin(t)
	shards := twoShards(t)
	agents := startBusAgentsWith(t, shards, 1, 5*time.Second)
	withOriginPolicy(t, agents, originPolicy(o, time.Minute, 0, 0))
	key := keyOn(t, agents[0], "item:", 1)
	shards[1].Stop()
	c := agents[0].dial(t)
	for i := 0; i < 3; i++ {
		if got, want := c.do("GET", key), strings.TrimPrefix(key, "item:")+"@v0 auth=Bearer t0ken"; got != want {
			t.Fatalf("GET with the key's shard down = %q, want %q from the origin", got, want)
		}
	}
	if n := agents[0].srv.Stats.Origin.Unstored.Load(); n != 3 {
		t.Errorf("unstored fetches = %d, want 3", n)
	}
}

// TestDotSegmentKeysNeverLeaveTheOriginPath: "item:.." once asked the origin for
// "/items/..", which every server resolves to "/": a client could read any path of the origin
// with the policy's credentials.
func TestDotSegmentKeysNeverLeaveTheOriginPath(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.EscapedPath())
		mu.Unlock()
		io.WriteString(w, "value")
	}))
	t.Cleanup(origin.Close)
	a := startAgent(t, twoShards(t), defaults())
	p := contract.Policy{Name: "items", Prefix: "item:", TTLMillis: 60000, L1Enabled: true, L1Mode: "ttl",
		Origin: &contract.Origin{URL: origin.URL + "/api/items/{key}", TimeoutMillis: 300, AllowedStatus: []int32{200}}}
	withOriginPolicy(t, []*agent{a}, p)
	c := a.dial(t)
	for _, key := range []string{"item:..", "item:."} {
		if got := c.do("GET", key); !strings.HasPrefix(got, "ERR:") {
			t.Errorf("GET %s = %q, want an error", key, got)
		}
	}
	base := httptestServer(t, a)
	for _, path := range []string{"/v1/read/items/%2e%2e", "/v1/read/items/..", "/v1/read/items/."} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Errorf("GET %s answered 200", path)
		}
	}
	if got := c.do("GET", "item:ok"); got != "value" {
		t.Errorf("GET item:ok = %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range paths {
		if !strings.HasPrefix(p, "/api/items/") || strings.Contains(p, "/..") || strings.HasSuffix(p, "/.") {
			t.Errorf("the origin was asked for %q, outside /api/items/", p)
		}
	}
	if len(paths) != 1 {
		t.Errorf("origin asked %d times (%v), want once, for item:ok", len(paths), paths)
	}
}
