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
use redis::{AsyncCommands, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
// Runtimes
// ---------------------------------------------------------------------------------------

/// The output of `program args…`, or why it cannot run.
fn output_of(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("`{program}` cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The exact version pinned for `package` in a `package==version` requirements file.
fn pinned_pip(file: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(file).expect("requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{package}==")))
        .unwrap_or_else(|| panic!("{} pins no {package}==", file.display()))
        .to_owned()
}

/// The `"version"` field of a `package.json`.
fn json_version(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let at = text.find("\"version\"")?;
    let rest = text.get(at + "\"version\"".len()..)?;
    let start = rest.find('"')? + 1;
    let len = rest.get(start..)?.find('"')?;
    rest.get(start..start + len).map(str::to_owned)
}

/// Fails with what to install when python3 or the pinned redis-py is missing.
fn require_python() {
    let req = clients_dir().join("python/requirements.txt");
    let want = pinned_pip(&req, "redis");
    let fix = format!(
        "install it: `python3 -m pip install -r {}` (scripts/test.sh does)",
        req.display()
    );
    match output_of("python3", &["-c", "import redis; print(redis.__version__)"]) {
        Ok(v) if v == want => {}
        Ok(v) => panic!("redis-py {v} is installed, the tests pin {want}: {fix}"),
        Err(e) => panic!("redis-py {want} is needed: {e}; {fix}"),
    }
}

/// Fails with what to install when node or the pinned npm packages are missing.
fn require_node() {
    let dir = clients_dir().join("node");
    let fix = format!("run `npm ci` in {} (scripts/test.sh does)", dir.display());
    if let Err(e) = output_of("node", &["--version"]) {
        panic!("Node.js is needed (Debian: nodejs, npm): {e}; then {fix}");
    }
    let manifest = std::fs::read_to_string(dir.join("package.json")).expect("package.json");
    for package in ["redis", "ioredis"] {
        let pinned = manifest
            .find(&format!("\"{package}\": \""))
            .and_then(|at| {
                let rest = manifest.get(at + package.len() + 5..)?;
                rest.get(..rest.find('"')?).map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("package.json pins no {package}"));
        let installed = json_version(&dir.join("node_modules").join(package).join("package.json"));
        assert_eq!(
            installed.as_deref(),
            Some(pinned.as_str()),
            "npm package {package} {pinned} is not installed: {fix}"
        );
    }
}

/// Debian's GOPATH, where `golang-gopkg-redis.v5-dev` installs go-redis v5.
const GOPATH: &str = "/usr/share/gocode";

/// Builds the go-redis smoke program; fails with what to install when go or go-redis v5
/// is missing.
fn build_go() -> PathBuf {
    let fix = "install Debian's golang-go and golang-gopkg-redis.v5-dev (scripts/test.sh does)";
    if let Err(e) = output_of("go", &["version"]) {
        panic!("go is needed: {e}; {fix}");
    }
    assert!(
        Path::new(GOPATH)
            .join("src/gopkg.in/redis.v5/redis.go")
            .exists(),
        "go-redis v5 is not in {GOPATH}: {fix}"
    );
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join("clients-go-smoke");
    let mut cmd = Command::new("go");
    // Go's build cache in the target directory: no need for a home directory.
    cmd.env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", tmp.join("go-build"))
        .current_dir(clients_dir().join("go"))
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg("smoke.go");
    // The first build compiles go-redis (seconds); later ones come from go's cache.
    let done = run_program(
        "go build of the go-redis smoke program",
        cmd,
        Duration::from_secs(600),
    );
    assert!(
        done.status.success(),
        "go build failed ({}): {}{}",
        done.status,
        done.stdout,
        done.stderr
    );
    out
}

fn python_variant(label: &'static str, mode: &str, protocol: u8) -> Variant {
    Variant {
        label,
        cache: if protocol == 3 {
            CACHE_CHECKED
        } else {
            CACHE_RESP3_ONLY
        },
        program: Program::External {
            program: "python3".into(),
            before: vec![clients_dir().join("python/smoke.py")],
            after: vec![mode.to_owned(), protocol.to_string()],
        },
    }
}

fn node_variant(label: &'static str, script: &str, args: &[&str], cache: &'static str) -> Variant {
    Variant {
        label,
        cache,
        program: Program::External {
            program: "node".into(),
            before: vec![clients_dir().join("node").join(script)],
            after: args.iter().map(|a| (*a).to_owned()).collect(),
        },
    }
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

// ---------------------------------------------------------------------------------------
// The redis-rs smoke program
// ---------------------------------------------------------------------------------------

/// How long a redis-rs check waits for what another connection causes, and its
/// connections' response timeout (redis-rs's default, 500 ms, is shorter than a BLPOP).
const RS_DEADLINE: Duration = Duration::from_secs(30);

/// A reply as the transcripts write it: lists as `[a,b]`, nil as `nil`.
fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Array(items) | Value::Set(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(","))
        }
        other => format!("{other:?}"),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The redis-rs connections of one run.
struct Rs {
    addr: SocketAddr,
    prefix: String,
    resp3: bool,
}

impl Rs {
    fn name(&self, s: &str) -> String {
        format!("{}:{s}", self.prefix)
    }

    fn strip(&self, s: &str) -> String {
        s.strip_prefix(&format!("{}:", self.prefix))
            .unwrap_or(s)
            .to_owned()
    }

    fn client(&self, db: u32) -> redis::Client {
        let protocol = if self.resp3 { "?protocol=resp3" } else { "" };
        redis::Client::open(format!("redis://{}/{db}{protocol}", self.addr)).expect("client")
    }

    fn config() -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(RS_DEADLINE))
            .set_connection_timeout(Some(RS_DEADLINE))
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.client(0)
            .get_multiplexed_async_connection_with_config(&Self::config())
            .await
    }
}

