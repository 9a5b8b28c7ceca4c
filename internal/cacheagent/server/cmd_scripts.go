package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/cacheagent/router"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// Scripts: EVAL and EVALSHA on the shard owning all their keys, SCRIPT on every shard.

// cmdEval covers EVAL and EVALSHA: the script runs on the shard that owns all its keys.
func cmdEval(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte) {
	name := strings.ToUpper(str(args[0]))
	n, err := strconv.Atoi(str(args[2]))
	switch {
	case err != nil || n < 0:
		b.local(func(w *resp.Writer) { w.Error("ERR value is not an integer or out of range") })
		return
	case n > len(args)-3:
		b.local(func(w *resp.Writer) { w.Error("ERR Number of keys can't be greater than number of args") })
		return
	case n == 0:
		msg := fmt.Sprintf("ERR %s with no keys cannot be routed by the cachefleet agent: a script runs on the shard that owns its keys; pass them as KEYS (numkeys > 0), all on one shard", name)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	keys := strs(args[3 : 3+n])
	shard := b.r.Index(args[3])
	for _, k := range keys[1:] {
		if b.r.Index([]byte(k)) != shard {
			msg := crossShard(k, keys[0])
			b.local(func(w *resp.Writer) { w.Error(msg) })
			return
		}
	}
	script, rest := str(args[1]), strs(args[3+n:])
	s.announce(keys...)
	build := func(bd valkey.Builder) valkey.Completed {
		return bd.Arbitrary(name).Args(script, strconv.Itoa(n)).Keys(keys...).Args(rest...).Build()
	}
	if b.tx {
		i := b.shardOf(ctx, w, args[3], plainLane)
		p := b.plain(i, func(bd valkey.Builder) valkey.Completed { return build(bd) })
		b.wrote(keys...) // a script may write any of its keys
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.Relay(w, r[0].res[0]) })
		return
	}
	// Outside a transaction a script runs on a connection of its own, after what the client
	// sent before it: a script that loops holds that connection only, and the shard answers
	// everyone else BUSY (as Valkey does) instead of their requests queueing behind it. It runs
	// as the shard's script user, which may not flush, reconfigure or migrate (router.ScriptUser).
	b.exec(ctx, w)
	r, sh := b.r, b.r.Shards[shard]
	b.local(func(w *resp.Writer) {
		res, err := sh.RunScript(ctx, build)
		s.settleBy(r, c.id, keys...)
		if err != nil {
			reply.WriteErr(w, err)
			return
		}
		reply.Relay(w, res)
	})
	b.exec(ctx, w)
}

// scriptKill sends SCRIPT KILL to every shard on a connection of its own, past the breaker (a
// shard busy with a script looks down to it) and the pool (a busy shard refuses new pooled
// connections): OK when one killed a script, the first UNKILLABLE otherwise, else NOTBUSY.
func scriptKill(ctx context.Context, shards []*router.Shard, w *resp.Writer) {
	var unkillable string
	for _, sh := range shards {
		reply, err := sh.Command(ctx, "SCRIPT", "KILL")
		switch text := strings.TrimSpace(string(reply)); {
		case err != nil:
		case text == "+OK":
			w.OK()
			return
		case strings.HasPrefix(text, "-UNKILLABLE") && unkillable == "":
			unkillable = text[1:]
		}
	}
	if unkillable != "" {
		w.Error(unkillable)
		return
	}
	w.Error("NOTBUSY No scripts in execution right now.")
}

// cmdScript: SCRIPT LOAD goes to every shard (EVALSHA then works wherever its keys are).
func cmdScript(ctx context.Context, _ *Server, b *batch, _ *client, _ *resp.Writer, args [][]byte) {
	if strings.EqualFold(str(args[1]), "kill") && len(args) == 2 {
		shards := b.r.Shards
		b.local(func(w *resp.Writer) { scriptKill(ctx, shards, w) })
		return
	}
	if !strings.EqualFold(str(args[1]), "load") || len(args) != 3 {
		msg := fmt.Sprintf("ERR unknown subcommand '%s'. Try SCRIPT HELP.", truncate(args[1]))
		if strings.EqualFold(str(args[1]), "load") {
			msg = "ERR wrong number of arguments for 'script|load' command"
		}
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	script := str(args[2])
	shards := b.r.Shards
	b.local(func(w *resp.Writer) {
		var sha valkey.ValkeyResult
		for _, sh := range shards {
			res, err := sh.Do(ctx, func(bd valkey.Builder) valkey.Completed { return bd.ScriptLoad().Script(script).Build() })
			if err != nil {
				reply.WriteErr(w, err) // loaded elsewhere, not there: say which shard
				return
			}
			sha = res
		}
		reply.Relay(w, sha)
	})
}
