package controller

import (
	"reflect"
	"testing"
	"time"

	"github.com/cachefleet/cachefleet/internal/contract"
)

func TestCarryWarming(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	ring := func(epoch int64, algorithm string, names ...string) *contract.Document {
		d := &contract.Document{Epoch: epoch, Algorithm: algorithm}
		for _, n := range names {
			d.Shards = append(d.Shards, contract.Shard{Name: n, Primary: n + ":6379"})
		}
		return d
	}
	const rv, kt = contract.AlgorithmRendezvous, contract.AlgorithmKetama
	warming := func(epoch int64, until time.Time, algorithm string, names ...string) *contract.Warming {
		return &contract.Warming{Epoch: epoch, Algorithm: algorithm, Members: names, UntilMillis: until.UnixMilli()}
	}
	later := now.Add(DefaultWarmUpWindow)
	failedOver := ring(7, rv, "a", "b", "c")
	failedOver.Shards[0].Primary = "a-1:6379"
	for _, tc := range []struct {
		name          string
		doc, previous *contract.Document
		previousWarm  *contract.Warming
		window        time.Duration
		want          *contract.Warming
	}{
		{"first document", ring(0, rv, "a", "b"), nil, nil, DefaultWarmUpWindow, nil},
		{"scale-up keeps the previous layout", ring(0, rv, "a", "b", "c", "d"), ring(7, rv, "a", "b", "c"), nil, DefaultWarmUpWindow,
			warming(7, later, rv, "a", "b", "c")},
		{"warm-up off", ring(0, rv, "a", "b", "c", "d"), ring(7, rv, "a", "b", "c"), nil, 0, nil},
		{"scale-in warms nothing", ring(0, rv, "a", "b"), ring(7, rv, "a", "b", "c"), nil, DefaultWarmUpWindow, nil},
		{"new hashing moves keys between the same members", ring(0, kt, "a", "b"), ring(7, rv, "a", "b"), nil, DefaultWarmUpWindow,
			warming(7, later, rv, "a", "b")},
		{"a failover carries the window on", failedOver, ring(8, rv, "a", "b", "c"), warming(7, now.Add(time.Minute), rv, "a", "b"), DefaultWarmUpWindow,
			warming(7, now.Add(time.Minute), rv, "a", "b")},
		{"an ended window is dropped", ring(0, rv, "a", "b", "c"), ring(8, rv, "a", "b", "c"), warming(7, now.Add(-time.Second), rv, "a", "b"), DefaultWarmUpWindow, nil},
		{"a scale-up during a window starts a new one from the latest layout", ring(0, rv, "a", "b", "c", "d"), ring(8, rv, "a", "b", "c"),
			warming(7, now.Add(time.Minute), rv, "a", "b"), DefaultWarmUpWindow, warming(8, later, rv, "a", "b", "c")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.previous != nil {
				tc.previous.Warming = tc.previousWarm
			}
			carryWarming(tc.doc, tc.previous, now, tc.window)
			if !reflect.DeepEqual(tc.doc.Warming, tc.want) {
				t.Fatalf("warming = %+v, want %+v", tc.doc.Warming, tc.want)
			}
		})
	}
}
