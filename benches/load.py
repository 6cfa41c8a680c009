#!/usr/bin/env python3
"""Load benchmark: redsplit side by side with direct Redis, twemproxy and predixy.

Starts, on free ports in a temp dir: a Redis master and two replicas (no persistence),
`nutcracker` in front of the master, a bare TCP relay in front of the master
(`examples/relay.rs`: one upstream connection per client, bytes copied unparsed: what
the extra hop alone costs on this machine, with no protocol work), with --predixy PATH
predixy (one worker thread) reading from the replicas and predixy reading from the
master, redsplit with replica reads (`routing.default`: replica, 1000 ms) and redsplit
with every read on the master (`consistency: master`). Then, for every cell of the
matrix (GET/SET x clients {1,50,500} x pipeline {1,16} x value {16 B, 4 KB}), runs
`redis-benchmark` against every target, interleaved within each round (the order
rotates every round), for ROUNDS rounds, and prints one table of medians: ops/s with
its min-max, p50, p99, the proxy's CPU per operation (utime+stime from /proc/PID/stat
before and after each run), the ratios to direct, to predixy (with their min-max over
the rounds), to nutcracker and to the relay, p99 over direct's and predixy's, CPU over
predixy's, and whether each target of the performance issue is met.

Three more sections run by default: memory per client connection (RSS of a fresh
redsplit, predixy and nutcracker before and after opening IDLE_CONNS idle connections,
and after each has sent one PING and gone idle long enough for redsplit to release its
buffers),
throughput of one cell with `workers: 1` (one event loop, the default) against
`workers: 2` (a two-thread runtime), and `cluster`: a Redis Cluster (3 masters with a
replica each) behind redsplit (`backend.cluster`, replica reads) and, with --predixy,
predixy (`ClusterServerPool`, replica reads), the CLUSTER_CELLS cells interleaved with
the single-master redsplit, in one table of ops/s, their ratio, CPU per operation and
redsplit's CPU per operation over its single-master figure. A `profile` section, on
request, runs `perf record` on redsplit (or PROFILE_TARGET) under one cell and sorts its self time into
kernel, parsing, routing, copying, allocator and runtime, then counts its system calls
per request with `perf stat` on the syscall tracepoints. A `syscalls` section, on
request, counts system calls, context switches and CPU per request of each proxy in a
few cells (SYSCALLS_CELLS, SYSCALLS_TARGETS).

Usage (from the repository root):
    benches/load.py                 # full matrix, 5 rounds (takes ~20-30 min)
    QUICK=1 benches/load.py         # smoke run: 1 round, small N, 16 B cells only
    benches/load.py --rounds 7 --n 200000 --sections matrix
    SECTIONS=profile benches/load.py   # where redsplit's time goes (needs perf)
    benches/load.py --predixy /path/to/predixy   # predixy as a peer (env PREDIXY)
    SECTIONS=syscalls PREDIXY=/path/to/predixy benches/load.py   # syscalls per request
    SECTIONS=cluster PREDIXY=/path/to/predixy benches/load.py    # Redis Cluster row
    benches/load.py --help

Every option also reads an environment variable of the same name in capitals
(ROUNDS, N, N_PIPELINED, QUICK, WORKERS, KEYSPACE, IDLE_CONNS, SECTIONS, PREDIXY, KEEP,
...).
Raw per-run figures go to target/load-bench/ as CSV, next to a copy of the table.

Needs: redis-server, redis-benchmark (Redis 7), nutcracker, cargo, Linux /proc; redis-cli
for the cluster section; perf for the profile and syscalls sections; predixy (optional)
built as benches/README.md says.
"""

import argparse
import csv
import ctypes
import datetime as dt
import io
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

OPS = ("get", "set")
CLIENTS = (1, 50, 500)
PIPELINES = (1, 16)
VALUES = (16, 4096)
# Every target a section can run against, in table order: the peers (direct Redis,
# twemproxy, the bare relay, predixy) and redsplit, each in front of the same master and
# replicas. `World.start_target` starts any of them (a fresh one under another name with
# `name=`), `World.start_targets` the set a run has (predixy only when its binary is
# given); a section reuses them by name.
TARGETS = ("direct", "nutcracker", "relay", "predixy-replica", "predixy-master",
           "redsplit-replica", "redsplit-master")
REDSPLIT_TARGETS = ("redsplit-replica", "redsplit-master")
PREDIXY_TARGETS = ("predixy-replica", "predixy-master")
# The cluster section's proxies, in front of a Redis Cluster (World.start_cluster) instead
# of the master and replicas; started by `World.start_target` like the others, but only
# by that section (not part of TARGETS, which every run starts). Their CPU per operation
# is compared with CLUSTER_BASELINE's, redsplit in front of the single master.
CLUSTER_TARGETS = ("redsplit-cluster", "predixy-cluster")
CLUSTER_BASELINE = "redsplit-replica"
# Targets whose GETs go to the replicas: the replicas' GET count confirms it per run.
REPLICA_READ_TARGETS = ("redsplit-replica", "predixy-replica") + CLUSTER_TARGETS
# The same routing in predixy, which redsplit's ratio to predixy compares against; the
# master-only proxies compare against predixy with every read on the master.
PREDIXY_PEER = {
    "redsplit-replica": "predixy-replica",
    "redsplit-master": "predixy-master",
    "nutcracker": "predixy-master",
    "relay": "predixy-master",
}

# The targets.
MIN_VS_DIRECT = 0.75
MIN_VS_DIRECT_CLIENT_BOUND = 0.9  # 50 and 500 clients, pipeline 1
MIN_VS_NUTCRACKER_PIPELINED = 2.5  # pipeline 16
MAX_P99_VS_DIRECT = 2.0
MAX_CPU_US_PER_OP = 0.8  # 50 clients, pipeline 16, 16 B
MAX_IDLE_BYTES = 512
MAX_SERVED_IDLE_BYTES = 2048
# Against predixy (when it runs): throughput, p99 and proxy CPU per operation; and
# against the bare relay.
MIN_VS_PREDIXY = 1.1
MAX_P99_VS_PREDIXY = 1.0
MAX_CPU_VS_PREDIXY = 0.8
MIN_VS_RELAY = 1.0
# redsplit in front of a Redis Cluster: CPU per operation over its single-master figure.
MAX_CLUSTER_CPU_VS_SINGLE = 1.2

# The cluster section's Redis Cluster: masters, replicas of each, the offset of a node's
# cluster bus port from its client port (Redis's default), how often redsplit re-reads
# the slot map.
CLUSTER_MASTERS = 3
CLUSTER_REPLICAS_PER_MASTER = 1
CLUSTER_BUS_OFFSET = 10000
CLUSTER_SLOTS = 16384
CLUSTER_REFRESH_MS = 2000

# How long to wait for processes and replication, and how often to look.
START_TIMEOUT = 20.0
SYNC_TIMEOUT = 60.0
POLL = 0.02


class BenchError(Exception):
    """A failure that stops the benchmark, with a message saying what went wrong."""


# --------------------------------------------------------------------------- helpers


def log(msg):
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def wait_until(what, timeout, cond, interval=POLL):
    """Poll `cond` until it returns a true value (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port():
    """A free port whose cluster bus port (+CLUSTER_BUS_OFFSET) is free too."""
    for _ in range(200):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
        except OSError:
            continue
        return port
    raise BenchError("no free port with a free cluster bus port")


def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


CRC16_TABLE = _crc16_table()


def key_slot(key):
    """Redis Cluster's slot of `key` (bytes): CRC16/XMODEM of the key, or of its hash
    tag `{...}` when it has a non-empty one, mod 16384."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ CRC16_TABLE[(crc >> 8) ^ b]
    return crc % CLUSTER_SLOTS


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _die_with_parent():
    # PR_SET_PDEATHSIG: children die with this script even if it is killed hard.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


# ------------------------------------------------------------------------------ RESP


