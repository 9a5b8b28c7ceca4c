package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cachefleet/cachefleet/internal/resp"
)

// handler queues (or answers) one command. args[0] is the command name.
type handler func(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte)

type command struct {
	name    string
	id      int
	arity   int // Valkey convention: exact if > 0, at least -arity if < 0
	noAuth  bool
	class   class
	handler handler
}

const numCommands = 96

var commandTable = map[string]*command{}

func register(name string, arity int, noAuth bool, c class, h handler) {
	commandTable[name] = &command{name: name, id: len(commandTable), arity: arity, noAuth: noAuth, class: c, handler: h}
	if len(commandTable) > numCommands {
		panic("raise numCommands")
	}
}

func init() {
	register("ping", -1, false, classLocal, cmdPing)
	register("echo", 2, false, classLocal, cmdEcho)
	register("hello", -1, true, classLocal, cmdHello)
	register("auth", -2, true, classLocal, cmdAuth)
	register("select", 2, false, classLocal, cmdSelect)
	register("quit", 1, true, classLocal, cmdQuit)
	register("client", -2, false, classLocal, cmdClient)
	register("command", -1, false, classLocal, cmdCommand)
	register("info", -1, false, classLocal, cmdInfo)
	register("config", -2, false, classLocal, cmdConfig)
	register("get", 2, false, classRead, cmdGet)
	register("set", -3, false, classWrite, cmdSet)
	register("setex", 4, false, classWrite, cmdSetex)
	register("psetex", 4, false, classWrite, cmdSetex)
	register("getdel", 2, false, classDelete, cmdGetdel)
	register("getex", -2, false, classRead, cmdGetex)
	register("del", -2, false, classDelete, cmdDel)
	register("unlink", -2, false, classDelete, cmdDel)
	register("exists", -2, false, classRead, cmdExists)
	register("mget", -2, false, classRead, cmdMget)
	register("mset", -3, false, classWrite, cmdMset)
	register("expire", -3, false, classWrite, cmdExpire)
	register("pexpire", -3, false, classWrite, cmdExpire)
	register("persist", 2, false, classWrite, cmdExpire)
	register("ttl", 2, false, classRead, cmdTTL)
	register("pttl", 2, false, classRead, cmdTTL)
	register("type", 2, false, classRead, cmdTTL)
	register("cf.invalidate", -3, false, classLocal, cmdInvalidate)
	register("cf.lget", -2, false, classLocal, cmdLGet)
	register("cf.set", -5, false, classWrite, cmdTagSet)
	register("cf.lset", -4, false, classLocal, cmdLSet)
	register("cf.lmiss", 3, false, classLocal, cmdLMiss)
	register("multi", 1, false, classLocal, cmdMulti)
	register("exec", 1, false, classLocal, cmdExec)
	register("discard", 1, false, classLocal, cmdDiscard)
	register("watch", -2, false, classLocal, cmdWatch)
	register("unwatch", 1, false, classLocal, cmdUnwatch)
	register("setnx", 3, false, classWrite, cmdSetnx)
	register("getset", 3, false, classWrite, cmdGetset)
	register("append", 3, false, classWrite, cmdAppend)
	register("strlen", 2, false, classRead, cmdStrlen)
	register("incrbyfloat", 3, false, classWrite, forwardWrite(nil, true))
	register("msetnx", -3, false, classWrite, cmdMsetnx)
	register("expireat", -3, false, classWrite, forwardWrite(nil, false))
	register("pexpireat", -3, false, classWrite, forwardWrite(nil, false))
	register("expiretime", 2, false, classRead, forwardRead(intReply(-2)))
	register("pexpiretime", 2, false, classRead, forwardRead(intReply(-2)))
	register("getrange", 4, false, classRead, cmdGetrange)
	register("setrange", 4, false, classWrite, cmdSetrange)
	register("hset", -4, false, classWrite, forwardWrite(everyOther(3), true))
	register("hsetnx", 4, false, classWrite, forwardWrite(argsFrom(3), true))
	register("hincrby", 4, false, classWrite, forwardWrite(nil, true))
	register("hdel", -3, false, classWrite, forwardWrite(nil, false))
	register("hget", 3, false, classRead, forwardRead(nullReply))
	register("hmget", -3, false, classRead, cmdHmget)
	register("hgetall", 2, false, classRead, forwardRead(emptyMap))
	register("hexists", 3, false, classRead, forwardRead(intReply(0)))
	register("hlen", 2, false, classRead, forwardRead(intReply(0)))
	register("hkeys", 2, false, classRead, forwardRead(emptyArray))
	register("hvals", 2, false, classRead, forwardRead(emptyArray))
	register("eval", -3, false, classWrite, cmdEval)
	register("evalsha", -3, false, classWrite, cmdEval)
	register("script", -2, false, classLocal, cmdScript)
	register("scan", -2, false, classLocal, cmdScan)
	register("keys", 2, false, classLocal, cmdKeys)
	register("dbsize", 1, false, classLocal, cmdDbsize)
	register("flushall", -1, false, classLocal, cmdFlush)
	register("flushdb", -1, false, classLocal, cmdFlush)
	register("subscribe", -2, false, classLocal, cmdSubscribe)
	register("unsubscribe", -1, false, classLocal, cmdUnsubscribe)
	register("incr", 2, false, classWrite, cmdIncr)
	register("decr", 2, false, classWrite, cmdIncr)
	register("incrby", 3, false, classWrite, cmdIncr)
	register("decrby", 3, false, classWrite, cmdIncr)
	getCommand = commandTable["get"]
	setCommand = commandTable["set"]
	mgetCommand = commandTable["mget"]
}

