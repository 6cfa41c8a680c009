#!/usr/bin/env python3
"""Freshness figures: how tight redsplit's staleness bound is, whether caught-up replicas
stay in their pools, and how reads fare while a replica stalls.

Starts, on free ports in a temp dir, a Redis master, two replicas and redsplit (release
build), and runs the sections asked for:

- `bound`: about 500 writes/s straight to the master (`SET fresh:seq n`, each ack time
  kept) for BOUND_SECS. Every ~10 ms it reads the proxy's bound for each replica
  (`/status` `staleness_ms`), then the replica's own `fresh:seq`: the real staleness is
  how long ago the oldest write the replica still lacks was acknowledged (0 when it has
  them all). Prints p50/p99/max of the bound, the real staleness and the excess (bound -
  real) in ms.
- `calm`: no client writes, CALM_SECS (default 600) with BURNERS busy-looping processes
  loading the CPUs. Three rules whose budgets are 2x, 3x and 5x `poll_interval_ms`, each
  read by its own command (GET, STRLEN, EXISTS: a replica's `INFO commandstats` then
  says which rule's reads it served). Prints, per budget, how many times a replica left
  that pool (the proxy's "replica left the read pool" log lines) and the replica share of
  that rule's reads.
- `stall`: four readers GET through the proxy; after STALL_WARMUP s one replica is
  SIGSTOPped for STALL_SECS, then resumed, with BURNERS busy loops running. Run once per
  HEDGE value (`backend.hedge_after_ms` written into proxy.yaml; `-` leaves it unset,
  i.e. `auto`). Prints read latency p50/p99/max before and during the stall, reads that
  took `command_timeout_ms` or longer, and errors.

Usage (from the repository root):
    benches/freshness.py                        # all sections, calm for 10 min
    benches/freshness.py --sections bound,stall --calm-secs 120
    POLL_MS=20 benches/freshness.py --sections bound

Needs: redis-server, cargo (or --no-build with target/release/redsplit built), Linux.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the load benchmark's processes, RESP client and helpers)
from load import BenchError, Resp, World, free_port, log, try_cmd, wait_until  # noqa: E402


def env(name, default):
    return os.environ.get(name, default)


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1)))]


def fmt(x, unit="ms"):
    return "-" if x is None else f"{x:.1f} {unit}" if isinstance(x, float) else f"{x} {unit}"


class Fresh(World):
    """The load benchmark's world with a redsplit started from any YAML."""

    def start_proxy(self, name, routing, backend_extra=""):
        conf = os.path.join(self.workdir, f"{name}.yaml")
        admin = free_port()
        envv = dict(os.environ)
        envv["RUST_LOG"] = "info"
        replicas = ", ".join(f"127.0.0.1:{r.port}" for r in self.replicas)
        poll = self.args.poll_ms

        def argv(port):
            with open(conf, "w") as f:
                f.write(
                    f"listen: 127.0.0.1:{port}\n"
                    f"admin: {{listen: 127.0.0.1:{admin}}}\n"
                    "backend:\n"
                    f"  master: 127.0.0.1:{self.master.port}\n"
                    f"  replicas: [{replicas}]\n"
                    f"{backend_extra}"
                    f"replication: {{poll_interval_ms: {poll}, dwell_ms: 1000}}\n"
                    f"routing:\n{routing}"
                )
            return [self.redsplit_bin, "run", "--config", conf]

        p = self._start(name, argv, lambda port: try_cmd(port, "PING") == "PONG", env=envv)
        p.admin = admin

        def both_in_pool():
            st = status(p)
            return st and all(
                b["health"] == "ok" and all(x["in"] for x in (b.get("in_pool") or []))
                for b in st["backends"]
                if b["role"] == "replica"
            )

        wait_until(f"{name} has both replicas in its pools", 30, both_in_pool)
        return p


def status(p):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{p.admin}/status", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


def replica_status(st):
    return [b for b in st["backends"] if b["role"] == "replica"]


# ------------------------------------------------------------------------------ bound