class Resp:
    """A minimal blocking RESP client, enough for setup and checks."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise BenchError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"(", b","):
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"_":
            return None
        if kind == b"#":
            return rest == b"t"
        if kind in (b"$", b"=", b"!"):
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data.decode(errors="replace")
        if kind in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        if kind == b"%":
            return [self.read() for _ in range(2 * int(rest))]
        raise BenchError(f"unexpected reply line {line!r}")

    def cmd(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.read() for _ in commands]


class RespError(str):
    """An error reply."""


def flatten(v):
    if isinstance(v, list):
        for x in v:
            yield from flatten(x)
    else:
        yield v


FAILED = object()


def try_cmd(port, *args):
    """One command on a new connection; FAILED if the connection or the read fails."""
    try:
        with Resp(port, timeout=2.0) as c:
            return c.cmd(*args)
    except (OSError, BenchError, ValueError):
        return FAILED


def parse_info(text):
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def info(port, section):
    text = try_cmd(port, "INFO", section)
    if not isinstance(text, str) or isinstance(text, RespError):
        raise BenchError(f"INFO {section} on port {port} failed: {text!r}")
    return parse_info(text)


def get_calls(ports):
    """GET calls served by the Redis servers on `ports` (INFO commandstats)."""
    total = 0
    for port in ports:
        stats = info(port, "commandstats").get("cmdstat_get", "")
        for kv in stats.split(","):
            if kv.startswith("calls="):
                total += int(kv[len("calls="):])
    return total


# ------------------------------------------------------------------------- processes


class Proc:
    """A child process on a port, logging to a file in the work dir."""

    def __init__(self, name, argv, port, workdir, env=None):
        self.name = name
        self.port = port
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.logf = open(self.log_path, "wb")
        self.p = subprocess.Popen(
            argv,
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with status {self.p.returncode}; "
                f"its log ({self.log_path}) ends with:\n{self.tail()}"
            )

    def tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.alive():
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


def cpu_ticks(pid):
    """utime + stime of a whole process, in clock ticks (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid):
    """On-CPU time of every live thread, in ns (/proc/PID/task/*/schedstat): finer than
    ticks, but misses threads that exited. Recorded in the raw CSV as a cross-check."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return None
    return total


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def owns_listener(pid, port):
    """Whether process `pid` holds the socket listening on 127.0.0.1:`port` (and not
    some other process that took the port first)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
                    if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                        inodes.add(cols[9])
        except OSError:
            pass
    if not inodes:
        return False
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class World:
    """Every process of the benchmark; `close()` stops them all."""

    def __init__(self, args):
        self.args = args
        self.procs = []
        self.workdir = tempfile.mkdtemp(prefix="redsplit-load-")
        self.redsplit_bin = args.redsplit_bin
        self.master = None
        self.replicas = []
        self.ports = {}
        self.pids = {}
        self.value_size = None
        # The targets the matrix runs, in table order (start_targets).
        self.targets = []
        # The Redis Cluster (start_cluster): every node in start order, the masters (in
        # slot order) and replicas by role, each replica's master's port, the owner's
        # port of every slot, one key of the keyspace per master's port; and the targets
        # in front of it.
        self.cluster_nodes = []
        self.cluster_masters = []
        self.cluster_replicas = []
        self.cluster_master_of = {}
        self.slot_owner = []
        self.cluster_probe_keys = {}
        self.cluster_value_size = None
        self.clustered = set()

    def close(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {p.name}: {e}")
        self.procs = []
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self, name, make_argv, ready, env=None, attempts=5, port_fn=free_port):
        """Start on a free port (from `port_fn`), retrying on a new port if the process
        dies before it is ready (usually: the port was taken meanwhile)."""
        last = None
        for _ in range(attempts):
            port = port_fn()
            argv = make_argv(port)
            p = Proc(name, argv, port, self.workdir, env=env)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if not p.alive():
                    break
                if ready(port) and owns_listener(p.pid, port):
                    self.procs.append(p)
                    return p
                time.sleep(POLL)
            last = p.tail()
            p.stop()
        raise BenchError(f"{name} did not start; last log:\n{last}")

    # -- Redis

    def start_redis(self, name, replica_of=None, extra=None, port_fn=free_port):
        """A redis-server; `extra(port, dir)` gives more arguments."""
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)

        def argv(port):
            a = [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", d,
                "--maxclients", "20000",
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
            ]
            if replica_of:
                a += ["--replicaof", "127.0.0.1", str(replica_of)]
            if extra:
                a += extra(port, d)
            return a

        return self._start(name, argv, lambda port: try_cmd(port, "PING") == "PONG",
                           port_fn=port_fn)

    def start_replica_set(self):
        self.master = self.start_redis("master")
        self.replicas = [
            self.start_redis(f"replica{i}", replica_of=self.master.port) for i in range(2)
        ]
        for r in self.replicas:
            wait_until(
                f"{r.name} has its link to the master up",
                SYNC_TIMEOUT,
                lambda r=r: info(r.port, "replication").get("master_link_status") == "up",
            )
        # Make sure the replication stream flows (the master waits for a first ACK).
        try_cmd(self.master.port, "PUBLISH", "redsplit-load", "sync")
        self.wait_replicas_synced()
        self.ports["direct"] = self.master.port
        self.pids["direct"] = self.master.pid
        log(
            f"redis: master :{self.master.port}, replicas "
            + ", ".join(f":{r.port}" for r in self.replicas)
        )

    def wait_replicas_synced(self):
        target = int(info(self.master.port, "replication")["master_repl_offset"])
        for r in self.replicas:
            wait_until(
                f"{r.name} reaches master offset {target}",
                SYNC_TIMEOUT,
                lambda r=r: int(info(r.port, "replication").get("slave_repl_offset", -1))
                >= target,
            )

    # -- Redis Cluster

    def start_cluster(self, masters=CLUSTER_MASTERS, per_master=CLUSTER_REPLICAS_PER_MASTER):
        """A Redis Cluster of `masters` masters with `per_master` replicas each: nodes
        started with `--cluster-enabled yes` on free ports whose bus port (+10000) is
        free too, joined by `redis-cli --cluster create`, ready once every node reports
        `cluster_state:ok` with every slot assigned, every node gives the same `CLUSTER
        SLOTS`, and every replica has its link to its master up."""
        def extra(port, d):
            return ["--cluster-enabled", "yes",
                    "--cluster-config-file", os.path.join(d, f"nodes-{port}.conf")]

        self.cluster_nodes = [
            self.start_redis(f"cluster{i}", extra=extra, port_fn=free_cluster_port)
            for i in range(masters * (1 + per_master))
        ]
        argv = (["redis-cli", "--cluster", "create"]
                + [f"127.0.0.1:{n.port}" for n in self.cluster_nodes]
                + ["--cluster-replicas", str(per_master), "--cluster-yes"])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0 or f"All {CLUSTER_SLOTS} slots covered" not in r.stdout:
            raise BenchError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        why = {}

        def ready():
            why["last"] = self.cluster_not_ready(masters, per_master)
            return why["last"] is None

        try:
            wait_until("the cluster is ready", SYNC_TIMEOUT, ready, interval=0.1)
        except BenchError as e:
            raise BenchError(f"{e}: {why.get('last')}") from None
        # The slot computation here must be the cluster's (populate sends keys to owners).
        for k in ("key:000000000000", "key:000000004242", "{tag}key", "123456789"):
            got = try_cmd(self.cluster_nodes[0].port, "CLUSTER", "KEYSLOT", k)
            if got != key_slot(k.encode()):
                raise BenchError(f"slot of {k!r}: CLUSTER KEYSLOT {got!r}, here "
                                 f"{key_slot(k.encode())}")
        self.cluster_probe_keys = {}
        for i in range(self.args.keyspace):
            k = b"key:%012d" % i
            self.cluster_probe_keys.setdefault(self.slot_owner[key_slot(k)], k.decode())
            if len(self.cluster_probe_keys) == masters:
                break
        else:
            raise BenchError(f"KEYSPACE {self.args.keyspace} has no key on every master")
        self.wait_cluster_synced()
        log("cluster: " + ", ".join(
            f"master :{m.port} (replicas "
            + ", ".join(f":{r.port}" for r in self.cluster_replicas
                        if self.cluster_master_of[r.port] == m.port) + ")"
            for m in self.cluster_masters))

    def cluster_not_ready(self, masters, per_master):
        """Why the cluster is not ready yet, or None (and then its topology is set)."""
        views = {}
        master_of = {}
        for n in self.cluster_nodes:
            n.check_alive()
            text = try_cmd(n.port, "CLUSTER", "INFO")
            if not isinstance(text, str) or isinstance(text, RespError):
                return f"CLUSTER INFO on :{n.port} answered {text!r}"
            ci = parse_info(text)
            if ci.get("cluster_state") != "ok":
                return f":{n.port} reports cluster_state:{ci.get('cluster_state')}"
            if ci.get("cluster_slots_assigned") != str(CLUSTER_SLOTS) \
                    or ci.get("cluster_known_nodes") != str(len(self.cluster_nodes)):
                return (f":{n.port} knows {ci.get('cluster_known_nodes')} nodes and "
                        f"{ci.get('cluster_slots_assigned')} assigned slots")
            repl = info(n.port, "replication")
            if repl.get("role") == "slave":
                if repl.get("master_link_status") != "up":
                    return f"replica :{n.port} has master_link_status:{repl.get('master_link_status')}"
                master_of[n.port] = int(repl["master_port"])
            slots = try_cmd(n.port, "CLUSTER", "SLOTS")
            if not isinstance(slots, list):
                return f"CLUSTER SLOTS on :{n.port} answered {slots!r}"
            views[n.port] = sorted(
                (r[0], r[1], r[2][1], tuple(sorted(x[1] for x in r[3:]))) for r in slots)
        distinct = {tuple(v) for v in views.values()}
        if len(distinct) != 1:
            return f"the nodes disagree on CLUSTER SLOTS: {views}"
        view = views[self.cluster_nodes[0].port]
        by_port = {n.port: n for n in self.cluster_nodes}
        owners = []
        for _, _, m, _ in view:
            if m not in owners:
                owners.append(m)
        if len(owners) != masters:
            return f"{len(owners)} masters own slots, not {masters}"
        for _, _, m, reps in view:
            if sorted(p for p, mp in master_of.items() if mp == m) != list(reps) \
                    or len(reps) != per_master:
                return f"master :{m} has replicas {reps} in CLUSTER SLOTS, {master_of} by role"
        slot_owner = [None] * CLUSTER_SLOTS
        for start, end, m, _ in view:
            for slot in range(start, end + 1):
                slot_owner[slot] = m
        self.cluster_masters = [by_port[m] for m in owners]
        self.cluster_replicas = [by_port[p] for p in sorted(master_of)]
        self.cluster_master_of = master_of
        self.slot_owner = slot_owner
        return None

    def wait_cluster_synced(self):
        """Until every cluster replica has reached its master's replication offset."""
        offsets = {m.port: int(info(m.port, "replication")["master_repl_offset"])
                   for m in self.cluster_masters}
        for r in self.cluster_replicas:
            target = offsets[self.cluster_master_of[r.port]]
            wait_until(
                f"cluster replica :{r.port} reaches its master's offset {target}",
                SYNC_TIMEOUT,
                lambda r=r, target=target:
                int(info(r.port, "replication").get("slave_repl_offset", -1)) >= target,
            )

    def populate_cluster(self, size):
        """As `populate`, on the cluster: each key SET on the master owning its slot."""
        if self.cluster_value_size == size:
            return
        value = b"x" * size
        by_owner = {}
        for i in range(self.args.keyspace):
            k = b"key:%012d" % i
            by_owner.setdefault(self.slot_owner[key_slot(k)], []).append(k)
        batch = 1000
        for port, keys in by_owner.items():
            with Resp(port, timeout=30.0) as c:
                for start in range(0, len(keys), batch):
                    for r in c.pipeline([(b"SET", k, value) for k in keys[start:start + batch]]):
                        if r != "OK":
                            raise BenchError(f"populate cluster: SET on :{port} answered {r!r}")
        self.wait_cluster_synced()
        self.cluster_value_size = size
        log(f"populated the cluster's {self.args.keyspace} keys with {size}-byte values "
            + "(" + ", ".join(f":{p} {len(k)}" for p, k in by_owner.items()) + ")")

    def stop_cluster(self):
        """Stop the cluster's nodes and every target in front of it."""
        for name in list(self.clustered):
            pid = self.pids.pop(name, None)
            self.ports.pop(name, None)
            for p in [p for p in self.procs if p.pid == pid]:
                p.stop()
                self.procs.remove(p)
        self.clustered = set()
        for n in self.cluster_nodes:
            n.stop()
            if n in self.procs:
                self.procs.remove(n)
        self.cluster_nodes, self.cluster_masters, self.cluster_replicas = [], [], []
        self.cluster_master_of, self.slot_owner, self.cluster_probe_keys = {}, [], {}
        self.cluster_value_size = None

    # -- nutcracker

    def start_nutcracker(self, name="nutcracker"):
        conf = os.path.join(self.workdir, f"{name}.yml")
        stats = {}

        def argv(port):
            stats["port"] = free_port()
            with open(conf, "w") as f:
                f.write(
                    "redsplit:\n"
                    f"  listen: 127.0.0.1:{port}\n"
                    "  hash: fnv1a_64\n"
                    "  distribution: ketama\n"
                    "  redis: true\n"
                    "  preconnect: true\n"
                    "  auto_eject_hosts: false\n"
                    "  server_connections: 1\n"
                    "  servers:\n"
                    f"    - 127.0.0.1:{self.master.port}:1\n"
                )
            return [
                "nutcracker",
                "--conf-file", conf,
                "--stats-addr", "127.0.0.1",
                "--stats-port", str(stats["port"]),
                "--pid-file", os.path.join(self.workdir, f"{name}.pid"),
            ]

        def ready(port):
            # nutcracker answers nothing itself: a SET answered proves the whole path.
            return try_cmd(port, "SET", "redsplit-load:probe", "1") == "OK"

        p = self._start(name, argv, ready)
        log(f"{name} :{p.port}")
        return p

    # -- predixy

    def predixy_conf(self, port, reads, cluster=False):
        """predixy's config: one worker thread, one StandaloneServerPool whose one group
        lists the master first and then the replicas (`RefreshMethod fixed`: the first
        address is the master, the others its replicas). Reads go to the replicas
        (`reads == "replica"`: MasterReadPriority 0, StaticSlaveReadPriority 100) or
        all to the master (MasterReadPriority 100, StaticSlaveReadPriority 0). With
        `cluster`, a ClusterServerPool listing every cluster node instead (predixy reads
        the slot map and roles from `CLUSTER NODES`; the listed replicas are static),
        with the same read priorities."""
        master_prio, replica_prio = (0, 100) if reads == "replica" else (100, 0)
        head = (
            "Name redsplit-load\n"
            f"Bind 127.0.0.1:{port}\n"
            "WorkerThreads 1\n"
            "ClientTimeout 0\n"
            "LogVerbSample 0\n"
            "LogDebugSample 0\n"
            "LogInfoSample 0\n"
            "LogNoticeSample 1\n"
            "LogWarnSample 1\n"
            "LogErrorSample 1\n"
        )
        if cluster:
            servers = "".join(f"        + 127.0.0.1:{n.port}\n" for n in self.cluster_nodes)
            return (
                head
                + "ClusterServerPool {\n"
                f"    MasterReadPriority {master_prio}\n"
                f"    StaticSlaveReadPriority {replica_prio}\n"
                "    DynamicSlaveReadPriority 0\n"
                "    RefreshInterval 1\n"
                "    ServerTimeout 0\n"
                "    ServerFailureLimit 10\n"
                "    ServerRetryTimeout 1\n"
                "    Servers {\n"
                f"{servers}"
                "    }\n"
                "}\n"
            )
        servers = "".join(
            f"        + 127.0.0.1:{s.port}\n" for s in [self.master] + self.replicas
        )
        return (
            head
            + "StandaloneServerPool {\n"
            "    Hash crc16\n"
            "    Distribution modula\n"
            f"    MasterReadPriority {master_prio}\n"
            f"    StaticSlaveReadPriority {replica_prio}\n"
            "    DynamicSlaveReadPriority 0\n"
            "    RefreshMethod fixed\n"
            "    ServerTimeout 0\n"
            "    ServerFailureLimit 10\n"
            "    ServerRetryTimeout 1\n"
            "    Group shard001 {\n"
            f"{servers}"
            "    }\n"
            "}\n"
        )

    def start_predixy(self, name, reads, cluster=False):
        """predixy (`--predixy PATH`) in front of the master and the replicas (or, with
        `cluster`, the cluster), ready once a SET through it is answered and a GET
        through it reaches where its reads are configured to go (a replica, or the
        master)."""
        conf = os.path.join(self.workdir, f"{name}.conf")

        def argv(port):
            with open(conf, "w") as f:
                f.write(self.predixy_conf(port, reads, cluster))
            return [self.args.predixy, conf]

        def ready(port):
            # predixy answers PING itself: a SET answered proves the path to the master.
            return try_cmd(port, "SET", "redsplit-load:probe", "1") == "OK"

        p = self._start(name, argv, ready)
        if cluster:
            where = self.cluster_replicas if reads == "replica" else self.cluster_masters
        else:
            where = self.replicas if reads == "replica" else [self.master]
        ports = [r.port for r in where]

        def routed():
            p.check_alive()
            before = get_calls(ports)
            try_cmd(p.port, "GET", "redsplit-load:probe")
            return get_calls(ports) > before

        wait_until(f"{name}'s GETs reach the {reads}", SYNC_TIMEOUT, routed)
        log(f"{name} :{p.port} (WorkerThreads 1, reads: {reads}"
            + (", ClusterServerPool" if cluster else "") + ")")
        return p

    # -- the bare relay

    def start_relay(self, name="relay"):
        workers = str(self.args.workers)
        p = self._start(
            name,
            lambda port: [self.args.relay_bin, f"127.0.0.1:{port}",
                          f"127.0.0.1:{self.master.port}", workers],
            lambda port: try_cmd(port, "PING") == "PONG",
        )
        log(f"{name} :{p.port} (workers {workers})")
        return p

    # -- redsplit

    def redsplit_yaml(self, port, consistency, workers, cluster=False):
        default = (
            "{consistency: replica, max_lag_ms: 1000}"
            if consistency == "replica"
            else "{consistency: master}"
        )
        if cluster:
            seeds = ", ".join(f'"127.0.0.1:{n.port}"' for n in self.cluster_nodes)
            backend = f"  cluster: {{seeds: [{seeds}], refresh_ms: {CLUSTER_REFRESH_MS}}}\n"
        else:
            replicas = ", ".join(f"127.0.0.1:{r.port}" for r in self.replicas)
            backend = (f"  master: 127.0.0.1:{self.master.port}\n"
                       f"  replicas: [{replicas}]\n")
        return (
            f"listen: 127.0.0.1:{port}\n"
            f"workers: {workers}\n"
            "admin: {listen: ''}\n"
            "backend:\n"
            + backend
            + (f"  connections: {self.args.connections}\n" if self.args.connections else "")
            + "routing:\n"
            f"  default: {default}\n"
            "limits:\n"
            f"  max_clients: {max(self.args.idle_conns, self.args.storm_conns) + 1000}\n"
        )

    def start_redsplit(self, name, consistency, workers, cluster=False):
        """redsplit in front of the master and the replicas (or, with `cluster`, the
        cluster: `backend.cluster` with every node as a seed), ready once `PROXY EXPLAIN`
        of a GET routes as configured with every replica eligible (in front of the
        cluster: a GET of a key on each master, every replica of its shard eligible)."""
        conf = os.path.join(self.workdir, f"{name}.yaml")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")

        def argv(port):
            with open(conf, "w") as f:
                f.write(self.redsplit_yaml(port, consistency, workers, cluster))
            return [self.redsplit_bin, "run", "--config", conf]

        p = self._start(name, argv, lambda port: try_cmd(port, "PING") == "PONG", env=env)
        want = "fresh" if consistency == "replica" else "rule"
        if cluster:
            probes = [(k, sum(1 for mp in self.cluster_master_of.values() if mp == m))
                      for m, k in self.cluster_probe_keys.items()]
        else:
            probes = [("key:000000000000", len(self.replicas))]

        def routed():
            p.check_alive()
            for key, replicas in probes:
                v = try_cmd(p.port, "PROXY", "EXPLAIN", "GET", key)
                if not isinstance(v, list):
                    return False
                words = list(flatten(v))
                if want not in words:
                    return False
                # Replica reads: every replica (of the key's shard) in the read pool.
                if consistency == "replica" and words.count("eligible") != replicas:
                    return False
            return True

        wait_until(f"{name} routes reads as configured ({want})", SYNC_TIMEOUT, routed)
        log(f"{name} :{p.port} (workers {workers}, reads: {consistency}"
            + (f", cluster of {len(self.cluster_masters)} shards" if cluster else "") + ")")
        return p

    def add_target(self, target, proc):
        self.ports[target] = proc.port
        self.pids[target] = proc.pid

    def start_target(self, target, name=None, workers=None):
        """Start one proxy of TARGETS (direct Redis is the master itself), registered as
        a target under `name` (default: the target's own name); returns its Proc."""
        name = name or target
        workers = workers or self.args.workers
        if target == "nutcracker":
            p = self.start_nutcracker(name)
        elif target == "relay":
            p = self.start_relay(name)
        elif target in PREDIXY_TARGETS:
            p = self.start_predixy(name, target.split("-", 1)[1])
        elif target in REDSPLIT_TARGETS:
            p = self.start_redsplit(name, target.split("-", 1)[1], workers)
        elif target in CLUSTER_TARGETS:
            if not self.cluster_nodes:
                raise BenchError(f"{target} needs the cluster (start_cluster) first")
            if target == "predixy-cluster":
                p = self.start_predixy(name, "replica", cluster=True)
            else:
                p = self.start_redsplit(name, "replica", workers, cluster=True)
            self.clustered.add(name)
        else:
            raise BenchError(f"no way to start target {target!r}")
        self.add_target(name, p)
        return p

    def start_targets(self):
        """Every target this run has (predixy's only with --predixy), in table order;
        returns their names. The replica set must be up."""
        out = []
        for t in TARGETS:
            if t in PREDIXY_TARGETS and not self.args.predixy:
                continue
            if t != "direct":
                self.start_target(t)
            out.append(t)
        return out

    # -- data

    def populate(self, size):
        """SET every key redis-benchmark -r KEYSPACE can pick (key:%012d) to a value of
        `size` bytes, then wait for the replicas."""
        if self.value_size == size:
            return
        value = b"x" * size
        batch = 1000
        with Resp(self.master.port, timeout=30.0) as c:
            for start in range(0, self.args.keyspace, batch):
                cmds = [
                    (b"SET", b"key:%012d" % i, value)
                    for i in range(start, min(start + batch, self.args.keyspace))
                ]
                for r in c.pipeline(cmds):
                    if r != "OK":
                        raise BenchError(f"populate: SET answered {r!r}")
        self.wait_replicas_synced()
        self.value_size = size
        log(f"populated {self.args.keyspace} keys with {size}-byte values")

    def replica_gets(self, cluster=False):
        """GETs the replicas (the cluster's, with `cluster`) have served."""
        return get_calls(r.port for r in (self.cluster_replicas if cluster else self.replicas))