/// The smoke program for redis-rs, as the external ones: the transcript lines.
async fn redis_rs_smoke(addr: SocketAddr, prefix: &str, resp3: bool) -> Vec<String> {
    let rs = Rs {
        addr,
        prefix: prefix.to_owned(),
        resp3,
    };
    let mut lines = Vec::new();
    let mut c = match rs.conn().await {
        Ok(c) => c,
        Err(e) => return vec![format!("connect: error {e}")],
    };
    for (name, _) in EXPECTED {
        let line = match *name {
            "ryw" => rs_ryw(&rs, &mut c).await,
            "pipeline" => rs_pipeline(&rs, &mut c).await,
            "watch" => rs_watch(&rs, &mut c).await,
            "pubsub" => rs_pubsub(&rs, &mut c).await,
            "blpop" => rs_blpop(&rs, &mut c).await,
            "scripts" => rs_scripts(&rs, &mut c).await,
            "scan" => rs_scan(&rs, &mut c).await,
            "big" => rs_big(&rs, &mut c).await,
            "select" => rs_select(&rs, &mut c).await,
            "client_cache" => rs_client_cache(&rs, &mut c).await,
            "pool" => rs_pool(&rs, &mut c).await,
            other => Ok(format!("no such check {other}")),
        };
        lines.push(format!(
            "{name}: {}",
            line.unwrap_or_else(|e| format!("error {e}"))
        ));
    }
    lines
}

type Conn = redis::aio::MultiplexedConnection;

async fn rs_ryw(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut ok = 0;
    for i in 0..100 {
        let v = format!("v{i}");
        let () = c.set(rs.name("ryw"), &v).await?;
        let got: Option<String> = c.get(rs.name("ryw")).await?;
        ok += usize::from(got.as_deref() == Some(v.as_str()));
    }
    Ok(format!("{ok} of 100 reads saw the write before them"))
}

async fn rs_pipeline(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut p = redis::pipe();
    for i in 0..1000 {
        if i % 2 == 0 {
            p.incr(rs.name("pipe"), 1);
        } else {
            p.get(rs.name("pipe"));
        }
    }
    let replies: Vec<Value> = p.query_async(c).await?;
    let ordered = replies.chunks(2).enumerate().all(|(j, pair)| {
        let n = j as i64 + 1;
        matches!(pair, [Value::Int(a), Value::BulkString(b)] if *a == n && *b == n.to_string().into_bytes())
    });
    let last = replies
        .get(replies.len().saturating_sub(2)..)
        .unwrap_or(&[]);
    Ok(format!(
        "replies={} ordered={} last={}",
        replies.len(),
        yes(ordered),
        show(&Value::Array(last.to_vec()))
    ))
}

