package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cachefleet/cachefleet/internal/cacheagent/pubsub"
	"github.com/cachefleet/cachefleet/internal/cacheagent/reply"
	"github.com/cachefleet/cachefleet/internal/resp"
)

// handler queues (or answers) one command. args[0] is the command name.
type handler func(ctx context.Context, s *Server, b *batch, c *client, w *resp.Writer, args [][]byte)

// command is everything the agent knows of one command, in one row of the table below: how
// it is checked (arity, flags), what it does to the data (class), where its keys are, whether
// the event loop runs it, who serves it (handler) and where it is counted (id).
type command struct {
	name  string
	id    int // its counters' index (Stats.requests)
	arity int // Valkey convention: exact if > 0, at least -arity if < 0
	class class
	flags commandFlags
	keys  keySpec
	loop  loopShape
	shape reply.Shape // how its relayed reply reads in RESP2
	// shapeMinArgs: the shape holds only with this many arguments (LPOP key count).
	shapeMinArgs int
	wait         waitSpec // where a blocking command says how long it may wait
	handler      handler
}

// waitSpec says where a blocking command's wait is: the argument at index at (from the end when
// negative), in seconds; or, for an option (XREAD's BLOCK), the argument after it, in
// milliseconds. A command with neither never blocks.
type waitSpec struct {
	at     int
	option string
}

// of is the wait args ask for (0: no end) and whether the command blocks at all.
func (ws waitSpec) of(args [][]byte) (time.Duration, bool) {
	switch {
	case ws.option != "":
		for i := 1; i+1 < len(args); i++ {
			if strings.EqualFold(string(args[i]), ws.option) {
				ms, _ := strconv.ParseInt(string(args[i+1]), 10, 64)
				return time.Duration(max(ms, 0)) * time.Millisecond, true
			}
		}
		return 0, false
	case ws.at != 0:
		i := ws.at
		if i < 0 {
			i += len(args)
		}
		if i <= 0 || i >= len(args) {
			return 0, false
		}
		secs, _ := strconv.ParseFloat(string(args[i]), 64) // the shard refuses a bad one at once
		return time.Duration(max(secs, 0) * float64(time.Second)), true
	}
	return 0, false
}

// replyShape is the RESP2 shape of cmd's relayed reply to args.
func (cmd *command) replyShape(args [][]byte) reply.Shape {
	if len(args) < cmd.shapeMinArgs {
		return reply.AsIs
	}
	return cmd.shape
}

// commandFlags say where a command may run besides the plain case.
type commandFlags uint8

const (
	beforeAuth      commandFlags = 1 << iota // answered before AUTH
	txControl                                // acts on an open transaction instead of being queued in it
	queuedInTx                               // a local command a transaction may queue
	whileSubscribed                          // allowed on a RESP2 connection once subscribed
	runsScript                               // runs a script: a transaction holding one runs on a dedicated connection
	pushReply                                // its reply is a push (an array in RESP2), which CLIENT REPLY does not silence
	hasSubcommands                           // its first argument names a subcommand: CLIENT LIST shows "client|list"
)

// keySpec says where a command's keys are, as Valkey's key specs do: args[first],
// args[first+step], ... up to args[last] (counted from the end when negative), then, when
// numkeysAt is set, the count of keys args[numkeysAt] gives, right after it.
type keySpec struct {
	first, last, step int
	numkeysAt         int
	store             bool // and the key after a STORE option (SORT)
	// channel: args[1] is a sharded pub/sub channel. It is no key, but it places the command
	// on its shard (placedBy), inside a transaction too.
	channel bool
	streams bool // the first half of the arguments after STREAMS (XREAD, XREADGROUP)
}