# ------------------------------------------------------------------- redis-benchmark


def run_benchmark(world, target, op, clients, pipeline, size, n):
    """One redis-benchmark run; returns a dict of its figures."""
    port = world.ports[target]
    pid = world.pids[target]
    proxy = target != "direct"
    clustered = target in world.clustered
    for p in world.procs:
        p.check_alive()
    if op == "get":
        if clustered:
            world.wait_cluster_synced()
        else:
            world.wait_replicas_synced()
    argv = [
        "redis-benchmark",
        "-h", "127.0.0.1",
        "-p", str(port),
        "-t", op,
        "-c", str(clients),
        "-P", str(pipeline),
        "-d", str(size),
        "-n", str(n),
        "-r", str(world.args.keyspace),
        "--csv",
    ]
    gets0 = (world.replica_gets(clustered)
             if target in REPLICA_READ_TARGETS and op == "get" else None)
    t0, ns0 = (cpu_ticks(pid), cpu_ns(pid)) if proxy else (None, None)
    wall0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=world.args.run_timeout)
    wall = time.monotonic() - wall0
    t1, ns1 = (cpu_ticks(pid), cpu_ns(pid)) if proxy else (None, None)
    if r.returncode != 0:
        raise BenchError(
            f"redis-benchmark against {target} failed ({r.returncode}): {' '.join(argv)}\n"
            f"{r.stdout}\n{r.stderr}"
        )
    rows = [row for row in csv.reader(io.StringIO(r.stdout)) if row and row[0] != "test"]
    if len(rows) != 1:
        raise BenchError(f"unexpected redis-benchmark output from {target}:\n{r.stdout}{r.stderr}")
    row = rows[0]
    res = {
        "target": target,
        "op": op,
        "clients": clients,
        "pipeline": pipeline,
        "size": size,
        "n": n,
        "rps": float(row[1]),
        "avg_ms": float(row[2]),
        "p50_ms": float(row[4]),
        "p95_ms": float(row[5]),
        "p99_ms": float(row[6]),
        "max_ms": float(row[7]),
        "wall_s": wall,
        "cpu_ticks": None,
        "cpu_us_op": None,
        "cpu_us_op_schedstat": None,
        "replica_share": None,
    }
    if proxy:
        res["cpu_ticks"] = t1 - t0
        res["cpu_us_op"] = (t1 - t0) * 1e6 / CLK_TCK / n
        if ns0 is not None and ns1 is not None:
            res["cpu_us_op_schedstat"] = (ns1 - ns0) / 1e3 / n
    if gets0 is not None:
        res["replica_share"] = (world.replica_gets(clustered) - gets0) / n
    return res


