//! Real client libraries, directly against Redis and through redsplit: the same smoke
//! program must print the same transcript both ways.
//!
//! Each client has one smoke program (`tests/clients/`: redis-py sync and asyncio,
//! node-redis, ioredis, go-redis v5; redis-rs runs in this process, [`redis_rs_smoke`]).
//! It runs the checks of [`EXPECTED`] in order and prints one line per check, `name:
//! values`, with key and channel names relative to the prefix it was given. Every
//! variant runs twice at the same time: against the master of a replica set directly
//! (prefix `d-…`) and through a redsplit in front of that set (prefix `p-…`; reads go
//! to the replicas, `read_your_writes: key`). The test then asserts that
//! - the direct transcript holds each check's own expectation (the program checks what
//!   it should, against Redis itself), and
//! - the transcript through the proxy is the direct one, line for line;
//!
//! and reports every difference of every variant at once, with both transcripts.
//!
//! The runtimes are installed by `scripts/test.sh` (pip `-r
//! tests/clients/python/requirements.txt`, `npm ci` in `tests/clients/node`, Debian's
//! `golang-go` and `golang-gopkg-redis.v5-dev`); a missing one fails the test with what
//! to install.

use crate::common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rs_smoke::redis_rs_smoke;
use runtimes::{build_go, node_variant, python_variant, require_node, require_python};

mod rs_smoke;
mod runtimes;

/// The proxy's configuration: reads go to a replica within 1 s of staleness, with
/// read-your-writes across connections (a pool's connections see each other's writes).
const PROXY_EXTRA: &str = "\
routing:
  default:
    consistency: replica
    max_lag_ms: 1000
    read_your_writes: key
  fallback: master
replication:
  poll_interval_ms: 50
";

/// The checks every smoke program runs, in this order, and what each must print.
/// `client_cache` depends on the client and protocol ([`Variant::cache`]).
const EXPECTED: &[(&str, &str)] = &[
    // 100 times: SET then GET of the same key.
    ("ryw", "100 of 100 reads saw the write before them"),
    // 1 000 commands in one pipeline, INCR and GET of one key alternating.
    ("pipeline", "replies=1000 ordered=yes last=[500,500]"),
    // WATCH, another connection SETs the key, MULTI/SET/EXEC: nil; then a clean retry.
    (
        "watch",
        "seen=start exec=nil value=theirs retry=[OK] value=mine",
    ),
    // SUBSCRIBE and PSUBSCRIBE, a PUBLISH to each from another connection.
    (
        "pubsub",
        "subscribed=2 published=[1,1] got=message ch m1|pmessage pat:* pat:x m2",
    ),
    // BLPOP on an empty list; a third connection sees it blocked (CLIENT LIST) and keeps
    // answering 20 SET/GET; another connection's RPUSH wakes it.
    (
        "blpop",
        "blocked=yes others_answered=20 pending=yes popped=[queue,item]",
    ),
    // EVALSHA of a script not loaded: NOSCRIPT; SCRIPT LOAD answers its SHA-1; EVALSHA
    // runs it; EVAL; the client's script helper (EVALSHA, on NOSCRIPT loading it).
    (
        "scripts",
        "evalsha=NOSCRIPT load=sha1 evalsha=[a,10] eval=10 helper=15",
    ),
    // 5 000 keys written in a pipeline, then the client's SCAN iterator with MATCH.
    ("scan", "keys=5000 complete=yes"),
    // A 5 MiB value written and read back.
    ("big", "bytes=5242880 same=yes"),
    // A key written in database 1 is there, and not in database 0.
    ("select", "db1=one db0=nil"),
    ("client_cache", ""),
    // 50 concurrent tasks on the client's pool: each SETs and GETs its key, INCRs one.
    ("pool", "tasks=50 own_reads=50 count=50"),
];

/// What `client_cache` prints where the client's RESP3 client-side caching (or its
/// RESP3 tracking push handler) runs: a GET tracked, another connection's SET, the
/// invalidation push, the new value.
const CACHE_CHECKED: &str = "first=v1 invalidated=cached after=v2";
/// What `client_cache` prints for a RESP2 run of a client that caches with RESP3 only.
const CACHE_RESP3_ONLY: &str = "RESP3 only";
/// What `client_cache` prints for a client without client-side caching.
const CACHE_UNSUPPORTED: &str = "not supported by the client";

