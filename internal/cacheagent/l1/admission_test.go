package l1

import (
	"fmt"
	"testing"
)

func TestAdmissionCopiesEverythingUntilTheL1Evicts(t *testing.T) {
	a := NewAdmission(1000)
	for i := range 5000 {
		if !a.Admit(fmt.Appendf(nil, "k%d", i)) {
			t.Fatalf("key %d refused before any eviction", i)
		}
	}
}

// Once the L1 evicts, a key is admitted on its second read within the window, and a window's
// worth of other reads forgets it.
func TestAdmissionTakesKeysReadTwiceInTheWindow(t *testing.T) {
	const window = 4096
	a := NewAdmission(window)
	a.Evicted()
	if a.Admit([]byte("hot")) {
		t.Fatal("first read of hot admitted")
	}
	if !a.Admit([]byte("hot")) {
		t.Fatal("second read of hot refused")
	}
	taken := 0
	for i := range window / 2 {
		if a.Admit(fmt.Appendf(nil, "once%d", i)) {
			taken++
		}
	}
	if taken > window/2/20 { // 8 bits per key, 2 hashes: about 5% at a full window, less here
		t.Errorf("%d of %d one-off reads admitted", taken, window/2)
	}
	if !a.Admit([]byte("hot")) {
		t.Fatal("hot forgotten within the window")
	}
	for i := 0; ; i++ { // until the window is full and cleared
		before := a.seen.Load()
		a.Admit(fmt.Appendf(nil, "later%d", i))
		if a.seen.Load() < before {
			break
		}
	}
	if a.Admit([]byte("hot")) {
		t.Fatal("hot still remembered after a full window of other reads")
	}
}

// The read that fills a window is remembered in the next one: its key, like any other, is
// admitted when it is read again.
func TestAdmissionRemembersTheReadThatEndsAWindow(t *testing.T) {
	a := NewAdmission(1024)
	a.Evicted()
	for i := range 5000 { // the window ends four times
		k := fmt.Appendf(nil, "k%d", i)
		if first := a.Admit(k); !first && !a.Admit(k) {
			t.Fatalf("key %d refused on its second read in a row", i)
		}
	}
}

func BenchmarkAdmit(b *testing.B) {
	a := NewAdmission(1 << 20)
	a.Evicted()
	keys := make([][]byte, 1<<16)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key:%d", i)
	}
	b.ResetTimer()
	for i := range b.N {
		a.Admit(keys[i&(len(keys)-1)])
	}
}
