package l1

import (
	"bytes"
	"strconv"
	"testing"
	"time"
)

func TestGetSetDeleteExpire(t *testing.T) {
	c := New(1 << 20)
	v := []byte("value")
	c.Set("a", v, time.Minute)
	v[0] = 'X' // the cache keeps its own copy
	if got, ok := c.Get("a"); !ok || string(got) != "value" {
		t.Fatalf("Get(a) = %q, %v", got, ok)
	}
	c.Set("short", []byte("x"), 30*time.Millisecond)
	c.Set("never", []byte("x"), 0)
	if _, ok := c.Get("never"); ok {
		t.Error("a value with no TTL left was stored")
	}
	time.Sleep(60 * time.Millisecond)
	if _, ok := c.Get("short"); ok {
		t.Error("expired value returned")
	}
	c.Delete("a")
	if _, ok := c.Get("a"); ok {
		t.Error("deleted value returned")
	}
}

func TestDeletePrefix(t *testing.T) {
	c := New(1 << 20)
	for _, k := range []string{"user:1", "user:2", "usr:3", "session:1"} {
		c.Set(k, []byte("v"), time.Minute)
	}
	if n := c.DeletePrefix("user:"); n != 2 {
		t.Errorf("removed %d, want 2", n)
	}
	if _, ok := c.Get("usr:3"); !ok {
		t.Error("a key outside the prefix was removed")
	}
}

func TestMemoryBound(t *testing.T) {
	const bound = 1 << 20
	c := New(bound)
	val := bytes.Repeat([]byte("x"), 1000)
	for i := 0; i < 5000; i++ { // ~5 MB offered to a 1 MiB cache
		c.Set("k"+strconv.Itoa(i), val, time.Minute)
	}
	time.Sleep(50 * time.Millisecond) // eviction runs in maintenance
	if w := c.Weight(); w > bound {
		t.Errorf("cache holds %d bytes, bound %d", w, bound)
	}
	if c.Len() == 0 {
		t.Error("cache is empty")
	}
}

// BenchmarkDeleteAbsent: the agent's write of a key the L1 holds no copy of (most writes).
func BenchmarkDeleteAbsent(b *testing.B) {
	c := New(1 << 20)
	keys := make([]string, 1<<10)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	b.ResetTimer()
	for i := range b.N {
		c.Delete(keys[i&(len(keys)-1)])
	}
}
