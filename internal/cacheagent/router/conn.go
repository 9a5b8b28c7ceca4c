package router

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// errStaleConnection: the shard had closed the connection (it restarted, or dropped us) before
// the agent wrote a request on it. Nothing was sent, so the request is safe to retry once on a
// fresh connection, writes included. valkey-go alone cannot tell this from a request lost in
// flight: an idle connection is only found dead when a request's reply does not come.
var errStaleConnection = errors.New("the shard had closed the connection before the request was sent")

// idleBeforeCheck: a connection that saw no traffic for this long is checked before a write. A
// busy connection is never checked (a dead peer shows as a read error on it at once), so the
// check costs nothing under load.
const idleBeforeCheck = time.Millisecond

// checkedConn refuses to write on a connection whose peer has already closed it.
type checkedConn struct {
	net.Conn
	raw    syscall.RawConn // nil when the connection does not expose its descriptor
	lastIO atomic.Int64    // unix nanoseconds of the last read or write
}

func (c *checkedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.lastIO.Store(time.Now().UnixNano())
	return n, err
}

func (c *checkedConn) Write(b []byte) (int, error) {
	now := time.Now().UnixNano()
	if c.raw != nil && now-c.lastIO.Load() >= int64(idleBeforeCheck) && peerClosed(c.raw) {
		return 0, errStaleConnection
	}
	n, err := c.Conn.Write(b)
	c.lastIO.Store(now)
	return n, err
}

// dialChecked is valkey-go's DialCtxFn: it dials like valkey-go and wraps the connection.
func dialChecked(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &checkedConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
		}
	}
	c.lastIO.Store(time.Now().UnixNano())
	return c, nil
}