/// One client library in one mode.
struct Variant {
    /// Its name in reports and in its key prefix.
    label: &'static str,
    /// The `client_cache` line it must print.
    cache: &'static str,
    /// How it runs.
    program: Program,
}

/// How a variant runs against an address with a key prefix.
enum Program {
    /// A program of `tests/clients/`: `program`, its arguments `before`, the address
    /// and the prefix, then the arguments `after`.
    External {
        program: PathBuf,
        before: Vec<PathBuf>,
        after: Vec<String>,
    },
    /// [`redis_rs_smoke`] in this process.
    RedisRs { resp3: bool },
}

/// One run's transcript, and what else the program said.
struct Run {
    lines: Vec<String>,
    /// Exit status and stderr, for reports.
    notes: String,
    ok: bool,
}

/// How long one run of one smoke program may take (seconds on an idle machine; much
/// longer on a loaded one).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn run_variant(variant: &Variant, addr: SocketAddr, prefix: &str) -> Run {
    match &variant.program {
        Program::External {
            program,
            before,
            after,
        } => {
            let mut cmd = Command::new(program);
            cmd.args(before)
                .arg(addr.to_string())
                .arg(prefix)
                .args(after);
            let what = format!("the {} smoke program ({prefix})", variant.label);
            let done = run_program(&what, cmd, RUN_TIMEOUT);
            Run {
                lines: done.stdout.lines().map(str::to_owned).collect(),
                notes: format!("{}; stderr:\n{}", done.status, done.stderr),
                ok: done.status.success(),
            }
        }
        Program::RedisRs { resp3 } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let lines = rt.block_on(async {
                tokio::time::timeout(RUN_TIMEOUT, redis_rs_smoke(addr, prefix, *resp3))
                    .await
                    .unwrap_or_else(|_| vec![format!("timed out after {RUN_TIMEOUT:?}")])
            });
            Run {
                lines,
                notes: String::new(),
                ok: true,
            }
        }
    }
}

/// What is wrong with a variant's pair of runs; empty if nothing.
fn problems(variant: &Variant, direct: &Run, proxied: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for (what, run) in [("direct", direct), ("through redsplit", proxied)] {
        if !run.ok {
            out.push(format!("{what}: the program failed: {}", run.notes));
        }
    }
    for (i, (name, expected)) in EXPECTED.iter().enumerate() {
        let expected = if *name == "client_cache" {
            variant.cache
        } else {
            expected
        };
        let want = format!("{name}: {expected}");
        match direct.lines.get(i) {
            Some(line) if *line == want => {}
            got => out.push(format!(
                "direct Redis does not meet check `{name}`: expected `{want}`, got `{}`",
                got.map_or("<no line>", String::as_str)
            )),
        }
    }
    let n = direct.lines.len().max(proxied.lines.len());
    for i in 0..n {
        let (d, p) = (direct.lines.get(i), proxied.lines.get(i));
        if d != p {
            out.push(format!(
                "line {}: differs\n    direct:           {}\n    through redsplit: {}",
                i + 1,
                d.map_or("<no line>", String::as_str),
                p.map_or("<no line>", String::as_str)
            ));
        }
    }
    out
}

/// A master with two replicas and redsplit in front.
struct World {
    /// Declared first: the proxy stops before the servers.
    proxy: ProxyUnderTest,
    set: ReplicaSet,
}

impl World {
    fn start() -> World {
        let set = ReplicaSet::start(2, false);
        let proxy = ProxyUnderTest::start(&proxy_yaml(&set, PROXY_EXTRA));
        proxy.wait_in_pool(2);
        World { proxy, set }
    }

    /// Reads the replicas have served (GET and SCAN are never replicated).
    fn replica_reads(&self) -> u64 {
        self.set
            .replicas
            .iter()
            .map(|r| r.calls("get") + r.calls("scan"))
            .sum()
    }
}

