#!/usr/bin/env python3
"""The client-library smoke program for redis-py (run by tests/it/clients/).

    python3 smoke.py HOST:PORT PREFIX sync|asyncio 2|3

Runs the same checks against whatever listens at HOST:PORT (Redis itself, or redsplit
in front of it) and prints one line per check, `name: values`, with every key and
channel name relative to PREFIX, so that the transcript of a run against Redis and the
transcript of a run through the proxy can be compared line by line. A check that raises
prints `name: error <type>: <message>` and the program goes on with the next one.

`sync` uses `redis.Redis` (its connection pool, threads for the concurrent checks);
`asyncio` uses `redis.asyncio.Redis` (its pool, tasks). The last argument is the
protocol (`protocol=2` or `protocol=3`, i.e. `HELLO 3`).
"""

import asyncio
import concurrent.futures
import hashlib
import sys
import threading
import time

import redis
import redis.asyncio

# How long a check waits for something another connection causes (a message, a push,
# a blocked client) before it reports what it saw.
DEADLINE_S = 30.0
BIG_LEN = 5 * 1024 * 1024
SCAN_KEYS = 5000
PIPELINE_LEN = 1000
POOL_TASKS = 50


def big_value():
    """5 MiB whose byte i is i % 256, as every smoke program writes it."""
    return bytes(range(256)) * (BIG_LEN // 256)


class Names:
    """Key and channel names under the run's prefix, and the way back."""

    def __init__(self, prefix):
        self.prefix = prefix

    def __call__(self, name):
        return f"{self.prefix}:{name}"

    def strip(self, name):
        if isinstance(name, bytes):
            name = name.decode()
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + ":") else name


