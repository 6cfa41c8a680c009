// The client-library smoke program for node-redis (npm `redis`), run by tests/it/clients/:
//
//     node node-redis.js HOST:PORT PREFIX 2|3
//
// Runs the same checks as the other smoke programs against whatever listens at
// HOST:PORT (Redis itself, or redsplit in front of it), with RESP2 or RESP3 (`HELLO 3`),
// and prints one line per check, `name: values`, with every key and channel name
// relative to PREFIX. A check that throws prints `name: error <type>: <message>`.
"use strict";

const { createClient, createClientPool, defineScript, RESP_TYPES, WatchError } = require("redis");
const c = require("./common");

const { host, port, prefix, rest } = c.usage("node-redis.js");
const RESP = Number(rest[0]);
if (RESP !== 2 && RESP !== 3) {
  console.error("usage: node node-redis.js HOST:PORT PREFIX 2|3");
  process.exit(2);
}
const n = c.names(prefix);
const bodies = c.scriptBodies(prefix);
const url = `redis://${host}:${port}`;

async function connect(options = {}) {
  const client = createClient({ url, RESP, ...options });
  client.on("error", (e) => process.stderr.write(`client error: ${e}\n`));
  await client.connect();
  return client;
}

async function main() {
  const r = await connect({
    scripts: {
      helper: defineScript({
        NUMBER_OF_KEYS: 1,
        SCRIPT: bodies.helper,
        parseCommand(parser, key, by) {
          parser.pushKey(key);
          parser.push(String(by));
        },
      }),
    },
  });
  const opened = [r];
  const open = async (options) => {
    const client = await connect(options);
    opened.push(client);
    return client;
  };

  await c.runChecks([
    ["ryw", async () => {
      let ok = 0;
      for (let i = 0; i < 100; i++) {
        await r.set(n("ryw"), `v${i}`);
        if ((await r.get(n("ryw"))) === `v${i}`) ok++;
      }
      return `${ok} of 100 reads saw the write before them`;
    }],
    ["pipeline", async () => {
      const m = r.multi();
      for (let i = 0; i < c.PIPELINE_LEN; i++) {
        if (i % 2 === 0) m.incr(n("pipe"));
        else m.get(n("pipe"));
      }
      return c.pipelineLine(await m.execAsPipeline());
    }],
    ["watch", async () => {
      const k = n("watch");
      const other = await open();
      await r.set(k, "start");
      await r.watch(k);
      const seen = await r.get(k);
      await other.set(k, "theirs");
      let exec = "committed";
      try {
        await r.multi().set(k, "mine").exec();
      } catch (e) {
        if (!(e instanceof WatchError)) throw e;
        exec = "nil";
      }
      const afterAbort = await r.get(k);
      await r.watch(k);
      const retry = await r.multi().set(k, "mine").exec();
      return `seen=${seen} exec=${exec} value=${afterAbort} retry=${c.show(retry)} value=${await r.get(k)}`;
    }],
    ["pubsub", async () => {
      const sub = await open();
      const got = [];
      let confirmed = 0;
      await sub.subscribe(n("ch"), (message, channel) => got.push(["message", null, channel, message]));
      confirmed++;
      await sub.pSubscribe(n("pat:*"), (message, channel) => got.push(["pmessage", n("pat:*"), channel, message]));
      confirmed++;
      const published = [await r.publish(n("ch"), "m1"), await r.publish(n("pat:x"), "m2")];
      await c.waitFor(() => got.length >= 2);
      return c.messagesLine(n, confirmed, published, got);
    }],
    ["blpop", async () => {
      const name = n("blocker").replaceAll(":", "-");
      const blocker = await open({ name });
      const watcher = await open();
      let done = false;
      const pop = blocker.blPop(n("queue"), (2 * c.DEADLINE_MS) / 1000).then((v) => {
        done = true;
        return v;
      });
      const blocked = await c.waitFor(async () => c.isBlocked(await watcher.sendCommand(["CLIENT", "LIST"]), name));
      let answered = 0;
      for (let i = 0; i < 20; i++) {
        await watcher.set(n("third"), String(i));
        if ((await watcher.get(n("third"))) === String(i)) answered++;
      }
      const pending = !done;
      await r.rPush(n("queue"), "item");
      const popped = await pop;
      return `blocked=${c.yes(blocked)} others_answered=${answered} pending=${c.yes(pending)} popped=${c.show(popped ? [n.strip(popped.key), popped.element] : null)}`;
    }],
    ["scripts", async () => {
      const sha = c.sha1(bodies.counted);
      const k = n("script");
      let before = "ran";
      try {
        await r.evalSha(sha, { keys: [k], arguments: ["a", "10"] });
      } catch (e) {
        before = String(e.message).split(" ")[0];
      }
      const loaded = await r.scriptLoad(bodies.counted);
      const after = await r.evalSha(sha, { keys: [k], arguments: ["a", "10"] });
      const plain = await r.eval(bodies.read, { keys: [k] });
      const helper = await r.helper(k, 5);
      return `evalsha=${before} load=${loaded === sha ? "sha1" : loaded} evalsha=${c.show(after)} eval=${plain} helper=${helper}`;
    }],
    ["scan", async () => {
      const m = r.multi();
      for (let i = 0; i < c.SCAN_KEYS; i++) m.set(n(`scan:${i}`), String(i));
      await m.execAsPipeline();
      const seen = new Set();
      for await (const keys of r.scanIterator({ MATCH: n("scan:*"), COUNT: 1000 })) {
        for (const key of keys) seen.add(key);
      }
      let complete = seen.size === c.SCAN_KEYS;
      for (let i = 0; i < c.SCAN_KEYS; i++) complete = complete && seen.has(n(`scan:${i}`));
      return `keys=${seen.size} complete=${c.yes(complete)}`;
    }],
    ["big", async () => {
      const value = c.bigValue();
      await r.set(n("big"), value);
      const back = await r.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }).get(n("big"));
      return `bytes=${back ? back.length : 0} same=${c.yes(back && back.equals(value))}`;
    }],
    ["select", async () => {
      const one = await open({ database: 1 });
      await one.set(n("db"), "one");
      return `db1=${await one.get(n("db"))} db0=${c.show(await r.get(n("db")))}`;
    }],
    ["client_cache", async () => {
      if (RESP !== 3) return "RESP3 only";
      const k = n("cached");
      await r.set(k, "v1");
      const t = await open({ clientSideCache: { ttl: 0, maxEntries: 0 } });
      const invalidated = [];
      t.clientSideCache.on("invalidate", (key) => invalidated.push(key === null ? "(all)" : n.strip(key)));
      const first = await t.get(k);
      const hitsBefore = t.clientSideCache.stats().hitCount;
      const again = await t.get(k);
      const hit = t.clientSideCache.stats().hitCount === hitsBefore + 1 && again === first;
      await r.set(k, "v2");
      await c.waitFor(() => invalidated.length > 0);
      const after = await t.get(k);
      return hit
        ? `first=${first} invalidated=${invalidated.join(",")} after=${after}`
        : `first=${first} no cache hit (hits ${t.clientSideCache.stats().hitCount})`;
    }],
    ["pool", async () => {
      const pool = createClientPool({ url, RESP }, { minimum: 1, maximum: c.POOL_TASKS });
      pool.on("error", (e) => process.stderr.write(`pool error: ${e}\n`));
      await pool.connect();
      const own = await Promise.all(
        Array.from({ length: c.POOL_TASKS }, async (_, i) => {
          await pool.set(n(`pool:${i}`), `v${i}`);
          const mine = (await pool.get(n(`pool:${i}`))) === `v${i}`;
          await pool.incr(n("pool:count"));
          return mine;
        }),
      );
      const line = `tasks=${c.POOL_TASKS} own_reads=${own.filter(Boolean).length} count=${await r.get(n("pool:count"))}`;
      pool.destroy();
      return line;
    }],
  ]);
  for (const client of opened) client.destroy();
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e);
  process.exit(1);
});