# ------------------------------------------------------------------------- sections


def cells(args):
    out = []
    for size in args.values:
        for op in OPS:
            for c in args.clients:
                for p in args.pipelines:
                    out.append((op, c, p, size))
    return out


def requests_for(args, pipeline):
    return args.n_pipelined if pipeline > 1 else args.n


def matrix(world, args, raw):
    return interleaved(world, args, raw, list(world.targets), cells(args), "matrix")


def interleaved(world, args, raw, targets, cell_list, section, populate=()):
    """Every cell of `cell_list` against every target, ROUNDS rounds, the order of the
    targets rotating every round, after a warm-up of each target per value size (the
    data set filled first, and by each of `populate(world, size)` too). Each run is added
    to `raw`, tagged with its round and `section`; returns {cell: {target: [runs]}}."""
    results = {}
    by_size = {}
    for cell in cell_list:
        by_size.setdefault(cell[3], []).append(cell)
    total = len(cell_list) * len(targets) * args.rounds
    done = 0
    prefix = "" if section == "matrix" else f"{section} "
    for size, size_cells in by_size.items():
        world.populate(size)
        for fill in populate:
            fill(world, size)
        # Warm every target (connections, pools, page cache) before counting.
        for t in targets:
            for op in OPS:
                run_benchmark(world, t, op, 50, 16, size, 20000)
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            for cell in size_cells:
                op, c, p, _ = cell
                for t in order:
                    res = run_benchmark(world, t, op, c, p, size, requests_for(args, p))
                    res["round"] = rnd + 1
                    res["section"] = section
                    raw.append(res)
                    results.setdefault(cell, {}).setdefault(t, []).append(res)
                    done += 1
                log(
                    f"{prefix}round {rnd + 1}/{args.rounds} {op.upper()} c={c} P={p} {size} B: "
                    + ", ".join(
                        f"{t} {results[cell][t][-1]['rps']:,.0f}" for t in targets
                    )
                    + f"  [{done}/{total}]"
                )
    return results


# Below this many clock ticks of proxy CPU in a run, /proc/PID/stat is too coarse (a
# tick is 10 ms) and the per-thread schedstat figure (ns) is shown instead, marked `*`.
MIN_CPU_TICKS = 100


def summarize(runs):
    ticks = median([r["cpu_ticks"] for r in runs])
    coarse = ticks is not None and ticks < MIN_CPU_TICKS
    fine = median([r["cpu_us_op_schedstat"] for r in runs]) if coarse else None
    rps = [r["rps"] for r in runs]
    return {
        "rps": median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50": median([r["p50_ms"] for r in runs]),
        "p99": median([r["p99_ms"] for r in runs]),
        "cpu": fine if fine is not None else median([r["cpu_us_op"] for r in runs]),
        "cpu_fine": fine is not None,
        "share": median([r["replica_share"] for r in runs]),
        "n": len(runs),
    }


def round_ratios(runs, base_runs):
    """ops/s over the base's, round by round (runs of one round ran side by side):
    (min, max) over the rounds both have, or None."""
    base = {r.get("round"): r["rps"] for r in base_runs}
    xs = [r["rps"] / base[r.get("round")] for r in runs if base.get(r.get("round"))]
    return (min(xs), max(xs)) if xs else None


def mark(ok):
    return "ok" if ok else "MISS"


def kops(x):
    return f"{x / 1000:.0f}k" if x >= 10000 else f"{x / 1000:.1f}k"


def matrix_table(results, args):
    """One table: per cell and target the medians over the rounds (ops/s with its
    min-max, p50, p99, proxy CPU per operation) and the ratios to direct Redis, to
    predixy (redsplit against predixy in the same read mode, with its min-max over the
    rounds), to twemproxy and to the bare relay, marked against the issue's targets."""
    lines = []
    checks = []
    hdr = (
        f"{'cell':<18} {'target':<16} {'ops/s':>9} {'min-max':>11} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'cpu us/op':>10} {'x direct':>9} {'x predixy':>10} "
        f"{'(min-max)':>11} {'x nutcr':>12} {'x relay':>9} {'p99/direct':>10} "
        f"{'p99/predixy':>11} {'cpu/predixy':>11}"
    )
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for cell in cells(args):
        if cell not in results:
            continue
        op, c, p, size = cell
        label = f"{op.upper()} c={c} P={p} {size_label(size)}"
        runs = results[cell]
        s = {t: summarize(runs[t]) for t in TARGETS if t in runs}
        d, nc, rl = s.get("direct"), s.get("nutcracker"), s.get("relay")
        first = True
        for t in TARGETS:
            if t not in s:
                continue
            x = s[t]
            col = {}
            cpu = "-"
            if x["cpu"] is not None:
                cpu = f"{x['cpu']:.2f}{'*' if x['cpu_fine'] else ''}"
            ours = t in REDSPLIT_TARGETS
            if d and t != "direct":
                rd = x["rps"] / d["rps"]
                col["d"] = f"{rd:.2f}"
                if ours:
                    need = MIN_VS_DIRECT_CLIENT_BOUND if (c >= 50 and p == 1) else MIN_VS_DIRECT
                    ok = rd >= need
                    checks.append((f"{label} {t} >= {need}x direct", ok))
                    col["d"] += f" {mark(ok)}"
                if d["p99"] > 0:
                    pr = x["p99"] / d["p99"]
                    col["p99d"] = f"{pr:.2f}"
                    if ours:
                        ok = pr <= MAX_P99_VS_DIRECT
                        checks.append((f"{label} {t} p99 <= {MAX_P99_VS_DIRECT}x direct", ok))
                        col["p99d"] += f" {mark(ok)}"
            peer = PREDIXY_PEER.get(t)
            px = s.get(peer) if peer else None
            if px:
                rp = x["rps"] / px["rps"]
                col["px"] = f"{rp:.2f}"
                spread = round_ratios(runs[t], runs[peer])
                if spread:
                    col["pxs"] = f"{spread[0]:.2f}-{spread[1]:.2f}"
                if px["p99"] > 0:
                    col["p99p"] = f"{x['p99'] / px['p99']:.2f}"
                if x["cpu"] is not None and px["cpu"]:
                    col["cpup"] = f"{x['cpu'] / px['cpu']:.2f}"
                if ours:
                    ok = rp >= MIN_VS_PREDIXY
                    checks.append((f"{label} {t} >= {MIN_VS_PREDIXY}x {peer}", ok))
                    col["px"] += f" {mark(ok)}"
                    if px["p99"] > 0:
                        ok = x["p99"] <= MAX_P99_VS_PREDIXY * px["p99"]
                        checks.append((f"{label} {t} p99 <= {peer}'s", ok))
                        col["p99p"] += f" {mark(ok)}"
                    if "cpup" in col:
                        ok = x["cpu"] <= MAX_CPU_VS_PREDIXY * px["cpu"]
                        checks.append(
                            (f"{label} {t} cpu <= {MAX_CPU_VS_PREDIXY}x {peer}'s", ok))
                        col["cpup"] += f" {mark(ok)}"
            if nc and t != "nutcracker" and t != "direct":
                rn = x["rps"] / nc["rps"]
                col["nc"] = f"{rn:.2f}"
                if ours and p > 1:
                    ok = rn >= MIN_VS_NUTCRACKER_PIPELINED
                    checks.append(
                        (f"{label} {t} >= {MIN_VS_NUTCRACKER_PIPELINED}x nutcracker", ok))
                    col["nc"] += f" {mark(ok)}"
            if rl and t not in ("relay", "direct"):
                rr = x["rps"] / rl["rps"]
                col["rl"] = f"{rr:.2f}"
                if ours:
                    ok = rr >= MIN_VS_RELAY
                    checks.append((f"{label} {t} >= {MIN_VS_RELAY}x relay", ok))
                    col["rl"] += f" {mark(ok)}"
            if ours and c == 50 and p == 16 and size == 16 and x["cpu"] is not None:
                ok = x["cpu"] <= MAX_CPU_US_PER_OP
                checks.append((f"{label} {t} cpu <= {MAX_CPU_US_PER_OP} us/op", ok))
                cpu += f" {mark(ok)}"
            spread = f"{kops(x['rps_min'])}-{kops(x['rps_max'])}"
            lines.append(
                f"{label if first else '':<18} {t:<16} {x['rps']:>9,.0f} {spread:>11} "
                f"{x['p50']:>7.3f} {x['p99']:>7.3f} {cpu:>10} {col.get('d', ''):>9} "
                f"{col.get('px', ''):>10} {col.get('pxs', ''):>11} {col.get('nc', ''):>12} "
                f"{col.get('rl', ''):>9} {col.get('p99d', ''):>10} {col.get('p99p', ''):>11} "
                f"{col.get('cpup', ''):>11}"
            )
            first = False
            if t in REPLICA_READ_TARGETS and op == "get" and x["share"] is not None \
                    and x["share"] < 0.99:
                lines.append(f"{'':<18} ^ only {x['share']:.0%} of these GETs reached a replica")
        lines.append("")
    return lines, checks


