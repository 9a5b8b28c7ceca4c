package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/origin"
	"github.com/cachefleet/cachefleet/internal/cacheagent/policy"
	"github.com/cachefleet/cachefleet/internal/cacheagent/readthrough"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
)

// read is GET /v1/read/{policy}/{key}: the read-through of the policy's key for clients
// without a Redis client. The key is the policy's prefix followed by {key}. Every answer says
// how it was made in a Cache-Status header (RFC 9211), as "cachefleet; ..." :
//
//	hit; ttl=N                                    fresh (N seconds left)
//	hit; ttl=-N; detail=stale-while-revalidate    stale, refreshed in the background
//	hit; ttl=-N; fwd=stale; fwd-status=503; detail=stale-if-error
//	fwd=miss; fwd-status=200; stored [; collapsed]
func (s *api) read(w http.ResponseWriter, r *http.Request) {
	rt := s.routerOrUnavailable(w)
	if rt == nil {
		return
	}
	name := r.PathValue("policy")
	prefix, ok := "", false
	for _, p := range rt.Doc.Policies {
		if p.Name == name {
			prefix, ok = p.Prefix, true
			break
		}
	}
	if !ok {
		http.Error(w, fmt.Sprintf("no policy named %q in the fleet's ring", name), http.StatusNotFound)
		return
	}
	key := prefix + r.PathValue("key")
	rules := policy.For(rt.Doc, []byte(key))
	sh := rt.ShardFor([]byte(key))
	res, err := sh.Do(r.Context(), func(b valkey.Builder) valkey.Completed { return b.Get().Key(key).Build() })
	raw, rerr := res.ToString()
	found, down := rerr == nil, err != nil && !valkey.IsValkeyNil(err)
	if rerr != nil && !valkey.IsValkeyNil(rerr) && !down {
		http.Error(w, rerr.Error(), http.StatusBadGateway) // another type, say
		return
	}
	if rules.Origin == nil && down {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeAnswer(w, s.a.ReadThrough().Resolve(r.Context(), rt, key, rules, raw, found, down), raw, found)
}

// writeAnswer writes a read-through answer with its Cache-Status.
func writeAnswer(w http.ResponseWriter, a *readthrough.Answer, raw string, found bool) {
	status := []string{"cachefleet"}
	value, present := a.Value, a.Present
	if a.FromShard {
		value, present = reply.Readable(raw)
		present = present && found
		status = append(status, "hit")
		if !a.FreshUntil.IsZero() {
			status = append(status, fmt.Sprintf("ttl=%d", ttlSeconds(time.Until(a.FreshUntil))))
		}
		switch a.Outcome {
		case readthrough.OutcomeRevalidate:
			status = append(status, "detail=stale-while-revalidate")
		case readthrough.OutcomeStaleError:
			status = append(status, "fwd=stale")
			if a.FwdStatus > 0 {
				status = append(status, fmt.Sprintf("fwd-status=%d", a.FwdStatus))
			}
			status = append(status, "detail=stale-if-error")
		}
	} else {
		status = append(status, "fwd=miss")
		if a.FwdStatus > 0 {
			status = append(status, fmt.Sprintf("fwd-status=%d", a.FwdStatus))
		}
		if a.Stored {
			status = append(status, "stored")
		}
		if a.Collapsed {
			status = append(status, "collapsed")
		}
	}
	w.Header().Set("Cache-Status", strings.Join(status, "; "))
	switch {
	case a.Err != nil:
		code := http.StatusBadGateway
		if oe := (*origin.Error)(nil); errors.As(a.Err, &oe) && oe.Kind == origin.KindTimeout {
			code = http.StatusGatewayTimeout
		}
		http.Error(w, a.Err.Error(), code)
	case !present:
		http.Error(w, "not found", http.StatusNotFound)
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write([]byte(value)) //nolint:gosec // the origin's bytes as octet-stream, never sniffed as HTML

	}
}

// ttlSeconds is Cache-Status's ttl: whole seconds of freshness left, negative once stale (a
// value stale by a moment is -1, not 0).
func ttlSeconds(left time.Duration) int {
	if left >= 0 {
		return int(math.Ceil(left.Seconds()))
	}
	return int(math.Floor(left.Seconds()))
}
