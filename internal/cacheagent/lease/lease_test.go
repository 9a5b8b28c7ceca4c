package lease

import (
	"testing"
	"time"
)

// TestWaitIsBoundedByTheLeaseTTL: a waiter waits no longer than the lease, plus the grace that
// lets its last look come after a dead holder's lease expired (without it, that look could come
// a moment before, and the waiter left without the lease it was waiting to take over:
// TestADeadLeaseHolderFreesTheKey failed so under load).
func TestWaitIsBoundedByTheLeaseTTL(t *testing.T) {
	for _, c := range []struct{ requested, leaseTTL, want time.Duration }{
		{5 * time.Second, 10 * time.Second, 5 * time.Second},
		{time.Hour, 10 * time.Second, 10*time.Second + takeOverGrace}, // a client cannot park a connection for an hour
		{0, 10 * time.Second, 0},
		{2 * time.Second, 300 * time.Millisecond, 300*time.Millisecond + takeOverGrace},
	} {
		if got := Wait(c.requested, c.leaseTTL); got != c.want {
			t.Errorf("Wait(%v, %v) = %v, want %v", c.requested, c.leaseTTL, got, c.want)
		}
	}
}

func TestWakeEndsEveryWaitOfTheKeyOnly(t *testing.T) {
	var l Leases
	a1, a2, b := l.add("a"), l.add("a"), l.add("b")
	l.Wake("a")
	for i, ch := range []chan struct{}{a1, a2} {
		select {
		case <-ch:
		default:
			t.Errorf("waiter %d of a not woken", i)
		}
	}
	select {
	case <-b:
		t.Error("a waiter of b was woken by a's fill")
	default:
	}
	l.remove("b", b)
	if len(l.waiters) != 0 {
		t.Errorf("%d keys still have waiters", len(l.waiters))
	}
}
