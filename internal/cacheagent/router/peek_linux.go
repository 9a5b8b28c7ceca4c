package router

import (
	"errors"
	"syscall"
)

// peerClosed peeks at the socket without blocking or consuming: end of stream or an error such
// as a reset means the peer is gone. Control does not take the descriptor's read lock, so it
// does not wait on valkey-go's reader goroutine.
func peerClosed(raw syscall.RawConn) bool {
	closed := false
	_ = raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			closed = true
		}
	})
	return closed
}