def size_label(size):
    return f"{size // 1024} KB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def memory(world, args, raw):
    """RSS per idle client connection of a fresh redsplit, predixy (with --predixy) and
    twemproxy, one after the other: before, with IDLE_CONNS new connections (just
    opened, and again once idle past redsplit's 2 s trim), right after each sent one
    PING, and once idle again past that trim."""
    targets = ["redsplit-replica"]
    if args.predixy:
        targets.append("predixy-replica")
    targets.append("nutcracker")
    rows = [memory_one(world, args, raw, t) for t in targets]
    n = args.idle_conns
    lines = [
        f"memory: RSS per client connection, {n} connections, each proxy a fresh process "
        f"(redsplit workers {args.workers}, predixy WorkerThreads 1)",
        f"  {'proxy':<16} {'before MB':>9} {'idle MB':>8} {'idle 2s MB':>10} "
        f"{'after PING MB':>13} {'idle again MB':>13} {'B/idle conn':>11} "
        f"{'B/idle 2s':>9} {'B/conn after PING':>17} {'B/conn idle again':>17}",
    ]
    checks = []
    for t, r in zip(targets, rows):
        idle = (r["rss_idle"] - r["rss_before"]) / n
        idle2 = (r["rss_idle_2s"] - r["rss_before"]) / n
        served = (r["rss_served"] - r["rss_before"]) / n
        again = (r["rss_served_idle"] - r["rss_before"]) / n
        m_idle = m_idle2 = m_again = ""
        if t in REDSPLIT_TARGETS:
            m_idle = f" {mark(idle <= MAX_IDLE_BYTES)}"
            m_idle2 = f" {mark(idle2 <= MAX_IDLE_BYTES)}"
            m_again = f" {mark(again <= MAX_SERVED_IDLE_BYTES)}"
            checks += [
                (f"memory per idle connection <= {MAX_IDLE_BYTES} B", idle <= MAX_IDLE_BYTES),
                (f"memory per connection idle past 2 s <= {MAX_IDLE_BYTES} B",
                 idle2 <= MAX_IDLE_BYTES),
                (f"memory per served idle connection <= {MAX_SERVED_IDLE_BYTES} B",
                 again <= MAX_SERVED_IDLE_BYTES),
            ]
        lines.append(
            f"  {t.split('-')[0]:<16} {r['rss_before'] / 1e6:>9.1f} {r['rss_idle'] / 1e6:>8.1f} "
            f"{r['rss_idle_2s'] / 1e6:>10.1f} "
            f"{r['rss_served'] / 1e6:>13.1f} {r['rss_served_idle'] / 1e6:>13.1f} "
            f"{idle:>7.0f}{m_idle:<4} {idle2:>5.0f}{m_idle2:<4} {served:>17.0f} "
            f"{again:>13.0f}{m_again:<4}"
        )
    lines.append(
        f"  targets (redsplit): <= {MAX_IDLE_BYTES} B per idle connection, <= "
        f"{MAX_SERVED_IDLE_BYTES} B per connection served and idle again"
    )
    return lines, checks


def memory_one(world, args, raw, target):
    """RSS of a fresh `target` with IDLE_CONNS connections, before and after serving."""
    name = f"{target.split('-')[0]}-mem"
    p = world.start_target(target, name=name)
    pid, n = p.pid, args.idle_conns
    # The readiness checks' connections close on their own: start from a still count.
    fds0 = settled(lambda: open_fds(pid))
    rss0 = settled_rss(pid)
    socks = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            socks.append(s)
            if i % 200 == 199:
                # Let the accept loop keep up: a connection the kernel completed while
                # the accept queue was full may never reach the proxy.
                wait_until("the proxy accepts the connections", 30,
                           lambda i=i: open_fds(pid) - fds0 >= i + 1 - 50)
        try:
            wait_until(f"the proxy holds {n} client connections", 60,
                       lambda: open_fds(pid) - fds0 >= n)
        except BenchError as e:
            ss = subprocess.run(["ss", "-s"], capture_output=True, text=True).stdout
            raise BenchError(f"{e} (it holds {open_fds(pid) - fds0}); its log ends with:\n"
                             f"{p.tail()}\nss -s:\n{ss}") from None
        rss1 = settled_rss(pid)
        # And once they have idled past redsplit's 2 s trim (into its parking lot).
        idle_at = time.monotonic()
        while time.monotonic() < idle_at + 3.5:
            time.sleep(0.1)
        rss1b = settled_rss(pid)
        ping = Resp.encode("PING")
        for s in socks:
            s.sendall(ping)
        sel = selectors.DefaultSelector()
        want = b"+PONG\r\n"
        got = {}
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            got[s] = b""
        pending = len(socks)
        deadline = time.monotonic() + 60
        while pending:
            if time.monotonic() > deadline:
                raise BenchError(f"{pending} connections did not get their PONG")
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(64)
                if not data:
                    raise BenchError("the proxy closed an idle connection")
                got[key.fileobj] += data
                if got[key.fileobj] == want:
                    sel.unregister(key.fileobj)
                    pending -= 1
                elif len(got[key.fileobj]) >= len(want):
                    raise BenchError(f"unexpected reply {got[key.fileobj]!r}")
        sel.close()
        served_at = time.monotonic()
        rss2 = rss_bytes(pid)
        # The proxy releases an idle client's buffers after 2 s idle (checked once a
        # second): wait past that, then until RSS stops moving.
        while time.monotonic() < served_at + 3.5:
            time.sleep(0.1)
        rss3 = settled_rss(pid)
        p.check_alive()
    finally:
        for s in socks:
            s.close()
    res = {
        "section": "memory",
        "target": target.split("-")[0],
        "n": n,
        "rss_before": rss0,
        "rss_idle": rss1,
        "rss_idle_2s": rss1b,
        "rss_served": rss2,
        "rss_served_idle": rss3,
    }
    raw.append(res)
    # This proxy's memory has served its purpose; it would only add noise.
    p.stop()
    world.procs.remove(p)
    return res


# The storm section's peers: name -> how to get the port of one to storm (started on
# demand). Another proxy joins by adding an entry.
def storm_peers(world, args):
    def redsplit():
        p = world.start_redsplit("redsplit-storm", "replica", args.workers)
        return p.port, p.pid

    def predixy():
        p = world.start_target("predixy-replica", "predixy-storm")
        return p.port, p.pid

    peers = {
        "direct": lambda: (world.master.port, world.master.pid),
        "redsplit": redsplit,
        "nutcracker": lambda: (world.ports["nutcracker"], world.pids["nutcracker"]),
    }
    if args.predixy:
        peers["predixy"] = predixy
    return peers


def storm_once(port, n, timeout=60.0):
    """Open `n` connections to `port` at once (non-blocking connects, all issued before
    any is waited for), send one PING on each as soon as it is connected, and return the
    seconds until every one has its PONG, and the seconds until every one was connected.
    Connections refused or reset are retried (the kernel's accept queue overflowed)."""
    sel = selectors.DefaultSelector()
    ping = Resp.encode("PING")
    want = b"+PONG\r\n"
    socks = {}
    retries = 0
    start = time.monotonic()

    def open_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks[s] = b""
        sel.register(s, selectors.EVENT_WRITE, "connecting")

    try:
        for _ in range(n):
            open_one()
        connected = 0
        answered = 0
        all_connected = None
        deadline = start + timeout
        while answered < n:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"storm on :{port}: {connected}/{n} connected, {answered} answered "
                    f"after {timeout:.0f} s"
                )
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                if key.data == "connecting":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    sel.unregister(s)
                    if err:
                        del socks[s]
                        s.close()
                        retries += 1
                        open_one()
                        continue
                    connected += 1
                    if connected == n:
                        all_connected = time.monotonic() - start
                    s.sendall(ping)
                    sel.register(s, selectors.EVENT_READ, "reading")
                    continue
                try:
                    data = s.recv(64)
                except ConnectionError:
                    data = b""
                if not data:
                    raise BenchError(f"storm on :{port}: a connection closed before its PONG")
                socks[s] += data
                if socks[s] == want:
                    sel.unregister(s)
                    answered += 1
                elif len(socks[s]) >= len(want):
                    raise BenchError(f"storm on :{port}: unexpected reply {socks[s]!r}")
        return time.monotonic() - start, all_connected, retries
    finally:
        sel.close()
        for s in socks:
            s.close()


