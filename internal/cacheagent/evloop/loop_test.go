//go:build linux

package evloop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A line protocol for the tests: "hit" is answered "H", by the loop's handler or by the
// reader goroutine alike (as an L1 hit is); "long ..." its length, "L:n"; "big N" N bytes;
// other lines "R:" and the line.
var loopAnswers atomic.Int64

func lineHandler(c *Conn, data []byte) int {
	used := 0
	var out []byte
	for {
		rest := data[used:]
		if !bytes.HasPrefix(rest, []byte("hit\n")) {
			break
		}
		out = append(out, "H\n"...)
		used += 4
	}
	if len(out) > 0 {
		if _, err := c.WriteNoWait(out); err != nil {
			return 0
		}
		loopAnswers.Add(int64(used / 4))
	}
	return used
}

type server struct {
	ln      net.Listener
	loop    *Loop
	wg      sync.WaitGroup
	adopted chan *Conn
}

func serve(t *testing.T, h Handler) *server {
	t.Helper()
	l, err := New(h)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, loop: l, adopted: make(chan *Conn, 64)}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c, err := l.Adopt(nc.(*net.TCPConn))
			if err != nil {
				t.Error(err)
				return
			}
			s.adopted <- c
			s.wg.Go(func() { readLines(c) })
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
		l.Close()
	})
	return s
}

// readLines is the reader goroutine of the line protocol.
func readLines(c *Conn) {
	defer c.Close()
	rd := bufio.NewReaderSize(c, 16<<10)
	for {
		if rd.Buffered() == 0 {
			c.AtBoundary()
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		var n int
		switch {
		case line == "hit\n":
			_, err = c.Write([]byte("H\n"))
		case strings.HasPrefix(line, "long "):
			_, err = fmt.Fprintf(c, "L:%d\n", len(line))
		case strings.HasPrefix(line, "big "):
			if _, err = fmt.Sscanf(line, "big %d", &n); err == nil {
				_, err = c.Write(bytes.Repeat([]byte("b"), n))
			}
		default:
			_, err = c.Write([]byte("R:" + line))
		}
		if err != nil {
			return
		}
	}
}

// dial connects and waits until the reader has handed the connection to the loop.
func dial(t *testing.T, s *server) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := <-s.adopted
	for c.state.Load() != ownedByLoop {
		time.Sleep(time.Millisecond)
	}
	return nc
}

func TestRepliesFromTheLoopAndTheReaderKeepTheClientsOrder(t *testing.T) {
	s := serve(t, lineHandler)
	before := loopAnswers.Load()
	var wg sync.WaitGroup
	for client := range 8 {
		wg.Go(func() {
			nc, err := net.Dial("tcp", s.ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
			rd := bufio.NewReader(nc)
			for round := range 300 {
				// Alternate lone requests, runs the loop answers whole, and pipelines mixing both.
				var send, want strings.Builder
				for i := range round%7 + 1 {
					if (round+i+client)%3 == 0 {
						fmt.Fprintf(&send, "miss %d %d\n", round, i)
						fmt.Fprintf(&want, "R:miss %d %d\n", round, i)
					} else {
						send.WriteString("hit\n")
						want.WriteString("H\n")
					}
				}
				if _, err := nc.Write([]byte(send.String())); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, want.Len())
				if _, err := io.ReadFull(rd, got); err != nil {
					t.Errorf("client %d round %d: %v", client, round, err)
					return
				}
				if string(got) != want.String() {
					t.Errorf("client %d round %d: got %q, want %q", client, round, got, want.String())
					return
				}
			}
		})
	}
	wg.Wait()
	if loopAnswers.Load() == before {
		t.Fatal("the loop answered nothing")
	}
}

// The handler sees a message's first bytes only: a line split across two writes reaches the
// reader whole, even when its second half looks like something the loop answers.
func TestTheHandlerOnlySeesWholeMessages(t *testing.T) {
	s := serve(t, lineHandler)
	nc := dial(t, s)
	rd := bufio.NewReader(nc)
	if _, err := nc.Write([]byte("split-")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := nc.Write([]byte("hit\nhit\n")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"R:split-hit\n", "H\n"} {
		got, err := rd.ReadString('\n')
		if err != nil || got != want {
			t.Fatalf("got %q (%v), want %q", got, err, want)
		}
	}
}

// Replies larger than the socket can take at once arrive whole, from the reader (which waits
// for the socket to drain) and from the loop (which keeps what the socket refused).
func TestLargeRepliesWaitForASlowClient(t *testing.T) {
	const size = 8 << 20
	var answered atomic.Bool
	bigHit := func(c *Conn, data []byte) int {
		if string(data) != "bighit\n" {
			return 0
		}
		if _, err := c.WriteNoWait(bytes.Repeat([]byte("h"), size)); err != nil {
			return 0
		}
		answered.Store(c.Backlogged())
		return len(data)
	}
	s := serve(t, bigHit)
	nc := dial(t, s)
	if _, err := nc.Write([]byte("bighit\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the socket fills up; the rest waits in the backlog
	if _, err := fmt.Fprintf(nc, "big %d\n", size); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2*size)
	if _, err := io.ReadFull(nc, got); err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("h", size) + strings.Repeat("b", size); string(got) != want {
		t.Fatal("the replies arrived out of order or changed")
	}
	if !answered.Load() {
		t.Fatal("the loop did not answer with more than the socket took")
	}
}

// Requests longer than one read of the loop reach the reader whole.
func TestLongRequestsReachTheReaderWhole(t *testing.T) {
	s := serve(t, lineHandler)
	nc := dial(t, s)
	line := strings.Repeat("y", 1<<20) + "\n"
	go func() { _, _ = nc.Write([]byte(line + "hit\n")) }()
	rd := bufio.NewReaderSize(nc, 2<<20)
	got, err := rd.ReadString('\n')
	if err != nil || got != "R:"+line {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(line)+2)
	}
	if got, err := rd.ReadString('\n'); err != nil || got != "H\n" {
		t.Fatalf("got %q (%v), want H", got, err)
	}
}

// Megabytes of pipelined requests keep flowing: data that arrives while the loop hands the
// socket back must not leave the reader waiting (a lost wake-up once stalled 12 MB here).
func TestPipelinedLargeRequestsKeepFlowing(t *testing.T) {
	s := serve(t, lineHandler)
	nc := dial(t, s)
	rd := bufio.NewReader(nc)
	line := "long " + strings.Repeat("x", 4<<20) + "\n"
	for round := range 5 {
		go func() { _, _ = nc.Write([]byte(line + line + line)) }()
		for i := range 3 {
			got, err := rd.ReadString('\n')
			if want := fmt.Sprintf("L:%d\n", len(line)); err != nil || got != want {
				t.Fatalf("round %d, request %d: %q, %v; want %q", round, i, got, err, want)
			}
		}
	}
}

// A reader waiting for input returns when its connection is closed or its deadline passes.
func TestAWaitingReaderWakesOnCloseAndDeadline(t *testing.T) {
	l, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accept := func() (*Conn, net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c, err := l.Adopt(nc.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		return c, client
	}
	read := func(c *Conn) chan error {
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 16))
			done <- err
		}()
		return done
	}

	c, _ := accept()
	done := read(c)
	time.Sleep(50 * time.Millisecond)
	if err := c.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the deadline: %v", err)
	}
	c.Close()

	c, client := accept()
	done = read(c)
	time.Sleep(50 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	// The client sees the connection end.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("client read after Close: %v", err)
	}

	c, client = accept()
	done = read(c)
	client.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("after the client closed: %v", err)
	}
	c.Close()
}
