"""redis-py (Debian's python3-redis) against a cachefleet agent, as an application uses it.

Run by TestPythonAndNodeClients (make test) with AGENT_ADDR=host:port; exits non-zero with
the first failed check.
"""
import os
import sys
import time

import redis

host, port = os.environ["AGENT_ADDR"].rsplit(":", 1)
r = redis.Redis(host=host, port=int(port), decode_responses=True)


def check(what, got, want):
    if got != want:
        sys.exit(f"redis-py: {what}: got {got!r}, want {want!r}")


check("ping", r.ping(), True)
r.set("py:k", "v", ex=60)
check("get", r.get("py:k"), "v")
check("get missing", r.get("py:missing"), None)

# pipeline() is a MULTI/EXEC transaction by default: keys share a hashtag (one shard).
with r.pipeline() as p:
    p.set("{py:cart}:items", 1).incr("{py:cart}:items").get("{py:cart}:items")
    check("transaction pipeline", p.execute(), [True, 2, "2"])

with r.pipeline(transaction=False) as p:
    for i in range(30):
        p.set(f"py:p:{i}", i)
    p.mget("py:p:0", "py:p:29", "py:missing")
    check("plain pipeline", p.execute()[-1], ["0", "29", None])

# Optimistic locking: WATCH, read, MULTI, write, EXEC.
r.set("{py:acct}:bal", 100)
with r.pipeline() as p:
    p.watch("{py:acct}:bal")
    bal = int(p.get("{py:acct}:bal"))
    p.multi()
    p.set("{py:acct}:bal", bal - 10)
    check("watch transaction", p.execute(), [True])
check("balance", r.get("{py:acct}:bal"), "90")

r.hset("py:h", mapping={"a": "1", "b": "2"})
check("hgetall", r.hgetall("py:h"), {"a": "1", "b": "2"})
incr = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
check("script", incr(keys=["py:ctr"], args=[5]), 5)
check("scan_iter", sorted(r.scan_iter("py:p:*", count=10)), sorted(f"py:p:{i}" for i in range(30)))

# What applications keep next to their cached strings: a leaderboard, a rate limiter, a set of
# online users and a work queue.
r.zadd("py:board", {"alice": 10, "bob": 20})
r.zincrby("py:board", 15, "alice")
check("leaderboard", r.zrevrange("py:board", 0, -1, withscores=True), [("alice", 25.0), ("bob", 20.0)])
check("rank", r.zrevrank("py:board", "bob"), 1)
with r.pipeline(transaction=False) as p:
    p.incr("py:rate:client1").expire("py:rate:client1", 60, nx=True)
    check("rate limiter", p.execute(), [1, True])
check("rate limiter ttl", 0 < r.ttl("py:rate:client1") <= 60, True)
r.sadd("py:online", "u1", "u2", "u1")
check("set", (r.scard("py:online"), r.sismember("py:online", "u2")), (2, True))
r.lpush("py:queue", "job1", "job2")
check("queue", (r.rpop("py:queue"), r.llen("py:queue")), ("job1", 1))

# Client-side caching in RESP2 (redis-py 4 has no cache of its own): invalidations go to a
# connection subscribed to __redis__:invalidate (CLIENT TRACKING ON REDIRECT), as RESP2
# clients such as Jedis and Lettuce do it.
inv = r.connection_pool.get_connection("_")
inv.send_command("CLIENT", "ID")
inv_id = inv.read_response()
inv.send_command("SUBSCRIBE", "__redis__:invalidate")
check("subscribe", inv.read_response(), ["subscribe", "__redis__:invalidate", 1])
tracked = redis.Redis(host=host, port=int(port), decode_responses=True, single_connection_client=True)
check("tracking redirect", tracked.execute_command("CLIENT", "TRACKING", "ON", "REDIRECT", inv_id), "OK")
r.set("py:csc", "v1")
check("tracked get", tracked.get("py:csc"), "v1")
r.set("py:csc", "v2")
if not inv.can_read(timeout=5):
    sys.exit("redis-py: no invalidation within 5 s of another client's write")
check("invalidation", inv.read_response(), ["message", "__redis__:invalidate", ["py:csc"]])

# Pub/sub between two nodes' agents: subscribed through this one, published through the other.
ohost, oport = os.environ["OTHER_AGENT_ADDR"].rsplit(":", 1)
other = redis.Redis(host=ohost, port=int(oport), decode_responses=True)
ps = r.pubsub(ignore_subscribe_messages=True)
ps.subscribe("py:news")
ps.psubscribe("py:orders.*")
for _ in range(2):  # the confirmations
    ps.get_message(timeout=5)
check("publish", other.publish("py:news", "hello"), 1)
check("publish to a pattern", other.publish("py:orders.7", "paid"), 1)
got = []
deadline = time.time() + 5
while len(got) < 2 and time.time() < deadline:
    m = ps.get_message(timeout=1)
    if m:
        got.append((m["type"], m["pattern"], m["channel"], m["data"]))
check("messages", got, [("message", None, "py:news", "hello"), ("pmessage", "py:orders.*", "py:orders.7", "paid")])
check("numsub", other.pubsub_numsub("py:news"), [("py:news", 1)])
ps.close()
print("redis-py: ok")