var (
	oneKey         = keySpec{first: 1, last: 1, step: 1}
	twoKeys        = keySpec{first: 1, last: 2, step: 1}               // RENAME src dst, SMOVE, LMOVE, COPY, LCS
	allKeys        = keySpec{first: 1, last: -1, step: 1}              // DEL, MGET, SUNION, PFCOUNT
	keyValuePairs  = keySpec{first: 1, last: -1, step: 2}              // MSET
	keysAfterOne   = keySpec{first: 2, last: -1, step: 1}              // BITOP op dst src...
	subcommandKey  = keySpec{first: 2, last: 2, step: 1}               // OBJECT ENCODING key, XINFO STREAM key
	scriptKeys     = keySpec{numkeysAt: 2}                             // EVAL script numkeys key...
	numkeysFirst   = keySpec{numkeysAt: 1}                             // ZUNION numkeys key..., LMPOP, SINTERCARD
	destAndNumkeys = keySpec{first: 1, last: 1, step: 1, numkeysAt: 2} // ZUNIONSTORE dst numkeys key...
	sortKeys       = keySpec{first: 1, last: 1, step: 1, store: true}  // SORT key ... [STORE dst]
	allButLast     = keySpec{first: 1, last: -2, step: 1}              // BLPOP key... timeout
	waitAndNumkeys = keySpec{numkeysAt: 2}                             // BLMPOP timeout numkeys key...
	streamKeys     = keySpec{streams: true}                            // XREAD ... STREAMS key... id...
	channelFirst   = keySpec{channel: true}                            // SPUBLISH channel message
)

// placedBy are the names that place a command on a shard: its keys, or its channel's.
func (k keySpec) placedBy(args [][]byte) []string {
	if k.channel && len(args) > 1 {
		return []string{string(args[1])}
	}
	return k.of(args)
}