def section_bound(world, args):
    proxy = world.start_proxy(
        "redsplit-bound", "  default: {consistency: replica, max_lag_ms: 1000}\n"
    )
    acks = []  # (n, ack time), n = 1, 2, ...
    stop = threading.Event()

    def writer():
        with Resp(world.master.port) as c:
            n = 0
            while not stop.is_set():
                n += 1
                if c.cmd("SET", "fresh:seq", n) != "OK":
                    raise BenchError("SET failed")
                acks.append((n, time.monotonic()))
                time.sleep(0.002)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    wait_until("the writer has started", 10, lambda: len(acks) > 10)
    conns = [Resp(r.port) for r in world.replicas]
    bound, real, excess = [], [], []
    end = time.monotonic() + args.bound_secs
    while time.monotonic() < end:
        at = time.monotonic()
        st = status(proxy)
        if st is None:
            continue
        for b, c in zip(replica_status(st), conns):
            s = b.get("staleness_ms")
            v = c.cmd("GET", "fresh:seq")
            have = int(v) if v else 0
            # The oldest write the replica lacks, if any was acknowledged before `at`.
            missing = [a for (n, a) in acks[have : have + 1]] if have < len(acks) else []
            r = max(0.0, (at - missing[0]) * 1000) if missing and missing[0] < at else 0.0
            if s is None:
                continue
            bound.append(s)
            real.append(r)
            excess.append(s - r)
        time.sleep(0.01)
    stop.set()
    t.join()
    for c in conns:
        c.close()
    proxy.stop()
    world.procs.remove(proxy)
    rows = [("bound", bound), ("real staleness", real), ("excess (bound - real)", excess)]
    print(f"\n## bound: {len(bound)} samples over {args.bound_secs} s, "
          f"poll_interval_ms {args.poll_ms}, ~500 writes/s\n")
    print("| figure | p50 | p99 | max |\n|---|---|---|---|")
    for name, xs in rows:
        print(f"| {name} | {fmt(pct(xs, .5))} | {fmt(pct(xs, .99))} | {fmt(max(xs) if xs else None)} |")
    over = sum(1 for x in excess if x > args.poll_ms + 10)
    print(f"\nsamples whose excess is over poll_interval_ms + 10 ms: {over} of {len(excess)}")


# ------------------------------------------------------------------------------- calm

CALM_COMMANDS = (("get", 2), ("strlen", 3), ("exists", 5))


def calls(port, command):
    stats = load.info(port, "commandstats").get(f"cmdstat_{command}", "")
    m = re.search(r"calls=(\d+)", stats)
    return int(m.group(1)) if m else 0


def section_calm(world, args):
    poll = args.poll_ms
    rules = "".join(
        f"    - {{name: x{k}, commands: [{c}], consistency: replica, max_lag_ms: {k * poll}}}\n"
        for c, k in CALM_COMMANDS
    )
    proxy = world.start_proxy(
        "redsplit-calm", "  default: {consistency: master}\n  rules:\n" + rules
    )
    nodes = [world.master.port] + [r.port for r in world.replicas]
    before = {c: [calls(p, c) for p in nodes] for c, _ in CALM_COMMANDS}
    log_start = os.path.getsize(proxy.log_path)
    burners = burn(args.burners)
    stop = threading.Event()

    def reader(command):
        with Resp(proxy.port) as c:
            while not stop.is_set():
                c.cmd(command.upper(), "calm:key")
                time.sleep(0.001)

    threads = [threading.Thread(target=reader, args=(c,), daemon=True) for c, _ in CALM_COMMANDS]
    for t in threads:
        t.start()
    log(f"calm: {args.calm_secs} s with {args.burners} CPU burners")
    time.sleep(args.calm_secs)
    stop.set()
    for t in threads:
        t.join()
    unburn(burners)
    after = {c: [calls(p, c) for p in nodes] for c, _ in CALM_COMMANDS}
    with open(proxy.log_path, "rb") as f:
        f.seek(log_start)
        lines = f.read().decode(errors="replace").splitlines()
    exits = {}
    for line in lines:
        if "replica left the read pool" in line:
            m = re.search(r"budget_ms=Some\((\d+)\)", line)
            if m:
                exits[int(m.group(1))] = exits.get(int(m.group(1)), 0) + 1
    stalls = sum("has not answered its poll" in line for line in lines)
    proxy.stop()
    world.procs.remove(proxy)
    print(f"\n## calm: {args.calm_secs} s, no client writes, {args.burners} CPU burners, "
          f"poll_interval_ms {poll}\n")
    print("| budget | pool exits | replica share of its reads |\n|---|---|---|")
    for c, k in CALM_COMMANDS:
        d = [a - b for a, b in zip(after[c], before[c])]
        total = sum(d)
        share = sum(d[1:]) / total if total else None
        print(f"| {k}x = {k * poll} ms | {exits.get(k * poll, 0)} | "
              f"{'-' if share is None else f'{share:.4f}'} ({total} reads) |")
    print(f"\nreplicas marked stalled: {stalls}")


