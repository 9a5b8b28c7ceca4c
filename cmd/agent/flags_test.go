package main

import "testing"

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