// of returns the keys of args: none where args are too short to hold them, or where numkeys is
// not a count of the keys given (the command refuses that itself).
func (k keySpec) of(args [][]byte) []string {
	var keys []string
	if k.first > 0 && k.first < len(args) {
		last := k.last
		if last < 0 {
			last += len(args)
		}
		for i := k.first; i <= last && i < len(args); i += k.step {
			keys = append(keys, string(args[i]))
		}
	}
	if k.numkeysAt > 0 && k.numkeysAt < len(args) {
		n, err := strconv.Atoi(string(args[k.numkeysAt]))
		if err != nil || n < 0 || n > len(args)-k.numkeysAt-1 {
			return nil
		}
		keys = append(keys, strs(args[k.numkeysAt+1:k.numkeysAt+1+n])...)
	}
	if k.streams {
		for i := 1; i < len(args); i++ {
			if strings.EqualFold(string(args[i]), "streams") {
				rest := args[i+1:]
				if len(rest)%2 != 0 {
					return nil // the shard words the error
				}
				return append(keys, strs(rest[:len(rest)/2])...)
			}
		}
	}
	if k.store {
		for i := k.first + 1; i+1 < len(args); i++ {
			if strings.EqualFold(string(args[i]), "store") {
				keys = append(keys, string(args[i+1]))
			}
		}
	}
	return keys
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
	{name: "client", arity: -2, class: classLocal, flags: hasSubcommands, handler: cmdClient},
	{name: "command", arity: -1, class: classLocal, handler: cmdCommand},
	{name: "info", arity: -1, class: classLocal, handler: cmdInfo},
	{name: "config", arity: -2, class: classLocal, flags: hasSubcommands, handler: cmdConfig},
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
	{name: "incrbyfloat", arity: 3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "msetnx", arity: -3, class: classWrite, keys: keyValuePairs, handler: cmdMsetnx},
	{name: "expireat", arity: -3, class: classWrite, keys: oneKey, handler: cmdExpire},
	{name: "pexpireat", arity: -3, class: classWrite, keys: oneKey, handler: cmdExpire},
	{name: "expiretime", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(-2))},
	{name: "pexpiretime", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(-2))},
	{name: "getrange", arity: 4, class: classRead, keys: oneKey, handler: cmdGetrange},
	{name: "setrange", arity: 4, class: classWrite, keys: oneKey, handler: cmdSetrange},
	{name: "hset", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(everyOther(3), createsFirst)},
	{name: "hsetnx", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(3), createsFirst)},
	{name: "hincrby", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "hdel", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "hget", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "hmget", arity: -3, class: classRead, keys: oneKey, handler: cmdHmget},
	{name: "hgetall", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyMap)},
	{name: "hexists", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "hlen", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "hkeys", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "hvals", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "eval", arity: -3, class: classWrite, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "evalsha", arity: -3, class: classWrite, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "script", arity: -2, class: classLocal, flags: hasSubcommands, handler: cmdScript},
	{name: "scan", arity: -2, class: classLocal, handler: cmdScan},
	{name: "keys", arity: 2, class: classLocal, handler: cmdKeys},
	{name: "dbsize", arity: 1, class: classLocal, handler: cmdDbsize},
	{name: "flushall", arity: -1, class: classLocal, handler: cmdFlush},
	{name: "flushdb", arity: -1, class: classLocal, handler: cmdFlush},
	{name: "subscribe", arity: -2, class: classLocal, flags: whileSubscribed | pushReply | queuedInTx, handler: subscribe(pubsub.Channel)},
	{name: "unsubscribe", arity: -1, class: classLocal, flags: whileSubscribed | pushReply | queuedInTx, handler: unsubscribe(pubsub.Channel)},
	{name: "psubscribe", arity: -2, class: classLocal, flags: whileSubscribed | pushReply | queuedInTx, handler: subscribe(pubsub.Pattern)},
	{name: "punsubscribe", arity: -1, class: classLocal, flags: whileSubscribed | pushReply | queuedInTx, handler: unsubscribe(pubsub.Pattern)},
	{name: "ssubscribe", arity: -2, class: classLocal, flags: whileSubscribed | pushReply | queuedInTx, handler: subscribe(pubsub.ShardChannel)},
	{name: "sunsubscribe", arity: -1, class: classLocal, flags: whileSubscribed | pushReply | queuedInTx, handler: unsubscribe(pubsub.ShardChannel)},
	{name: "publish", arity: 3, class: classWrite, handler: publish(pubsub.Channel)}, // heard from any shard
	{name: "spublish", arity: 3, class: classWrite, keys: channelFirst, handler: publish(pubsub.ShardChannel)},
	{name: "pubsub", arity: -2, class: classRead, flags: hasSubcommands, handler: cmdPubsub},
	{name: "incr", arity: 2, class: classWrite, keys: oneKey, handler: cmdIncr},
	// Lists, sets, sorted sets, bitmaps, HyperLogLogs, geo, streams and keys of any type: relayed
	// to their keys' shard (forwardRead, forwardWrite), multi-key ones when the keys share it.
	{name: "lpush", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(2), createsFirst)},
	{name: "rpush", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(2), createsFirst)},
	{name: "lpushx", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(2), createsNothing)},
	{name: "rpushx", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(2), createsNothing)},
	{name: "lpop", arity: -2, class: classWrite, keys: oneKey, shape: reply.NullIsArray, shapeMinArgs: 3, handler: forwardWrite(nil, createsNothing)},
	{name: "rpop", arity: -2, class: classWrite, keys: oneKey, shape: reply.NullIsArray, shapeMinArgs: 3, handler: forwardWrite(nil, createsNothing)},
	{name: "llen", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "lrange", arity: 4, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "lindex", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "lset", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(3), createsNothing)},
	{name: "linsert", arity: 5, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(4), createsNothing)},
	{name: "lrem", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "ltrim", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "lpos", arity: -3, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "lmove", arity: 5, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsSecond)},
	{name: "rpoplpush", arity: 3, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsSecond)},
	{name: "lmpop", arity: -4, class: classWrite, keys: numkeysFirst, shape: reply.NullIsArray, handler: forwardWrite(nil, createsNothing)},
	{name: "sadd", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(argsFrom(2), createsFirst)},
	{name: "srem", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "spop", arity: -2, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "smembers", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "sismember", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "smismember", arity: -3, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "scard", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "srandmember", arity: -2, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "sscan", arity: -3, class: classRead, keys: oneKey, handler: forwardRead(emptyScan)},
	{name: "sinter", arity: -2, class: classRead, keys: allKeys, handler: forwardRead(emptyArray)},
	{name: "sunion", arity: -2, class: classRead, keys: allKeys, handler: forwardRead(emptyArray)},
	{name: "sdiff", arity: -2, class: classRead, keys: allKeys, handler: forwardRead(emptyArray)},
	{name: "sinterstore", arity: -3, class: classWrite, keys: allKeys, handler: forwardWrite(nil, createsFirst)},
	{name: "sunionstore", arity: -3, class: classWrite, keys: allKeys, handler: forwardWrite(nil, createsFirst)},
	{name: "sdiffstore", arity: -3, class: classWrite, keys: allKeys, handler: forwardWrite(nil, createsFirst)},
	{name: "smove", arity: 4, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsSecond)},
	{name: "sintercard", arity: -3, class: classRead, keys: numkeysFirst, handler: forwardRead(intReply(0))},
	{name: "zadd", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "zincrby", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "zrem", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "zcard", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "zscore", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "zmscore", arity: -3, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "zrank", arity: -3, class: classRead, keys: oneKey, shape: reply.NullIsArray, shapeMinArgs: 4, handler: forwardRead(nullReply)},
	{name: "zrevrank", arity: -3, class: classRead, keys: oneKey, shape: reply.NullIsArray, shapeMinArgs: 4, handler: forwardRead(nullReply)},
	{name: "zrange", arity: -4, class: classRead, keys: oneKey, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zrangebyscore", arity: -4, class: classRead, keys: oneKey, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zrevrange", arity: -4, class: classRead, keys: oneKey, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zrevrangebyscore", arity: -4, class: classRead, keys: oneKey, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zrangebylex", arity: -4, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "zrevrangebylex", arity: -4, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "zcount", arity: 4, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "zlexcount", arity: 4, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "zpopmin", arity: -2, class: classWrite, keys: oneKey, shape: reply.FlatPairs, handler: forwardWrite(nil, createsNothing)},
	{name: "zpopmax", arity: -2, class: classWrite, keys: oneKey, shape: reply.FlatPairs, handler: forwardWrite(nil, createsNothing)},
	{name: "zrandmember", arity: -2, class: classRead, keys: oneKey, shape: reply.FlatPairs, handler: forwardRead(nullReply)},
	{name: "zremrangebyscore", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "zremrangebyrank", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "zremrangebylex", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "zscan", arity: -3, class: classRead, keys: oneKey, handler: forwardRead(emptyScan)},
	{name: "zrangestore", arity: -5, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsFirst)},
	{name: "zunionstore", arity: -4, class: classWrite, keys: destAndNumkeys, handler: forwardWrite(nil, createsFirst)},
	{name: "zinterstore", arity: -4, class: classWrite, keys: destAndNumkeys, handler: forwardWrite(nil, createsFirst)},
	{name: "zdiffstore", arity: -4, class: classWrite, keys: destAndNumkeys, handler: forwardWrite(nil, createsFirst)},
	{name: "zunion", arity: -3, class: classRead, keys: numkeysFirst, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zinter", arity: -3, class: classRead, keys: numkeysFirst, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zdiff", arity: -3, class: classRead, keys: numkeysFirst, shape: reply.FlatPairs, handler: forwardRead(emptyArray)},
	{name: "zintercard", arity: -3, class: classRead, keys: numkeysFirst, handler: forwardRead(intReply(0))},
	{name: "zmpop", arity: -4, class: classWrite, keys: numkeysFirst, shape: reply.NullIsArray, handler: forwardWrite(nil, createsNothing)},
	{name: "hmset", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(everyOther(3), createsFirst)},
	{name: "hincrbyfloat", arity: 4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "hstrlen", arity: 3, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "hrandfield", arity: -2, class: classRead, keys: oneKey, shape: reply.FlatPairs, handler: forwardRead(nullReply)},
	{name: "hscan", arity: -3, class: classRead, keys: oneKey, handler: forwardRead(emptyScan)},
	{name: "substr", arity: 4, class: classRead, keys: oneKey, handler: cmdGetrange},
	{name: "lcs", arity: -3, class: classRead, keys: twoKeys, handler: onStoredBytes(forwardRead(nullReply))},
	{name: "setbit", arity: 4, class: classWrite, keys: oneKey, handler: onStoredBytes(forwardWrite(nil, createsFirst))},
	{name: "getbit", arity: 3, class: classRead, keys: oneKey, handler: onStoredBytes(forwardRead(intReply(0)))},
	{name: "bitcount", arity: -2, class: classRead, keys: oneKey, handler: onStoredBytes(forwardRead(intReply(0)))},
	{name: "bitpos", arity: -3, class: classRead, keys: oneKey, handler: onStoredBytes(forwardRead(intReply(-1)))},
	{name: "bitfield", arity: -2, class: classWrite, keys: oneKey, handler: onStoredBytes(forwardWrite(nil, createsFirst))},
	{name: "bitfield_ro", arity: -2, class: classRead, keys: oneKey, handler: onStoredBytes(forwardRead(emptyArray))},
	{name: "bitop", arity: -4, class: classWrite, keys: keysAfterOne, handler: onStoredBytes(forwardWrite(nil, createsFirst))},
	{name: "pfadd", arity: -2, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "pfcount", arity: -2, class: classRead, keys: allKeys, handler: forwardRead(intReply(0))},
	{name: "pfmerge", arity: -2, class: classWrite, keys: allKeys, handler: forwardWrite(nil, createsFirst)},
	{name: "geoadd", arity: -5, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "geodist", arity: -4, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "geohash", arity: -2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "geopos", arity: -2, class: classRead, keys: oneKey, shape: reply.NullArrays, handler: forwardRead(emptyArray)},
	{name: "geosearch", arity: -7, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "geosearchstore", arity: -8, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsFirst)},
	{name: "georadius_ro", arity: -6, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "georadiusbymember_ro", arity: -5, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "xadd", arity: -5, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "xlen", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(intReply(0))},
	{name: "xrange", arity: -4, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "xrevrange", arity: -4, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "xdel", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "xtrim", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "xack", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "xpending", arity: -3, class: classRead, keys: oneKey, shape: reply.NullLastArray, handler: forwardRead(nil)},
	{name: "xclaim", arity: -6, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "xautoclaim", arity: -6, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "xsetid", arity: -3, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsNothing)},
	{name: "xinfo", arity: -2, class: classRead, flags: hasSubcommands, keys: subcommandKey, handler: forwardRead(nil)},
	{name: "xgroup", arity: -2, class: classWrite, flags: hasSubcommands, keys: subcommandKey, handler: forwardWrite(nil, createsNothing)},
	{name: "rename", arity: 3, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsNothing)},
	{name: "renamenx", arity: 3, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsNothing)},
	{name: "copy", arity: -3, class: classWrite, keys: twoKeys, handler: forwardWrite(nil, createsNothing)},
	{name: "touch", arity: -2, class: classRead, keys: allKeys, handler: forwardRead(intReply(0))},
	{name: "dump", arity: 2, class: classRead, keys: oneKey, handler: forwardRead(nullReply)},
	{name: "restore", arity: -4, class: classWrite, keys: oneKey, handler: forwardWrite(nil, createsFirst)},
	{name: "sort", arity: -2, class: classWrite, keys: sortKeys, handler: forwardWrite(nil, createsNothing)},
	{name: "sort_ro", arity: -2, class: classRead, keys: oneKey, handler: forwardRead(emptyArray)},
	{name: "object", arity: -2, class: classRead, flags: hasSubcommands, keys: subcommandKey, handler: forwardRead(nil)},
	{name: "memory", arity: -2, class: classRead, flags: hasSubcommands, keys: subcommandKey, handler: forwardRead(nil)},
	// Blocking commands: on a connection of their own while they wait (cmdBlocking).
	{name: "blpop", arity: -3, class: classWrite, keys: allButLast, wait: waitSpec{at: -1}, shape: reply.NullIsArray, handler: cmdBlocking},
	{name: "brpop", arity: -3, class: classWrite, keys: allButLast, wait: waitSpec{at: -1}, shape: reply.NullIsArray, handler: cmdBlocking},
	{name: "blmove", arity: 6, class: classWrite, keys: twoKeys, wait: waitSpec{at: -1}, handler: cmdBlocking},
	{name: "brpoplpush", arity: 4, class: classWrite, keys: twoKeys, wait: waitSpec{at: -1}, handler: cmdBlocking},
	{name: "blmpop", arity: -5, class: classWrite, keys: waitAndNumkeys, wait: waitSpec{at: 1}, shape: reply.NullIsArray, handler: cmdBlocking},
	{name: "bzpopmin", arity: -3, class: classWrite, keys: allButLast, wait: waitSpec{at: -1}, shape: reply.NullIsArray, handler: cmdBlocking},
	{name: "bzpopmax", arity: -3, class: classWrite, keys: allButLast, wait: waitSpec{at: -1}, shape: reply.NullIsArray, handler: cmdBlocking},
	{name: "bzmpop", arity: -5, class: classWrite, keys: waitAndNumkeys, wait: waitSpec{at: 1}, shape: reply.NullIsArray, handler: cmdBlocking},
	{name: "xread", arity: -4, class: classRead, keys: streamKeys, wait: waitSpec{option: "block"}, shape: reply.NullIsArray | reply.MapAsPairs, handler: cmdBlocking},
	{name: "xreadgroup", arity: -7, class: classWrite, keys: streamKeys, wait: waitSpec{option: "block"}, shape: reply.NullIsArray | reply.MapAsPairs, handler: cmdBlocking},
	{name: "time", arity: 1, class: classRead, handler: forwardRead(nil)}, // the ring's first shard's clock
	{name: "randomkey", arity: 1, class: classRead, handler: cmdRandomkey},
	{name: "fcall", arity: -3, class: classWrite, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "evalsha_ro", arity: -3, class: classRead, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "eval_ro", arity: -3, class: classRead, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "fcall_ro", arity: -3, class: classRead, flags: runsScript, keys: scriptKeys, handler: cmdEval},
	{name: "function", arity: -2, class: classLocal, flags: hasSubcommands, handler: cmdFunction},
	{name: "decr", arity: 2, class: classWrite, keys: oneKey, handler: cmdIncr},
	{name: "incrby", arity: 3, class: classWrite, keys: oneKey, handler: cmdIncr},
	{name: "decrby", arity: 3, class: classWrite, keys: oneKey, handler: cmdIncr},
}