async fn rs_watch(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let k = rs.name("watch");
    // A transaction holds connection state: a connection of its own.
    let mut tx = rs.conn().await?;
    let () = c.set(&k, "start").await?;
    let () = redis::cmd("WATCH").arg(&k).query_async(&mut tx).await?;
    let seen: String = tx.get(&k).await?;
    let () = c.set(&k, "theirs").await?;
    let aborted: Value = redis::pipe()
        .atomic()
        .set(&k, "mine")
        .query_async(&mut tx)
        .await?;
    let exec = if aborted == Value::Nil {
        "nil"
    } else {
        "committed"
    };
    let after_abort: String = c.get(&k).await?;
    let () = redis::cmd("WATCH").arg(&k).query_async(&mut tx).await?;
    let retry: Value = redis::pipe()
        .atomic()
        .set(&k, "mine")
        .query_async(&mut tx)
        .await?;
    let now: String = c.get(&k).await?;
    Ok(format!(
        "seen={seen} exec={exec} value={after_abort} retry={} value={now}",
        show(&retry)
    ))
}

async fn rs_pubsub(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    // redis-rs's async subscriber is a `futures` stream, which this crate does not depend
    // on: the subscriber is redis-rs's blocking one, on a thread of its own.
    let client = rs.client(0);
    let (ch, pat) = (rs.name("ch"), rs.name("pat:*"));
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let subscriber = tokio::task::spawn_blocking(move || -> redis::RedisResult<Vec<redis::Msg>> {
        let mut conn = client.get_connection_with_timeout(RS_DEADLINE)?;
        let mut ps = conn.as_pubsub();
        ps.subscribe(&ch)?;
        ps.psubscribe(&pat)?;
        let _ = subscribed_tx.send(2);
        ps.set_read_timeout(Some(RS_DEADLINE))?;
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(ps.get_message()?);
        }
        Ok(got)
    });
    let confirmed = subscribed_rx.await.unwrap_or(0);
    let a: i64 = c.publish(rs.name("ch"), "m1").await?;
    let b: i64 = c.publish(rs.name("pat:x"), "m2").await?;
    let msgs = subscriber
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))??;
    let mut got = Vec::new();
    for msg in msgs {
        let payload: String = msg.get_payload()?;
        let channel = rs.strip(msg.get_channel_name());
        let pattern: Option<String> = msg.get_pattern()?;
        got.push(match pattern {
            Some(pattern) => format!("pmessage {} {channel} {payload}", rs.strip(&pattern)),
            None => format!("message {channel} {payload}"),
        });
    }
    Ok(format!(
        "subscribed={confirmed} published=[{a},{b}] got={}",
        got.join("|")
    ))
}

async fn rs_blpop(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let name = rs.name("blocker").replace(':', "-");
    let mut blocker = rs.conn().await?;
    let () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(&name)
        .query_async(&mut blocker)
        .await?;
    let mut watcher = rs.conn().await?;
    let queue = rs.name("queue");
    let pop = tokio::spawn({
        let queue = queue.clone();
        async move {
            let v: redis::RedisResult<Option<(String, String)>> =
                blocker.blpop(&queue, RS_DEADLINE.as_secs_f64() / 2.0).await;
            v
        }
    });
    let deadline = Instant::now() + RS_DEADLINE;
    let mut blocked = false;
    while !blocked && Instant::now() < deadline {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut watcher)
            .await?;
        blocked = list.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.contains(&format!("name={name}").as_str())
                && f.iter().any(|x| x.starts_with("flags=") && x.contains('b'))
        });
    }
    let mut answered = 0;
    for i in 0..20 {
        let () = watcher.set(rs.name("third"), i).await?;
        let got: i64 = watcher.get(rs.name("third")).await?;
        answered += usize::from(got == i);
    }
    let pending = !pop.is_finished();
    let _: i64 = c.rpush(&queue, "item").await?;
    let popped = match pop.await {
        Ok(Ok(Some((k, v)))) => format!("[{},{v}]", rs.strip(&k)),
        Ok(Ok(None)) => "nil".into(),
        Ok(Err(e)) => format!("error {e}"),
        Err(e) => format!("error {e}"),
    };
    Ok(format!(
        "blocked={} others_answered={answered} pending={} popped={popped}",
        yes(blocked),
        yes(pending)
    ))
}

