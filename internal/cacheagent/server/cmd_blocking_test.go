package server

import (
	"net"
	"testing"
	"time"
)

// TestHungUpSeesAPeerClose: a waiting client that hangs up is seen without reading its socket.
func TestHungUpSeesAPeerClose(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { c, _ := net.Dial("tcp", ln.Addr().String()); time.Sleep(100 * time.Millisecond); c.Close() }()
	s, _ := ln.Accept()
	gone := hangUpCheck(s)
	if gone == nil {
		t.Fatal("a TCP connection cannot tell")
	}
	if gone() {
		t.Fatal("hung up before the close")
	}
	time.Sleep(300 * time.Millisecond)
	if !gone() {
		t.Fatal("close not seen")
	}
}
