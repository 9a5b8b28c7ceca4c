package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/bus"
	"github.com/cachefleet/cachefleet/internal/cacheagent/purge"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// cmdInvalidate: CF.INVALIDATE KEY key... | PREFIX prefix... | TAG tag...
// Removes the keys from L2 (once, by this agent) and from every agent's L1 (through the bus).
// Replies with the number of keys removed from L2.
func cmdInvalidate(ctx context.Context, s *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	kind, items := strings.ToUpper(str(args[1])), strs(args[2:])
	if kind == "POLICY" {
		// A policy's keys are its prefix's keys.
		var prefixes []string
		for _, name := range items {
			for _, p := range b.r.Doc.Policies {
				if p.Name == name && p.Prefix != "" {
					prefixes = append(prefixes, p.Prefix)
				}
			}
		}
		if len(prefixes) != len(items) {
			b.local(func(w *resp.Writer) { w.Error("ERR no such policy (or it has an empty prefix) in this fleet's ring") })
			return
		}
		kind, items = "PREFIX", prefixes
	}
	if kind != "KEY" && kind != "PREFIX" && kind != "TAG" {
		b.local(func(w *resp.Writer) {
			w.Error("ERR CF.INVALIDATE KEY key [key ...] | PREFIX prefix [prefix ...] | TAG tag [tag ...] | POLICY name [name ...]")
		})
		return
	}
	b.local(func(w *resp.Writer) {
		var n int64
		var err error
		switch kind {
		case "KEY":
			n, err = s.InvalidateKeys(ctx, items)
		case "PREFIX":
			n, err = s.InvalidatePrefixes(ctx, items)
		default:
			n, err = s.InvalidateTags(ctx, items)
		}
		if err != nil {
			reply.WriteErr(w, err)
			return
		}
		w.Int(n)
	})
}

// InvalidateKeys unlinks keys on their shards (queueing for down shards), drops the local
// copies and tells the other agents.
func (s *Server) InvalidateKeys(ctx context.Context, keys []string) (int64, error) {
	r := s.Router()
	removed := purge.Keys(ctx, r, keys)
	s.settle(r, keys...)
	return removed, s.broadcast(ctx, bus.OpDelete, keys...)
}

// InvalidatePrefixes scans every shard for keys with the prefixes, unlinks them, drops the
// local copies and tells the other agents.
func (s *Server) InvalidatePrefixes(ctx context.Context, prefixes []string) (int64, error) {
	if slices.Contains(prefixes, "") && !s.Router().Doc.Tiers.AllowFlush {
		return 0, errEmptyPrefix // every key has it: the same rule as FLUSHALL
	}
	removed, err := purge.Prefixes(ctx, s.Router().Shards, prefixes)
	for _, p := range prefixes {
		s.L1().DeletePrefix(p)
	}
	return removed, errors.Join(err, s.broadcast(ctx, bus.OpPrefix, prefixes...))
}

// errEmptyPrefix refuses an invalidation of every key where FLUSHALL is refused.
var errEmptyPrefix = errors.New("an empty prefix names every key of the fleet: refused as FLUSHALL is. " +
	"Set spec.tiers.l2.allowFlush: true on the CacheFleet (--allow-flush in static mode) to allow it")

func (s *Server) broadcast(ctx context.Context, op string, args ...string) error {
	b := s.bus.Load()
	if b == nil {
		return nil // a single agent: nothing else holds copies
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return b.Publish(ctx, op, args...)
}

// httpInvalidate: POST /v1/invalidate {"keys": [...], "prefixes": [...], "tags": [...]} with
// "Authorization: Bearer <token>" (the fleet's bus key); refused without it.
func (s *Server) httpInvalidate(token func() string) http.HandlerFunc {
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
		}{{req.Keys, s.InvalidateKeys}, {req.Prefixes, s.InvalidatePrefixes}, {req.Tags, s.InvalidateTags}} {
			if len(op.items) == 0 {
				continue
			}
			k, err := op.run(r.Context(), op.items)
			if errors.Is(err, errEmptyPrefix) {
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
