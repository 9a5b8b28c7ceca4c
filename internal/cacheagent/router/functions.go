package router

import (
	"context"
	"fmt"

	"github.com/valkey-io/valkey-go"
)

// Function libraries (FUNCTION LOAD) live on every shard: the agent loads them on each. A shard
// that joins the ring (a scale-up, or a shard at a new address) is given the libraries of a
// shard that was already serving before the agent routes anything to it.

// emptyDump is the length of FUNCTION DUMP's payload without a library: its RDB version (2
// bytes) and checksum (8).
const emptyDump = 10

// CopyFunctions restores on the shards next has and previous had not the libraries of a shard
// both have (FUNCTION DUMP, then FUNCTION RESTORE ... REPLACE, which every agent may run: the
// result is the same). It returns the first failure; a shard it could not give them is left
// as it is.
func CopyFunctions(ctx context.Context, previous, next *Router) error {
	if previous == nil {
		return nil
	}
	// A shard is known by its name and address: its connection may be new (the L1's share
	// per shard changes with their number).
	id := func(s *Shard) string { return s.Name() + "@" + s.Addr() }
	had := make(map[string]*Shard, len(previous.Shards))
	for _, s := range previous.Shards {
		had[id(s)] = s
	}
	var serving, joined []*Shard
	for _, s := range next.Shards {
		if old := had[id(s)]; old != nil {
			serving = append(serving, old) // its connection is open while the new ring is set
		} else {
			joined = append(joined, s)
		}
	}
	if len(joined) == 0 || len(serving) == 0 {
		return nil
	}
	payload, err := dumpFunctions(ctx, serving)
	if err != nil || len(payload) <= emptyDump {
		return err
	}
	var first error
	for _, s := range joined {
		_, err := s.Do(ctx, func(b valkey.Builder) valkey.Completed {
			return b.FunctionRestore().SerializedValue(payload).Replace().Build()
		})
		if err != nil && first == nil {
			first = fmt.Errorf("restoring the function libraries on %s: %w", s.Name(), err)
		}
	}
	return first
}

// dumpFunctions is FUNCTION DUMP's payload from the first of shards that answers.
func dumpFunctions(ctx context.Context, shards []*Shard) (string, error) {
	var err error
	for _, s := range shards {
		var res valkey.ValkeyResult
		if res, err = s.Do(ctx, func(b valkey.Builder) valkey.Completed { return b.FunctionDump().Build() }); err == nil {
			var payload string
			if payload, err = res.ToString(); err == nil {
				return payload, nil
			}
		}
	}
	return "", fmt.Errorf("reading the function libraries to give a joining shard: %w", err)
}