/// Runs every variant directly and through the proxy, all at once, and asserts.
fn check_variants(variants: &[Variant]) {
    let started = Instant::now();
    let world = World::start();
    let reads_before = world.replica_reads();
    let direct_addr = world.set.master.addr();
    let proxy_addr = world.proxy.addr;
    let runs: Vec<(Run, Run)> = std::thread::scope(|s| {
        let handles: Vec<_> = variants
            .iter()
            .map(|v| {
                let d = s.spawn(move || run_variant(v, direct_addr, &format!("d-{}", v.label)));
                let p = s.spawn(move || run_variant(v, proxy_addr, &format!("p-{}", v.label)));
                (d, p)
            })
            .collect();
        handles
            .into_iter()
            .map(|(d, p)| {
                (
                    d.join().expect("direct run"),
                    p.join().expect("proxied run"),
                )
            })
            .collect()
    });
    let mut report = String::new();
    for (v, (direct, proxied)) in variants.iter().zip(&runs) {
        let found = problems(v, direct, proxied);
        if !found.is_empty() {
            report.push_str(&format!(
                "\n=== {} ===\n{}\n--- direct transcript ---\n{}\n--- transcript through redsplit ---\n{}\n--- direct: {}\n--- through redsplit: {}\n",
                v.label,
                found.join("\n"),
                direct.lines.join("\n"),
                proxied.lines.join("\n"),
                direct.notes,
                proxied.notes
            ));
        }
    }
    assert!(
        report.is_empty(),
        "client transcripts differ or miss their checks:{report}"
    );
    // The smoke programs mostly read what they have just written, which
    // `read_your_writes: key` sends to the master until a replica holds it; on a loaded
    // machine that can be every read. So a key written before is read too, until a
    // replica serves it: the proxy was splitting reads in this very world.
    if world.replica_reads() == reads_before {
        world.set.master.set("split:check", "1");
        let mut c = connect(proxy_addr);
        wait_until(
            "a read through the proxy is served by a replica",
            SYNC_TIMEOUT,
            || {
                let _ = query(&mut c, &["GET", "split:check"]);
                world.replica_reads() > reads_before
            },
        );
    }
    let replica_reads = world.replica_reads() - reads_before;
    eprintln!(
        "{} variants, direct and through redsplit: identical transcripts; replicas served {replica_reads} reads; {:?}",
        variants.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// redis-py 8: `redis.Redis` and `redis.asyncio.Redis`, RESP2 and RESP3, their
/// connection pools (threads and tasks). Its own client-side cache needs Redis 7.4 (it
/// refuses 7.0 at connect), so RESP3 runs check invalidations with its RESP3 push
/// handler (`CLIENT TRACKING on`).
#[test]
fn redis_py() {
    require_python();
    check_variants(&[
        python_variant("redis-py-sync-resp2", "sync", 2),
        python_variant("redis-py-sync-resp3", "sync", 3),
        python_variant("redis-py-asyncio-resp2", "asyncio", 2),
        python_variant("redis-py-asyncio-resp3", "asyncio", 3),
    ]);
}

/// node-redis 5 (RESP2, and RESP3 with its client-side cache; `createClientPool` for
/// the pool) and ioredis 5 (RESP2; no pool: its tasks share one connection).
#[test]
fn node_redis_and_ioredis() {
    require_node();
    check_variants(&[
        node_variant(
            "node-redis-resp2",
            "node-redis.js",
            &["2"],
            CACHE_RESP3_ONLY,
        ),
        node_variant("node-redis-resp3", "node-redis.js", &["3"], CACHE_CHECKED),
        node_variant("ioredis", "ioredis.js", &[], CACHE_UNSUPPORTED),
    ]);
}

/// go-redis v5 (Debian's), RESP2, its pool of 50 connections.
#[test]
fn go_redis() {
    let binary = build_go();
    check_variants(&[Variant {
        label: "go-redis-v5",
        cache: CACHE_UNSUPPORTED,
        program: Program::External {
            program: binary,
            before: Vec::new(),
            after: Vec::new(),
        },
    }]);
}

/// redis-rs (this crate's dev-dependency), one multiplexed tokio connection, RESP2 and
/// RESP3 (with its push sender for tracking invalidations).
#[test]
fn redis_rs() {
    check_variants(&[
        Variant {
            label: "redis-rs-resp2",
            cache: CACHE_RESP3_ONLY,
            program: Program::RedisRs { resp3: false },
        },
        Variant {
            label: "redis-rs-resp3",
            cache: CACHE_CHECKED,
            program: Program::RedisRs { resp3: true },
        },
    ]);
}
