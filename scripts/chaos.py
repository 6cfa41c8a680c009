#!/usr/bin/env python3
"""Chaos run (not part of CI): redsplit, following three Sentinels that watch a master and
two replicas, under a steady read/write load for CHAOS_SECS seconds (default 600) while,
one at a time with a few seconds between them, these happen:

- the master is killed (SIGKILL; restarted as a replica of the new master once Sentinel
  has failed over), or failed over gracefully with `SENTINEL FAILOVER`;
- a replica is stopped with SIGSTOP for a few seconds, or killed and restarted;
- a connection storm: STORM_CONNS (5000) clients connect at once and each sends a PING;
- slow readers: clients pipeline GETs of a large value and never read (the proxy must
  cut each at `client_output_buffer_limit`);
- proxy.yaml is rewritten (the default read budget and a rule change; a live reload).

The load: writers SET unique keys `ack:<writer>:<n>` under a durable rule (acknowledged
once a replica holds them too) and record each acknowledged write; other writers SET
plain `w:<n>` keys; readers GET recent keys. At the end every acknowledged durable write
is looked up on the final master.

Report: requests, errors by cause (reads, writes), reads failed (target 0: a master or
a replica could always answer), the proxy's peak RSS (VmHWM) against the configured
output limits, acknowledged durable writes lost (target 0), plain writes lost (Redis
replicates those asynchronously: a killed master may take the latest with it). Exits
non-zero when a target is missed or the proxy died.

    CHAOS_SECS=600 scripts/chaos.sh
"""

import os
import random
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "chaos"
SECS = float(os.environ.get("CHAOS_SECS", "600"))
STORM_CONNS = int(os.environ.get("STORM_CONNS", "5000"))
SLOW_READERS = int(os.environ.get("SLOW_READERS", "2"))
BIG_VALUE = int(os.environ.get("BIG_VALUE", str(4 << 20)))
OUTPUT_LIMIT_MB = int(os.environ.get("OUTPUT_LIMIT_MB", "64"))
SEED = int(os.environ.get("SEED", str(int(time.time()))))
BIN = os.environ.get("REDSPLIT_BIN", os.path.join(ROOT, "target", "release", "redsplit"))


class Closed(Exception):
    """The connection closed or failed."""


class Err(str):
    """An error reply."""