def storm(world, args, raw):
    """Connection storms: STORM_CONNS connections opened at once against each peer, timed
    until all are connected and have answered one PING; the median of STORM_ROUNDS,
    peers interleaved."""
    n = args.storm_conns
    peers = storm_peers(world, args)
    ports = {}
    for name, get in peers.items():
        ports[name] = get()
    times = {name: [] for name in peers}
    for r in range(args.storm_rounds):
        order = list(peers)
        order = order[r % len(order):] + order[: r % len(order)]
        for name in order:
            port, pid = ports[name]
            # The previous storm's connections are gone before the next one.
            wait_until(f"{name} closed the last storm's connections", 60,
                       lambda pid=pid: open_fds(pid) < n // 10 + 200)
            total, conn, retries = storm_once(port, n)
            times[name].append(total)
            raw.append({"section": "storm", "target": name, "n": n, "round": r,
                        "seconds": f"{total:.4f}", "connected_s": f"{conn:.4f}",
                        "retries": retries})
            log(f"storm {name}: {n} connections answered in {total:.3f} s "
                f"(connected in {conn:.3f} s, {retries} retried)")
    med = {name: median(ts) for name, ts in times.items()}
    lines = [f"storm: {n} connections opened at once, each answered one PING "
             f"(median of {args.storm_rounds})"]
    for name in peers:
        ratio = med[name] / med["direct"] if med.get("direct") else float("nan")
        lines.append(f"  {name:<12} {med[name]:7.3f} s   x direct {ratio:5.2f}")
    # The goal: accepting is not redsplit's bottleneck; no slower than the other proxies.
    others = [med[k] for k in peers if k not in ("direct", "redsplit")]
    checks = []
    if others:
        best = min(others)
        ok = med["redsplit"] <= best * 1.1
        lines.append(f"  redsplit <= 1.1x the fastest other proxy ({best:.3f} s) {mark(ok)}")
        checks.append(("storm: redsplit within 1.1x of the fastest other proxy", ok))
    return lines, checks



def settled(measure, quiet=0.5, timeout=10.0):
    """`measure()` once it has not changed for `quiet` seconds (or after `timeout`)."""
    last = measure()
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = measure()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def settled_rss(pid):
    """RSS once it has stopped moving."""
    return settled(lambda: rss_bytes(pid))


def workers(world, args, raw):
    """One cell against redsplit with workers: 1 and workers: 2, interleaved."""
    op, c, p, size = args.workers_cell
    world.populate(size)
    w1 = world.start_target("redsplit-replica", name="redsplit-w1", workers=1)
    w2 = world.start_target("redsplit-replica", name="redsplit-w2", workers=2)
    targets = ["direct", "redsplit-w1", "redsplit-w2"]
    runs = {t: [] for t in targets}
    n = requests_for(args, p)
    for t in targets:
        run_benchmark(world, t, op, c, p, size, 20000)
    for rnd in range(args.rounds):
        order = targets[rnd % 3:] + targets[: rnd % 3]
        for t in order:
            res = run_benchmark(world, t, op, c, p, size, n)
            res["round"] = rnd + 1
            res["section"] = "workers"
            raw.append(res)
            runs[t].append(res)
    s = {t: summarize(runs[t]) for t in targets}
    label = f"{op.upper()} c={c} P={p} {size_label(size)}"
    lines = [f"workers: {label}, median of {args.rounds} interleaved rounds"]
    for t in targets:
        x = s[t]
        cpu = ""
        if x["cpu"] is not None:
            cpu = f"cpu {x['cpu']:.2f}{'*' if x['cpu_fine'] else ''} us/op"
        lines.append(
            f"  {t:<12} {x['rps']:>10,.0f} ops/s  p50 {x['p50']:.3f} ms  p99 {x['p99']:.3f} ms  {cpu}"
        )
    lines.append(
        f"  workers 2 / workers 1: {s['redsplit-w2']['rps'] / s['redsplit-w1']['rps']:.2f}x"
    )
    for proc in (w1, w2):
        proc.stop()
        world.procs.remove(proc)
    return lines


def cluster(world, args, raw):
    """A Redis Cluster (3 masters with a replica each) behind redsplit (`backend.cluster`,
    reads on replicas within 1000 ms, as redsplit-replica's) and, with --predixy, behind
    predixy (ClusterServerPool, reads on the replicas, one worker thread); each cell of
    CLUSTER_CELLS against both and against redsplit in front of the single master
    (CLUSTER_BASELINE, whose CPU per operation is the baseline), interleaved, the order
    rotating every round, ROUNDS rounds. The cluster and its proxies stop afterwards."""
    world.start_cluster()
    try:
        peers = ["redsplit-cluster"] + (["predixy-cluster"] if args.predixy else [])
        for t in peers:
            world.start_target(t)
        targets = peers + [CLUSTER_BASELINE]
        results = interleaved(
            world,
            args,
            raw,
            targets,
            args.cluster_cells,
            "cluster",
            populate=(lambda w, size: w.populate_cluster(size),),
        )
        masters = len(world.cluster_masters)
        per = len(world.cluster_replicas) // max(masters, 1)
    finally:
        world.stop_cluster()
    return cluster_table(results, args, masters, per)


def run_cpu(run, fine):
    """A run's proxy CPU per operation, from schedstat (`fine`) or from ticks."""
    return run["cpu_us_op_schedstat"] if fine else run["cpu_us_op"]


def round_cpu_ratios(runs, base_runs, fine):
    """CPU per operation over the base's, round by round, both from the same source:
    (min, max), or None."""
    base = {r.get("round"): run_cpu(r, fine) for r in base_runs}
    xs = [run_cpu(r, fine) / base[r.get("round")] for r in runs
          if run_cpu(r, fine) is not None and base.get(r.get("round"))]
    return (min(xs), max(xs)) if xs else None


def cluster_table(results, args, masters, per_master):
    """The cluster section's table: per cell, the medians of redsplit's and predixy's
    ops/s in front of the cluster with their min-max, redsplit over predixy (min-max
    over the rounds), each one's CPU per operation, redsplit's on the single master, and
    redsplit's in front of the cluster over that (min-max over the rounds), marked
    against MAX_CLUSTER_CPU_VS_SINGLE. Within a cell every CPU figure comes from the
    same source, so that their ratio compares like with like: schedstat (`*`) when any
    of the cell's targets had under MIN_CPU_TICKS ticks per run, else ticks."""
    rs, px, base = "redsplit-cluster", "predixy-cluster", CLUSTER_BASELINE
    lines = [
        f"cluster: {masters} masters with {per_master} replica(s) each; {rs}: "
        f"backend.cluster (refresh_ms {CLUSTER_REFRESH_MS}), reads on replicas within "
        f"1000 ms; "
        + (f"{px}: ClusterServerPool, reads on replicas, WorkerThreads 1; "
           if args.predixy else "")
        + f"single: {base} (one master, two replicas); medians of {args.rounds} "
        "interleaved rounds",
    ]
    hdr = (
        f"  {'cell':<18} {'redsplit ops/s':>14} {'min-max':>11} {'predixy ops/s':>13} "
        f"{'min-max':>11} {'x predixy':>9} {'(min-max)':>11} {'single ops/s':>12} "
        f"{'cpu us/op':>9} {'predixy cpu':>11} {'single cpu':>10} "
        f"{'cpu/single':>12} {'(min-max)':>11}"
    )
    lines += [hdr, "  " + "-" * (len(hdr) - 2)]
    checks = []
    notes = []

    def cpu_text(cpu, fine):
        return "-" if cpu is None else f"{cpu:.2f}{'*' if fine else ''}"

    for cell in args.cluster_cells:
        if cell not in results:
            continue
        op, c, p, size = cell
        label = f"{op.upper()} c={c} P={p} {size_label(size)}"
        runs = results[cell]
        s = {t: summarize(runs[t]) for t in runs}
        x, y, b = s.get(rs), s.get(px), s.get(base)
        fine = any(v["cpu_fine"] for v in s.values())
        cpu = {t: median([run_cpu(r, fine) for r in runs[t]]) for t in runs}
        col = {}
        if x:
            col["rs"] = f"{x['rps']:,.0f}"
            col["rss"] = f"{kops(x['rps_min'])}-{kops(x['rps_max'])}"
        if y:
            col["px"] = f"{y['rps']:,.0f}"
            col["pxs"] = f"{kops(y['rps_min'])}-{kops(y['rps_max'])}"
        if x and y:
            col["r"] = f"{x['rps'] / y['rps']:.2f}"
            spread = round_ratios(runs[rs], runs[px])
            if spread:
                col["rsp"] = f"{spread[0]:.2f}-{spread[1]:.2f}"
        if b:
            col["b"] = f"{b['rps']:,.0f}"
        if cpu.get(rs) is not None and cpu.get(base):
            ratio = cpu[rs] / cpu[base]
            ok = ratio <= MAX_CLUSTER_CPU_VS_SINGLE
            col["cr"] = f"{ratio:.2f} {mark(ok)}"
            checks.append((f"cluster {label} {rs} cpu/op <= {MAX_CLUSTER_CPU_VS_SINGLE}x "
                           f"{base}'s", ok))
            spread = round_cpu_ratios(runs[rs], runs[base], fine)
            if spread:
                col["crs"] = f"{spread[0]:.2f}-{spread[1]:.2f}"
        lines.append(
            f"  {label:<18} {col.get('rs', '-'):>14} {col.get('rss', ''):>11} "
            f"{col.get('px', '-'):>13} {col.get('pxs', ''):>11} {col.get('r', ''):>9} "
            f"{col.get('rsp', ''):>11} {col.get('b', '-'):>12} "
            f"{cpu_text(cpu.get(rs), fine):>9} {cpu_text(cpu.get(px), fine):>11} "
            f"{cpu_text(cpu.get(base), fine):>10} {col.get('cr', ''):>12} "
            f"{col.get('crs', ''):>11}"
        )
        if op == "get":
            for t in (rs, px, base):
                if t in s and s[t]["share"] is not None and s[t]["share"] < 0.99:
                    notes.append(f"  ^ {label}: only {s[t]['share']:.0%} of {t}'s GETs "
                                 "reached a replica")
    lines += notes
    lines.append(
        f"  cpu/single: {rs}'s CPU per operation over {base}'s in the same cell, target "
        f"<= {MAX_CLUSTER_CPU_VS_SINGLE}x" + ("" if args.predixy else
                                               "; predixy: not given (--predixy PATH)")
    )
    return lines, checks


class Perf:
    """A `perf record`/`perf stat` attached to a process, started with its events off and
    switched on through its control FIFO, so nothing is missed and nothing is guessed:
    `enable()` returns once perf acknowledges."""

    def __init__(self, workdir, name, argv):
        self.ctl = os.path.join(workdir, f"{name}.ctl")
        self.ack = os.path.join(workdir, f"{name}.ack")
        for f in (self.ctl, self.ack):
            if os.path.exists(f):
                os.unlink(f)
            os.mkfifo(f)
        self.p = subprocess.Popen(
            argv[:2] + ["-D", "-1", "--control", f"fifo:{self.ctl},{self.ack}"] + argv[2:],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent,
        )
        # Opening a FIFO blocks until perf opens the other end; perf never does if it
        # fails first, so open without blocking and poll.
        self.ctl_fd = wait_until(f"{argv[1]} opens its control FIFO", START_TIMEOUT,
                                 self._open_ctl)
        self.ack_f = open(self.ack, "r")

    def _open_ctl(self):
        if self.p.poll() is not None:
            raise BenchError(f"{' '.join(self.p.args[:2])} failed: {self.p.stderr.read()}")
        try:
            return os.open(self.ctl, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None

    def _command(self, cmd):
        os.write(self.ctl_fd, (cmd + "\n").encode())
        # perf ends each answer with a NUL after the newline.
        ack = self.ack_f.readline().replace("\x00", "").strip()
        if ack != "ack":
            raise BenchError(f"perf answered {ack!r} to {cmd!r}")

    def enable(self):
        self._command("enable")

    def stop(self):
        """Switch the events off, end perf, and return its stderr."""
        self._command("disable")
        os.close(self.ctl_fd)
        self.ack_f.close()
        self.p.send_signal(signal.SIGINT)
        _, err = self.p.communicate(timeout=120)
        if self.p.returncode not in (0, -signal.SIGINT):
            raise BenchError(f"{' '.join(self.p.args[:2])} exited with {self.p.returncode}: {err}")
        return err


# What a profile's self time is spent on, by symbol (first match wins).
def _kernel(dso):
    return dso.startswith("[kernel")


KERNEL_NET = ("tcp", "__tcp", "skb", "__skb", "ip_", "__ip", "net_", "__net", "__dev_",
              "dev_", "sock_", "__sock", "sk_", "inet", "__inet", "bbr", "loopback",
              "_copy_to_iter", "_copy_from_iter", "__napi", "process_backlog", "__sys_send",
              "__sys_recv", "release_sock", "lock_sock", "__release_sock", "validate_xmit",
              "__x64_sys_send", "__x64_sys_recv", "ipv4_", "raw_local_deliver",
              # Buffers (skb and slab), softirq delivery, checks on the copied ranges.
              "__alloc_skb", "__build_skb", "__copy_skb", "kmem_cache", "__slab", "___slab",
              "slab_", "kfree", "kmalloc", "do_softirq", "__local_bh", "handle_softirqs",
              "eth_", "netif", "napi", "dst_", "__sk_", "__check_object_size",
              "check_stack_object", "__virt_addr_valid", "_raw_spin_lock_bh",
              "_raw_spin_unlock_bh", "security_sock", "bpf_skops", "__xfrm", "__mod_timer",
              "import_ubuf",
              # On this path it is mostly sock_def_readable waking the peer (call graphs).
              "_raw_spin_unlock_irqrestore")
KERNEL_SCHED = ("finish_task_switch", "__schedule", "schedule", "try_to_wake_up", "ttwu",
                "enqueue_", "dequeue_", "update_curr", "update_load", "pick_next", "psi_",
                "select_task_rq", "set_next_entity", "put_prev", "switch_mm", "__switch_to",
                "futex", "__futex", "do_futex", "get_futex", "wake_up", "__wake_up", "_raw_spin_unlock_irq", "native_sched_clock",
                "read_tsc", "ktime_get", "reweight", "sched_", "check_preempt", "resched")

PROFILE_CATEGORIES = (
    ("kernel: TCP over loopback (send, receive, skb buffers, delivery to the peer and "
     "its wake-up)",
     lambda dso, sym: _kernel(dso) and sym.startswith(KERNEL_NET)),
    ("kernel: scheduler, context switches, futex",
     lambda dso, sym: _kernel(dso) and sym.startswith(KERNEL_SCHED)),
    ("kernel: epoll", lambda dso, sym: _kernel(dso) and ("ep_" in sym or "epoll" in sym)),
    ("kernel: syscall entry/exit, fd lookup, other",
     lambda dso, sym: _kernel(dso)),
    ("copying (memcpy/memmove)", lambda dso, sym: "memcpy" in sym or "memmove" in sym),
    ("allocator", lambda dso, sym: any(
        k in sym for k in ("malloc", "free", "realloc", "calloc", "alloc::alloc"))),
    ("request parsing, reply scanning",
     lambda dso, sym: "redsplit::protocol" in sym or "memchr" in sym),
    # hashbrown and CharSearcher: the deny list's set lookup and the `name|sub` splits of
    # command names, per request (no other map or string search is on this path).
    ("classify, resolve, route", lambda dso, sym: any(
        k in sym for k in ("redsplit::commands", "redsplit::policy", "redsplit::router",
                           "redsplit::auth", "hashbrown::", "CharSearcher"))),
    ("session (dispatch, replies in order)", lambda dso, sym: any(
        k in sym for k in ("redsplit::session", "redsplit::server", "PollFn"))),
    ("clock (Instant::now)", lambda dso, sym: "clock_gettime" in sym or "Timespec" in sym),
    ("metrics", lambda dso, sym: "redsplit::metrics" in sym),
    ("backend connections", lambda dso, sym: "redsplit::backend" in sym),
    ("tokio runtime (scheduling, I/O driver)",
     lambda dso, sym: "tokio::" in sym or "mio::" in sym),
    ("locks, snapshots, maps", lambda dso, sym: any(
        k in sym for k in ("parking_lot", "arc_swap", "dashmap", "std::sync", "futex"))),
    ("libc (syscall wrappers, other)", lambda dso, sym: dso.startswith("libc")),
    ("other", lambda dso, sym: True),
)


def profile(world, args):
    """perf record on one proxy under one cell; top symbols and where the time goes."""
    if not shutil.which("perf"):
        raise BenchError("perf is not installed (Debian: apt-get install linux-perf)")
    op, c, p, size = args.profile_cell
    target = args.profile_target
    world.populate(size)
    pid = world.pids[target]
    n = 4 * requests_for(args, p)
    run_benchmark(world, target, op, c, p, size, 20000)
    data = os.path.join(world.workdir, "perf.data")
    rec = Perf(
        world.workdir, "perf-record",
        ["perf", "record", "-e", "cpu-clock", "-F", str(args.profile_freq), "-p", str(pid),
         "-o", data]
        + ({"fp": ["--call-graph", "fp"], "dwarf": ["--call-graph", "dwarf,16384"]}
           .get(args.profile_callgraph, [])),
    )
    rec.enable()
    res = run_benchmark(world, target, op, c, p, size, n)
    rec.stop()
    rep = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
         "--percent-limit", "0.01", "--max-stack", "0"],
        capture_output=True, text=True,
    )
    if rep.returncode != 0:
        raise BenchError(f"perf report failed: {rep.stderr}")
    rows = []
    for line in rep.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[0].endswith("%") and parts[2] in ("[.]", "[k]"):
            pct = float(parts[0].rstrip("%"))
            rows.append((pct, parts[1], parts[3].strip(), parts[2]))
    if not rows:
        raise BenchError(f"perf report has no samples:\n{rep.stdout[:2000]}")
    cats = {}
    for pct, dso, sym, kind in rows:
        if kind == "[k]" and not dso.startswith("[kernel"):
            dso = "[kernel]"
        for name, pred in PROFILE_CATEGORIES:
            if pred(dso, sym):
                cats[name] = cats.get(name, 0.0) + pct
                break
    label = f"{op.upper()} c={c} P={p} {size_label(size)}"
    lines = [
        f"profile: {target} under {label}, {res['rps']:,.0f} ops/s, "
        f"cpu {res['cpu_us_op_schedstat'] or res['cpu_us_op']:.2f} us/op "
        f"(perf record -e cpu-clock -F {args.profile_freq}, self time)",
        "  where the time goes:",
    ]
    for name, _ in PROFILE_CATEGORIES:
        if name in cats:
            lines.append(f"    {cats[name]:6.2f}%  {name}")
    lines.append(f"  top {args.profile_top} symbols:")
    for pct, dso, sym, _ in sorted(rows, reverse=True)[: args.profile_top]:
        lines.append(f"    {pct:6.2f}%  {dso:<18.18} {sym[:110]}")
    lines += syscalls(world, target, pid, op, c, p, size, n)
    stamp = os.path.basename(world.workdir)
    os.makedirs(args.out, exist_ok=True)
    report_path = os.path.join(args.out, f"perf-report-{stamp}.txt")
    with open(report_path, "w") as f:
        f.write(rep.stdout)
    lines.append(f"  full report: {report_path}")
    if args.profile_callgraph:
        graph = subprocess.run(
            ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
             "--percent-limit", "1"],
            capture_output=True, text=True,
        )
        graph_path = os.path.join(args.out, f"perf-callgraph-{stamp}.txt")
        with open(graph_path, "w") as f:
            f.write(graph.stdout)
        lines.append(f"  call graphs: {graph_path}")
    return lines


