package server

import (
	"testing"
	"time"
)

func TestLeaseWaitIsBoundedByTheLeaseTTL(t *testing.T) {
	for _, c := range []struct{ requested, leaseTTL, want time.Duration }{
		{5 * time.Second, 10 * time.Second, 5 * time.Second},
		{time.Hour, 10 * time.Second, 10 * time.Second}, // a client cannot park a connection for an hour
		{0, 10 * time.Second, 0},
		{2 * time.Second, 300 * time.Millisecond, 300 * time.Millisecond},
	} {
		if got := leaseWait(c.requested, c.leaseTTL); got != c.want {
			t.Errorf("leaseWait(%v, %v) = %v, want %v", c.requested, c.leaseTTL, got, c.want)
		}
	}
}
