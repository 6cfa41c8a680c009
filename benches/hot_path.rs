//! Criterion benchmarks of the per-request work the proxy does in memory: decoding
//! requests, delimiting replies, classifying commands and routing them.
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

criterion_group!(benches, decode, reply, classify, route);
criterion_main!(benches);