// commandTable finds a command by its lower-case name.
var commandTable = map[string]*command{}

// numCommands sizes the request counters.
const numCommands = 256

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
	if !b.tx { // EXEC's own commands: CLIENT LIST shows exec, as Valkey
		c.began(cmd, args, t0)
	}
	// A tracking client is told of changes to what it reads: a read's keys, and a script's
	// declared keys (Valkey tracks the keys a script reads).
	tracker := (cmd.class == classRead || cmd.flags&runsScript != 0) && !b.tx && s.trackRead(c, cmd, args)
	if c.tx != nil && cmd.flags&txControl == 0 {
		s.queueTx(b, c, cmd, args)
		return
	}
	start, flushes := len(b.replies), b.flushes
	b.cmd, b.class, b.tracker = cmd, cmd.class, tracker
	skip := c.skipNext
	c.skipNext = false
	cmd.handler(ctx, s, b, c, w, args)
	// As the handler left it: CLIENT REPLY ON answers itself. Valkey writes (un)subscribe
	// confirmations as pushes, which CLIENT REPLY never silences (in RESP2 too).
	mute := (skip || c.replyOff) && cmd.flags&pushReply == 0
	b.tracker = false
	if !b.tx {
		c.afterCommand(cmd.name)
	}
	if b.flushes != flushes {
		start = 0 // the handler flushed earlier commands: everything queued now is its own
	}
	b.tagFrom(start, cmd, t0)
	for i := start; mute && i < len(b.replies); i++ {
		b.replies[i].muted = true
	}
}

// began records cmd, started at t0 with args, as the connection's last command (CLIENT LIST).
func (c *client) began(cmd *command, args [][]byte, t0 time.Time) {
	c.lastAt.Store(t0.UnixNano())
	c.commands.Add(1)
	name := &cmd.name
	if cmd.flags&hasSubcommands != 0 && len(args) > 1 {
		full := cmd.name + "|" + strings.ToLower(string(args[1]))
		name = &full
	}
	c.lastCmd.Store(name)
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
