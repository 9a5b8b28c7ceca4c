package testutil

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Proxy relays TCP connections to a server. A test can hold back what the server sends on
// some of them, to put in order events that race on different connections (an invalidation
// push on one, a read's reply on another).
type Proxy struct {
	ln net.Listener
	to string

	mu      sync.Mutex
	changed *sync.Cond
	holding bool
	spared  []byte // while holding, connections whose client sent this are not held
	conns   []net.Conn
}

// StartProxy relays to addr until the test ends.
func StartProxy(t testing.TB, addr string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, to: addr}
	p.changed = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// HoldExcept holds back the server's bytes on every connection whose client has not sent
// spared (say "BCAST", which a tracking watcher sends when it connects) until Release.
func (p *Proxy) HoldExcept(spared string) {
	p.mu.Lock()
	p.holding, p.spared = true, []byte(spared)
	p.mu.Unlock()
}

// Release lets the held bytes through, in their order.
func (p *Proxy) Release() {
	p.mu.Lock()
	p.holding = false
	p.mu.Unlock()
	p.changed.Broadcast()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		var sent relayed
		go p.relay(s, c, &sent, nil)
		go p.relay(c, s, nil, &sent)
	}
}

// relayed is what a connection's client has sent so far (the start of it is enough to tell
// which connection it is).
type relayed struct {
	mu  sync.Mutex
	buf []byte
}

func (r *relayed) has(b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Contains(r.buf, b)
}

// relay copies from src to dst. Client to server, it records what the client sent (record);
// server to client, it waits while the connection is held (heldIf).
func (p *Proxy) relay(dst, src net.Conn, record, heldIf *relayed) {
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if record != nil {
				record.mu.Lock()
				if len(record.buf) < 64<<10 {
					record.buf = append(record.buf, buf[:n]...)
				}
				record.mu.Unlock()
			}
			if heldIf != nil {
				p.mu.Lock()
				for p.holding && !heldIf.has(p.spared) {
					p.changed.Wait()
				}
				p.mu.Unlock()
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Release()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
