package server

import (
	"context"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cachefleet/cachefleet/internal/cacheagent/evloop"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN, BZPOPMAX, BZMPOP, XREAD
// and XREADGROUP with BLOCK) wait on a pooled connection of their own to their keys' shard
// (router.RunBlocking), bounded per shard like WATCH and scripts: a waiting client holds that
// connection only, never the one its neighbours share. As in Valkey, the client's later
// commands wait behind it, and one that hangs up ends its wait.

// cmdBlocking runs a blocking command on its keys' shard; inside MULTI, and without XREAD's
// BLOCK, it does not block (as in Valkey) and is relayed like any write or read.
func cmdBlocking(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	wait, blocks := b.cmd.wait.of(args)
	if b.tx || !blocks {
		if b.cmd.class == classRead {
			forwardRead(nil)(ctx, s, b, c, w, args)
		} else {
			forwardWrite(nil, createsNothing)(ctx, s, b, c, w, args)
		}
		return
	}
	keys, i, ok := b.oneShard(ctx, w, args)
	if !ok {
		return
	}
	b.exec(ctx, w) // what the client sent before it is answered first
	r, sh, cmd, shape := b.r, b.r.Shards[i], relayed(args), b.cmd.replyShape(args)
	s.announce(b.cid, keys...)
	b.local(func(w *resp.Writer) {
		wctx, stop := untilHangUp(ctx, c)
		defer stop()
		s.Stats.BlockedClients.Add(1)
		c.blocked.Store(true)
		res, err := sh.RunBlocking(wctx, wait, cmd)
		c.blocked.Store(false)
		s.Stats.BlockedClients.Add(-1)
		s.settleBy(r, c.id, keys...) // what it popped or moved is gone from every L1
		if err != nil {
			reply.WriteErr(w, err)
			return
		}
		reply.RelayShaped(w, res, shape)
	})
	b.exec(ctx, w)
}

// hangUpPoll is how often a waiting client's connection is checked for a hang-up.
const hangUpPoll = 100 * time.Millisecond

// untilHangUp is ctx, ended when c's peer closes the connection. It polls the socket for a
// hang-up without reading it: what the client pipelined after the blocking command stays for
// its goroutine.
func untilHangUp(ctx context.Context, c *client) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	gone := hangUpCheck(c.nc)
	if gone == nil {
		return ctx, cancel
	}
	go func() {
		t := time.NewTicker(hangUpPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.done:
				cancel()
				return
			case <-t.C:
				if gone() {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// hangUpCheck is how to learn that nc's peer hung up: the event loop's connection knows; a
// plain socket is polled; nil for a connection that cannot tell.
func hangUpCheck(nc net.Conn) func() bool {
	if ec, ok := nc.(*evloop.Conn); ok {
		return ec.HungUp
	}
	raw, ok := rawConn(nc)
	if !ok {
		return nil
	}
	return func() bool { return hungUp(raw) }
}

// rawConn is a TCP connection's socket, for what net.Conn does not offer.
func rawConn(nc net.Conn) (syscall.RawConn, bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	return raw, err == nil
}

// hungUp reports whether the peer closed its side of the connection.
func hungUp(raw syscall.RawConn) bool {
	gone := false
	_ = raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}} //nolint:gosec // a file descriptor fits
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}