class Resp:
    """A minimal blocking RESP2 client."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _fill(self):
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise Closed("timeout") from None
        except OSError as e:
            raise Closed(str(e)) from None
        if not chunk:
            raise Closed("closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Err(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise Closed(f"unexpected reply {line[:40]!r}")

    def cmd(self, *args):
        try:
            self.sock.sendall(self.encode(*args))
        except OSError as e:
            raise Closed(str(e)) from None
        return self.read()


def try_cmd(port, *args, timeout=2.0):
    try:
        c = Resp(port, timeout)
        try:
            return c.cmd(*args)
        finally:
            c.close()
    except (OSError, Closed, ValueError):
        return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_until(what, timeout, cond, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    log(f"gave up waiting: {what}")
    return False


def rss_kb(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cause(text):
    """An error message reduced to its cause (numbers and addresses dropped)."""
    words = []
    for w in text.split()[:8]:
        if any(ch.isdigit() for ch in w):
            w = "#"
        words.append(w)
    return " ".join(words)


class World:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="redsplit-chaos-")
        self.procs = {}
        self.ports = {n: free_port() for n in ("r0", "r1", "r2")}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.conf = os.path.join(self.work, "proxy.yaml")
        self.budget = 1000

    def spawn(self, name, argv):
        logf = open(os.path.join(self.work, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, cwd=self.work)
        self.procs[name] = p
        return p

    def start_redis(self, name, replica_of=None):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        argv = ["redis-server", "--port", str(self.ports[name]), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", d, "--maxclients", "20000",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if replica_of:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.spawn(name, argv)
        wait_until(f"{name} answers", 20, lambda: try_cmd(self.ports[name], "PING") == "PONG")

    def start_sentinels(self):
        for i, port in enumerate(self.sentinel_ports):
            d = os.path.join(self.work, f"sentinel{i}")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                        "sentinel resolve-hostnames no\nsentinel announce-ip 127.0.0.1\n"
                        f"sentinel monitor {NAME} 127.0.0.1 {self.ports['r0']} 2\n"
                        f"sentinel down-after-milliseconds {NAME} 500\n"
                        f"sentinel failover-timeout {NAME} 3000\n"
                        f"sentinel parallel-syncs {NAME} 1\n")
            self.spawn(f"sentinel{i}", ["redis-sentinel", conf])
        for port in self.sentinel_ports:
            wait_until("a Sentinel sees both replicas", 30, lambda port=port: len(
                try_cmd(port, "SENTINEL", "REPLICAS", NAME) or []) == 2)

    def write_conf(self, budget, strict_rule):
        addrs = ", ".join(f'"127.0.0.1:{p}"' for p in self.sentinel_ports)
        rules = [
            "    - {name: acked, keys: ['ack:*'], consistency: master, "
            "wait: {replicas: 1, timeout_ms: 2000}}",
        ]
        if strict_rule:
            rules.append("    - {name: fresh, keys: ['w:1*'], consistency: replica, "
                         "max_lag_ms: 200}")
        text = (
            f'listen: "127.0.0.1:{self.proxy_port}"\n'
            f'admin: {{listen: "127.0.0.1:{self.admin_port}"}}\n'
            "backend:\n"
            f"  sentinel: {{addresses: [{addrs}], master_name: {NAME}, refresh_ms: 200}}\n"
            "  command_timeout_ms: 3000\n"
            "replication: {poll_interval_ms: 50}\n"
            "routing:\n"
            f"  default: {{consistency: replica, max_lag_ms: {budget}}}\n"
            "  rules:\n" + "\n".join(rules) + "\n"
            "limits:\n"
            "  max_clients: 20000\n"
            f"  client_output_buffer_limit: {OUTPUT_LIMIT_MB}mb\n"
        )
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf)

    def start_proxy(self):
        self.write_conf(self.budget, False)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        logf = open(os.path.join(self.work, "redsplit.log"), "ab")
        self.procs["redsplit"] = subprocess.Popen(
            [BIN, "run", "--config", self.conf], stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.work, env=env)
        wait_until("redsplit writes", 30,
                   lambda: try_cmd(self.proxy_port, "SET", "chaos:probe", "1") == "OK")

    def proxy_pid(self):
        return self.procs["redsplit"].pid

    def proxy_alive(self):
        return self.procs["redsplit"].poll() is None

    def master_name(self):
        """The server that is the master: the only live one whose own `INFO` says
        `role:master`, and that a majority of the Sentinels name (during a switch the
        two may disagree: then none)."""
        seen = Counter()
        for port in self.sentinel_ports:
            v = try_cmd(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)
            if isinstance(v, list) and len(v) == 2:
                seen[int(v[1])] += 1
        if not seen:
            return None
        port, n = seen.most_common(1)[0]
        if n < 2:
            return None
        masters = []
        for name, p in self.ports.items():
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            info = try_cmd(p, "INFO", "replication")
            if isinstance(info, str) and "role:master" in info:
                masters.append(name)
        name = next((k for k, p in self.ports.items() if p == port), None)
        return name if masters == [name] else None

    def replicas(self, m):
        return [n for n in self.ports if n != m]

    def settled(self, timeout=60):
        """Sentinel agrees on a master that says so, both others replicate from it with
        their link up, and the proxy writes."""
        def ok():
            m = self.master_name()
            if m is None:
                return False
            info = try_cmd(self.ports[m], "INFO", "replication")
            if not isinstance(info, str) or "role:master" not in info:
                return False
            if info.count("state=online") < 2:
                return False
            for r in self.replicas(m):
                ri = try_cmd(self.ports[r], "INFO", "replication")
                if not isinstance(ri, str) or "master_link_status:up" not in ri:
                    return False
            return try_cmd(self.proxy_port, "SET", "chaos:probe", "1") == "OK"
        return wait_until("the topology settles", timeout, ok, interval=0.2)

    def close(self):
        for p in self.procs.values():
            try:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reads = 0
        self.writes = 0
        self.read_errors = Counter()
        self.write_errors = Counter()
        self.acked = []
        # When each durable write was acknowledged (wall clock, as the log prints it).
        self.acked_at = []
        self.plain_acked = []

    def add(self, read, err=None):
        with self.lock:
            if read:
                self.reads += 1
                if err:
                    self.read_errors[cause(err)] += 1
            else:
                self.writes += 1
                if err:
                    self.write_errors[cause(err)] += 1


def client_loop(world, stats, stop, step):
    """Run `step(conn)` until `stop`; it returns (read?, error or None). Reconnects after
    a broken connection."""
    conn = None
    while not stop.is_set():
        if conn is None:
            try:
                conn = Resp(world.proxy_port, timeout=5.0)
            except OSError as e:
                stats.add(True, f"connect: {e}")
                time.sleep(0.05)
                continue
        try:
            read, err = step(conn)
        except Closed as e:
            stats.add(True, f"connection: {e}")
            conn.close()
            conn = None
            continue
        stats.add(read, err)
        time.sleep(0.002)


def writer(world, stats, stop, wid, durable):
    n = [0]

    def step(c):
        n[0] += 1
        key = f"ack:{wid}:{n[0]}" if durable else f"w:{wid}:{n[0]}"
        r = c.cmd("SET", key, n[0])
        if r == "OK":
            with stats.lock:
                if durable:
                    stats.acked.append((key, str(n[0])))
                    stats.acked_at.append(time.strftime("%H:%M:%S"))
                else:
                    stats.plain_acked.append((key, str(n[0])))
            return False, None
        return False, str(r)

    client_loop(world, stats, stop, step)


def reader(world, stats, stop, rid):
    rnd = random.Random(SEED + rid)

    def step(c):
        with stats.lock:
            pool = stats.plain_acked if stats.plain_acked else [("w:none", None)]
            key = pool[-1 - rnd.randrange(min(len(pool), 1000))][0]
        r = c.cmd("GET", key)
        return True, (str(r) if isinstance(r, Err) else None)

    client_loop(world, stats, stop, step)


def storm(world, n):
    """`n` connections opened at once, a PING each; returns (answered, seconds)."""
    sel = selectors.DefaultSelector()
    socks = []
    start = time.monotonic()
    answered = 0
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", world.proxy_port))
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, 0)
        deadline = start + 60
        while answered < n and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                if key.data == 0:
                    sel.unregister(s)
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        continue
                    s.sendall(Resp.encode("PING"))
                    sel.register(s, selectors.EVENT_READ, 1)
                else:
                    try:
                        data = s.recv(64)
                    except OSError:
                        data = b""
                    sel.unregister(s)
                    if data.startswith(b"+PONG"):
                        answered += 1
    finally:
        sel.close()
        for s in socks:
            s.close()
    return answered, time.monotonic() - start


def limited(world):
    """The proxy's count of clients cut at a buffer limit (/metrics)."""
    try:
        c = socket.create_connection(("127.0.0.1", world.admin_port), timeout=5)
        c.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        c.close()
    except OSError:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("redsplit_clients_limited_total "):
            return int(float(line.split()[1]))
    return None


