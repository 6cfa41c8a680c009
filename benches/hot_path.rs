//! Criterion benchmarks of the per-request work the proxy does in memory: decoding
//! requests, delimiting replies, classifying commands and routing them, and the key
//! fence's cost per write and per read.
//!
//! `cargo bench --bench hot_path` measures; `cargo test --benches` runs each benchmark
//! once as a smoke test. The README records the figures, so a regression shows.
// Benchmark code: a failure aborts the run.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redsplit::commands;
use redsplit::protocol::{Limits, Parsed, ReplyScanner, Request, RequestParser};
use redsplit::router::SessionReads;

mod support;
use support::{Routed, FEED_KEY, KEY};

/// Parse every request in `buf`, as a session does with its read buffer; returns how
/// many there were.
fn parse_all(p: &mut RequestParser, buf: &[u8], limits: &Limits) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < buf.len() {
        match p.parse(&buf[at..], limits) {
            Ok(Some(Parsed::Multibulk { len })) => {
                black_box(&p.args);
                at += len;
                n += 1;
            }
            other => panic!("unexpected parse result {other:?}"),
        }
    }
    n
}

/// Delimit every reply in `buf`; returns how many there were.
fn scan_all(s: &mut ReplyScanner, buf: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < buf.len() {
        match s.scan(&buf[at..]) {
            Ok(Some(len)) => {
                at += len;
                n += 1;
            }
            other => panic!("unexpected scan result {other:?}"),
        }
    }
    n
}

fn decode(c: &mut Criterion) {
    let limits = Limits::default();
    let cases = [
        ("get", support::get(KEY), 1),
        ("set_16B", support::set(KEY, 16), 1),
        ("set_4KB", support::set(KEY, 4096), 1),
        (
            "get_pipeline16",
            support::pipeline(&support::get(KEY), 16),
            16,
        ),
        (
            "set_16B_pipeline16",
            support::pipeline(&support::set(KEY, 16), 16),
            16,
        ),
    ];
    let mut g = c.benchmark_group("decode");
    for (name, buf, n) in &cases {
        g.throughput(Throughput::Elements(*n));
        let mut p = RequestParser::new();
        g.bench_function(*name, |b| {
            b.iter(|| parse_all(&mut p, black_box(buf), &limits))
        });
    }
    g.finish();
}

fn reply(c: &mut Criterion) {
    let cases = [
        ("bulk_16B", support::bulk_reply(16), 1),
        ("bulk_4KB", support::bulk_reply(4096), 1),
        (
            "bulk_16B_pipeline16",
            support::pipeline(&support::bulk_reply(16), 16),
            16,
        ),
        ("ok", b"+OK\r\n".to_vec(), 1),
        ("nested_array", support::nested_reply(), 1),
    ];
    let mut g = c.benchmark_group("reply");
    for (name, buf, n) in &cases {
        g.throughput(Throughput::Elements(*n));
        let mut s = ReplyScanner::new();
        g.bench_function(*name, |b| b.iter(|| scan_all(&mut s, black_box(buf))));
    }
    g.finish();
}

/// A parsed request kept with its buffer, for benchmarks past decoding.
struct Parsed1 {
    buf: Vec<u8>,
    parser: RequestParser,
}

impl Parsed1 {
    fn new(buf: Vec<u8>) -> Parsed1 {
        let mut parser = RequestParser::new();
        assert!(matches!(
            parser.parse(&buf, &Limits::default()),
            Ok(Some(Parsed::Multibulk { .. }))
        ));
        Parsed1 { buf, parser }
    }

    fn req(&self) -> Request<'_> {
        Request {
            buf: &self.buf,
            args: &self.parser.args,
        }
    }
}

