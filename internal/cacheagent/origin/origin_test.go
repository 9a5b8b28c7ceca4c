package origin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ template, key, want string }{
		{"http://catalog:8080/items/{key}", "42", "http://catalog:8080/items/42"},
		{"http://catalog:8080/items/{key}", "a/b c?d", "http://catalog:8080/items/a%2Fb%20c%3Fd"},
		{"http://catalog:8080/items/{key}/detail", "x", "http://catalog:8080/items/x/detail"},
		{"http://catalog:8080/lookup?id={key}&v=2", "a&b=c d", "http://catalog:8080/lookup?id=a%26b%3Dc+d&v=2"},
		{"http://catalog:8080/items/{key}", "", "http://catalog:8080/items/"},
	} {
		if got := URL(tc.template, tc.key); got != tc.want {
			t.Errorf("URL(%q, %q) = %q, want %q", tc.template, tc.key, got, tc.want)
		}
	}
}

func TestFetchSortsAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch key := strings.TrimPrefix(r.URL.EscapedPath(), "/items/"); key {
		case "ok":
			w.Write([]byte("value of ok"))
		case "created":
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte("made"))
		case "auth":
			w.Write([]byte(r.Header.Get("Authorization")))
		case "gone":
			w.WriteHeader(http.StatusGone)
		case "moved":
			http.Redirect(w, r, "/items/ok", http.StatusFound)
		case "broken":
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		case "slow":
			time.Sleep(300 * time.Millisecond)
			w.Write([]byte("late"))
		case "big":
			w.Write([]byte(strings.Repeat("x", 101)))
		case "bigchunked":
			w.(http.Flusher).Flush() // no Content-Length: the limit is found while reading
			w.Write([]byte(strings.Repeat("x", 101)))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := NewClient()
	c.SetHeaders(map[string]map[string]string{"catalog-auth": {"Authorization": "Bearer s3cret"}})
	o := &contract.Origin{URL: srv.URL + "/items/{key}", TimeoutMillis: 100, HeadersSecret: "catalog-auth", AllowedStatus: []int32{200, 201}}
	for _, tc := range []struct {
		key, body, errKind string
		found              bool
		status             int
	}{
		{key: "ok", found: true, body: "value of ok", status: 200},
		{key: "created", found: true, body: "made", status: 201},
		{key: "auth", found: true, body: "Bearer s3cret", status: 200},
		{key: "missing", status: 404},
		{key: "gone", status: 410},
		{key: "moved", errKind: KindStatus},
		{key: "broken", errKind: KindStatus},
		{key: "slow", errKind: KindTimeout},
		{key: "big", errKind: KindTooLarge},
		{key: "bigchunked", errKind: KindTooLarge},
	} {
		res, err := c.Fetch(context.Background(), o, tc.key, 100)
		var oe *Error
		switch {
		case tc.errKind != "":
			if !errors.As(err, &oe) || oe.Kind != tc.errKind {
				t.Errorf("%s: err = %v, want kind %s", tc.key, err, tc.errKind)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.key, err)
		case res.Found != tc.found || string(res.Body) != tc.body || res.Status != tc.status:
			t.Errorf("%s: got %+v (%q), want found=%v %q status %d", tc.key, res, res.Body, tc.found, tc.body, tc.status)
		}
	}
	_, err := c.Fetch(context.Background(), o, "broken", 100)
	if got, want := err.Error(), "origin answered 503 Service Unavailable"; got != want {
		t.Errorf("error text %q, want %q", got, want)
	}
	_, err = c.Fetch(context.Background(), o, "slow", 100)
	if got, want := err.Error(), "origin did not answer within its timeout of 100ms"; got != want {
		t.Errorf("error text %q, want %q", got, want)
	}
	srv.Close()
	var oe *Error
	if _, err := c.Fetch(context.Background(), o, "ok", 100); !errors.As(err, &oe) || oe.Kind != KindUnreachable {
		t.Errorf("closed origin: err = %v, want unreachable", err)
	}
}

func TestFailingOriginIsLeftAloneForACooldown(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if strings.HasSuffix(r.URL.Path, "/forbidden") {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	c := NewClient()
	o := &contract.Origin{URL: srv.URL + "/items/{key}", TimeoutMillis: 1000, AllowedStatus: []int32{200}}
	// Answers the origin gives on purpose (a 4xx) do not count against it.
	for i := 0; i < 2*FailuresToOpen; i++ {
		c.Fetch(context.Background(), o, "forbidden", 100)
	}
	for i := 0; i < 3*FailuresToOpen; i++ {
		c.Fetch(context.Background(), o, "k", 100)
	}
	if n := requests.Load(); n != 3*FailuresToOpen {
		t.Errorf("origin got %d requests, want %d: %d 4xx answers and %d failures before its breaker opened", n, 3*FailuresToOpen, 2*FailuresToOpen, FailuresToOpen)
	}
	var oe *Error
	if _, err := c.Fetch(context.Background(), o, "k", 100); !errors.As(err, &oe) || oe.Kind != KindOpen {
		t.Errorf("err = %v, want the breaker open", err)
	}
}

func TestUnreadableHeadersSecretSendsNothing(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { requests.Add(1) }))
	defer srv.Close()
	c := NewClient()
	c.SetHeaders(map[string]map[string]string{"other": {"Authorization": "x"}})
	o := &contract.Origin{URL: srv.URL + "/{key}", TimeoutMillis: 1000, HeadersSecret: "catalog-auth", AllowedStatus: []int32{200}}
	_, err := c.Fetch(context.Background(), o, "k", 100)
	if got, want := fmt.Sprint(err), "origin not asked: its headers Secret catalog-auth could not be read by the agent"; got != want || requests.Load() != 0 {
		t.Errorf("err = %q with %d requests sent, want %q and none", got, requests.Load(), want)
	}
}
