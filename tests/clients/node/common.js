// What the node smoke programs share: names under the run's prefix, the transcript's
// way of writing values, and the loop that runs the checks.
"use strict";

const crypto = require("node:crypto");

/** How long a check waits for something another connection causes. */
const DEADLINE_MS = 30000;
const BIG_LEN = 5 * 1024 * 1024;
const SCAN_KEYS = 5000;
const PIPELINE_LEN = 1000;
const POOL_TASKS = 50;

function usage(program) {
  const [addr, prefix, ...rest] = process.argv.slice(2);
  if (!addr || !prefix) {
    console.error(`usage: node ${program} HOST:PORT PREFIX ${rest.join(" ")}`);
    process.exit(2);
  }
  const at = addr.lastIndexOf(":");
  return { host: addr.slice(0, at), port: Number(addr.slice(at + 1)), prefix, rest };
}

function names(prefix) {
  const n = (name) => `${prefix}:${name}`;
  n.prefix = prefix;
  n.strip = (name) => {
    const s = String(name);
    return s.startsWith(prefix + ":") ? s.slice(prefix.length + 1) : s;
  };
  return n;
}

/** A reply as the transcript writes it: lists as [a,b], nil as nil. */
function show(v) {
  if (v === null || v === undefined) return "nil";
  if (Array.isArray(v)) return "[" + v.map(show).join(",") + "]";
  if (Buffer.isBuffer(v)) return v.toString();
  return String(v);
}

const yes = (b) => (b ? "yes" : "no");

/** INCR and GET alternate: reply 2j is j+1, reply 2j+1 is its text. */
function pipelineLine(replies) {
  let ordered = true;
  for (let j = 0; j < replies.length / 2; j++) {
    if (Number(replies[2 * j]) !== j + 1 || replies[2 * j + 1] !== String(j + 1)) ordered = false;
  }
  return `replies=${replies.length} ordered=${yes(ordered)} last=${show(replies.slice(-2))}`;
}

/** got: [type, pattern or null, channel, message] */
function messagesLine(n, confirmed, published, got) {
  const parts = got.map(([type, pattern, channel, message]) =>
    type === "pmessage"
      ? `pmessage ${n.strip(pattern)} ${n.strip(channel)} ${message}`
      : `message ${n.strip(channel)} ${message}`,
  );
  return `subscribed=${confirmed} published=${show(published)} got=${parts.join("|")}`;
}

/** Whether `CLIENT LIST` text shows a client of that name blocked. */
function isBlocked(list, name) {
  return String(list)
    .split("\n")
    .some((line) => {
      const f = line.split(" ");
      return f.includes(`name=${name}`) && f.some((x) => x.startsWith("flags=") && x.includes("b"));
    });
}

/** Each run has scripts of its own (the prefix in a comment), so that runs sharing a
 * server do not load each other's scripts. */
function scriptBodies(prefix) {
  return {
    counted: `-- ${prefix}\nreturn {ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}`,
    read: `-- ${prefix} eval\nreturn redis.call('GET', KEYS[1])`,
    helper: `-- ${prefix} helper\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])`,
  };
}

const sha1 = (s) => crypto.createHash("sha1").update(s).digest("hex");

/** 5 MiB whose byte i is i % 256, as every smoke program writes it. */
function bigValue() {
  const b = Buffer.alloc(BIG_LEN);
  for (let i = 0; i < BIG_LEN; i++) b[i] = i % 256;
  return b;
}

/** Polls `cond` until it holds or the deadline passes; whether it held. */
async function waitFor(cond, ms = DEADLINE_MS) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 2));
  }
  return false;
}

/** Runs the checks in order, one transcript line each; a check that throws prints its error.
 * With SMOKE_TIMING set, each check's duration goes to stderr. */
async function runChecks(checks) {
  for (const [name, check] of checks) {
    let line;
    const t0 = Date.now();
    try {
      line = await check();
    } catch (e) {
      line = `error ${e && e.constructor ? e.constructor.name : "Error"}: ${e && e.message}`;
    }
    process.stdout.write(`${name}: ${line}\n`);
    if (process.env.SMOKE_TIMING) process.stderr.write(`${name} ${Date.now() - t0} ms\n`);
  }
}

module.exports = {
  DEADLINE_MS, BIG_LEN, SCAN_KEYS, PIPELINE_LEN, POOL_TASKS,
  usage, names, show, yes, pipelineLine, messagesLine, isBlocked, scriptBodies, sha1, bigValue, waitFor, runChecks,
};
