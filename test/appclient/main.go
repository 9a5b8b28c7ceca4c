// Command appclient is an application pod as the e2e suite sees one during a disruption: a
// go-redis client with its default pool and retries, reading keys (and writing some) through the
// node's agent for a while, then one JSON line of what it saw. hack/node-cluster.sh builds it
// into the image cachefleet.local/appclient:1.
//
//	appclient -addr 10.96.0.20:6380 -duration 40s -keys 500 -prefix load   # password in $PW
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// report is the JSON line appclient prints at the end.
type report struct {
	Reads       int64  `json:"reads"`
	Misses      int64  `json:"misses"`
	ReadErrors  int64  `json:"readErrors"`
	Writes      int64  `json:"writes"`
	WriteErrors int64  `json:"writeErrors"`
	Dials       int64  `json:"dials"` // connections opened: the pool's first ones, then reconnections
	FirstError  string `json:"firstError,omitempty"`
}

func main() {
	addr := flag.String("addr", "", "the agent's address (its Service)")
	duration := flag.Duration("duration", 30*time.Second, "how long to run")
	keys := flag.Int("keys", 500, "keys prefix:0 .. prefix:keys-1 are read in turn")
	prefix := flag.String("prefix", "load", "prefix of the keys read")
	writeEvery := flag.Duration("write-every", 20*time.Millisecond, "a SET of a key of its own this often; 0 for none")
	flag.Parse()
	if err := run(*addr, *duration, *keys, *prefix, *writeEvery); err != nil {
		fmt.Fprintln(os.Stderr, "appclient:", err)
		os.Exit(1)
	}
}

func run(addr string, duration time.Duration, keys int, prefix string, writeEvery time.Duration) error {
	var rep report
	var firstErr atomic.Value
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	c := redis.NewClient(&redis.Options{
		Addr: addr, Password: os.Getenv("PW"), PoolSize: 4,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			atomic.AddInt64(&rep.Dials, 1)
			return dialer.DialContext(ctx, network, addr)
		},
	})
	defer c.Close()
	ctx := context.Background()
	failed := func(n *int64, err error) {
		atomic.AddInt64(n, 1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	end := time.Now().Add(duration)
	done := make(chan struct{})
	go func() { // the writer: keys of its own, each once
		defer close(done)
		if writeEvery <= 0 {
			return
		}
		for i := 0; time.Now().Before(end); i++ {
			time.Sleep(writeEvery)
			atomic.AddInt64(&rep.Writes, 1)
			if err := c.Set(ctx, fmt.Sprintf("%s-written:%s:%d", prefix, os.Getenv("HOSTNAME"), i), i, 0).Err(); err != nil {
				failed(&rep.WriteErrors, err)
			}
		}
	}()
	for i := 0; time.Now().Before(end); i++ {
		err := c.Get(ctx, fmt.Sprintf("%s:%d", prefix, i%keys)).Err()
		atomic.AddInt64(&rep.Reads, 1)
		switch {
		case errors.Is(err, redis.Nil):
			rep.Misses++
		case err != nil:
			failed(&rep.ReadErrors, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	<-done
	if e, ok := firstErr.Load().(string); ok {
		rep.FirstError = e
	}
	return json.NewEncoder(os.Stdout).Encode(&rep)
}
