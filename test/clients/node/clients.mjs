// ioredis and node-redis against a cachefleet agent, as applications use them. Run by
// TestPythonAndNodeClients (make test) with AGENT_ADDR=host:port; exits non-zero with the
// first failed check.
import assert from "node:assert/strict";
import Redis from "ioredis";
import { createClient, BasicClientSideCache } from "redis";

const [host, port] = process.env.AGENT_ADDR.split(":");

async function ioredis() {
  const r = new Redis({ host, port: Number(port), lazyConnect: true, maxRetriesPerRequest: 1 });
  await r.connect();
  await r.set("io:k", "v", "EX", 60);
  assert.equal(await r.get("io:k"), "v");
  assert.equal(await r.get("io:missing"), null);
  // multi() is MULTI/EXEC; exec() answers [error, result] pairs.
  const tx = await r.multi().set("{io:cart}:n", 1).incr("{io:cart}:n").get("{io:cart}:n").exec();
  assert.deepEqual(tx, [[null, "OK"], [null, 2], [null, "2"]]);
  const p = r.pipeline();
  for (let i = 0; i < 30; i++) p.set(`io:p:${i}`, i);
  p.mget("io:p:0", "io:p:29", "io:missing");
  const res = await p.exec();
  assert.deepEqual(res.at(-1), [null, ["0", "29", null]]);
  await r.hset("io:h", { a: "1", b: "2" });
  assert.deepEqual(await r.hgetall("io:h"), { a: "1", b: "2" });
  r.defineCommand("incrBy2", { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1])" });
  assert.equal(await r.incrBy2("io:ctr", 4), 4);
  const keys = [];
  for await (const batch of r.scanStream({ match: "io:p:*", count: 10 })) keys.push(...batch);
  assert.equal(new Set(keys).size, 30);
  // A leaderboard, a rate limiter, a set of online users and a work queue.
  await r.zadd("io:board", 10, "alice", 20, "bob");
  await r.zincrby("io:board", 15, "alice");
  assert.deepEqual(await r.zrevrange("io:board", 0, -1, "WITHSCORES"), ["alice", "25", "bob", "20"]);
  const limit = await r.pipeline().incr("io:rate:c1").expire("io:rate:c1", 60, "NX").exec();
  assert.deepEqual(limit, [[null, 1], [null, 1]]);
  await r.sadd("io:online", "u1", "u2", "u1");
  assert.equal(await r.scard("io:online"), 2);
  await r.lpush("io:queue", "job1", "job2");
  assert.equal(await r.rpop("io:queue"), "job1");
  await r.quit();
  console.log("ioredis: ok");
}