// getCommand, setCommand and mgetCommand are those commands' entries, for the event loop
// (inline.go).
var getCommand, setCommand, mgetCommand *command

// txControl are the commands that act on an open transaction instead of being queued.
var txControl = map[string]bool{"exec": true, "discard": true, "multi": true, "quit": true, "watch": true}

// dispatch looks up and runs one command, counting its result when its reply is written.
func (s *Server) dispatch(ctx context.Context, b *batch, c *client, w *resp.Writer, args [][]byte) {
	if c.overLimit {
		return // disconnected for its output: what it sent after runs nowhere
	}
	c.lower = append(c.lower[:0], args[0]...)
	for i, ch := range c.lower {
		if 'A' <= ch && ch <= 'Z' {
			c.lower[i] = ch + 32
		}
	}
	cmd := commandTable[string(c.lower)]
	if cmd == nil {
		if c.tx != nil {
			c.tx.aborted = true // as in Valkey: EXEC will answer EXECABORT
		}
		msg := unknownCommand(args)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		return
	}
	if (cmd.arity > 0 && len(args) != cmd.arity) || (cmd.arity < 0 && len(args) < -cmd.arity) {
		if c.tx != nil {
			c.tx.aborted = true
		}
		msg := fmt.Sprintf("ERR wrong number of arguments for '%s' command", c.lower)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		s.Stats.requests[cmd.id][1].Add(1)
		return
	}
	if !c.authed && !cmd.noAuth {
		b.local(func(w *resp.Writer) { w.Error("NOAUTH Authentication required.") })
		s.Stats.requests[cmd.id][1].Add(1)
		return
	}
	if c.subscribed.Load() && c.proto.Load() < 3 && !pubsubAllowed[string(c.lower)] {
		msg := fmt.Sprintf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", c.lower)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		s.Stats.requests[cmd.id][1].Add(1)
		return
	}
	t0 := time.Now()
	c.began(cmd, t0)
	direct := cmd.class == classRead && !b.tx && s.trackRead(c, cmd.name, args)
	if c.tx != nil && !txControl[string(c.lower)] {
		s.queueTx(b, c, cmd, args)
		return
	}
	start, flushes := len(b.replies), b.flushes
	b.class, b.direct = cmd.class, direct
	cmd.handler(ctx, s, b, c, w, args)
	b.direct = false
	if !b.tx {
		c.afterCommand(cmd.name)
	}
	if b.flushes != flushes {
		start = 0 // the handler flushed earlier commands: everything queued now is its own
	}
	b.tagFrom(start, cmd, t0)
}

// began records cmd, started at t0, as the connection's last command (CLIENT LIST).
func (c *client) began(cmd *command, t0 time.Time) {
	c.lastAt.Store(t0.UnixNano())
	c.lastCmd.Store(&cmd.name)
}

// tagFrom tags the replies queued from index from on as cmd's, so exec counts their result and
// latency.
func (b *batch) tagFrom(from int, cmd *command, t0 time.Time) {
	for i := from; i < len(b.replies); i++ {
		b.replies[i].cmd, b.replies[i].start = cmd, t0
	}
}

// unknownCommand is Valkey's text: the name cut at 128 bytes, then the arguments, each quoted
// and followed by a space, while their text stays under 128 bytes.
func unknownCommand(args [][]byte) string {
	var quoted strings.Builder
	for _, a := range args[1:] {
		if quoted.Len() >= 128 {
			break
		}
		fmt.Fprintf(&quoted, "'%s' ", a[:min(len(a), 128-quoted.Len())])
	}
	return fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", args[0][:min(len(args[0]), 128)], quoted.String())
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

func str(b []byte) string { return string(b) }

func strs(args [][]byte) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = string(a)
	}
	return out
}
