// Package source gives the agent its ring document: from flags, from a file it watches, or
// from the fleet's ConfigMap in Kubernetes.
package source

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

// Defaults are the fleet settings used when the agent runs from flags; they match the
// CacheFleet defaults.
type Defaults struct {
	L1              bool
	L1MaxMemory     int64
	L1MaxTTL        time.Duration
	DefaultTTL      time.Duration
	MinUsableTTL    time.Duration
	MaxValueBytes   int64
	TTLModeForAll   bool // put every key in ttl mode (a catch-all policy) instead of tracking
	PasswordEnabled bool
	// LeaseTTL > 0 turns on stampede protection (CF.LGET/CF.LSET) for every key.
	LeaseTTL time.Duration
	// AllowFlush lets clients run FLUSHALL/FLUSHDB.
	AllowFlush bool
}

// StaticDocument builds a ring document from "name=host:port,name=host:port".
func StaticDocument(shards string, d Defaults) (*contract.Document, error) {
	doc := &contract.Document{
		SchemaVersion: contract.SchemaVersion, Fleet: "static", Namespace: "local", Algorithm: contract.AlgorithmRendezvous,
		Tiers: contract.Tiers{
			L1Enabled: d.L1, L1MaxMemoryBytes: d.L1MaxMemory, L1MaxTTLMillis: d.L1MaxTTL.Milliseconds(),
			DefaultTTLMillis: d.DefaultTTL.Milliseconds(), MinUsableMillis: d.MinUsableTTL.Milliseconds(), MaxValueBytes: d.MaxValueBytes,
			AllowFlush: d.AllowFlush,
		},
		Invalidation: contract.Invalidation{Channel: "cachefleet:local/static"},
		Auth:         contract.Auth{Enabled: d.PasswordEnabled},
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(shards, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, addrs, ok := strings.Cut(item, "=")
		// name=primary[+replica...]
		hosts := strings.Split(addrs, "+")
		if !ok || name == "" || slices.ContainsFunc(hosts, func(h string) bool { return !strings.Contains(h, ":") }) {
			return nil, fmt.Errorf("--shards: %q is not name=host:port[+replica-host:port...]", item)
		}
		if seen[name] {
			return nil, fmt.Errorf("--shards: shard name %q appears twice", name)
		}
		seen[name] = true
		sh := contract.Shard{Name: name, Primary: hosts[0]}
		if len(hosts) > 1 {
			sh.Replicas = hosts[1:]
		}
		doc.Shards = append(doc.Shards, sh)
	}
	if len(doc.Shards) == 0 {
		return nil, fmt.Errorf("--shards: no shards given")
	}
	if d.TTLModeForAll || d.LeaseTTL > 0 {
		mode := "tracking"
		if d.TTLModeForAll {
			mode = "ttl"
		}
		doc.Policies = []contract.Policy{{Name: "all", Prefix: "", L1Enabled: d.L1, L1Mode: mode, InvalidateOnWrite: true,
			LeaseTTLMillis: d.LeaseTTL.Milliseconds()}}
	}
	doc.Seal(nil)
	return doc, nil
}

// WatchFile applies the document in path now and whenever the file changes (polled, which also
// follows the symlink swaps of a mounted ConfigMap). A bad document is reported and skipped;
// the agent keeps serving the last good one.
func WatchFile(ctx context.Context, path string, every time.Duration, apply func(*contract.Document) error, report func(error)) error {
	var last string
	load := func() error {
		data, err := os.ReadFile(path) //nolint:gosec // the operator names the file on the command line
		if err != nil {
			return err
		}
		doc, err := contract.Decode(data)
		if err != nil {
			return err
		}
		if doc.Checksum == last {
			return nil
		}
		if err := apply(doc); err != nil {
			return err
		}
		last = doc.Checksum
		return nil
	}
	if err := load(); err != nil {
		return fmt.Errorf("loading %s: %w", path, err)
	}
	go repeat(ctx, every, func() {
		if err := load(); err != nil {
			report(err)
		}
	})
	return nil
}

// repeat runs fn every interval until ctx ends.
func repeat(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
