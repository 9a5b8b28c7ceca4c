package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/origin"
	"github.com/cachefleet/cachefleet/internal/cacheagent/readthrough"
)

func TestGuardTakesThePasswordAsBasicOrBearer(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name, password string
		set            func(r *http.Request)
		want           int
	}{
		{"no password asked", "", func(*http.Request) {}, http.StatusTeapot},
		{"none given", "pw", func(*http.Request) {}, http.StatusUnauthorized},
		{"basic", "pw", func(r *http.Request) { r.SetBasicAuth("anyone", "pw") }, http.StatusTeapot},
		{"bearer", "pw", func(r *http.Request) { r.Header.Set("Authorization", "Bearer pw") }, http.StatusTeapot},
		{"wrong", "pw", func(r *http.Request) { r.Header.Set("Authorization", "Bearer pw2") }, http.StatusUnauthorized},
	} {
		r := httptest.NewRequest("GET", "/v1/ring", nil)
		tc.set(r)
		w := httptest.NewRecorder()
		Guard(func() string { return tc.password }, ok).ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, w.Code, tc.want)
		}
		if w.Code == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", tc.name)
		}
	}
}

func TestBodyLimitedRefusesAWriteBeyondTheBound(t *testing.T) {
	s := &api{writes: make(chan struct{}, 1)}
	s.writes <- struct{}{} // one body being read
	w := httptest.NewRecorder()
	s.bodyLimited(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("ran past the bound") })).
		ServeHTTP(w, httptest.NewRequest("PUT", "/v1/keys/k", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("%d %v, want 503 with Retry-After", w.Code, w.Header())
	}
}

func TestCacheStatusSaysHowTheAnswerWasMade(t *testing.T) {
	future := time.Now().Add(90 * time.Second)
	for _, tc := range []struct {
		name   string
		a      readthrough.Answer
		raw    string
		found  bool
		code   int
		status string
	}{
		{"fresh", readthrough.Answer{FromShard: true, Outcome: readthrough.OutcomeHit, FreshUntil: future}, "v", true, 200, "cachefleet; hit; ttl=90"},
		{"unstamped", readthrough.Answer{FromShard: true, Outcome: readthrough.OutcomeHit}, "v", true, 200, "cachefleet; hit"},
		{"revalidating", readthrough.Answer{FromShard: true, Outcome: readthrough.OutcomeRevalidate, FreshUntil: time.Now().Add(-1500 * time.Millisecond)}, "v", true, 200,
			"cachefleet; hit; ttl=-2; detail=stale-while-revalidate"},
		{"stale on error", readthrough.Answer{FromShard: true, Outcome: readthrough.OutcomeStaleError, FwdStatus: 503, FreshUntil: time.Now().Add(-time.Second / 2)}, "v", true, 200,
			"cachefleet; hit; ttl=-1; fwd=stale; fwd-status=503; detail=stale-if-error"},
		{"fetched", readthrough.Answer{Value: "o", Present: true, Outcome: readthrough.OutcomeMiss, FwdStatus: 200, Stored: true, Collapsed: true}, "", false, 200,
			"cachefleet; fwd=miss; fwd-status=200; stored; collapsed"},
		{"origin timed out", readthrough.Answer{Outcome: readthrough.OutcomeMiss, Err: &origin.Error{Kind: origin.KindTimeout}}, "", false, 504, "cachefleet; fwd=miss"},
		{"origin failed", readthrough.Answer{Outcome: readthrough.OutcomeMiss, Err: errors.New("refused")}, "", false, 502, "cachefleet; fwd=miss"},
		{"not at the origin", readthrough.Answer{Outcome: readthrough.OutcomeMiss, FwdStatus: 404}, "", false, 404, "cachefleet; fwd=miss; fwd-status=404"},
		{"absent on the shard", readthrough.Answer{FromShard: true, Outcome: readthrough.OutcomeHit}, "", false, 404, "cachefleet; hit"},
	} {
		w := httptest.NewRecorder()
		writeAnswer(w, &tc.a, tc.raw, tc.found)
		if w.Code != tc.code || w.Header().Get("Cache-Status") != tc.status {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Header().Get("Cache-Status"), tc.code, tc.status)
		}
	}
}

func TestProbesNeedNoPasswordAndDataDoes(t *testing.T) {
	h := New(notReady{}, nil, func() string { return "" })
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/v1/ring": 401, "/v1/keys/k": 401} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != want {
			t.Errorf("GET %s: %d, want %d", path, w.Code, want)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/invalidate", nil))
	if w.Code != http.StatusUnauthorized {
		t.Errorf("POST /v1/invalidate without a bus key: %d, want 401", w.Code)
	}
}

// notReady is an agent with a password and no ring.
type notReady struct{ Agent }

func (notReady) Ready(context.Context) bool { return false }
func (notReady) Password() string           { return "pw" }
