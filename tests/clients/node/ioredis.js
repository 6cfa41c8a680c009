// The client-library smoke program for ioredis, run by tests/it/clients/:
//
//     node ioredis.js HOST:PORT PREFIX
//
// Runs the same checks as the other smoke programs against whatever listens at
// HOST:PORT (Redis itself, or redsplit in front of it) and prints one line per check,
// `name: values`, with every key and channel name relative to PREFIX. A check that
// throws prints `name: error <type>: <message>`. ioredis speaks RESP2 only and has no
// connection pool: its concurrent tasks share one connection (auto-pipelined).
"use strict";

const Redis = require("ioredis");
const c = require("./common");

const { host, port, prefix } = c.usage("ioredis.js");
const n = c.names(prefix);
const bodies = c.scriptBodies(prefix);

async function main() {
  const opened = [];
  const open = async (options = {}) => {
    const client = new Redis({ host, port, maxRetriesPerRequest: 0, ...options });
    client.on("error", (e) => process.stderr.write(`client error: ${e}\n`));
    opened.push(client);
    await new Promise((resolve, reject) => {
      client.once("ready", resolve);
      client.once("error", reject);
    });
    return client;
  };
  const r = await open();
  r.defineCommand("helper", { numberOfKeys: 1, lua: bodies.helper });

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
      const p = r.pipeline();
      for (let i = 0; i < c.PIPELINE_LEN; i++) {
        if (i % 2 === 0) p.incr(n("pipe"));
        else p.get(n("pipe"));
      }
      const replies = await p.exec();
      const failed = replies.find(([err]) => err);
      if (failed) throw failed[0];
      return c.pipelineLine(replies.map(([, v]) => v));
    }],
    ["watch", async () => {
      const k = n("watch");
      const other = await open();
      await r.set(k, "start");
      await r.watch(k);
      const seen = await r.get(k);
      await other.set(k, "theirs");
      const aborted = await r.multi().set(k, "mine").exec();
      const exec = aborted === null ? "nil" : "committed";
      const afterAbort = await r.get(k);
      await r.watch(k);
      const retry = (await r.multi().set(k, "mine").exec()).map(([err, v]) => (err ? `error ${err.message}` : v));
      return `seen=${seen} exec=${exec} value=${afterAbort} retry=${c.show(retry)} value=${await r.get(k)}`;
    }],
    ["pubsub", async () => {
      const sub = await open();
      const got = [];
      sub.on("message", (channel, message) => got.push(["message", null, channel, message]));
      sub.on("pmessage", (pattern, channel, message) => got.push(["pmessage", pattern, channel, message]));
      await sub.subscribe(n("ch"));
      // The count of subscriptions Redis confirmed, after both.
      const confirmed = await sub.psubscribe(n("pat:*"));
      const published = [await r.publish(n("ch"), "m1"), await r.publish(n("pat:x"), "m2")];
      await c.waitFor(() => got.length >= 2);
      return c.messagesLine(n, confirmed, published, got);
    }],
    ["blpop", async () => {
      const name = n("blocker").replaceAll(":", "-");
      const blocker = await open({ connectionName: name });
      const watcher = await open();
      let done = false;
      const pop = blocker.blpop(n("queue"), (2 * c.DEADLINE_MS) / 1000).then((v) => {
        done = true;
        return v;
      });
      const blocked = await c.waitFor(async () => c.isBlocked(await watcher.client("LIST"), name));
      let answered = 0;
      for (let i = 0; i < 20; i++) {
        await watcher.set(n("third"), String(i));
        if ((await watcher.get(n("third"))) === String(i)) answered++;
      }
      const pending = !done;
      await r.rpush(n("queue"), "item");
      const popped = await pop;
      return `blocked=${c.yes(blocked)} others_answered=${answered} pending=${c.yes(pending)} popped=${c.show(popped ? [n.strip(popped[0]), popped[1]] : null)}`;
    }],
    ["scripts", async () => {
      const sha = c.sha1(bodies.counted);
      const k = n("script");
      let before = "ran";
      try {
        await r.evalsha(sha, 1, k, "a", 10);
      } catch (e) {
        before = String(e.message).split(" ")[0];
      }
      const loaded = await r.script("LOAD", bodies.counted);
      const after = await r.evalsha(sha, 1, k, "a", 10);
      const plain = await r.eval(bodies.read, 1, k);
      const helper = await r.helper(k, 5);
      return `evalsha=${before} load=${loaded === sha ? "sha1" : loaded} evalsha=${c.show(after)} eval=${plain} helper=${helper}`;
    }],
    ["scan", async () => {
      const p = r.pipeline();
      for (let i = 0; i < c.SCAN_KEYS; i++) p.set(n(`scan:${i}`), String(i));
      await p.exec();
      const seen = new Set();
      await new Promise((resolve, reject) => {
        const stream = r.scanStream({ match: n("scan:*"), count: 1000 });
        stream.on("data", (keys) => keys.forEach((key) => seen.add(key)));
        stream.on("end", resolve);
        stream.on("error", reject);
      });
      let complete = seen.size === c.SCAN_KEYS;
      for (let i = 0; i < c.SCAN_KEYS; i++) complete = complete && seen.has(n(`scan:${i}`));
      return `keys=${seen.size} complete=${c.yes(complete)}`;
    }],
    ["big", async () => {
      const value = c.bigValue();
      await r.set(n("big"), value);
      const back = await r.getBuffer(n("big"));
      return `bytes=${back ? back.length : 0} same=${c.yes(back && back.equals(value))}`;
    }],
    ["select", async () => {
      const one = await open({ db: 1 });
      await one.set(n("db"), "one");
      return `db1=${await one.get(n("db"))} db0=${c.show(await r.get(n("db")))}`;
    }],
    ["client_cache", async () => "not supported by the client"],
    ["pool", async () => {
      const own = await Promise.all(
        Array.from({ length: c.POOL_TASKS }, async (_, i) => {
          await r.set(n(`pool:${i}`), `v${i}`);
          const mine = (await r.get(n(`pool:${i}`))) === `v${i}`;
          await r.incr(n("pool:count"));
          return mine;
        }),
      );
      return `tasks=${c.POOL_TASKS} own_reads=${own.filter(Boolean).length} count=${await r.get(n("pool:count"))}`;
    }],
  ]);
  for (const client of opened) client.disconnect();
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e);
  process.exit(1);
});
