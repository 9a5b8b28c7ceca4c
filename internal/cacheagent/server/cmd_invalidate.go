package server

import (
	"context"
	"errors"
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
		return 0, purge.ErrEmptyPrefix // every key has it: the same rule as FLUSHALL
	}
	removed, err := purge.Prefixes(ctx, s.Router().Shards, prefixes)
	for _, p := range prefixes {
		s.L1().DeletePrefix(p)
	}
	return removed, errors.Join(err, s.broadcast(ctx, bus.OpPrefix, prefixes...))
}

func (s *Server) broadcast(ctx context.Context, op string, args ...string) error {
	b := s.bus.Load()
	if b == nil {
		return nil // a single agent: nothing else holds copies
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return b.Publish(ctx, op, args...)
}
