package router

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/upstream"
)

// Clients' scripts run on the shard as a user that cannot run @admin or @dangerous commands,
// so `EVAL "return redis.call('FLUSHALL')"` is refused as FLUSHALL itself is, and a script
// cannot reconfigure, replicate, migrate or shut down a shard. The agent's own work keeps the
// default user. Scripts never flush, whatever the fleet allows: FLUSHALL itself does.
const (
	ScriptUser     = "cachefleet-scripts"
	scriptUserRule = "reset on ~* &* +@all -@admin -@dangerous"
)

// scriptUserCommand creates (or resets) the script user with password; without one the user
// takes any, as the shard's default user does.
func scriptUserCommand(password string) []string {
	cmd := append([]string{"ACL", "SETUSER", ScriptUser}, strings.Fields(scriptUserRule)...)
	if password == "" {
		return append(cmd, "nopass")
	}
	return append(cmd, ">"+password)
}

// dialerFor is valkey-go's DialCtxFn for a shard: every new connection first makes sure the
// script user exists (a shard that restarted lost it; ACL users are not replicated, so a
// promoted replica never had it), then is handed to valkey-go, which authenticates it.
func dialerFor(password string) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, addr string, d *net.Dialer, cfg *tls.Config) (net.Conn, error) {
		nc, err := dialChecked(ctx, addr, d, cfg)
		if err != nil {
			return nil, err
		}
		var cmds [][]string
		if password != "" {
			cmds = append(cmds, []string{"AUTH", password})
		}
		cmds = append(cmds, scriptUserCommand(password))
		_ = nc.SetDeadline(time.Now().Add(d.Timeout))
		if err := upstream.Handshake(nc, cmds...); err != nil {
			nc.Close()
			return nil, err
		}
		_ = nc.SetDeadline(time.Time{})
		return nc, nil
	}
}

// AsScriptUser wraps cmds (one connection's, in order) in AUTHs that run them as ScriptUser and
// then give the connection back its default user.
func (s *Shard) AsScriptUser(bd valkey.Builder, cmds ...valkey.Completed) []valkey.Completed {
	pw := s.cfg.Password
	if pw == "" {
		pw = "-" // nopass users take any
	}
	out := make([]valkey.Completed, 0, len(cmds)+2)
	out = append(out, bd.Auth().Username(ScriptUser).Password(pw).Build())
	out = append(out, cmds...)
	return append(out, bd.Auth().Username("default").Password(pw).Build())
}

// RunScript runs a client's script (EVAL, EVALSHA, FCALL) as ScriptUser on a pooled connection
// of its own, not combined with other clients' requests: one that loops holds that connection
// only, and runs until it ends, is killed or ctx ends.
// The script is sent only once the shard has taken the script user: it never runs as default.
func (s *Shard) RunScript(ctx context.Context, build func(valkey.Builder) valkey.Completed) (valkey.ValkeyResult, error) {
	leave, err := s.takePlace()
	if err != nil {
		return valkey.ValkeyResult{}, err
	}
	defer leave()
	var res valkey.ValkeyResult
	err = s.call(ctx, func(ctx context.Context, c valkey.Client) error {
		return c.Dedicated(func(dc valkey.DedicatedClient) error {
			script := build(dc.B())
			// A script runs as long as it runs, as on Valkey: no request timeout (a slow
			// script is not a down shard), until it ends, is killed (SCRIPT KILL), or its
			// client hangs up (ctx), which closes the connection rather than pooling it.
			stop := context.AfterFunc(ctx, dc.Close)
			defer stop()
			wrapped := s.AsScriptUser(dc.B(), script)
			if res = dc.Do(ctx, wrapped[0]); res.Error() != nil {
				return res.NonValkeyError() // refused: the client reads why
			}
			all := dc.DoMulti(ctx, wrapped[1:]...)
			if err := FirstNetworkError(all); err != nil {
				res = all[0]
				return err
			}
			res = all[0]
			return nil
		})
	})
	return res, err
}

// FirstNetworkError is the first result that did not come from the shard.
func FirstNetworkError(res []valkey.ValkeyResult) error {
	for _, r := range res {
		if err := r.NonValkeyError(); err != nil {
			return err
		}
	}
	return nil
}

// RunBlocking runs a blocking command (BLPOP, BZPOPMIN, BLMOVE, XREAD BLOCK ...) on a pooled
// connection of its own, as RunScript runs a script: it waits for data, holding that connection
// only, up to wait and the request timeout (wait 0: until ctx ends, which is how a client that
// hangs up releases it). A wait that ends on ctx is not a failure of the shard.
func (s *Shard) RunBlocking(ctx context.Context, wait time.Duration, build func(valkey.Builder) valkey.Completed) (valkey.ValkeyResult, error) {
	leave, err := s.takePlace()
	if err != nil {
		return valkey.ValkeyResult{}, err
	}
	defer leave()
	c, err := s.getClient()
	if err != nil {
		return valkey.ValkeyResult{}, &DownError{Shard: s.cfg.Name, Err: err}
	}
	var res valkey.ValkeyResult
	err = c.Dedicated(func(dc valkey.DedicatedClient) error {
		cmd := build(dc.B())
		idCtx, idCancel := s.timeout(ctx, 0)
		id, err := dc.Do(idCtx, dc.B().ClientId().Build()).AsInt64()
		idCancel()
		if err != nil {
			return err
		}
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if wait > 0 {
			rctx, cancel = context.WithTimeout(ctx, wait+s.cfg.Timeout+time.Duration(len(cmd.Commands()))*perArgument)
		}
		defer cancel()
		// A wait that ends here (the client hung up, or past its own timeout) has the shard
		// unblock the command, which it then answers at once: the connection stays in step and
		// may be pooled again. Only a shard that does not answer that either loses the
		// connection, a request timeout later.
		dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
		defer dcancel()
		stop := context.AfterFunc(rctx, func() {
			uctx, ucancel := s.timeout(context.Background(), 0)
			defer ucancel()
			c.Do(uctx, c.B().ClientUnblock().ClientId(id).Build())
			time.AfterFunc(s.cfg.Timeout, dcancel)
		})
		defer stop()
		if res = dc.Do(dctx, cmd); dctx.Err() != nil {
			dc.Close() // out of step with the shard: never back to the pool
		}
		return res.NonValkeyError()
	})
	if err != nil && ctx.Err() == nil {
		s.Stats.Errors.Add(1)
		return res, &DownError{Shard: s.cfg.Name, Err: err}
	}
	return res, err
}
