// Command loadgen sends GETs at a fixed rate and prints the latency percentiles, measured from
// each request's scheduled start (so a slow server's queueing counts, unlike a closed loop such
// as redis-benchmark's). hack/bench.sh uses it for the "p99 added latency at half load" row.
//
//	go run ./hack/loadgen -addr 127.0.0.1:6379 -rate 20000 -duration 5s
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "server address")
	rate := flag.Int("rate", 10000, "requests per second, in total")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	conns := flag.Int("conns", 50, "connections")
	keyspace := flag.Int("keyspace", 100000, "keys key:000000000000 .. (as redis-benchmark -r names them)")
	flag.Parse()
	if err := run(*addr, *rate, *duration, *conns, *keyspace); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(addr string, rate int, duration time.Duration, conns, keyspace int) error {
	interval := time.Duration(float64(time.Second) * float64(conns) / float64(rate))
	n := int(duration / interval)
	start := time.Now().Add(100 * time.Millisecond)
	var (
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
		errs = make(chan error, conns)
	)
	for c := range conns {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		wg.Go(func() {
			defer nc.Close()
			rd, w := bufio.NewReader(nc), bufio.NewWriter(nc)
			own := make([]time.Duration, 0, n)
			// Connections are staggered across the interval so the load is even.
			first := start.Add(interval * time.Duration(c) / time.Duration(conns))
			for i := range n {
				due := first.Add(time.Duration(i) * interval)
				time.Sleep(time.Until(due))
				key := fmt.Sprintf("key:%012d", rand.IntN(keyspace)) //nolint:gosec // load, not secrets
				fmt.Fprintf(w, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key)
				if err := w.Flush(); err != nil {
					errs <- err
					return
				}
				if err := readBulk(rd); err != nil {
					errs <- err
					return
				}
				own = append(own, time.Since(due))
			}
			mu.Lock()
			lats = append(lats, own...)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	slices.Sort(lats)
	pct := func(p float64) float64 { return float64(lats[int(p*float64(len(lats)-1))].Microseconds()) }
	elapsed := time.Since(start)
	fmt.Printf("%.0f %.0f %.0f %.0f\n", float64(len(lats))/elapsed.Seconds(), pct(0.50), pct(0.99), pct(0.999))
	return nil
}

// readBulk reads one GET reply: a bulk string or nil.
func readBulk(rd *bufio.Reader) error {
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 || line[0] != '$' {
		return fmt.Errorf("unexpected reply %q", line)
	}
	size, err := strconv.Atoi(line[1 : len(line)-2])
	if err != nil || size < 0 {
		return err
	}
	_, err = rd.Discard(size + 2)
	return err
}
