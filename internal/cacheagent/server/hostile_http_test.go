package server_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/httpapi"
	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// TestHTTPNeedsThePasswordWhenOneIsSet: a neighbour without the fleet's password once read,
// overwrote and deleted keys over HTTP although the RESP port asked for AUTH.
func TestHTTPNeedsThePasswordWhenOneIsSet(t *testing.T) {
	shards := []*tu.Redis{tu.StartRedis(t, "s3cret")}
	o := defaults()
	o.config.Password = "s3cret"
	a := startAgent(t, shards, o)
	if _, err := shards[0].Do("AUTH", "s3cret"); err != nil {
		t.Fatal(err)
	}
	c := a.dial(t)
	c.do("AUTH", "s3cret")
	c.do("SET", "secret-key", "value")
	base := httptestServer(t, a)
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/keys/secret-key", ""},
		{"PUT", "/v1/keys/secret-key?ttl=999999", "overwritten"},
		{"DELETE", "/v1/keys/secret-key", ""},
		{"GET", "/v1/ring", ""},
		{"GET", "/v1/read/none/x", ""},
		{"GET", "/metrics", ""},
	}
	do := func(method, path, body string, auth func(*http.Request)) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if auth != nil {
			auth(req)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, cred := range []struct {
		name string
		set  func(*http.Request)
	}{
		{"none", nil},
		{"wrong basic", func(r *http.Request) { r.SetBasicAuth("default", "wrong") }},
		{"wrong bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong") }},
	} {
		for _, rt := range routes {
			if got := do(rt.method, rt.path, rt.body, cred.set); got != http.StatusUnauthorized {
				t.Errorf("%s %s with %s credentials: %d, want 401", rt.method, rt.path, cred.name, got)
			}
		}
	}
	if got := c.do("GET", "secret-key"); got != "value" {
		t.Errorf("after the refused requests the key reads %q", got)
	}
	if got := do("GET", "/healthz", "", nil); got != http.StatusOK {
		t.Errorf("/healthz without credentials: %d (probes carry none)", got)
	}
	basic := func(r *http.Request) { r.SetBasicAuth("default", "s3cret") }
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret") }
	for _, want := range []struct {
		method, path, body string
		auth               func(*http.Request)
		code               int
	}{
		{"GET", "/v1/keys/secret-key", "", basic, 200},
		{"PUT", "/v1/keys/secret-key", "new", bearer, 204},
		{"GET", "/metrics", "", bearer, 200},
		{"GET", "/v1/ring", "", basic, 200},
		{"DELETE", "/v1/keys/secret-key", "", basic, 204},
	} {
		if got := do(want.method, want.path, want.body, want.auth); got != want.code {
			t.Errorf("%s %s with the password: %d, want %d", want.method, want.path, got, want.code)
		}
	}
}

// TestHTTPWritesAreBoundedAndSlowSendersCutOff: 400 anonymous PUTs holding their bodies open
// once held 505 MiB and never closed. Writes reading their bodies are bounded; the server's
// timeouts close slow and idle connections.
func TestHTTPWritesAreBoundedAndSlowSendersCutOff(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	reg := httptestServer(t, a)
	addr := strings.TrimPrefix(reg, "http://")
	var held []net.Conn
	for range 40 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, nc)
		// A body announced at 1000 bytes, of which 10 are sent.
		io.WriteString(nc, "PUT /v1/keys/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
	}
	defer func() {
		for _, nc := range held {
			nc.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond) // let the server take them in; only the count below is asserted
	start := time.Now()
	req, _ := http.NewRequest("PUT", reg+"/v1/keys/k", strings.NewReader("v"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || time.Since(start) > 2*time.Second {
		t.Errorf("a PUT while 40 bodies are held: %d after %v, want 503 at once", res.StatusCode, time.Since(start))
	}
	if res, err := http.Get(reg + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Errorf("/healthz while writes are held: %v %v", res, err)
	}
	s := httpapi.NewServer(":0", nil)
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.ReadTimeout > 30*time.Second || s.IdleTimeout <= 0 ||
		s.IdleTimeout > time.Minute || s.WriteTimeout <= 0 || s.MaxHeaderBytes <= 0 || s.MaxHeaderBytes > 64<<10 {
		t.Errorf("the agent's HTTP server lacks bounds: %+v", s)
	}
}