# ------------------------------------------------------------------------------ stall


def burn(n):
    """`n` busy-looping processes, loading the CPUs."""
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=load._die_with_parent)
        for _ in range(n)
    ]


def unburn(burners):
    for b in burners:
        b.kill()
        b.wait()


def section_stall(world, args):
    burners = burn(args.burners)
    try:
        stall_runs(world, args)
    finally:
        unburn(burners)


def stall_runs(world, args):
    for hedge in args.hedge.split(","):
        extra = "" if hedge == "-" else f"  hedge_after_ms: {hedge}\n"
        extra += f"  command_timeout_ms: {args.command_timeout_ms}\n"
        proxy = world.start_proxy(
            "redsplit-stall", "  default: {consistency: replica, max_lag_ms: 1000}\n",
            backend_extra=extra,
        )
        lat = []  # (sent, seconds, ok)
        stop = threading.Event()

        def reader(i):
            with Resp(proxy.port, timeout=30) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    t0 = time.monotonic()
                    v = c.cmd("GET", f"stall:{(i * 7919 + n) % 100}")
                    lat.append((t0, time.monotonic() - t0, not isinstance(v, load.RespError)))

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(args.stall_warmup)
        victim = world.replicas[0]
        t_stop = time.monotonic()
        os.kill(victim.pid, signal.SIGSTOP)
        time.sleep(args.stall_secs)
        os.kill(victim.pid, signal.SIGCONT)
        t_cont = time.monotonic()
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join()
        proxy.stop()
        world.procs.remove(proxy)
        during = [s * 1000 for (t0, s, _) in lat if t_stop <= t0 < t_cont]
        calm = [s * 1000 for (t0, s, _) in lat if t0 < t_stop]
        errors = sum(1 for (t0, _, ok) in lat if t_stop <= t0 < t_cont and not ok)
        slow = sum(1 for x in during if x >= args.command_timeout_ms)
        print(f"\n## stall: replica SIGSTOPped {args.stall_secs} s, hedge_after_ms "
              f"{'unset (auto)' if hedge == '-' else hedge}, command_timeout_ms "
              f"{args.command_timeout_ms}, {args.burners} CPU burners\n")
        print("| window | reads | p50 | p99 | max | errors | >= command timeout |\n|---|---|---|---|---|---|---|")
        print(f"| before | {len(calm)} | {fmt(pct(calm, .5))} | {fmt(pct(calm, .99))} | "
              f"{fmt(max(calm) if calm else None)} | | |")
        print(f"| during | {len(during)} | {fmt(pct(during, .5))} | {fmt(pct(during, .99))} | "
              f"{fmt(max(during) if during else None)} | {errors} | {slow} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=env("SECTIONS", "bound,calm,stall"))
    ap.add_argument("--poll-ms", type=int, default=int(env("POLL_MS", "50")))
    ap.add_argument("--bound-secs", type=int, default=int(env("BOUND_SECS", "60")))
    ap.add_argument("--calm-secs", type=int, default=int(env("CALM_SECS", "600")))
    ap.add_argument("--burners", type=int, default=int(env("BURNERS", "2")))
    ap.add_argument("--stall-secs", type=float, default=float(env("STALL_SECS", "5")))
    ap.add_argument("--stall-warmup", type=float, default=float(env("STALL_WARMUP", "3")))
    ap.add_argument("--hedge", default=env("HEDGE", "0,-"),
                    help="hedge_after_ms values for the stall section, comma-separated; - = unset")
    ap.add_argument("--command-timeout-ms", type=int, default=int(env("COMMAND_TIMEOUT_MS", "3000")))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.redsplit_bin = os.path.join(load.ROOT, "target", "release", "redsplit")
    args.workers = 2
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "redsplit"], cwd=load.ROOT, check=True)
    world = Fresh(args)
    try:
        world.start_replica_set()
        sections = args.sections.split(",")
        if "bound" in sections:
            section_bound(world, args)
        if "calm" in sections:
            section_calm(world, args)
        if "stall" in sections:
            section_stall(world, args)
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
