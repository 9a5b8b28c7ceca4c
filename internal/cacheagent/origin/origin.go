// Package origin fetches a missing key from its policy's HTTP origin (read-through): it builds
// the URL from the key, sends the headers the policy's Secret holds, and sorts the answer into
// a value, "not found", or an error that says what the origin did. It never returns part of a
// value: a body cut short or over the size limit is an error.
package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// Result is an origin's answer that is not an error.
type Result struct {
	Found  bool   // false: the origin said the key does not exist (404, 410)
	Body   []byte // the value, when Found
	Status int
}

// Kinds of errors, as metrics label them.
const (
	KindStatus        = "status"        // an answer with a status that is neither allowed nor "not found"
	KindTimeout       = "timeout"       // no full answer within the timeout
	KindUnreachable   = "unreachable"   // no answer at all (connection refused, DNS, reset)
	KindTooLarge      = "too_large"     // a body over the policy's size limit
	KindOpen          = "breaker_open"  // not asked: the origin failed too often lately
	KindMisconfigured = "misconfigured" // not asked: its headers Secret could not be read
	KindBadKey        = "bad-key"       // not asked: the key would leave the template's path
)

// Breaker settings: an origin that fails this many times in a row (5xx, timeouts, no answer)
// is not asked for Cooldown, then by one request, so an outage costs the origin a probe every
// few seconds instead of a request per key per second while it recovers.
const (
	FailuresToOpen = 5
	Cooldown       = 5 * time.Second
)

// Error is an origin failure; its text is what clients read.
type Error struct {
	Kind    string
	Status  int
	Timeout time.Duration
	Limit   int64
	Secret  string
	Err     error
}

func (e *Error) Error() string {
	switch e.Kind {
	case KindStatus:
		return fmt.Sprintf("origin answered %d %s", e.Status, http.StatusText(e.Status))
	case KindTimeout:
		return fmt.Sprintf("origin did not answer within its timeout of %s", e.Timeout)
	case KindTooLarge:
		return fmt.Sprintf("origin's value exceeds the limit of %d bytes; nothing was stored", e.Limit)
	case KindMisconfigured:
		return fmt.Sprintf("origin not asked: its headers Secret %s could not be read by the agent", e.Secret)
	case KindBadKey:
		return "origin not asked: an empty key, \".\" or \"..\" would not name an item under the origin's path"
	case KindOpen:
		return fmt.Sprintf("origin not asked: it failed %d times in a row, next try within %s", FailuresToOpen, Cooldown)
	default:
		return fmt.Sprintf("origin unreachable: %v", e.Err)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Client fetches from origins. It is safe for concurrent use.
type Client struct {
	http    *http.Client
	headers atomic.Pointer[map[string]map[string]string] // Secret name -> header -> value
	// breakers, one per origin (scheme and host of its URL).
	breakers sync.Map // string -> *gobreaker.TwoStepCircuitBreaker[struct{}]
}

func (c *Client) breaker(template string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	host := template
	if u, err := url.Parse(strings.ReplaceAll(template, "{key}", "k")); err == nil {
		host = u.Scheme + "://" + u.Host
	}
	if b, ok := c.breakers.Load(host); ok {
		return b.(*gobreaker.TwoStepCircuitBreaker[struct{}])
	}
	b, _ := c.breakers.LoadOrStore(host, gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name: host, MaxRequests: 1, Timeout: Cooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= FailuresToOpen },
		IsSuccessful: func(err error) bool { // answers given on purpose show the origin is up
			var oe *Error
			return err == nil || (errors.As(err, &oe) && (oe.Kind == KindTooLarge || oe.Kind == KindMisconfigured || (oe.Kind == KindStatus && oe.Status < 500)))
		},
	}))
	return b.(*gobreaker.TwoStepCircuitBreaker[struct{}])
}

// NewClient returns a client with connection reuse sized for many concurrent fetches.
func NewClient() *Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Bounded per host: a refresh burst at a TTL boundary reuses connections instead of opening
	// one per key (and closing most of them again).
	t.MaxIdleConns, t.MaxIdleConnsPerHost, t.MaxConnsPerHost = 256, 64, 64
	return &Client{http: &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a redirect is the origin's answer, not a value: it is an error status
	}}}
}

// SetHeaders installs the request headers by Secret name (from the Secrets' keys and values).
func (c *Client) SetHeaders(bySecret map[string]map[string]string) { c.headers.Store(&bySecret) }

// URL puts key into the template at {key}, escaped for where it stands: as a path segment
// before any "?", as a query value after it.
func URL(template, key string) string {
	at := strings.Index(template, "{key}")
	if at < 0 {
		return template
	}
	q := strings.IndexByte(template, '?')
	escaped := url.PathEscape(key)
	if q >= 0 && q < at {
		escaped = url.QueryEscape(key)
	}
	return template[:at] + escaped + template[at+len("{key}"):]
}

// leavesPath reports whether key, put into template's path, would not name an item under it:
// "/items/.." is "/" to every server and proxy that normalises paths, escaped or not, and
// "/items/" the collection itself.
func leavesPath(template, key string) bool {
	if key != "." && key != ".." && key != "" {
		return false
	}
	at, q := strings.Index(template, "{key}"), strings.IndexByte(template, '?')
	return at >= 0 && (q < 0 || at < q)
}

// Fetch asks o for key (without its policy prefix). limit bounds the value's size. An origin
// whose breaker is open is not asked.
func (c *Client) Fetch(ctx context.Context, o *contract.Origin, key string, limit int64) (Result, error) {
	if leavesPath(o.URL, key) {
		return Result{}, &Error{Kind: KindBadKey}
	}
	done, err := c.breaker(o.URL).Allow()
	if err != nil {
		return Result{}, &Error{Kind: KindOpen, Err: err}
	}
	res, err := c.fetch(ctx, o, key, limit)
	done(err)
	return res, err
}

func (c *Client) fetch(ctx context.Context, o *contract.Origin, key string, limit int64) (Result, error) {
	timeout := time.Duration(o.TimeoutMillis) * time.Millisecond
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, URL(o.URL, key), nil)
	if err != nil {
		return Result{}, &Error{Kind: KindUnreachable, Err: err}
	}
	if o.HeadersSecret != "" {
		var headers map[string]string
		if all := c.headers.Load(); all != nil {
			headers = (*all)[o.HeadersSecret]
		}
		if headers == nil { // never send a request the origin would refuse (or, worse, answer for anyone)
			return Result{}, &Error{Kind: KindMisconfigured, Secret: o.HeadersSecret}
		}
		for name, value := range headers {
			req.Header.Set(name, value)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Result{}, classify(err, timeout)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return Result{Status: resp.StatusCode}, nil
	case !slices.Contains(o.AllowedStatus, int32(resp.StatusCode)):
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return Result{}, &Error{Kind: KindStatus, Status: resp.StatusCode}
	case resp.ContentLength > limit:
		return Result{}, &Error{Kind: KindTooLarge, Limit: limit}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return Result{}, classify(err, timeout)
	}
	if int64(len(body)) > limit {
		return Result{}, &Error{Kind: KindTooLarge, Limit: limit}
	}
	return Result{Found: true, Body: body, Status: resp.StatusCode}, nil
}

func classify(err error, timeout time.Duration) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Kind: KindTimeout, Timeout: timeout, Err: err}
	}
	return &Error{Kind: KindUnreachable, Err: err}
}