fn classify(c: &mut Criterion) {
    let cases = [
        ("get", Parsed1::new(support::get(KEY))),
        ("set", Parsed1::new(support::set(KEY, 16))),
        ("mget_10", Parsed1::new(support::mget(10))),
    ];
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    for (name, p) in &cases {
        let req = p.req();
        g.bench_function(*name, |b| {
            b.iter(|| {
                let cmd = commands::lookup(black_box(&req)).expect("known command");
                let mut keys = 0usize;
                commands::for_each_key(cmd, &req, |i| keys += i);
                (cmd.class, keys)
            })
        });
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let w = support::world();
    let settings = w.proxy.settings.load_full();
    let view = w.proxy.view.load_full();
    let policy = &settings.policy;
    let sess = SessionReads::default();
    let get = Parsed1::new(support::get(KEY));
    let feed = Parsed1::new(support::get(FEED_KEY));
    let set = Parsed1::new(support::set(KEY, 16));
    let mget = Parsed1::new(support::mget(10));

    // The routing inputs must be what they claim: replica reads, master writes.
    for p in [&get, &feed, &mget] {
        let r = support::route_one(&p.req(), &settings, &view, &sess, w.now);
        assert!(
            matches!(
                r,
                Routed::Read(d) if matches!(d.target, redsplit::router::Target::Replica(_))
            ),
            "{r:?}"
        );
    }

    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    // Policy resolution alone (the level of one key), then the routing decision alone.
    let get_cmd = commands::lookup(&get.req()).expect("get");
    g.bench_function("resolve_get", |b| {
        let req = get.req();
        b.iter(|| {
            policy.resolve(get_cmd, |f| {
                commands::for_each_key(get_cmd, black_box(&req), |i| f(req.arg(i)))
            })
        })
    });
    let level = policy.resolve(get_cmd, |f| f(KEY)).level;
    g.bench_function("route_read_2_replicas", |b| {
        b.iter(|| redsplit::router::route_read(black_box(&level), &sess, policy, &view, w.now))
    });
    g.bench_function("route_read_balanced_turn_7", |b| {
        let sess = SessionReads {
            turn: 7,
            ..Default::default()
        };
        b.iter(|| redsplit::router::route_read(black_box(&level), &sess, policy, &view, w.now))
    });
    // Everything after decoding, as a session does it per request.
    for (name, p) in [
        ("get", &get),
        ("get_feed_rule", &feed),
        ("set", &set),
        ("mget_10", &mget),
    ] {
        let req = p.req();
        g.bench_function(format!("classify_resolve_route_{name}"), |b| {
            b.iter(|| support::route_one(black_box(&req), &settings, &view, &sess, w.now))
        });
    }
    // The snapshot loads a session does once per batch of requests.
    g.bench_function("load_snapshots", |b| {
        b.iter(|| {
            let s = w.proxy.settings.load_full();
            let v = w.proxy.view.load_full();
            black_box((&s, &v));
        })
    });
    g.finish();

    // Decode and route a 16-deep GET pipeline, end to end in memory.
    let mut g = c.benchmark_group("request_path");
    let buf = support::pipeline(&support::get(KEY), 16);
    g.throughput(Throughput::Elements(16));
    let mut parser = RequestParser::new();
    let limits = settings.limits;
    g.bench_function("get_pipeline16", |b| {
        b.iter(|| {
            let settings = w.proxy.settings.load_full();
            let view = w.proxy.view.load_full();
            let mut at = 0;
            let mut replica = 0;
            while at < buf.len() {
                let Ok(Some(Parsed::Multibulk { len })) = parser.parse(&buf[at..], &limits) else {
                    panic!("bad pipeline");
                };
                let req = Request {
                    buf: &buf[at..at + len],
                    args: &parser.args,
                };
                if let Routed::Read(d) = support::route_one(&req, &settings, &view, &sess, w.now) {
                    replica += matches!(d.target, redsplit::router::Target::Replica(_)) as usize;
                }
                at += len;
            }
            replica
        })
    });
    g.finish();
}

/// The key fence of `read_your_writes: key`: what a write adds (its key fenced when sent,
/// acknowledged when answered), and what a key-mode read adds (its key looked up).
fn key_fence(c: &mut Criterion) {
    use redsplit::fence::{key_hash, KeyFence};
    let mut g = c.benchmark_group("key_fence");
    let fence = KeyFence::new(1_000_000);
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("cart:{i:08}").into_bytes())
        .collect();
    let now = std::time::Instant::now();
    // Every key already has an entry: a rewrite of a recently written key.
    for k in &keys {
        let h = key_hash(0, k);
        fence.begin(h);
        fence.end(h, now);
    }
    let mut i = 0usize;
    g.bench_function("write_begin_and_ack", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let h = key_hash(0, black_box(&keys[i]));
            fence.begin(h);
            fence.end(h, now);
        })
    });
    // A key not fenced yet: the entry is created. Every 100 000 writes the sweeper drops
    // them all (its cost is counted here too), as it keeps a running proxy's map bounded.
    let mut n = 0u64;
    let later = now + std::time::Duration::from_secs(1);
    g.bench_function("write_begin_and_ack_new_key", |b| {
        b.iter(|| {
            n += 1;
            let h = key_hash(1, black_box(&n.to_be_bytes()));
            fence.begin(h);
            fence.end(h, now);
            if n % 100_000 == 0 {
                fence.sweep_held([Some(later)]);
            }
        })
    });
    fence.sweep_held([Some(later)]);
    for k in &keys {
        let h = key_hash(0, k);
        fence.begin(h);
        fence.end(h, now);
    }
    g.bench_function("read_lookup", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(fence.read([key_hash(0, black_box(&keys[i]))]))
        })
    });
    g.bench_function("read_lookup_unfenced_key", |b| {
        b.iter(|| black_box(fence.read([key_hash(0, black_box(b"feed:1"))])))
    });
    g.finish();
}

criterion_group!(benches, decode, reply, classify, route, key_fence);
criterion_main!(benches);
