package main

import (
	"log/slog"
	"runtime/debug"
	"strconv"
	"testing"
)

func TestProcsDefaultsToTwoAndRefusesANegativeCount(t *testing.T) {
	o, err := parseFlags([]string{"--shards", "shard-0=127.0.0.1:7001"})
	if err != nil || o.procs != 2 {
		t.Errorf("default --procs = %v, %v; want 2", o, err)
	}
	if _, err := parseFlags([]string{"--shards", "shard-0=127.0.0.1:7001", "--procs=-1"}); err == nil {
		t.Error("--procs=-1 was accepted")
	}
}

func TestEventLoopsDefaultToOneAndRefuseANegativeCount(t *testing.T) {
	o, err := parseFlags([]string{"--shards", "shard-0=127.0.0.1:7001"})
	if err != nil || o.server.EventLoops != 1 {
		t.Errorf("default --event-loops = %v, %v; want 1", o, err)
	}
	if _, err := parseFlags([]string{"--shards", "shard-0=127.0.0.1:7001", "--event-loops=-1"}); err == nil {
		t.Error("--event-loops=-1 was accepted")
	}
}

// TestTheGoHeapIsKeptUnderTheContainerLimit: the operator passes limits.memory as MEMORY_LIMIT;
// the agent keeps its Go heap under 90% of it, unless GOMEMLIMIT is set.
func TestTheGoHeapIsKeptUnderTheContainerLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	log := slog.New(slog.DiscardHandler)
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("MEMORY_LIMIT", strconv.Itoa(256<<20))
	fitGCToMemoryLimit(log)
	if got := debug.SetMemoryLimit(-1); got != 256<<20/10*9 {
		t.Errorf("Go memory limit %d, want 90%% of 256 MiB", got)
	}
	debug.SetMemoryLimit(before)
	t.Setenv("GOMEMLIMIT", "100MiB")
	fitGCToMemoryLimit(log)
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Errorf("with GOMEMLIMIT set, the limit moved to %d", got)
	}
}
