package router

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valkey-io/valkey-go"
)

// TestCombinerGivesEachCallerItsOwnResults: concurrent callers share rounds, every caller gets
// exactly the results of its own commands, in order, and a lone caller is never held back.
func TestCombinerGivesEachCallerItsOwnResults(t *testing.T) {
	var cb combiner[valkey.Completed]
	var rounds, inFlight atomic.Int64
	var ids sync.Map // *multiReq -> the caller's name
	run := func(round []*multiReq) {
		if inFlight.Add(1) != 1 {
			t.Error("two rounds in flight at once")
		}
		rounds.Add(1)
		time.Sleep(200 * time.Microsecond) // a round trip: callers pile up behind it
		var res []valkey.ValkeyResult
		for _, r := range round {
			r.n = len(r.build(valkey.Builder{}))
			id, _ := ids.Load(r)
			for i := range r.n { // each result names the caller and the command it answers
				res = append(res, valkey.NewErrorResult(fmt.Errorf("%s/%d", id, i)))
			}
		}
		split(round, res, nil)
		inFlight.Add(-1)
	}
	const callers, perCaller = 64, 50
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for c := range callers {
		wg.Go(func() {
			for i := range perCaller {
				n := 1 + (c+i)%4
				r := &multiReq{build: func(valkey.Builder) []valkey.Completed { return make([]valkey.Completed, n) }}
				id := fmt.Sprintf("%d.%d", c, i)
				ids.Store(r, id)
				cb.submit(r, run)
				ok := len(r.res) == n && r.err == nil
				for j := 0; ok && j < n; j++ {
					ok = r.res[j].Error().Error() == fmt.Sprintf("%s/%d", id, j)
				}
				if !ok {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Errorf("%d callers got results that were not theirs, or not in order", wrong.Load())
	}
	total := int64(callers * perCaller)
	t.Logf("%d requests in %d rounds", total, rounds.Load())
	if rounds.Load() >= total/2 {
		t.Errorf("%d rounds for %d concurrent requests: requests are not combined", rounds.Load(), total)
	}
	// Alone, a request runs at once as its own round.
	before := rounds.Load()
	r := &multiReq{build: func(valkey.Builder) []valkey.Completed { return make([]valkey.Completed, 2) }}
	cb.submit(r, run)
	if rounds.Load() != before+1 || len(r.res) != 2 {
		t.Errorf("a lone request: %d rounds, %d results", rounds.Load()-before, len(r.res))
	}
}

// TestCombinerLetsReadyCallersJoinTheFirstRound: callers that are ready to run when a round
// starts go in it (an event loop's one pipeline per shard per turn), not in a second round.
func TestCombinerLetsReadyCallersJoinTheFirstRound(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // one thread: "ready" is "in the run queue"
	var cb combiner[valkey.Completed]
	var sizes []int
	run := func(round []*multiReq) {
		sizes = append(sizes, len(round))
		res := make([]valkey.ValkeyResult, len(round))
		for _, r := range round {
			r.n = len(r.build(valkey.Builder{}))
		}
		split(round, res, nil)
	}
	one := func() *multiReq {
		return &multiReq{build: func(valkey.Builder) []valkey.Completed { return make([]valkey.Completed, 1) }}
	}
	const others = 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range others {
		wg.Go(func() { <-start; cb.submit(one(), run) })
	}
	time.Sleep(10 * time.Millisecond) // all parked on start
	close(start)                      // all ready, none run yet
	cb.submit(one(), run)
	wg.Wait()
	if len(sizes) != 1 || sizes[0] != others+1 {
		t.Errorf("rounds of %v requests, want one round of %d", sizes, others+1)
	}
}
