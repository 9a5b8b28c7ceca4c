package fence

import (
	"sync"
	"testing"
)

func TestFillAfterWriteIsRefused(t *testing.T) {
	var f Fence
	cache := map[string]string{}
	tk := f.Ticket("k")
	f.Write("k")
	delete(cache, "k")
	if f.Fill(tk, func() { cache["k"] = "old" }) {
		t.Fatal("a fill whose read predates a write was kept")
	}
	if _, ok := cache["k"]; ok {
		t.Fatal("stale value stored")
	}
	tk = f.Ticket("k")
	if !f.Fill(tk, func() { cache["k"] = "new" }) || cache["k"] != "new" {
		t.Fatal("a fill with a current ticket was refused")
	}
}

func TestAllRefusesEveryEarlierTicket(t *testing.T) {
	var f Fence
	var tickets []Ticket
	for _, k := range []string{"a", "b", "c", "d"} {
		tickets = append(tickets, f.Ticket(k))
	}
	dropped := 0
	f.All(func() { dropped++ })
	if dropped != 1 {
		t.Fatalf("drop ran %d times", dropped)
	}
	for i, tk := range tickets {
		if f.Fill(tk, func() {}) {
			t.Errorf("ticket %d survived All", i)
		}
	}
}

// TestNoStaleFillSurvivesAWrite races fills of an old value against writes: after every
// write returns, the cache must not hold a value read before it.
func TestNoStaleFillSurvivesAWrite(t *testing.T) {
	var f Fence
	var mu sync.Mutex
	value, cached := 0, -1 // the "shard" value and the cached copy (-1: none)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tk := f.Ticket("k")
				mu.Lock()
				read := value
				mu.Unlock()
				f.Fill(tk, func() { mu.Lock(); cached = read; mu.Unlock() })
			}
		})
	}
	for i := 1; i <= 20000; i++ {
		mu.Lock()
		value = i
		mu.Unlock()
		f.Write("k")
		mu.Lock()
		cached = -1 // the drop, after the write
		if cached != -1 && cached < i {
			mu.Unlock()
			close(stop)
			t.Fatalf("after write %d the cache holds %d", i, cached)
		}
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
}