SYSCALLS = ("recvfrom", "sendto", "read", "write", "readv", "writev", "sendmsg", "recvmsg",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "sched_yield")


def count_syscalls(world, target, pid, op, c, p, size, n):
    """One more run of the cell with `perf stat` on the proxy: its system calls (all, and
    each of SYSCALLS, from the syscall tracepoints), context switches and on-CPU time.
    Returns (the run's figures, {event: count}), or (None, an error message)."""
    events = (["raw_syscalls:sys_enter", "context-switches", "task-clock"]
              + [f"syscalls:sys_enter_{s}" for s in SYSCALLS])
    out = os.path.join(world.workdir, "perf-stat.csv")
    try:
        st = Perf(world.workdir, "perf-stat",
                  ["perf", "stat", "-x", ",", "-o", out, "-e", ",".join(events), "-p", str(pid)])
    except BenchError as e:
        return None, str(e)
    st.enable()
    res = run_benchmark(world, target, op, c, p, size, n)
    st.stop()
    counts = {}
    with open(out) as f:
        for row in csv.reader(f):
            if len(row) >= 3:
                try:
                    value = float(row[0])
                except ValueError:
                    continue
                counts[row[2].split(":")[-1].replace("sys_enter_", "")] = value
    if "sys_enter" not in counts:
        return None, "perf stat counted nothing (tracepoints not readable?)"
    return res, counts


def syscalls(world, target, pid, op, c, p, size, n):
    """System calls of the proxy per request and per client batch, by perf stat on the
    syscall tracepoints during one more run of the cell."""
    _, counts = count_syscalls(world, target, pid, op, c, p, size, n)
    if isinstance(counts, str):
        return [f"  syscalls: {counts}"]
    total = counts["sys_enter"]
    lines = [
        f"  system calls during {n} requests: {total / n:.3f} per request, "
        f"{total / n * p:.2f} per client batch of {p}:"
    ]
    for name in SYSCALLS:
        k = counts.get(name, 0)
        if k:
            lines.append(f"    {name:<12} {k / n:8.4f}/request  {k / n * p:7.3f}/batch")
    return lines


def syscalls_section(world, args, raw):
    """Per cell of SYSCALLS_CELLS and proxy of SYSCALLS_TARGETS (interleaved, ROUNDS
    rounds, medians): ops/s, proxy CPU per request (perf's task-clock), system calls per
    request (all, and the I/O, epoll and futex ones), context switches per request."""
    if not shutil.which("perf"):
        raise BenchError("perf is not installed (Debian: apt-get install linux-perf)")
    targets = [t for t in args.syscalls_targets if t in world.targets]
    got = {}
    for cell in args.syscalls_cells:
        op, c, p, size = cell
        world.populate(size)
        n = requests_for(args, p)
        for t in targets:
            run_benchmark(world, t, op, c, p, size, 20000)
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[: rnd % len(targets)]
            for t in order:
                res, counts = count_syscalls(world, t, world.pids[t], op, c, p, size, n)
                if res is None:
                    raise BenchError(f"syscalls: {counts}")
                row = {"section": "syscalls", "round": rnd + 1, **res}
                row.update({f"n_{k}": v for k, v in counts.items()})
                raw.append(row)
                got.setdefault(cell, {}).setdefault(t, []).append((res, counts))
            log(f"syscalls round {rnd + 1}/{args.rounds} {op.upper()} c={c} P={p} "
                f"{size} B: " + ", ".join(f"{t} {got[cell][t][-1][0]['rps']:,.0f}"
                                          for t in targets))
    shown = ("recvfrom", "sendto", "read", "write", "readv", "writev", "epoll_wait",
             "epoll_ctl", "futex")
    hdr = (f"  {'cell':<18} {'target':<16} {'ops/s':>9} {'cpu us/op':>9} {'sys/op':>7} "
           + " ".join(f"{k[:10]:>10}" for k in shown) + f" {'cs/op':>7}")
    lines = [
        f"syscalls: per request, perf stat on the proxy (medians of {args.rounds} "
        "interleaved rounds; cpu = task-clock)",
        hdr,
        "  " + "-" * (len(hdr) - 2),
    ]
    for cell in args.syscalls_cells:
        op, c, p, size = cell
        label = f"{op.upper()} c={c} P={p} {size_label(size)}"
        for i, t in enumerate(targets):
            runs = got[cell][t]
            n = runs[0][0]["n"]

            def per(k):
                return median([cn.get(k, 0.0) / n for _, cn in runs])

            # task-clock is in ms (msec) in perf stat's CSV.
            cpu = median([cn.get("task-clock", 0.0) * 1e3 / n for _, cn in runs])
            lines.append(
                f"  {label if i == 0 else '':<18} {t:<16} "
                f"{median([r['rps'] for r, _ in runs]):>9,.0f} {cpu:>9.2f} "
                f"{per('sys_enter'):>7.3f} "
                + " ".join(f"{per(k):>10.3f}" for k in shown)
                + f" {per('context-switches'):>7.3f}"
            )
        lines.append("")
    return lines


# ------------------------------------------------------------------------------ main


