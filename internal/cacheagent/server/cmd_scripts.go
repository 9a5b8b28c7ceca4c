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
	n, err := strconv.Atoi(str(args[2]))
	if err != nil || n < 0 || n > len(args)-3 {
		// Not a count of the keys given: nothing runs, and the shard words the refusal as it
		// orders its own checks (FCALL looks the function up first).
		p := b.plain(b.laneTaken(ctx, w, keylessShard, plainLane), relayed(args))
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.Relay(w, r[0].res[0]) })
		return
	}
	keys, shard, ok := b.oneShard(ctx, w, args) // without keys, the ring's first shard
	if !ok {
		return
	}
	s.announce(b.cid, keys...)
	build := relayed(args)
	if b.tx {
		p := b.plain(shard, build)
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
		sctx, stop := untilHangUp(ctx, c)
		defer stop()
		res, err := sh.RunScript(sctx, build)
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
func scriptKill(ctx context.Context, shards []*router.Shard, w *resp.Writer, family string) {
	var unkillable string
	for _, sh := range shards {
		reply, err := sh.Command(ctx, family, "KILL")
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
		b.local(func(w *resp.Writer) { scriptKill(ctx, shards, w, "SCRIPT") })
		return
	}
	switch sub := strings.ToLower(str(args[1])); {
	case sub == "load" && len(args) == 3, sub == "flush" && len(args) <= 3:
		onEveryShard(ctx, b, args) // each shard answers the same: the last one's reply is relayed
	case sub == "exists" && len(args) >= 3:
		scriptsExist(ctx, b, args)
	default:
		msg := fmt.Sprintf("ERR unknown subcommand '%s'. Try SCRIPT HELP.", truncate(args[1]))
		if sub == "load" || sub == "exists" || sub == "flush" {
			msg = fmt.Sprintf("ERR wrong number of arguments for 'script|%s' command", sub)
		}
		b.local(func(w *resp.Writer) { w.Error(msg) })
	}
}

// keylessShard runs what names no key: scripts and functions without keys, FUNCTION LIST.
const keylessShard = 0

// onEveryShard runs the client's command on every shard, one after the other, and relays the
// last reply; the first shard that fails answers instead (its error names it), and the shards
// after it are not asked.
func onEveryShard(ctx context.Context, b *batch, args [][]byte) {
	shards, cmd := b.r.Shards, relayed(args)
	b.local(func(w *resp.Writer) {
		var last valkey.ValkeyResult
		for _, sh := range shards {
			res, err := sh.Do(ctx, cmd)
			if err != nil {
				reply.WriteErr(w, err)
				return
			}
			if res.Error() != nil {
				reply.Relay(w, res)
				return
			}
			last = res
		}
		reply.Relay(w, last)
	})
}

// scriptsExist answers SCRIPT EXISTS: 1 for a script every shard holds (EVALSHA may run on any
// of them), 0 otherwise.
func scriptsExist(ctx context.Context, b *batch, args [][]byte) {
	shards, cmd, n := b.r.Shards, relayed(args), len(args)-2
	b.local(func(w *resp.Writer) {
		all := make([]bool, n)
		for i := range all {
			all[i] = true
		}
		for _, sh := range shards {
			res, err := sh.Do(ctx, cmd)
			if err != nil {
				reply.WriteErr(w, err)
				return
			}
			arr, err := res.ToArray()
			if err != nil || len(arr) != n {
				reply.Relay(w, res)
				return
			}
			for i := range arr {
				v, _ := arr[i].AsInt64()
				all[i] = all[i] && v == 1
			}
		}
		w.Array(n)
		for _, ok := range all {
			w.Int(int64(boolIndex(ok)))
		}
	})
}

// cmdFunction: functions are loaded, deleted, flushed and restored on every shard (a function
// runs on its keys' shard); KILL reaches the busy shard; LIST, STATS, DUMP and HELP are
// answered by the ring's first shard, which holds what every shard holds.
func cmdFunction(ctx context.Context, _ *Server, b *batch, _ *client, w *resp.Writer, args [][]byte) {
	switch strings.ToLower(str(args[1])) {
	case "load", "delete", "flush", "restore":
		onEveryShard(ctx, b, args)
	case "kill":
		shards := b.r.Shards
		b.local(func(w *resp.Writer) { scriptKill(ctx, shards, w, "FUNCTION") })
	default:
		p := b.plain(b.laneTaken(ctx, w, keylessShard, plainLane), relayed(args))
		b.job([]part{p}, func(w *resp.Writer, r []partResult) { reply.Relay(w, r[0].res[0]) })
	}
}