async fn rs_scripts(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let p = &rs.prefix;
    let counted = format!("-- {p}\nreturn {{ARGV[1], redis.call('INCRBY', KEYS[1], ARGV[2])}}");
    let read = format!("-- {p} eval\nreturn redis.call('GET', KEYS[1])");
    let helper = format!("-- {p} helper\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])");
    let sha = redis::Script::new(&counted).get_hash().to_owned();
    let k = rs.name("script");
    let evalsha = |c: &mut Conn| {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&sha).arg(1).arg(&k).arg("a").arg(10);
        let mut c = c.clone();
        async move { cmd.query_async::<Value>(&mut c).await }
    };
    let before = match evalsha(c).await {
        Ok(_) => "ran".to_owned(),
        Err(e) => e.code().unwrap_or("?").to_owned(),
    };
    let loaded: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(&counted)
        .query_async(c)
        .await?;
    let loaded = if loaded == sha { "sha1".into() } else { loaded };
    let after = evalsha(c).await?;
    let plain: Value = redis::cmd("EVAL")
        .arg(&read)
        .arg(1)
        .arg(&k)
        .query_async(c)
        .await?;
    let helped: Value = redis::Script::new(&helper)
        .key(&k)
        .arg(5)
        .invoke_async(c)
        .await?;
    Ok(format!(
        "evalsha={before} load={loaded} evalsha={} eval={} helper={}",
        show(&after),
        show(&plain),
        show(&helped)
    ))
}

async fn rs_scan(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.set(rs.name(&format!("scan:{i}")), i).ignore();
    }
    let () = p.query_async(c).await?;
    let mut seen = std::collections::HashSet::new();
    {
        let opts = redis::ScanOptions::default()
            .with_pattern(rs.name("scan:*"))
            .with_count(1000);
        let mut iter = c.scan_options::<String>(opts).await?;
        while let Some(key) = iter.next_item().await {
            seen.insert(key?);
        }
    }
    let complete =
        seen.len() == 5000 && (0..5000).all(|i| seen.contains(&rs.name(&format!("scan:{i}"))));
    Ok(format!("keys={} complete={}", seen.len(), yes(complete)))
}

async fn rs_big(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let value: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 256) as u8).collect();
    let () = c.set(rs.name("big"), &value).await?;
    let back: Vec<u8> = c.get(rs.name("big")).await?;
    Ok(format!("bytes={} same={}", back.len(), yes(back == value)))
}

async fn rs_select(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let mut one = rs
        .client(1)
        .get_multiplexed_async_connection_with_config(&Rs::config())
        .await?;
    let () = one.set(rs.name("db"), "one").await?;
    let in1: String = one.get(rs.name("db")).await?;
    let in0: Value = c.get(rs.name("db")).await?;
    Ok(format!("db1={in1} db0={}", show(&in0)))
}

async fn rs_client_cache(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    if !rs.resp3 {
        return Ok(CACHE_RESP3_ONLY.into());
    }
    let k = rs.name("cached");
    let () = c.set(&k, "v1").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut t = rs
        .client(0)
        .get_multiplexed_async_connection_with_config(&Rs::config().set_push_sender(tx))
        .await?;
    let () = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query_async(&mut t)
        .await?;
    let first: String = t.get(&k).await?;
    let () = c.set(&k, "v2").await?;
    let mut invalidated = Vec::new();
    let deadline = tokio::time::Instant::now() + RS_DEADLINE;
    while invalidated.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(push)) if push.kind == redis::PushKind::Invalidate => {
                for v in &push.data {
                    if let Value::Array(keys) = v {
                        invalidated.extend(keys.iter().map(|k| rs.strip(&show(k))));
                    }
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let after: String = t.get(&k).await?;
    Ok(format!(
        "first={first} invalidated={} after={after}",
        invalidated.join(",")
    ))
}

async fn rs_pool(rs: &Rs, c: &mut Conn) -> redis::RedisResult<String> {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut c = c.clone();
            let k = rs.name(&format!("pool:{i}"));
            let count = rs.name("pool:count");
            tokio::spawn(async move {
                let v = format!("v{i}");
                let () = c.set(&k, &v).await?;
                let got: String = c.get(&k).await?;
                let _: i64 = c.incr(&count, 1).await?;
                redis::RedisResult::Ok(got == v)
            })
        })
        .collect();
    let mut own = 0;
    for t in tasks {
        if matches!(t.await, Ok(Ok(true))) {
            own += 1;
        }
    }
    let count: String = c.get(rs.name("pool:count")).await?;
    Ok(format!("tasks=50 own_reads={own} count={count}"))
}