def parse_args():
    env = os.environ.get
    quick = env("QUICK", "0") not in ("", "0", "false", "no")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", default=quick,
                    help="smoke run: 1 round, small N, 16 B cells only (env QUICK=1)")
    ap.add_argument("--rounds", type=int, default=env("ROUNDS"),
                    help="rounds per cell (env ROUNDS; default 5, quick 1)")
    ap.add_argument("--n", type=int, default=env("N"),
                    help="requests per pipeline-1 run (env N; default 100000, quick 10000)")
    ap.add_argument("--n-pipelined", type=int, default=env("N_PIPELINED"),
                    help="requests per pipeline-16 run (env N_PIPELINED; default 5*N)")
    ap.add_argument("--workers", type=int, default=int(env("WORKERS", "1")),
                    help="redsplit worker threads in the matrix (env WORKERS; default 1, "
                    "the proxy's own default: one event loop)")
    ap.add_argument("--connections", type=int, default=env("CONNECTIONS"),
                    help="redsplit's backend.connections (shared connections per backend; "
                    "env CONNECTIONS; default: redsplit's own default)")
    ap.add_argument("--predixy", default=env("PREDIXY"),
                    help="path of a predixy binary: adds predixy (one worker thread, reads "
                    "on the replicas, and every read on the master) as a peer to the "
                    "matrix and the memory section (env PREDIXY; default: none)")
    ap.add_argument("--keyspace", type=int, default=int(env("KEYSPACE", "10000")),
                    help="redis-benchmark -r (env KEYSPACE; default 10000)")
    ap.add_argument("--idle-conns", type=int, default=env("IDLE_CONNS"),
                    help="connections for the memory section (env IDLE_CONNS; default 10000)")
    ap.add_argument("--sections", default=env("SECTIONS", "matrix,memory,workers,cluster"),
                    help="comma-separated: matrix, memory, workers, cluster, storm, profile, "
                    "syscalls (env SECTIONS; default matrix,memory,workers,cluster)")
    ap.add_argument("--storm-conns", type=int, default=int(env("STORM_CONNS", "8000")),
                    help="connections opened at once by the storm section (env STORM_CONNS; "
                    "default 8000)")
    ap.add_argument("--storm-rounds", type=int, default=int(env("STORM_ROUNDS", "3")),
                    help="storms per peer (env STORM_ROUNDS; default 3)")
    ap.add_argument("--clients", default=env("CLIENTS"),
                    help="comma-separated client counts (env CLIENTS; default 1,50,500)")
    ap.add_argument("--pipelines", default=env("PIPELINES"),
                    help="comma-separated pipeline depths (env PIPELINES; default 1,16)")
    ap.add_argument("--values", default=env("VALUES"),
                    help="comma-separated value sizes in bytes (env VALUES; default 16,4096; "
                    "quick 16)")
    ap.add_argument("--workers-cell", default=env("WORKERS_CELL", "get,50,16,16"),
                    help="op,clients,pipeline,size of the workers section "
                    "(env WORKERS_CELL; default get,50,16,16)")
    ap.add_argument("--cluster-cells",
                    default=env("CLUSTER_CELLS",
                                "get,50,1,16;get,50,16,16;set,50,1,16;set,50,16,16"),
                    help="op,clients,pipeline,size cells of the cluster section, separated "
                    "by ';' (env CLUSTER_CELLS; default GET and SET, 50 clients, pipeline 1 "
                    "and 16, 16 B)")
    ap.add_argument("--syscalls-cells",
                    default=env("SYSCALLS_CELLS",
                                "get,500,1,16;set,500,1,16;get,1,16,16;get,1,1,16"),
                    help="op,clients,pipeline,size cells of the syscalls section, separated "
                    "by ';' (env SYSCALLS_CELLS; default: c500 P1 GET and SET, c1 P16 GET, "
                    "c1 P1 GET, 16 B)")
    ap.add_argument("--syscalls-targets",
                    default=env("SYSCALLS_TARGETS",
                                "redsplit-replica,redsplit-master,predixy-replica,"
                                "predixy-master,relay"),
                    help="proxies the syscalls section measures, those of them running "
                    "(env SYSCALLS_TARGETS)")
    ap.add_argument("--profile-cell", default=env("PROFILE_CELL", "get,50,16,16"),
                    help="op,clients,pipeline,size the profile section runs "
                    "(env PROFILE_CELL; default get,50,16,16)")
    ap.add_argument("--profile-target", default=env("PROFILE_TARGET", "redsplit-replica"),
                    choices=("redsplit-replica", "redsplit-master", "relay", "nutcracker",
                             "predixy-replica", "predixy-master"),
                    help="process the profile section records (env PROFILE_TARGET)")
    ap.add_argument("--profile-freq", type=int, default=int(env("PROFILE_FREQ", "1999")),
                    help="perf sampling frequency, Hz (env PROFILE_FREQ)")
    ap.add_argument("--profile-top", type=int, default=int(env("PROFILE_TOP", "30")),
                    help="symbols listed by the profile section (env PROFILE_TOP)")
    ap.add_argument("--profile-callgraph", default=env("PROFILE_CALLGRAPH", ""),
                    choices=("", "fp", "dwarf"),
                    help="also record call graphs, by frame pointers (kernel stacks; "
                    "redsplit has none) or DWARF (large), into a second report "
                    "(env PROFILE_CALLGRAPH)")
    ap.add_argument("--run-timeout", type=float, default=float(env("RUN_TIMEOUT", "600")),
                    help="seconds one redis-benchmark run may take (env RUN_TIMEOUT)")
    ap.add_argument("--no-build", action="store_true",
                    default=env("NO_BUILD", "0") not in ("", "0"),
                    help="use the existing release binary (env NO_BUILD=1)")
    ap.add_argument("--keep", action="store_true", default=env("KEEP", "0") not in ("", "0"),
                    help="keep the temp dir with configs and logs (env KEEP=1)")
    ap.add_argument("--out", default=env("OUT", os.path.join(ROOT, "target", "load-bench")),
                    help="directory for the raw CSV and the table (env OUT)")
    a = ap.parse_args()

    def ints(s, default):
        return tuple(int(x) for x in s.split(",")) if s else default

    a.rounds = int(a.rounds) if a.rounds else (1 if a.quick else 5)
    a.n = int(a.n) if a.n else (10000 if a.quick else 100000)
    a.n_pipelined = int(a.n_pipelined) if a.n_pipelined else 5 * a.n
    a.idle_conns = int(a.idle_conns) if a.idle_conns else 10000
    a.clients = ints(a.clients, CLIENTS)
    a.pipelines = ints(a.pipelines, PIPELINES)
    a.values = ints(a.values, (16,) if a.quick else VALUES)
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    for s in a.sections:
        if s not in ("matrix", "memory", "workers", "cluster", "storm", "profile",
                     "syscalls"):
            ap.error(f"unknown section {s!r}")
    def cell(text):
        op, c, p, d = text.split(",")
        return (op.lower(), int(c), int(p), int(d))

    a.workers_cell = cell(a.workers_cell)
    a.cluster_cells = [cell(x) for x in a.cluster_cells.split(";") if x.strip()]
    a.syscalls_cells = [cell(x) for x in a.syscalls_cells.split(";") if x.strip()]
    a.syscalls_targets = [t.strip() for t in a.syscalls_targets.split(",") if t.strip()]
    for t in a.syscalls_targets:
        if t not in TARGETS or t == "direct":
            ap.error(f"unknown proxy {t!r} in --syscalls-targets")
    a.profile_cell = cell(a.profile_cell)
    if a.rounds < 5 and not a.quick:
        log(f"note: {a.rounds} rounds; the issue asks for at least 5")
    target_dir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    a.redsplit_bin = os.path.join(target_dir, "release", "redsplit")
    a.relay_bin = os.path.join(target_dir, "release", "examples", "relay")
    return a


def preflight(args):
    for tool in ("redis-server", "redis-benchmark", "nutcracker") + (
            ("redis-cli",) if "cluster" in args.sections else ()):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed")
    v = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True)
    log(v.stdout.strip())
    # Room for the idle connections here and in the proxy (children inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.idle_conns, args.storm_conns) + 1000
    want = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, need * 2))
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if ({"memory", "storm"} & set(args.sections) and soft != resource.RLIM_INFINITY
            and soft < need):
        raise BenchError(
            f"open-file limit {soft} is below the {need} the memory and storm sections need; "
            "raise the hard limit (ulimit -Hn) or lower IDLE_CONNS"
        )
    if not args.no_build:
        log("building target/release/redsplit and target/release/examples/relay")
        r = subprocess.run(
            ["cargo", "build", "--release", "--bin", "redsplit", "--example", "relay"], cwd=ROOT
        )
        if r.returncode != 0:
            raise BenchError("cargo build --release failed")
    for b in (args.redsplit_bin, args.relay_bin):
        if not os.access(b, os.X_OK):
            raise BenchError(f"{b} not found; build it or drop --no-build")
    if args.predixy and not os.access(args.predixy, os.X_OK):
        raise BenchError(f"predixy binary {args.predixy} not found or not executable "
                         "(see benches/README.md for how to build it)")
    if args.profile_target in PREDIXY_TARGETS and not args.predixy \
            and "profile" in args.sections:
        raise BenchError(f"PROFILE_TARGET {args.profile_target} needs --predixy PATH")


def write_raw(raw, path):
    keys = []
    for r in raw:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in raw:
            w.writerow(r)


def main():
    args = parse_args()
    world = None

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    raw = []
    out_lines = []
    checks = []
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        preflight(args)
        world = World(args)
        world.start_replica_set()
        world.targets = world.start_targets()
        head = (
            f"redsplit load benchmark {stamp}: {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f}; rounds {args.rounds}, N {args.n} (pipeline 1) / "
            f"{args.n_pipelined} (pipeline 16), keyspace {args.keyspace}, redsplit workers "
            f"{args.workers}"
            + (", predixy WorkerThreads 1" if args.predixy else "")
            + (f", backend connections {args.connections}" if args.connections else "")
            + (", QUICK" if args.quick else "")
        )
        out_lines += [
            head,
            "medians; cpu us/op = proxy utime+stime (/proc/PID/stat) / requests; `*`: under "
            f"{MIN_CPU_TICKS} ticks per run, so from /proc/PID/task/*/schedstat instead",
            "",
        ]
        if "matrix" in args.sections:
            results = matrix(world, args, raw)
            lines, c = matrix_table(results, args)
            out_lines += lines
            checks += c
        if "memory" in args.sections:
            lines, c = memory(world, args, raw)
            out_lines += lines + [""]
            checks += c
        if "workers" in args.sections:
            out_lines += workers(world, args, raw) + [""]
        if "cluster" in args.sections:
            lines, c = cluster(world, args, raw)
            out_lines += lines + [""]
            checks += c
        if "storm" in args.sections:
            lines, c = storm(world, args, raw)
            out_lines += lines + [""]
            checks += c
        if "profile" in args.sections:
            out_lines += profile(world, args) + [""]
        if "syscalls" in args.sections:
            out_lines += syscalls_section(world, args, raw)
        if checks:
            missed = [name for name, ok in checks if not ok]
            out_lines.append(f"targets met: {len(checks) - len(missed)}/{len(checks)}")
            for name in missed:
                out_lines.append(f"  MISS {name}")
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if world is not None:
            world.close()
        if raw:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, f"runs-{stamp}.csv")
            write_raw(raw, path)
            log(f"raw runs: {path}")
    text = "\n".join(out_lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"table-{stamp}.txt"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
