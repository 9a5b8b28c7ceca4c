// Package httpapi is the agent's HTTP endpoint: probes, metrics, and an API for clients
// without a Redis client (keys, read-through reads, invalidation) and for debugging (the ring).
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/readthrough"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
)

// Agent is what the API needs of the agent it serves.
type Agent interface {
	Router() *router.Router // nil before the first ring
	Ready(ctx context.Context) bool
	Password() string
	// Announce and Settle bracket a write as every write of the agent does (the bus, the L1 fence).
	Announce(keys ...string)
	Settle(r *router.Router, keys ...string)
	ReadThrough() *readthrough.Fetcher
	RefusedOversize()
	InvalidateKeys(ctx context.Context, keys []string) (int64, error)
	InvalidatePrefixes(ctx context.Context, prefixes []string) (int64, error)
	InvalidateTags(ctx context.Context, tags []string) (int64, error)
}

// api serves one agent.
type api struct {
	a Agent
	// writes holds a place per PUT reading its body (bodyLimited).
	writes chan struct{}
}

// New serves health, metrics and the API of agent a. gatherer is the registry holding the
// agent's collector (passed in: no global registry); POST /v1/invalidate takes the bearer
// token() returns (the fleet's bus key), and is refused while it is "".
func New(a Agent, gatherer prometheus.Gatherer, token func() string) http.Handler {
	s := &api{a: a, writes: make(chan struct{}, maxWrites)}
	guard := func(h http.Handler) http.Handler { return Guard(a.Password, h) }
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if !s.a.Ready(ctx) {
			http.Error(w, "no ring loaded or no shard reachable", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", guard(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	mux.Handle("GET /v1/ring", guard(http.HandlerFunc(s.ring)))
	mux.Handle("GET /v1/keys/{key}", guard(http.HandlerFunc(s.getKey)))
	mux.Handle("PUT /v1/keys/{key}", guard(s.bodyLimited(http.HandlerFunc(s.putKey))))
	mux.Handle("DELETE /v1/keys/{key}", guard(http.HandlerFunc(s.deleteKey)))
	mux.HandleFunc("POST /v1/invalidate", s.invalidate(token)) // the bus key is its credential
	mux.Handle("GET /v1/read/{policy}/{key...}", guard(http.HandlerFunc(s.read)))
	return mux
}

// Guard lets a request through when password() is "" (the agent has none), or when it carries
// the password as HTTP Basic (any user name, as AUTH with one argument) or as a Bearer token.
// The probes stay open: they tell no data.
func Guard(password func() string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := password()
		if want == "" || subtle.ConstantTimeCompare([]byte(httpCredential(r)), []byte(want)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="cachefleet", charset="UTF-8"`)
		http.Error(w, "the fleet's password is required (HTTP Basic or Bearer)", http.StatusUnauthorized)
	})
}

// httpCredential is the password a request carries, "" without one.
func httpCredential(r *http.Request) string {
	if _, pass, ok := r.BasicAuth(); ok {
		return pass
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return tok
	}
	return ""
}

// maxWrites bounds the PUT bodies read at once: each may hold a value's worth of memory.
const maxWrites = 16

// bodyLimited refuses a write at once (503) while maxWrites others are reading their
// bodies, so slow or idle senders cannot pile up memory.
func (s *api) bodyLimited(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.writes <- struct{}{}:
			defer func() { <-s.writes }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many writes in progress on this agent's HTTP API", http.StatusServiceUnavailable)
		}
	})
}

// NewServer is the agent's HTTP server with the timeouts and size limits a shared endpoint
// needs: a client that sends slowly or holds a connection idle is cut off.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
}

// routerOrUnavailable answers 503 before the first ring has arrived.
func (s *api) routerOrUnavailable(w http.ResponseWriter) *router.Router {
	rt := s.a.Router()
	if rt == nil {
		http.Error(w, "no ring loaded", http.StatusServiceUnavailable)
	}
	return rt
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the status line is out; a client gone away is not our error
}

// ring answers the ring document, or with ?key=K the key's owner and rules.
func (s *api) ring(w http.ResponseWriter, r *http.Request) {
	rt := s.routerOrUnavailable(w)
	if rt == nil {
		return
	}
	key := r.URL.Query().Get("key")
	if key == "" {
		writeJSON(w, http.StatusOK, rt.Doc)
		return
	}
	sh := rt.ShardFor([]byte(key))
	rules := policy.For(rt.Doc, []byte(key))
	writeJSON(w, http.StatusOK, map[string]any{
		"key": key, "shard": sh.Name(), "address": sh.Addr(), "epoch": rt.Doc.Epoch,
		"policy": rules.Name, "ttlSeconds": rules.TTL.Seconds(), "l1": rules.L1, "l1Tracking": rules.L1Tracking,
	})
}

func (s *api) getKey(w http.ResponseWriter, r *http.Request) {
	rt := s.routerOrUnavailable(w)
	if rt == nil {
		return
	}
	key := r.PathValue("key")
	sh := rt.ShardFor([]byte(key))
	res, err := sh.DoMulti(r.Context(), func(b valkey.Builder) []valkey.Completed {
		return []valkey.Completed{b.Get().Key(key).Build(), b.Pttl().Key(key).Build()}
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	v, err := res[0].ToString()
	if valkey.IsValkeyNil(err) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	v, present := reply.Readable(v)
	if !present {
		http.Error(w, "not found (recorded as absent at the origin)", http.StatusNotFound)
		return
	}
	pttl, _ := res[1].AsInt64()
	writeJSON(w, http.StatusOK, map[string]any{"key": key, "value": v, "shard": sh.Name(), "pttlMillis": pttl})
}

// putKey stores the request body; ?ttl=SECONDS, else the policy TTL.
func (s *api) putKey(w http.ResponseWriter, r *http.Request) {
	rt := s.routerOrUnavailable(w)
	if rt == nil {
		return
	}
	key := r.PathValue("key")
	rules := policy.For(rt.Doc, []byte(key))
	body, err := io.ReadAll(io.LimitReader(r.Body, rules.MaxValueBytes+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(body)) > rules.MaxValueBytes {
		s.a.RefusedOversize()
		http.Error(w, "value exceeds the limit of "+strconv.FormatInt(rules.MaxValueBytes, 10)+" bytes", http.StatusRequestEntityTooLarge)
		return
	}
	ttl := rules.WriteTTL(nil)
	if v := r.URL.Query().Get("ttl"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs <= 0 {
			http.Error(w, "ttl must be a positive number of seconds", http.StatusBadRequest)
			return
		}
		ttl = time.Duration(secs) * time.Second
	}
	s.a.Announce(key)
	sh := rt.ShardFor([]byte(key))
	_, err = sh.Do(r.Context(), func(b valkey.Builder) valkey.Completed {
		return b.Set().Key(key).Value(rules.Stored(valkey.BinaryString(body))).Px(ttl).Build()
	})
	s.a.Settle(rt, key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *api) deleteKey(w http.ResponseWriter, r *http.Request) {
	rt := s.routerOrUnavailable(w)
	if rt == nil {
		return
	}
	key := r.PathValue("key")
	s.a.Announce(key)
	sh := rt.ShardFor([]byte(key))
	_, err := sh.Do(r.Context(), func(b valkey.Builder) valkey.Completed { return b.Unlink().Key(key).Build() })
	s.a.Settle(rt, key)
	if err != nil {
		sh.QueueDelete(key)
		writeJSON(w, http.StatusAccepted, map[string]any{"key": key, "queued": true, "shard": sh.Name()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