async function nodeRedis() {
  const r = createClient({ socket: { host, port: Number(port) } });
  r.on("error", () => {});
  await r.connect();
  await r.set("nr:k", "v", { EX: 60 });
  assert.equal(await r.get("nr:k"), "v");
  assert.equal(await r.get("nr:missing"), null);
  const tx = await r.multi().set("{nr:cart}:n", "1").incr("{nr:cart}:n").get("{nr:cart}:n").exec();
  assert.deepEqual(tx, ["OK", 2, "2"]);
  const p = r.multi();
  for (let i = 0; i < 30; i++) p.set(`nr:p:${i}`, String(i));
  p.mGet(["nr:p:0", "nr:p:29", "nr:missing"]);
  const res = await p.execAsPipeline();
  assert.deepEqual(res.at(-1), ["0", "29", null]);
  await r.hSet("nr:h", { a: "1", b: "2" });
  assert.deepEqual({ ...(await r.hGetAll("nr:h")) }, { a: "1", b: "2" });
  await r.zAdd("nr:board", [{ score: 10, value: "alice" }, { score: 20, value: "bob" }]);
  await r.zIncrBy("nr:board", 15, "alice");
  assert.deepEqual(await r.zRangeWithScores("nr:board", 0, -1, { REV: true }), [
    { value: "alice", score: 25 },
    { value: "bob", score: 20 },
  ]);
  const limited = await r.eval("local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end return n", {
    keys: ["nr:rate:c1"],
  });
  assert.equal(limited, 1);
  await r.sAdd("nr:online", ["u1", "u2", "u1"]);
  assert.equal(await r.sCard("nr:online"), 2);
  await r.lPush("nr:queue", ["job1", "job2"]);
  assert.equal(await r.rPop("nr:queue"), "job1");
  assert.equal(await r.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", { keys: ["nr:ctr"], arguments: ["6"] }), 6);
  const keys = [];
  for await (const batch of r.scanIterator({ MATCH: "nr:p:*", COUNT: 10 })) keys.push(...batch);
  assert.equal(new Set(keys).size, 30);
  await r.quit();
  console.log("node-redis: ok");
}

// node-redis' client-side cache (RESP3, CLIENT TRACKING ON): a second GET is answered from
// the process's own cache; a write by another client reaches it as an invalidation push.
async function nodeRedisClientSideCache() {
  const cache = new BasicClientSideCache({ ttl: 0, maxEntries: 0 });
  const r = createClient({ RESP: 3, clientSideCache: cache, socket: { host, port: Number(port) } });
  const w = createClient({ socket: { host, port: Number(port) } });
  for (const c of [r, w]) c.on("error", () => {});
  await r.connect();
  await w.connect();
  await w.set("nr:csc", "v1");
  // The agent learns of the shard's changes by a watcher a little after the write's reply, so
  // the push for w's write can reach r after its first read and drop that copy once (a spurious
  // invalidation, as the protocol allows). A GET after a GET is then a hit.
  const hitBy = Date.now() + 5000;
  while (cache.stats().hitCount === 0) {
    assert.ok(Date.now() < hitBy, "no GET after a GET was a hit in the process's cache");
    assert.equal(await r.get("nr:csc"), "v1");
    assert.equal(await r.get("nr:csc"), "v1");
  }
  await w.set("nr:csc", "v2");
  const deadline = Date.now() + 5000;
  let v;
  while ((v = await r.get("nr:csc")) !== "v2") {
    assert.ok(Date.now() < deadline, `the cached value stayed ${v} after another client's write`);
    await new Promise((ok) => setTimeout(ok, 5));
  }
  await r.quit();
  await w.quit();
  console.log("node-redis client-side cache: ok");
}

// Pub/sub between two nodes' agents: subscribed through one, published through the other.
async function pubsubAcrossAgents() {
  const [ohost, oport] = process.env.OTHER_AGENT_ADDR.split(":");
  const sub = new Redis({ host, port: Number(port) });
  const pub = new Redis({ host: ohost, port: Number(oport) });
  const got = new Promise((ok) => sub.on("message", (ch, msg) => ok([ch, msg])));
  await sub.subscribe("io:news");
  assert.equal(await pub.publish("io:news", "hello"), 1);
  assert.deepEqual(await got, ["io:news", "hello"]);
  sub.disconnect();
  pub.disconnect();

  const nsub = createClient({ socket: { host, port: Number(port) } });
  const npub = createClient({ socket: { host: ohost, port: Number(oport) } });
  for (const c of [nsub, npub]) {
    c.on("error", () => {});
    await c.connect();
  }
  let onPattern, onShard;
  const pgot = new Promise((ok) => (onPattern = ok));
  const sgot = new Promise((ok) => (onShard = ok));
  await nsub.pSubscribe("nr:orders.*", (msg, ch) => onPattern([ch, msg])); // resolves on the confirmation
  await nsub.sSubscribe("nr:cart", (msg, ch) => onShard([ch, msg]));
  assert.equal(await npub.publish("nr:orders.1", "paid"), 1);
  assert.equal(await npub.sPublish("nr:cart", "c1"), 1);
  assert.deepEqual(await pgot, ["nr:orders.1", "paid"]);
  assert.deepEqual(await sgot, ["nr:cart", "c1"]);
  await nsub.quit();
  await npub.quit();
  console.log("ioredis and node-redis pub/sub across agents: ok");
}

await ioredis();
await nodeRedis();
await nodeRedisClientSideCache();
await pubsubAcrossAgents();
