package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cachefleet/cachefleet/internal/resp"
)

// handler queues (or answers) one command. args[0] is the command name.
type handler func(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte)

// command is everything the agent knows of one command, in one row of the table below: how
// it is checked (arity, flags), what it does to the data (class), where its keys are, whether
// the event loop runs it, who serves it (handler) and where it is counted (id).
type command struct {
	name    string
	id      int // its counters' index (Stats.requests)
	arity   int // Valkey convention: exact if > 0, at least -arity if < 0
	class   class
	flags   commandFlags
	keys    keySpec
	loop    loopShape
	handler handler
}

// commandFlags say where a command may run besides the plain case.
type commandFlags uint8

const (
	beforeAuth      commandFlags = 1 << iota // answered before AUTH
	txControl                                // acts on an open transaction instead of being queued in it
	queuedInTx                               // a local command a transaction may queue
	whileSubscribed                          // allowed on a RESP2 connection once subscribed
	runsScript                               // runs a script: a transaction holding one runs on a dedicated connection
)

// keySpec says where a command's keys are, as Valkey's key specs do.
type keySpec uint8

const (
	noKeys        keySpec = iota
	oneKey                // args[1]
	allKeys               // args[1:]
	keyValuePairs         // args[1], args[3], ...
	scriptKeys            // numkeys at args[2], the keys after it
)

// of returns the keys of args; none for a script whose numkeys is not a count of the keys
// given (the command refuses it itself).
func (k keySpec) of(args [][]byte) []string {
	switch k {
	case oneKey:
		return []string{string(args[1])}
	case allKeys:
		return strs(args[1:])
	case keyValuePairs:
		keys := make([]string, 0, len(args)/2)
		for i := 1; i < len(args); i += 2 {
			keys = append(keys, string(args[i]))
		}
		return keys
	case scriptKeys:
		n, err := strconv.Atoi(string(args[2]))
		if err != nil || n < 0 || n > len(args)-3 {
			return nil
		}
		return strs(args[3 : 3+n])
	}
	return nil
}

// loopShape is the form in which the event loop takes a command from a client's read
// (inline.go); loopNone: only the goroutine path runs it.
type loopShape uint8

const (
	loopNone     loopShape = iota
	loopKey                // NAME key
	loopKeyValue           // NAME key value
	loopKeys               // NAME key [key ...], up to maxInlineMgetKeys
)

