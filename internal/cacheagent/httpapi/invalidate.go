package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/cachefleet/cachefleet/internal/cacheagent/purge"
)

// invalidate: POST /v1/invalidate {"keys": [...], "prefixes": [...], "tags": [...]} with
// "Authorization: Bearer <token>" (the fleet's bus key); refused without it.
func (s *api) invalidate(token func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want := token()
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if want == "" || !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			http.Error(w, "a valid bearer token is required", http.StatusUnauthorized)
			return
		}
		var req struct {
			Keys     []string `json:"keys"`
			Prefixes []string `json:"prefixes"`
			Tags     []string `json:"tags"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "body must be JSON {\"keys\": [...], \"prefixes\": [...]}: "+err.Error(), http.StatusBadRequest)
			return
		}
		if s.routerOrUnavailable(w) == nil {
			return
		}
		var n int64
		for _, op := range []struct {
			items []string
			run   func(context.Context, []string) (int64, error)
		}{{req.Keys, s.a.InvalidateKeys}, {req.Prefixes, s.a.InvalidatePrefixes}, {req.Tags, s.a.InvalidateTags}} {
			if len(op.items) == 0 {
				continue
			}
			k, err := op.run(r.Context(), op.items)
			if errors.Is(err, purge.ErrEmptyPrefix) {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			n += k
		}
		writeJSON(w, http.StatusOK, map[string]any{"removed": n})
	}
}
