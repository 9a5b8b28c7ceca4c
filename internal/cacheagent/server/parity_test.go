package server_test

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	tu "github.com/cachefleet/cachefleet/internal/cacheagent/testutil"
)

// The agent's contract is Valkey's: for the commands it serves, the same replies and the same
// errors, byte for byte. Each case runs on a real server directly and through an agent over
// real shards (with no default TTL and no L1, so nothing the agent adds shows), in RESP2 and
// RESP3, and the raw replies are compared.

type parityCase struct {
	name string
	// seed runs on the reference server and on the shard that owns the key, to create values
	// of types the agent does not write (lists).
	seed [][]string
	cmds [][]string
}

func c(args ...string) []string { return args }

var parityCases = []parityCase{
	{name: "ping", cmds: [][]string{c("PING"), c("PING", "hello"), c("PING", "x", "y", "z"), c("ECHO", "e"), c("ECHO"), c("ECHO", "a", "b")}},
	{name: "set options", cmds: [][]string{
		c("SET", "k", "v"), c("GET", "k"), c("SET", "k", "v", "EX", "notanint"), c("SET", "k", "v", "EX", "0"),
		c("SET", "k", "v", "PX", "-5"), c("SET", "k", "v", "NX", "XX"), c("SET", "k", "v", "BADOPT"),
		c("SET", "k", "v", "KEEPTTL", "EX", "10"), c("SET", "k", "v", "EX"), c("SET", "k"), c("SET", "k", "v2", "GET"),
		c("SET", "k", "v3", "NX"), c("SET", "new", "v", "XX"), c("SET", "k", "v4", "XX", "GET"), c("GET"), c("GET", "a", "b"),
	}},
	{name: "integers", cmds: [][]string{
		c("SET", "n", "abc"), c("INCR", "n"), c("INCRBY", "n", "x"), c("SET", "n", "10"), c("INCRBY", "n", "x"),
		c("DECRBY", "n", "3"), c("INCR", "n"), c("DECR", "n"), c("SET", "max", "9223372036854775807"), c("INCR", "max"),
		c("INCRBY", "fresh", "5"), c("INCR"), c("INCRBY", "n"), c("SET", "float", "1.5"), c("INCR", "float"),
	}},
	{name: "expiry", cmds: [][]string{
		c("SET", "e", "v"), c("TTL", "e"), c("PTTL", "e"), c("TTL", "missing"), c("EXPIRE", "e", "notint"),
		c("EXPIRE", "e", "100", "NX", "XX"), c("EXPIRE", "e", "100", "BAD"), c("EXPIRE", "e", "100"), c("TTL", "e"),
		c("EXPIRE", "e", "50", "GT"), c("EXPIRE", "e", "500", "GT"), c("PERSIST", "e"), c("PERSIST", "e"),
		c("PEXPIRE", "missing", "100"), c("SETEX", "sx", "0", "v"), c("SETEX", "sx", "x", "v"), c("SETEX", "sx", "100", "v"),
		c("TTL", "sx"), c("PSETEX", "psx", "-1", "v"), c("SETEX", "sx"), c("GETEX", "sx", "PERSIST"), c("TTL", "sx"),
		c("GETEX", "sx", "EX", "bad"), c("GETEX", "sx", "EX", "10", "PX", "10"), c("GETEX", "missing"), c("GETEX", "sx", "FOO"),
	}},
	{name: "keys", cmds: [][]string{
		c("MSET", "a", "1", "b", "2"), c("MGET", "a", "b", "nokey"), c("MSET", "a"), c("MSET", "a", "1", "b"),
		c("EXISTS", "a", "b", "nokey", "a"), c("DEL", "a", "nokey"), c("UNLINK", "b"), c("DEL"), c("EXISTS"),
		c("TYPE", "a"), c("SET", "t", "v"), c("TYPE", "t"), c("GETDEL", "t"), c("GETDEL", "t"), c("MGET"),
	}},
	{name: "wrong type", seed: [][]string{c("RPUSH", "list", "x")}, cmds: [][]string{
		c("GET", "list"), c("INCR", "list"), c("GETDEL", "list"), c("GETEX", "list"), c("TYPE", "list"), c("MGET", "list"),
		c("SET", "list", "v", "GET"), c("TTL", "list"), c("EXISTS", "list"),
	}},
	{name: "more strings", cmds: [][]string{
		c("SETNX", "s", "1"), c("SETNX", "s", "2"), c("GET", "s"), c("GETSET", "s", "3"), c("GETSET", "new", "x"),
		c("APPEND", "s", "abc"), c("APPEND", "fresh", "q"), c("STRLEN", "s"), c("STRLEN", "none"), c("INCRBYFLOAT", "f", "1.5"),
		c("INCRBYFLOAT", "f", "x"), c("INCRBYFLOAT", "s", "1"), c("MSETNX", "{m}a", "1", "{m}b", "2"), c("MSETNX", "{m}a", "9", "{m}c", "3"),
		c("MGET", "{m}a", "{m}b", "{m}c"), c("MSETNX", "{m}a"), c("EXPIREAT", "s", "4102444800"), c("EXPIRETIME", "s"),
		c("PEXPIRETIME", "s"), c("EXPIRETIME", "none"), c("PEXPIREAT", "s", "x"), c("GETRANGE", "s", "0", "1"),
		c("GETRANGE", "s", "-3", "-1"), c("GETRANGE", "s", "5", "2"), c("GETRANGE", "none", "0", "-1"), c("GETRANGE", "s", "a", "b"),
		c("SETRANGE", "s", "1", "ZZ"), c("GET", "s"), c("SETRANGE", "s", "-1", "x"), c("SETRANGE", "r", "3", "pad"), c("GET", "r"),
		c("SETNX", "s"), c("GETSET", "s"),
	}},
	{name: "hashes", seed: [][]string{c("SET", "str", "v")}, cmds: [][]string{
		c("HSET", "h", "a", "1", "b", "2"), c("HSET", "h", "a", "3"), c("HSET", "h", "a"), c("HGET", "h", "a"), c("HGET", "h", "zz"),
		c("HGET", "none", "a"), c("HMGET", "h", "a", "zz", "b"), c("HMGET", "none", "a", "b"), c("HGETALL", "h"), c("HGETALL", "none"),
		c("HEXISTS", "h", "a"), c("HEXISTS", "h", "zz"), c("HLEN", "h"), c("HLEN", "none"), c("HKEYS", "h"), c("HVALS", "h"),
		c("HSETNX", "h", "a", "9"), c("HSETNX", "h", "c", "9"), c("HINCRBY", "h", "c", "5"), c("HINCRBY", "h", "c", "x"),
		c("HDEL", "h", "a", "zz"), c("HGETALL", "h"), c("HGET", "str", "a"), c("HSET", "str", "a", "1"), c("HKEYS", "none"),
	}},
	{name: "scripts", cmds: [][]string{
		c("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "{e}k", "v"), c("EVAL", "return redis.call('GET', KEYS[1])", "1", "{e}k"),
		c("EVAL", "return {1, 2, 'x', redis.call('INCR', KEYS[2])}", "2", "{e}a", "{e}b"), c("EVAL", "return", "x"),
		c("EVAL", "return 1", "3", "{e}a"), c("EVAL", "return redis.error_reply('MY custom')", "1", "{e}a"),
		c("SCRIPT", "LOAD", "return KEYS[1]"), c("EVALSHA", "7c2f8f1da97b4ebb2e2a2bd9ee5b6d4b4d0e1e1a", "1", "{e}a"),
		c("EVALSHA", "b9bd4f2d4e1f7b1b2b50fa5a6ff9d9a9b6ffff1c", "1", "{e}a"), c("SCRIPT", "LOAD"),
		c("EVAL", "local a = {}; local b = {a}; a[1] = b; return a", "0"), // ~8,000 arrays deep, then an error
	}},
	{name: "transactions", cmds: [][]string{
		c("EXEC"), c("DISCARD"), c("MULTI"), c("SET", "{t}a", "1"), c("INCR", "{t}a"), c("GET", "{t}a"),
		c("MGET", "{t}a", "{t}b"), c("DEL", "{t}b"), c("EXEC"), c("GET", "{t}a"),
		c("MULTI"), c("SET", "{t}a", "x"), c("INCR", "{t}a"), c("GET", "{t}a"), c("EXEC"),
		c("MULTI"), c("SET", "{t}a", "2"), c("NOSUCH"), c("EXEC"), c("GET", "{t}a"),
		c("MULTI"), c("SET", "{t}a", "3"), c("GET"), c("EXEC"), c("GET", "{t}a"),
		c("MULTI"), c("SET", "{t}a", "4"), c("DISCARD"), c("GET", "{t}a"), c("MULTI"), c("EXEC"),
		c("WATCH", "{t}a"), c("WATCH", "{t}b"), c("MULTI"), c("SET", "{t}a", "5"), c("EXEC"), c("GET", "{t}a"),
		c("WATCH", "{t}a"), c("UNWATCH"), c("UNWATCH"), c("WATCH", "{t}a"), c("MULTI"), c("EXEC"), c("WATCH"),
	}},
	{name: "connection", cmds: [][]string{
		c("SELECT", "0"), c("SELECT", "x"), c("CLIENT", "SETNAME", "bad name"), c("CLIENT", "SETNAME", "good"),
		c("CLIENT", "GETNAME"), c("CLIENT", "NOSUCH"), c("AUTH", "nopass"), c("AUTH", "a", "b", "c"), c("HELLO", "4"),
		c("HELLO", "x"), c("NOSUCHCMD", "a", "b"), c("NOSUCHCMD"), c("CONFIG"), c("CLIENT", "SETNAME"),
		c("NOSUCHCMD", strings.Repeat("x", 100), strings.Repeat("y", 100), "z"), c(strings.Repeat("N", 200)),
		c("NOSUCHCMD", "a\r\nb"), c("CLIENT", "GETNAME", "extra"),
	}},
	{name: "tracking", cmds: [][]string{
		c("CLIENT", "TRACKINGINFO"), c("CLIENT", "GETREDIR"), c("CLIENT", "CACHING", "YES"), c("CLIENT", "TRACKING"),
		c("CLIENT", "TRACKING", "ON", "PREFIX", "a"), c("CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"),
		c("CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"), c("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "a", "PREFIX", "ab"),
		c("CLIENT", "TRACKING", "ON", "REDIRECT", "999999"), c("CLIENT", "TRACKING", "ON", "REDIRECT", "x"),
		c("CLIENT", "TRACKING", "MAYBE"), c("CLIENT", "TRACKING", "ON", "BOGUS"), c("CLIENT", "TRACKING", "ON", "PREFIX"),
		c("CLIENT", "TRACKING", "ON", "OPTIN"), c("CLIENT", "TRACKINGINFO"), c("CLIENT", "CACHING", "NO"),
		c("CLIENT", "CACHING", "MAYBE"), c("CLIENT", "CACHING", "YES"), c("CLIENT", "TRACKINGINFO"), c("CLIENT", "CACHING"),
		c("CLIENT", "TRACKING", "ON", "OPTOUT"), c("CLIENT", "TRACKING", "ON", "BCAST"), c("CLIENT", "GETREDIR"),
		c("CLIENT", "TRACKING", "OFF"), c("CLIENT", "TRACKING", "ON", "OPTOUT", "NOLOOP"), c("CLIENT", "CACHING", "NO"),
		c("CLIENT", "TRACKINGINFO"), c("CLIENT", "TRACKING", "OFF"),
		c("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "PREFIX", "sess:"),
		c("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:1"), c("CLIENT", "TRACKINGINFO"), c("CLIENT", "TRACKING", "OFF"),
		c("CLIENT", "TRACKINGINFO"),
	}},
	{name: "subscribe", cmds: [][]string{
		c("UNSUBSCRIBE"), c("SUBSCRIBE", "__redis__:invalidate"), c("PING"), c("PING", "hi"), c("SUBSCRIBE", "__redis__:invalidate"),
		c("UNSUBSCRIBE", "other", "__redis__:invalidate", "x"), c("PING"), c("SUBSCRIBE", "__redis__:invalidate"), c("UNSUBSCRIBE", "other"),
		c("UNSUBSCRIBE"), c("SUBSCRIBE"),
	}},
	{name: "subscribed resp2", cmds: [][]string{c("SUBSCRIBE", "__redis__:invalidate"), c("GET", "k")}},
	{name: "pubsub", cmds: [][]string{
		c("PUNSUBSCRIBE"), c("PSUBSCRIBE", "news.*"), c("SUBSCRIBE", "a", "b", "a"), c("SSUBSCRIBE", "s1", "s2"), c("PING"),
		c("UNSUBSCRIBE", "a", "zz"), c("PUNSUBSCRIBE", "other"), c("PUNSUBSCRIBE"), c("PUNSUBSCRIBE"), c("SUNSUBSCRIBE", "s1"),
		c("SUNSUBSCRIBE"), c("UNSUBSCRIBE"), c("SUNSUBSCRIBE"), c("SSUBSCRIBE"), c("PSUBSCRIBE"),
	}},
	{name: "publish", cmds: [][]string{
		c("PUBLISH", "nobody", "m"), c("SPUBLISH", "nobody", "m"), c("PUBLISH", "nobody"), c("PUBSUB", "NUMSUB", "nobody", "x"),
		c("PUBSUB", "NUMSUB"), c("PUBSUB", "NUMPAT"), c("PUBSUB", "CHANNELS", "zzz*"), c("PUBSUB", "SHARDNUMSUB", "q"),
		c("PUBSUB", "SHARDCHANNELS", "zzz*"), c("PUBSUB", "NOSUCH"), c("PUBSUB", "HELP"), c("PUBSUB", "NUMPAT", "x"),
		c("PUBSUB", "CHANNELS", "a", "b"), c("PUBSUB"),
	}},
	{name: "lists", cmds: [][]string{
		c("RPUSH", "l", "a", "b", "c"), c("LPUSH", "l", "z"), c("LPUSHX", "none", "x"), c("RPUSHX", "l", "d"), c("LLEN", "l"),
		c("LRANGE", "l", "0", "-1"), c("LINDEX", "l", "1"), c("LINDEX", "l", "99"), c("LSET", "l", "0", "y"), c("LSET", "l", "99", "y"),
		c("LINSERT", "l", "BEFORE", "b", "x"), c("LREM", "l", "0", "x"), c("LPOS", "l", "c"), c("LTRIM", "l", "0", "2"),
		c("LPOP", "l"), c("RPOP", "l", "5"), c("LPOP", "none"), c("LRANGE", "l", "x", "y"), c("LPUSH", "l"), c("LLEN", "l", "x"),
		c("RPUSH", "{t}src", "1", "2"), c("LMOVE", "{t}src", "{t}dst", "LEFT", "RIGHT"), c("RPOPLPUSH", "{t}src", "{t}dst"),
		c("LRANGE", "{t}dst", "0", "-1"), c("LMPOP", "2", "{t}src", "{t}dst", "LEFT"), c("LMPOP", "0", "LEFT"), c("LMPOP", "5", "{t}a", "LEFT"),
		c("SET", "str", "v"), c("LPUSH", "str", "x"), c("LRANGE", "str", "0", "1"),
	}},
	{name: "sets", cmds: [][]string{
		c("SADD", "s", "a", "b", "c"), c("SADD", "s", "a"), c("SREM", "s", "c", "none"), c("SMEMBERS", "s"), c("SISMEMBER", "s", "a"),
		c("SMISMEMBER", "s", "a", "x"), c("SCARD", "s"), c("SCARD", "none"), c("SSCAN", "s", "0"), c("SMEMBERS", "none"),
		c("SADD", "{t}a", "1", "2", "3"), c("SADD", "{t}b", "2", "3", "4"), c("SINTER", "{t}a", "{t}b"), c("SUNION", "{t}a", "{t}b"),
		c("SDIFF", "{t}a", "{t}b"), c("SINTERSTORE", "{t}c", "{t}a", "{t}b"), c("SMEMBERS", "{t}c"), c("SUNIONSTORE", "{t}c", "{t}a"),
		c("SDIFFSTORE", "{t}c", "{t}a", "{t}b"), c("SMOVE", "{t}a", "{t}b", "1"), c("SINTERCARD", "2", "{t}a", "{t}b"),
		c("SINTERCARD", "0", "{t}a"), c("SINTERCARD", "x", "{t}a"), c("SADD", "s"),
	}},
	{name: "sorted sets", cmds: [][]string{
		c("ZADD", "z", "1", "a", "2", "b", "3", "c"), c("ZADD", "z", "XX", "NX", "1", "a"), c("ZADD", "z", "x", "a"), c("ZINCRBY", "z", "5", "a"),
		c("ZSCORE", "z", "a"), c("ZMSCORE", "z", "a", "none"), c("ZRANK", "z", "b"), c("ZREVRANK", "z", "b", "WITHSCORE"), c("ZRANK", "z", "none", "WITHSCORE"), c("ZRANK", "z", "none"), c("ZCARD", "z"),
		c("ZRANGE", "z", "0", "-1", "WITHSCORES"), c("ZRANGE", "z", "(1", "+inf", "BYSCORE"), c("ZRANGEBYSCORE", "z", "-inf", "+inf"),
		c("ZREVRANGE", "z", "0", "1"), c("ZREVRANGEBYSCORE", "z", "+inf", "2"), c("ZRANGEBYLEX", "z", "-", "+"), c("ZREVRANGEBYLEX", "z", "+", "-"),
		c("ZCOUNT", "z", "2", "3"), c("ZLEXCOUNT", "z", "-", "+"), c("ZREM", "z", "c"), c("ZPOPMIN", "z"), c("ZPOPMAX", "z", "2"),
		c("ZADD", "z", "1", "a", "2", "b", "3", "c"), c("ZREMRANGEBYSCORE", "z", "3", "3"), c("ZREMRANGEBYRANK", "z", "0", "0"),
		c("ZREMRANGEBYLEX", "z", "-", "+"), c("ZSCAN", "z", "0"),
		c("ZADD", "{t}z1", "1", "a", "2", "b"), c("ZADD", "{t}z2", "3", "b", "4", "c"), c("ZUNION", "2", "{t}z1", "{t}z2", "WITHSCORES"),
		c("ZINTER", "2", "{t}z1", "{t}z2"), c("ZDIFF", "2", "{t}z1", "{t}z2"), c("ZINTERCARD", "2", "{t}z1", "{t}z2"),
		c("ZUNIONSTORE", "{t}z3", "2", "{t}z1", "{t}z2"), c("ZINTERSTORE", "{t}z3", "2", "{t}z1", "{t}z2", "WEIGHTS", "2", "3"),
		c("ZDIFFSTORE", "{t}z3", "1", "{t}z1"), c("ZRANGESTORE", "{t}z3", "{t}z1", "0", "-1"), c("ZMPOP", "1", "{t}z1", "MIN"),
		c("ZUNION", "0", "{t}z1"), c("ZUNIONSTORE", "{t}z3", "0", "{t}z1"),
	}},
	{name: "hashes and strings", cmds: [][]string{
		c("HMSET", "h", "f", "1", "g", "2"), c("HINCRBYFLOAT", "h", "f", "1.5"), c("HSTRLEN", "h", "g"), c("HSCAN", "h", "0"),
		c("HMSET", "h", "f"), c("SET", "s1", "hello"), c("SUBSTR", "s1", "1", "3"), c("SET", "{t}x", "ohmytext"), c("SET", "{t}y", "mynewtext"),
		c("LCS", "{t}x", "{t}y"), c("LCS", "{t}x", "{t}y", "LEN"),
	}},
	{name: "bitmaps and hyperloglogs", cmds: [][]string{
		c("SETBIT", "b", "7", "1"), c("SETBIT", "b", "7", "2"), c("GETBIT", "b", "7"), c("BITCOUNT", "b"), c("BITPOS", "b", "1"),
		c("BITFIELD", "b", "INCRBY", "u8", "0", "10"), c("BITFIELD_RO", "b", "GET", "u8", "0"), c("SET", "{t}b1", "ab"), c("SET", "{t}b2", "cd"),
		c("BITOP", "AND", "{t}b3", "{t}b1", "{t}b2"), c("GET", "{t}b3"), c("BITOP", "NOT", "{t}b3", "{t}b1", "{t}b2"),
		c("PFADD", "{t}h1", "a", "b", "c"), c("PFADD", "{t}h2", "c", "d"), c("PFCOUNT", "{t}h1", "{t}h2"), c("PFMERGE", "{t}h3", "{t}h1", "{t}h2"),
		c("PFCOUNT", "{t}h3"),
	}},
	{name: "geo and streams", cmds: [][]string{
		c("GEOADD", "g", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"), c("GEODIST", "g", "Palermo", "Catania", "km"),
		c("GEOHASH", "g", "Palermo"), c("GEOPOS", "g", "Catania", "none"), c("GEOSEARCH", "g", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ASC"),
		c("GEORADIUS_RO", "g", "15", "37", "200", "km"), c("GEOADD", "g", "bad", "38", "x"),
		c("XADD", "x", "1-1", "f", "v"), c("XADD", "x", "1-1", "f", "v"), c("XADD", "x", "2-1", "f", "w"), c("XLEN", "x"), c("XRANGE", "x", "-", "+"),
		c("XREVRANGE", "x", "+", "-", "COUNT", "1"), c("XDEL", "x", "1-1"), c("XTRIM", "x", "MAXLEN", "0"), c("XLEN", "x"),
		c("XGROUP", "CREATE", "x", "grp", "0"), c("XGROUP", "CREATE", "x", "grp", "0"), c("XPENDING", "x", "grp"),
	}},
	{name: "keys of any type", cmds: [][]string{
		c("SET", "{t}k1", "v"), c("RENAME", "{t}k1", "{t}k2"), c("RENAME", "{t}k1", "{t}k2"), c("RENAMENX", "{t}k2", "{t}k3"),
		c("COPY", "{t}k3", "{t}k4"), c("COPY", "{t}k3", "{t}k4"), c("TOUCH", "{t}k3", "{t}k4", "{t}none"), c("OBJECT", "ENCODING", "{t}k3"),
		c("RPUSH", "{t}sl", "3", "1", "2"), c("SORT", "{t}sl"), c("SORT_RO", "{t}sl", "DESC"), c("SORT", "{t}sl", "STORE", "{t}sorted"),
		c("LRANGE", "{t}sorted", "0", "-1"), c("DUMP", "{t}none"),
	}},
	{name: "blocking", cmds: [][]string{
		c("RPUSH", "bl", "a", "b"), c("BLPOP", "bl", "1"), c("BRPOP", "bl", "1"), c("BLPOP", "bl", "0.01"), c("BLPOP", "bl", "x"),
		c("LPOP", "bl", "2"), c("LPOP", "bl"), c("RPUSH", "{t}s", "1"), c("BLMOVE", "{t}s", "{t}d", "LEFT", "RIGHT", "0.01"),
		c("BRPOPLPUSH", "{t}d", "{t}s", "0.01"), c("BLMPOP", "0.01", "1", "{t}s", "LEFT"), c("BLMPOP", "0.01", "1", "{t}none", "LEFT"),
		c("LMPOP", "1", "{t}none", "LEFT"), c("ZADD", "bz", "1", "m"), c("BZPOPMIN", "bz", "0.01"), c("BZPOPMAX", "bz", "0.01"),
		c("BZMPOP", "0.01", "1", "bz", "MIN"), c("XADD", "xs", "1-1", "f", "v"), c("XREAD", "STREAMS", "xs", "0"),
		c("XREAD", "COUNT", "1", "BLOCK", "10", "STREAMS", "xs", "$"), c("XREAD", "STREAMS", "xs"), c("XGROUP", "CREATE", "xs", "g", "0"),
		c("XREADGROUP", "GROUP", "g", "c1", "COUNT", "1", "STREAMS", "xs", ">"), c("XREADGROUP", "GROUP", "g", "c1", "BLOCK", "10", "STREAMS", "xs", ">"),
	}},
	{name: "scripts and functions", cmds: [][]string{
		c("EVAL", "return 1", "0"), c("EVAL", "return 1", "-1"), c("FCALL", "f", "-3"), c("EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k"), c("EVALSHA_RO", "ffffffffffffffffffffffffffffffffffffffff", "0"),
		c("FUNCTION", "LOAD", "REPLACE", "#!lua name=cflib\nserver.register_function('cff', function(keys, args) return keys[1] end)"),
		c("FCALL", "cff", "1", "fk"), c("FCALL_RO", "cff", "1", "fk"), c("FCALL", "cff", "0"), c("FCALL", "nosuch", "0"),
		c("FUNCTION", "DELETE", "cflib"), c("FUNCTION", "DELETE", "cflib"), c("SCRIPT", "EXISTS", "ffffffffffffffffffffffffffffffffffffffff"),
	}},
}

func TestRepliesMatchAValkeyServerByteForByte(t *testing.T) {
	ref := tu.StartRedis(t, "")
	if info, err := ref.Do("INFO", "server"); err == nil {
		for _, line := range strings.Split(info, "\r\n") {
			if strings.HasPrefix(line, "valkey_version:") || strings.HasPrefix(line, "redis_version:") {
				t.Logf("reference server: %s (%s)", line, tu.ServerBinary())
			}
		}
	}
	shards := twoShards(t)
	o := defaults()
	o.defaults.DefaultTTL = 0
	o.defaults.L1 = false
	o.defaults.MaxValueBytes = 1 << 20
	a := startAgent(t, shards, o)
	for _, proto := range []string{"2", "3"} {
		for _, pc := range parityCases {
			t.Run("RESP"+proto+"/"+pc.name, func(t *testing.T) {
				prefix := fmt.Sprintf("p%s:%s:", proto, strings.ReplaceAll(pc.name, " ", "-"))
				key := func(args []string) []string {
					out := append([]string(nil), args...)
					for i := 1; i < len(out); i++ {
						if isKeyArg(args, i) {
							out[i] = prefix + out[i]
						}
					}
					return out
				}
				for _, s := range pc.seed {
					s = key(s)
					if _, err := ref.Do(s...); err != nil {
						t.Fatal(err)
					}
					if _, err := shards[a.srv.Router().Index([]byte(s[1]))].Do(s...); err != nil {
						t.Fatal(err)
					}
				}
				direct, viaAgent := rawConn(t, ref.Addr(), proto), rawConn(t, a.addr, proto)
				for _, cmd := range pc.cmds {
					cmd = key(cmd)
					want, got := direct.do(cmd), viaAgent.do(cmd)
					if want != got {
						t.Errorf("%q:\n valkey %q\n agent  %q", cmd, want, got)
					}
				}
			})
		}
	}
}

// isKeyArg says which arguments of the commands above are keys (they get a per-case prefix).
func isKeyArg(args []string, i int) bool {
	switch strings.ToUpper(args[0]) {
	case "MSET", "MSETNX":
		return i%2 == 1
	case "EVAL", "EVALSHA":
		n, err := strconv.Atoi(args[2])
		return err == nil && i >= 3 && i < 3+n
	case "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
		n, err := strconv.Atoi(args[2])
		return err == nil && i >= 3 && i < 3+n
	case "MGET", "DEL", "UNLINK", "EXISTS", "SINTER", "SUNION", "SDIFF", "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "PFCOUNT",
		"PFMERGE", "TOUCH":
		return true
	case "RENAME", "RENAMENX", "COPY", "SMOVE", "LMOVE", "RPOPLPUSH", "LCS", "ZRANGESTORE", "GEOSEARCHSTORE":
		return i <= 2
	case "BITOP":
		return i >= 2
	case "ZUNION", "ZINTER", "ZDIFF", "ZINTERCARD", "SINTERCARD", "LMPOP", "ZMPOP":
		n, err := strconv.Atoi(args[1])
		return err == nil && i >= 2 && i < 2+n
	case "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX":
		return i < len(args)-1
	case "BLMPOP", "BZMPOP":
		n, err := strconv.Atoi(args[2])
		return err == nil && i >= 3 && i < 3+n
	case "BLMOVE", "BRPOPLPUSH":
		return i <= 2
	case "XREAD", "XREADGROUP":
		for j := 1; j < len(args); j++ {
			if strings.EqualFold(args[j], "STREAMS") {
				n := (len(args) - j - 1) / 2
				return i > j && i <= j+n && (len(args)-j-1)%2 == 0
			}
		}
		return false
	case "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE":
		n, err := strconv.Atoi(args[2])
		return i == 1 || (err == nil && i >= 3 && i < 3+n)
	case "SORT":
		return i == 1 || strings.EqualFold(args[i-1], "STORE")
	case "OBJECT", "XGROUP":
		return i == 2
	case "PING", "ECHO", "SELECT", "CLIENT", "AUTH", "HELLO", "NOSUCHCMD", "CONFIG", "MULTI", "EXEC", "DISCARD", "NOSUCH",
		"UNWATCH", "SCRIPT", "SUBSCRIBE", "UNSUBSCRIBE", "FUNCTION", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE",
		"SUNSUBSCRIBE", "PUBLISH", "SPUBLISH", "PUBSUB":
		return false
	}
	return i == 1
}

type rawClient struct {
	t  *testing.T
	nc net.Conn
	rd *bufio.Reader
}

func rawConn(t *testing.T, addr, proto string) *rawClient {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := &rawClient{t: t, nc: nc, rd: bufio.NewReader(nc)}
	if proto == "3" {
		rc.do([]string{"HELLO", "3"}) // the HELLO reply itself names the server, so it differs
	}
	return rc
}

func (rc *rawClient) do(args []string) string {
	rc.t.Helper()
	rc.nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.nc.Write(tu.Encode(args...)); err != nil {
		rc.t.Fatal(err)
	}
	raw, err := tu.ReadRaw(rc.rd)
	if err != nil {
		rc.t.Fatalf("%q: %v", args, err)
	}
	return string(raw)
}

// TestPipelinedRefusalKeepsRepliesInStep: a refusal built from a command's arguments once read
// them after the next pipelined command had overwritten the buffer (with a raw newline).
func TestPipelinedRefusalKeepsRepliesInStep(t *testing.T) {
	a := startAgent(t, twoShards(t), defaults())
	rc := rawConn(t, a.addr, "2")
	rc.do([]string{"SET", "k", "v"})
	rc.nc.Write(append(tu.Encode("CONFIG", "RESETSTAT"), tu.Encode("GET", "k")...))
	first, err := tu.ReadRaw(rc.rd)
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != "-ERR CONFIG RESETSTAT is not supported by the cachefleet agent\r\n" {
		t.Errorf("CONFIG RESETSTAT = %q", first)
	}
	if second, _ := tu.ReadRaw(rc.rd); string(second) != "$1\r\nv\r\n" {
		t.Errorf("the next reply = %q, want the GET's", second)
	}
}