// commands is the command table: every command the agent serves.
var commands = []command{
	{name: "ping", arity: -1, class: classLocal, flags: queuedInTx | whileSubscribed, handler: cmdPing},
	{name: "echo", arity: 2, class: classLocal, flags: queuedInTx, handler: cmdEcho},
	{name: "hello", arity: -1, class: classLocal, flags: beforeAuth, handler: cmdHello},
	{name: "auth", arity: -2, class: classLocal, flags: beforeAuth, handler: cmdAuth},
	{name: "select", arity: 2, class: classLocal, handler: cmdSelect},
	{name: "quit", arity: 1, class: classLocal, flags: beforeAuth | txControl | whileSubscribed, handler: cmdQuit},
	{name: "client", arity: -2, class: classLocal, handler: cmdClient},
	{name: "command", arity: -1, class: classLocal, handler: cmdCommand},
	{name: "info", arity: -1, class: classLocal, handler: cmdInfo},
	{name: "config", arity: -2, class: classLocal, handler: cmdConfig},
	{name: "get", arity: 2, class: classRead, keys: oneKey, loop: loopKey, handler: cmdGet},
	{name: "set", arity: -3, class: classWrite, keys: oneKey, loop: loopKeyValue, handler: cmdSet},
	{name: "setex", arity: 4, class: classWrite, keys: oneKey, handler: cmdSetex},
	{name: "psetex", arity: 4, class: classWrite, keys: oneKey, handler: cmdSetex},
	{name: "getdel", arity: 2, class: classDelete, keys: oneKey, handler: cmdGetdel},
	{name: "getex", arity: -2, class: classRead, keys: oneKey, handler: cmdGetex},
	{name: "del", arity: -2, class: classDelete, keys: allKeys, handler: cmdDel},
	{name: "unlink", arity: -2, class: classDelete, keys: allKeys, handler: cmdDel},
	{name: "exists", arity: -2, class: classRead, keys: allKeys, handler: cmdExists},
	{name: "mget", arity: -2, class: classRead, keys: allKeys, loop: loopKeys, handler: cmdMget},
	{name: "mset", arity: -3, class: classWrite, keys: keyValuePairs, handler: cmdMset},
	{name: "expire", arity: -3, class: classWrite, keys: oneKey, handler: cmdExpire},
	{name: "pexpire", arity: -3, class: classWrite, keys: oneKey, handler: cmdExpire},
	{name: "persist", arity: 2, class: classWrite, keys: oneKey, handler: cmdExpire},
	{name: "ttl", arity: 2, class: classRead, keys: oneKey, handler: cmdTTL},
	{name: "pttl", arity: 2, class: classRead, keys: oneKey, handler: cmdTTL},
	{name: "type", arity: 2, class: classRead, keys: oneKey, handler: cmdTTL},
	{name: "cf.invalidate", arity: -3, class: classLocal, handler: cmdInvalidate},
	{name: "cf.lget", arity: -2, class: classLocal, handler: cmdLGet},
	{name: "cf.set", arity: -5, class: classWrite, keys: oneKey, handler: cmdTagSet},
	{name: "cf.lset", arity: -4, class: classLocal, handler: cmdLSet},
	{name: "cf.lmiss", arity: 3, class: classLocal, handler: cmdLMiss},
	{name: "multi", arity: 1, class: classLocal, flags: txControl, handler: cmdMulti},
	{name: "exec", arity: 1, class: classLocal, flags: txControl, handler: cmdExec},
	{name: "discard", arity: 1, class: classLocal, flags: txControl, handler: cmdDiscard},
	{name: "watch", arity: -2, class: classLocal, flags: txControl, handler: cmdWatch},
	{name: "unwatch", arity: 1, class: classLocal, handler: cmdUnwatch},
	{name: "setnx", arity: 3, class: classWrite, keys: oneKey, handler: cmdSetnx},
	{name: "getset", arity: 3, class: classWrite, keys: oneKey, handler: cmdGetset},
	{name: "append", arity: 3, class: classWrite, keys: oneKey, handler: cmdAppend},
	{name: "strlen", arity: 2, class: classRead, keys: oneKey, handler: cmdStrlen},
	{name: "incrbyfloat", arity: 3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, true)},
	{name: "msetnx", arity: -3, class: classWrite, keys: keyValuePairs, handler: cmdMsetnx},
	{name: "expireat", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, false)},
	{name: "pexpireat", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, false)},
	{name: "expiretime", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(-2))},
	{name: "pexpiretime", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(-2))},
	{name: "getrange", arity: 4, class: classRead, keys: oneKey, handler: cmdGetrange},
	{name: "setrange", arity: 4, class: classWrite, keys: oneKey, handler: cmdSetrange},
	{name: "hset", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(everyOther(3), true)},
	{name: "hsetnx", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(3), true)},
	{name: "hincrby", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, true)},
	{name: "hdel", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, false)},
	{name: "hget", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "hmget", arity: -3, class: classRead, keys: oneKey, handler: cmdHmget},
	{name: "hgetall", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyMap)},
	{name: "hexists", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "hlen", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "hkeys", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "hvals", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "eval", arity: -3, class: classWrite, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "evalsha", arity: -3, class: classWrite, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "script", arity: -2, class: classLocal, handler: cmdScript},
	{name: "scan", arity: -2, class: classLocal, handler: cmdScan},
	{name: "keys", arity: 2, class: classLocal, handler: cmdKeys},
	{name: "dbsize", arity: 1, class: classLocal, handler: cmdDbsize},
	{name: "flushall", arity: -1, class: classLocal, handler: cmdFlush},
	{name: "flushdb", arity: -1, class: classLocal, handler: cmdFlush},
	{name: "subscribe", arity: -2, class: classLocal, flags: whileSubscribed, handler: cmdSubscribe},
	{name: "unsubscribe", arity: -1, class: classLocal, flags: whileSubscribed, handler: cmdUnsubscribe},
	{name: "incr", arity: 2, class: classWrite, keys: oneKey, handler: cmdIncr},
	{name: "decr", arity: 2, class: classWrite, keys: oneKey, handler: cmdIncr},
	{name: "incrby", arity: 3, class: classWrite, keys: oneKey, handler: cmdIncr},
	{name: "decrby", arity: 3, class: classWrite, keys: oneKey, handler: cmdIncr},
}

// commandTable finds a command by its lower-case name.
var commandTable = map[string]*command{}

// numCommands sizes the request counters.
const numCommands = 96

func init() {
	if len(commands) > numCommands {
		panic("raise numCommands")
	}
	for i := range commands {
		cmd := &commands[i]
		cmd.id = i
		commandTable[cmd.name] = cmd
	}
	getCommand = commandTable["get"]
	setCommand = commandTable["set"]
	mgetCommand = commandTable["mget"]
}

// getCommand, setCommand and mgetCommand are those commands' rows, for the event loop.
var getCommand, setCommand, mgetCommand *command

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
		s.Stats.count(cmd, true)
		return
	}
	if !c.authed && cmd.flags&beforeAuth == 0 {
		b.local(func(w *resp.Writer) { w.Error("NOAUTH Authentication required.") })
		s.Stats.count(cmd, true)
		return
	}
	if c.subscribed.Load() && c.proto.Load() < 3 && cmd.flags&whileSubscribed == 0 {
		msg := fmt.Sprintf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", c.lower)
		b.local(func(w *resp.Writer) { w.Error(msg) })
		s.Stats.count(cmd, true)
		return
	}
	t0 := time.Now()
	c.began(cmd, t0)
	direct := cmd.class == classRead && !b.tx && s.trackRead(c, cmd, args)
	if c.tx != nil && cmd.flags&txControl == 0 {
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