def slow_readers(world, k):
    """`k` clients that pipeline 64 GETs of a big value and never read: returns how many
    the proxy cut (at its output buffer limit) within 30 s."""
    before = limited(world) or 0
    socks = []
    for _ in range(k):
        s = socket.create_connection(("127.0.0.1", world.proxy_port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        socks.append(s)
    req = Resp.encode("GET", "chaos:big") * 64
    for s in socks:
        try:
            s.sendall(req)
        except OSError:
            pass
    wait_until("the slow readers are cut", 30,
               lambda: (limited(world) or 0) - before >= k, interval=0.1)
    cut = (limited(world) or 0) - before
    for s in socks:
        s.close()
    return cut


def main():
    for tool in ("redis-server", "redis-sentinel"):
        if not shutil.which(tool):
            print(f"chaos: {tool} is needed", file=sys.stderr)
            return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    rnd = random.Random(SEED)
    world = World()
    log(f"chaos: {SECS:.0f} s, seed {SEED}, work dir {world.work}")
    stop = threading.Event()
    threads = []
    events = Counter()
    peak_sample = [0]
    try:
        world.start_redis("r0")
        world.start_redis("r1", world.ports["r0"])
        world.start_redis("r2", world.ports["r0"])
        world.start_sentinels()
        world.start_proxy()
        world.settled()
        big = "b" * BIG_VALUE
        stats = Stats()
        for i in range(2):
            threads.append(threading.Thread(target=writer, args=(world, stats, stop, i, True)))
        threads.append(threading.Thread(target=writer, args=(world, stats, stop, 9, False)))
        for i in range(3):
            threads.append(threading.Thread(target=reader, args=(world, stats, stop, i)))

        def sampler():
            while not stop.is_set():
                peak_sample[0] = max(peak_sample[0], rss_kb(world.proxy_pid()))
                time.sleep(0.1)

        threads.append(threading.Thread(target=sampler))
        for t in threads:
            t.start()
        started = time.monotonic()
        end = started + SECS
        kinds = ["kill_master", "sentinel_failover", "replica_stop", "replica_restart",
                 "storm", "slow_readers", "config_edit"]
        i = 0
        while time.monotonic() < end:
            time.sleep(rnd.uniform(2, 5))
            if time.monotonic() >= end:
                break
            kind = kinds[i % len(kinds)] if i < len(kinds) else rnd.choice(kinds)
            i += 1
            m = world.master_name()
            if m is None and kind in ("kill_master", "sentinel_failover", "replica_stop",
                                      "replica_restart"):
                world.settled()
                continue
            events[kind] += 1
            t0 = time.monotonic()
            if kind == "kill_master":
                world.procs[m].kill()
                world.procs[m].wait()
                wait_until("Sentinel fails over", 45, lambda: world.master_name() not in (None, m))
                new = None
                wait_until("a new master", 60, lambda: world.master_name() not in (None, m))
                new = world.master_name()
                # Back as a replica of the new one (empty: no persistence), never as a
                # second master.
                world.start_redis(m, world.ports[new] if new else world.ports[m])
                log(f"killed master {m}; new master {new} after {time.monotonic() - t0:.1f} s")
                world.settled()
            elif kind == "sentinel_failover":
                r = try_cmd(world.sentinel_ports[rnd.randrange(3)], "SENTINEL", "FAILOVER", NAME)
                wait_until("Sentinel fails over", 45, lambda: world.master_name() not in (None, m))
                log(f"SENTINEL FAILOVER ({r}): {m} -> {world.master_name()} "
                    f"after {time.monotonic() - t0:.1f} s")
                world.settled()
            elif kind == "replica_stop":
                r = rnd.choice(world.replicas(m))
                os.kill(world.procs[r].pid, signal.SIGSTOP)
                time.sleep(rnd.uniform(1, 4))
                os.kill(world.procs[r].pid, signal.SIGCONT)
                log(f"replica {r} stopped for {time.monotonic() - t0:.1f} s")
                world.settled()
            elif kind == "replica_restart":
                r = rnd.choice(world.replicas(m))
                world.procs[r].kill()
                world.procs[r].wait()
                time.sleep(rnd.uniform(0.5, 3))
                world.start_redis(r, world.ports[m])
                log(f"replica {r} killed and restarted after {time.monotonic() - t0:.1f} s")
                world.settled()
            elif kind == "storm":
                n, secs = storm(world, STORM_CONNS)
                log(f"storm: {n}/{STORM_CONNS} connections answered a PING in {secs:.2f} s")
                events["storm_unanswered"] += STORM_CONNS - n
            elif kind == "slow_readers":
                try_cmd(world.proxy_port, "SET", "chaos:big", big, timeout=10)
                cut = slow_readers(world, SLOW_READERS)
                log(f"slow readers: {cut}/{SLOW_READERS} cut")
                events["slow_readers_not_cut"] += SLOW_READERS - cut
            elif kind == "config_edit":
                world.budget = rnd.choice([500, 1000, 2000])
                world.write_conf(world.budget, rnd.random() < 0.5)
                log(f"proxy.yaml rewritten (budget {world.budget} ms)")
            if not world.proxy_alive():
                log("the proxy died")
                break
        stop.set()
        for t in threads:
            t.join()
        alive = world.proxy_alive()
        world.settled()
        m = world.master_name()
        lost = []
        plain_lost = 0
        if m is not None:
            c = Resp(world.ports[m], timeout=30)
            for chunk in range(0, len(stats.acked), 1000):
                part = stats.acked[chunk:chunk + 1000]
                vals = c.cmd("MGET", *[k for k, _ in part])
                lost += [(k, stats.acked_at[chunk + i]) for i, ((k, v), got)
                         in enumerate(zip(part, vals)) if got != v]
            for chunk in range(0, len(stats.plain_acked), 1000):
                part = stats.plain_acked[chunk:chunk + 1000]
                vals = c.cmd("MGET", *[k for k, _ in part])
                plain_lost += sum(1 for (k, v), got in zip(part, vals) if got != v)
            c.close()
        hwm = rss_kb(world.proxy_pid(), "VmHWM") if alive else 0
        reads_failed = sum(stats.read_errors.values())
        elapsed = time.monotonic() - started
        print()
        print(f"chaos run: {elapsed:.0f} s, seed {SEED}")
        print("  events: " + ", ".join(f"{k} {v}" for k, v in sorted(events.items())))
        print(f"  requests: {stats.reads} reads, {stats.writes} writes "
              f"({(stats.reads + stats.writes) / max(elapsed, 1):.0f}/s)")
        print(f"  reads failed: {reads_failed} (target 0)")
        for k, v in stats.read_errors.most_common():
            print(f"    {v:6d}  {k}")
        print(f"  writes failed: {sum(stats.write_errors.values())}")
        for k, v in stats.write_errors.most_common():
            print(f"    {v:6d}  {k}")
        print(f"  acknowledged durable writes: {len(stats.acked)}, lost on the final "
              f"master {m}: {len(lost)} (target 0)")
        for k, at in lost[:10]:
            # Against the event log above: which failover took it, and what the
            # replicas were doing then.
            print(f"    {k}, acknowledged at {at}")
        print(f"  acknowledged plain writes: {len(stats.plain_acked)}, not on the final "
              f"master: {plain_lost} (asynchronous replication)")
        print(f"  proxy peak RSS: {hwm / 1024:.0f} MB (VmHWM; sampled {peak_sample[0] / 1024:.0f}"
              f" MB); output limit {OUTPUT_LIMIT_MB} MB x {SLOW_READERS} slow readers = "
              f"{OUTPUT_LIMIT_MB * SLOW_READERS} MB, big value {BIG_VALUE >> 20} MB")
        print(f"  proxy alive at the end: {alive}")
        ok = (alive and reads_failed == 0 and not lost
              and events["slow_readers_not_cut"] == 0)
        print(f"  targets met: {ok}")
        return 0 if ok else 1
    finally:
        stop.set()
        world.close()
        log(f"logs in {world.work}")


if __name__ == "__main__":
    sys.exit(main())