def show(value):
    """A reply as the transcript writes it: lists joined by commas, nil as `nil`, and
    redis-py's `True` for `+OK` as `OK`."""
    if value is None:
        return "nil"
    if value is True:
        return "OK"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def pipeline_line(replies):
    """INCR and GET alternate: reply 2j is j+1, reply 2j+1 is its text."""
    ordered = all(
        replies[2 * j] == j + 1 and replies[2 * j + 1] == str(j + 1)
        for j in range(len(replies) // 2)
    )
    return f"replies={len(replies)} ordered={'yes' if ordered else 'no'} last={show(replies[-2:])}"


def messages_line(names, confirmed, published, got):
    parts = []
    for m in got:
        if m["type"] == "pmessage":
            parts.append(f"pmessage {names.strip(m['pattern'])} {names.strip(m['channel'])} {show(m['data'])}")
        else:
            parts.append(f"{m['type']} {names.strip(m['channel'])} {show(m['data'])}")
    return f"subscribed={confirmed} published={show(published)} got={'|'.join(parts)}"


def script_bodies(prefix):
    # Each run has scripts of its own (the prefix is in a comment), so that runs sharing
    # a server do not load each other's scripts.
    counted = f"-- {prefix}\nreturn {{ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}}"
    read = f"-- {prefix} eval\nreturn redis.call('GET', KEYS[1])"
    helper = f"-- {prefix} helper\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    return counted, read, helper


def blocked(client_list, name):
    return any(c.get("name") == name and "b" in c.get("flags", "") for c in client_list)


def error_line(e):
    return f"error {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------------------


def run_sync(host, port, names, protocol):
    def client(**kw):
        kw.setdefault("decode_responses", True)
        return redis.Redis(host=host, port=port, protocol=protocol, **kw)

    r = client()
    n = names

    def ryw():
        ok = 0
        for i in range(100):
            r.set(n("ryw"), f"v{i}")
            ok += r.get(n("ryw")) == f"v{i}"
        return f"{ok} of 100 reads saw the write before them"

    def pipeline():
        pipe = r.pipeline(transaction=False)
        for i in range(PIPELINE_LEN):
            if i % 2 == 0:
                pipe.incr(n("pipe"))
            else:
                pipe.get(n("pipe"))
        return pipeline_line(pipe.execute())

    def watch():
        k = n("watch")
        other = client()
        r.set(k, "start")
        with r.pipeline() as pipe:
            pipe.watch(k)
            seen = pipe.get(k)
            other.set(k, "theirs")
            pipe.multi()
            pipe.set(k, "mine")
            try:
                pipe.execute()
                exec_reply = "committed"
            except redis.WatchError:
                exec_reply = "nil"
        after_abort = r.get(k)
        with r.pipeline() as pipe:
            pipe.watch(k)
            pipe.multi()
            pipe.set(k, "mine")
            retry = pipe.execute()
        return f"seen={seen} exec={exec_reply} value={after_abort} retry={show(retry)} value={r.get(k)}"

    def pubsub():
        ps = r.pubsub()
        ps.subscribe(n("ch"))
        ps.psubscribe(n("pat:*"))
        confirmed, got = 0, []
        deadline = time.monotonic() + DEADLINE_S
        while confirmed < 2 and time.monotonic() < deadline:
            m = ps.get_message(timeout=0.1)
            if m and m["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
        published = [r.publish(n("ch"), "m1"), r.publish(n("pat:x"), "m2")]
        while len(got) < 2 and time.monotonic() < deadline:
            m = ps.get_message(timeout=0.1)
            if m and m["type"] in ("message", "pmessage"):
                got.append(m)
        ps.close()
        return messages_line(n, confirmed, published, got)

    def blpop():
        name = n("blocker").replace(":", "-")
        blocker = client(client_name=name)
        watcher = client(single_connection_client=True)
        result = {}

        def pop():
            result["popped"] = blocker.blpop([n("queue")], timeout=2 * DEADLINE_S)

        t = threading.Thread(target=pop)
        t.start()
        deadline = time.monotonic() + DEADLINE_S
        is_blocked = False
        while not is_blocked and time.monotonic() < deadline:
            is_blocked = blocked(watcher.client_list(), name)
        answered = 0
        for i in range(20):
            watcher.set(n("third"), i)
            answered += watcher.get(n("third")) == str(i)
        pending = t.is_alive()
        r.rpush(n("queue"), "item")
        t.join(DEADLINE_S)
        popped = result.get("popped")
        popped = [n.strip(popped[0]), popped[1]] if popped else None
        return (
            f"blocked={'yes' if is_blocked else 'no'} others_answered={answered} "
            f"pending={'yes' if pending else 'no'} popped={show(popped)}"
        )

    def scripts():
        counted, read, helper_body = script_bodies(n.prefix)
        sha = hashlib.sha1(counted.encode()).hexdigest()
        k = n("script")
        try:
            r.evalsha(sha, 1, k, "a", 10)
            before = "ran"
        except redis.exceptions.NoScriptError:
            before = "NOSCRIPT"
        loaded = r.script_load(counted)
        after = r.evalsha(sha, 1, k, "a", 10)
        plain = r.eval(read, 1, k)
        helper = r.register_script(helper_body)(keys=[k], args=[5])
        return (
            f"evalsha={before} load={'sha1' if loaded == sha else loaded} "
            f"evalsha={show(after)} eval={plain} helper={helper}"
        )

    def scan():
        pipe = r.pipeline(transaction=False)
        for i in range(SCAN_KEYS):
            pipe.set(n(f"scan:{i}"), i)
        pipe.execute()
        seen = set(r.scan_iter(match=n("scan:*"), count=1000))
        expected = {n(f"scan:{i}") for i in range(SCAN_KEYS)}
        return f"keys={len(seen)} complete={'yes' if seen == expected else 'no'}"

    def big():
        raw = client(decode_responses=False)
        value = big_value()
        raw.set(n("big"), value)
        back = raw.get(n("big"))
        return f"bytes={len(back) if back else 0} same={'yes' if back == value else 'no'}"

    def select():
        one = client(db=1)
        one.set(n("db"), "one")
        return f"db1={one.get(n('db'))} db0={show(r.get(n('db')))}"

    def client_cache():
        if protocol != 3:
            return "RESP3 only"
        k = n("cached")
        r.set(k, "v1")
        t = client(single_connection_client=True)
        pushes = []
        t.connection._parser.set_invalidation_push_handler(pushes.append)
        t.execute_command("CLIENT", "TRACKING", "ON")
        first = t.get(k)
        r.set(k, "v2")
        deadline = time.monotonic() + DEADLINE_S
        while not pushes and time.monotonic() < deadline:
            t.ping()
        keys = [n.strip(key) for p in pushes for key in (p[1] or [])]
        return f"first={first} invalidated={','.join(keys)} after={t.get(k)}"

    def pool():
        def task(i):
            r.set(n(f"pool:{i}"), f"v{i}")
            own = r.get(n(f"pool:{i}")) == f"v{i}"
            r.incr(n("pool:count"))
            return own

        with concurrent.futures.ThreadPoolExecutor(POOL_TASKS) as ex:
            own = sum(ex.map(task, range(POOL_TASKS)))
        return f"tasks={POOL_TASKS} own_reads={own} count={r.get(n('pool:count'))}"

    return [
        ("ryw", ryw),
        ("pipeline", pipeline),
        ("watch", watch),
        ("pubsub", pubsub),
        ("blpop", blpop),
        ("scripts", scripts),
        ("scan", scan),
        ("big", big),
        ("select", select),
        ("client_cache", client_cache),
        ("pool", pool),
    ]


# ---------------------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------------------


def run_asyncio(host, port, names, protocol):
    def client(**kw):
        kw.setdefault("decode_responses", True)
        return redis.asyncio.Redis(host=host, port=port, protocol=protocol, **kw)

    r = client()
    n = names

    async def ryw():
        ok = 0
        for i in range(100):
            await r.set(n("ryw"), f"v{i}")
            ok += await r.get(n("ryw")) == f"v{i}"
        return f"{ok} of 100 reads saw the write before them"

    async def pipeline():
        pipe = r.pipeline(transaction=False)
        for i in range(PIPELINE_LEN):
            if i % 2 == 0:
                pipe.incr(n("pipe"))
            else:
                pipe.get(n("pipe"))
        return pipeline_line(await pipe.execute())

    async def watch():
        k = n("watch")
        other = client()
        await r.set(k, "start")
        async with r.pipeline() as pipe:
            await pipe.watch(k)
            seen = await pipe.get(k)
            await other.set(k, "theirs")
            pipe.multi()
            pipe.set(k, "mine")
            try:
                await pipe.execute()
                exec_reply = "committed"
            except redis.WatchError:
                exec_reply = "nil"
        after_abort = await r.get(k)
        async with r.pipeline() as pipe:
            await pipe.watch(k)
            pipe.multi()
            pipe.set(k, "mine")
            retry = await pipe.execute()
        await other.aclose()
        return f"seen={seen} exec={exec_reply} value={after_abort} retry={show(retry)} value={await r.get(k)}"

    async def pubsub():
        ps = r.pubsub()
        await ps.subscribe(n("ch"))
        await ps.psubscribe(n("pat:*"))
        confirmed, got = 0, []
        deadline = time.monotonic() + DEADLINE_S
        while confirmed < 2 and time.monotonic() < deadline:
            m = await ps.get_message(timeout=0.1)
            if m and m["type"] in ("subscribe", "psubscribe"):
                confirmed += 1
        published = [await r.publish(n("ch"), "m1"), await r.publish(n("pat:x"), "m2")]
        while len(got) < 2 and time.monotonic() < deadline:
            m = await ps.get_message(timeout=0.1)
            if m and m["type"] in ("message", "pmessage"):
                got.append(m)
        await ps.aclose()
        return messages_line(n, confirmed, published, got)

    async def blpop():
        name = n("blocker").replace(":", "-")
        blocker = client(client_name=name)
        watcher = client(single_connection_client=True)
        pop = asyncio.ensure_future(blocker.blpop([n("queue")], timeout=2 * DEADLINE_S))
        deadline = time.monotonic() + DEADLINE_S
        is_blocked = False
        while not is_blocked and time.monotonic() < deadline:
            is_blocked = blocked(await watcher.client_list(), name)
        answered = 0
        for i in range(20):
            await watcher.set(n("third"), i)
            answered += await watcher.get(n("third")) == str(i)
        pending = not pop.done()
        await r.rpush(n("queue"), "item")
        popped = await asyncio.wait_for(pop, DEADLINE_S)
        popped = [n.strip(popped[0]), popped[1]] if popped else None
        await blocker.aclose()
        await watcher.aclose()
        return (
            f"blocked={'yes' if is_blocked else 'no'} others_answered={answered} "
            f"pending={'yes' if pending else 'no'} popped={show(popped)}"
        )

    async def scripts():
        counted, read, helper_body = script_bodies(n.prefix)
        sha = hashlib.sha1(counted.encode()).hexdigest()
        k = n("script")
        try:
            await r.evalsha(sha, 1, k, "a", 10)
            before = "ran"
        except redis.exceptions.NoScriptError:
            before = "NOSCRIPT"
        loaded = await r.script_load(counted)
        after = await r.evalsha(sha, 1, k, "a", 10)
        plain = await r.eval(read, 1, k)
        helper = await r.register_script(helper_body)(keys=[k], args=[5])
        return (
            f"evalsha={before} load={'sha1' if loaded == sha else loaded} "
            f"evalsha={show(after)} eval={plain} helper={helper}"
        )

    async def scan():
        pipe = r.pipeline(transaction=False)
        for i in range(SCAN_KEYS):
            pipe.set(n(f"scan:{i}"), i)
        await pipe.execute()
        seen = {k async for k in r.scan_iter(match=n("scan:*"), count=1000)}
        expected = {n(f"scan:{i}") for i in range(SCAN_KEYS)}
        return f"keys={len(seen)} complete={'yes' if seen == expected else 'no'}"

    async def big():
        raw = client(decode_responses=False)
        value = big_value()
        await raw.set(n("big"), value)
        back = await raw.get(n("big"))
        await raw.aclose()
        return f"bytes={len(back) if back else 0} same={'yes' if back == value else 'no'}"

    async def select():
        one = client(db=1)
        await one.set(n("db"), "one")
        line = f"db1={await one.get(n('db'))} db0={show(await r.get(n('db')))}"
        await one.aclose()
        return line

    async def client_cache():
        if protocol != 3:
            return "RESP3 only"
        k = n("cached")
        await r.set(k, "v1")
        t = client(single_connection_client=True)
        await t.initialize()
        pushes = []

        async def on_invalidate(push):
            pushes.append(push)

        t.connection._parser.set_invalidation_push_handler(on_invalidate)
        await t.execute_command("CLIENT", "TRACKING", "ON")
        first = await t.get(k)
        await r.set(k, "v2")
        deadline = time.monotonic() + DEADLINE_S
        while not pushes and time.monotonic() < deadline:
            await t.ping()
        keys = [n.strip(key) for p in pushes for key in (p[1] or [])]
        line = f"first={first} invalidated={','.join(keys)} after={await t.get(k)}"
        await t.aclose()
        return line

    async def pool():
        async def task(i):
            await r.set(n(f"pool:{i}"), f"v{i}")
            own = await r.get(n(f"pool:{i}")) == f"v{i}"
            await r.incr(n("pool:count"))
            return own

        own = sum(await asyncio.gather(*(task(i) for i in range(POOL_TASKS))))
        return f"tasks={POOL_TASKS} own_reads={own} count={await r.get(n('pool:count'))}"

    return [
        ("ryw", ryw),
        ("pipeline", pipeline),
        ("watch", watch),
        ("pubsub", pubsub),
        ("blpop", blpop),
        ("scripts", scripts),
        ("scan", scan),
        ("big", big),
        ("select", select),
        ("client_cache", client_cache),
        ("pool", pool),
    ]


def main():
    if len(sys.argv) != 5 or sys.argv[3] not in ("sync", "asyncio") or sys.argv[4] not in ("2", "3"):
        sys.exit("usage: smoke.py HOST:PORT PREFIX sync|asyncio 2|3")
    host, port = sys.argv[1].rsplit(":", 1)
    names = Names(sys.argv[2])
    protocol = int(sys.argv[4])
    if sys.argv[3] == "sync":
        for name, check in run_sync(host, int(port), names, protocol):
            try:
                line = check()
            except Exception as e:  # noqa: BLE001 -- reported in the transcript
                line = error_line(e)
            print(f"{name}: {line}", flush=True)
    else:

        async def run_all():
            for name, check in run_asyncio(host, int(port), names, protocol):
                try:
                    line = await check()
                except Exception as e:  # noqa: BLE001 -- reported in the transcript
                    line = error_line(e)
                print(f"{name}: {line}", flush=True)

        asyncio.run(run_all())


if __name__ == "__main__":
    main()
