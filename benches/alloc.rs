//! Heap allocations per request, counted by a global allocator.
//!
//! Two measurements, both for plain GET and SET in steady state (buffers warmed up):
//!
//! 1. **In memory**: decode → classify → resolve → route, as a session does per request
//!    (snapshots loaded once per batch). Asserted to be zero: this binary fails when a
//!    change makes those steps allocate.
//! 2. **Through the proxy**: a redsplit running in this process in front of a real
//!    master and two replicas (`redis-server` on free ports), one client pipelining 16
//!    requests at a time. Every allocation of the process counts, so the background work
//!    (replication polls, slowed down to one per backend a minute; the janitor) is
//!    measured on its own over a quiet interval and subtracted. Reported, not asserted. Skipped when `redis-server` is not installed.
//!
//! `cargo bench --bench alloc` runs it at full length; `cargo test --benches` runs a
//! short version.
// The allocator module: a counting GlobalAlloc is `unsafe` by definition; a bench may unwrap.
#![allow(
    unsafe_code,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redsplit::protocol::{Limits, Parsed, ReplyScanner, Request, RequestParser};
use redsplit::router::{SessionReads, Target};

mod support;
use support::{Routed, KEY};

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code, unused_imports)] // the bench uses a part of the harness
mod common;

/// The system allocator, counting allocations (a `realloc` counts as one) and the bytes
/// they ask for.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, bytes) so far.
fn counts() -> (u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// Run lengths: full under `cargo bench`, short under `cargo test --benches`.
struct Lengths {
    /// Batches run before counting starts.
    warmup: usize,
    /// Batches counted.
    batches: usize,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let len = if bench {
        Lengths {
            warmup: 2_000,
            batches: 20_000,
        }
    } else {
        Lengths {
            warmup: 200,
            batches: 1_000,
        }
    };
    println!("allocations per request (steady state)");
    println!(
        "{:<48} {:>12} {:>14} {:>16}",
        "case", "allocs/req", "bytes/req", "raw allocs/req"
    );
    in_memory(&len);
    through_proxy(&len);
}

// -------------------------------------------------------------------------- in memory

fn in_memory(len: &Lengths) {
    let w = support::world();
    let limits = Limits::default();
    let sess = SessionReads::default();
    let cases: [(&str, Vec<u8>, usize, bool); 5] = [
        ("in memory: GET", support::get(KEY), 1, true),
        ("in memory: SET 16 B", support::set(KEY, 16), 1, false),
        ("in memory: SET 4 KB", support::set(KEY, 4096), 1, false),
        (
            "in memory: GET, pipeline 16",
            support::pipeline(&support::get(KEY), 16),
            16,
            true,
        ),
        (
            "in memory: SET 16 B, pipeline 16",
            support::pipeline(&support::set(KEY, 16), 16),
            16,
            false,
        ),
    ];
    for (name, buf, per_batch, read) in &cases {
        let mut parser = RequestParser::new();
        let mut batch = || {
            let settings = w.proxy.settings.load_full();
            let view = w.proxy.view.load_full();
            let mut at = 0;
            while at < buf.len() {
                let Ok(Some(Parsed::Multibulk { len })) = parser.parse(&buf[at..], &limits) else {
                    panic!("{name}: bad request bytes");
                };
                let req = Request {
                    buf: &buf[at..at + len],
                    args: &parser.args,
                };
                let routed = support::route_one(&req, &settings, &view, &sess, w.now);
                let ok = match routed {
                    Routed::Read(d) => *read && matches!(d.target, Target::Replica(_)),
                    Routed::Write(d, _) => !*read && d.target == Target::Master,
                    Routed::Other => false,
                };
                assert!(ok, "{name}: routed {routed:?}");
                at += len;
            }
        };
        for _ in 0..len.warmup {
            batch();
        }
        let before = counts();
        for _ in 0..len.batches {
            batch();
        }
        let after = counts();
        let requests = (len.batches * per_batch) as f64;
        let allocs = after.0 - before.0;
        println!(
            "{:<48} {:>12.4} {:>14.1}",
            name,
            allocs as f64 / requests,
            (after.1 - before.1) as f64 / requests
        );
        assert_eq!(
            allocs, 0,
            "{name}: decode→classify→resolve→route allocated {allocs} times in steady state"
        );
    }
}

// ---------------------------------------------------------------------- through proxy

fn through_proxy(len: &Lengths) {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("through the proxy: skipped (redis-server not found)");
        return;
    }
    let set = common::ReplicaSet::start(2, false);
    let proxy = common::ProxyUnderTest::start(&common::proxy_yaml(
        &set,
        // Polls once a minute (after the first): the background stays small next to
        // what is measured, and the budget keeps the replicas in the pool meanwhile.
        "replication: {dwell_ms: 0, poll_interval_ms: 60000}\n\
         routing: {default: {consistency: replica, max_lag_ms: 600000}}\n",
    ));
    proxy.wait_in_pool(2);

    let value16 = vec![b'x'; 16];
    let value4k = vec![b'x'; 4096];
    set.master.cmd(&[
        "SET",
        "key:16",
        std::str::from_utf8(&value16).expect("ascii"),
    ]);
    set.master.cmd(&[
        "SET",
        "key:4k",
        std::str::from_utf8(&value4k).expect("ascii"),
    ]);
    set.wait_synced(common::SYNC_TIMEOUT);

    // Background allocations (replication polls, janitor) over a quiet interval.
    let quiet = Duration::from_millis(if len.batches > 5_000 { 1_000 } else { 300 });
    let before = counts();
    std::thread::sleep(quiet);
    let after = counts();
    let bg_per_sec = (after.0 - before.0) as f64 / quiet.as_secs_f64();
    let bg_bytes_per_sec = (after.1 - before.1) as f64 / quiet.as_secs_f64();

    let cases: [(&str, Vec<u8>); 6] = [
        (
            "through the proxy: GET 16 B, pipeline 16",
            support::get(b"key:16"),
        ),
        (
            "through the proxy: GET 4 KB, pipeline 16",
            support::get(b"key:4k"),
        ),
        (
            "through the proxy: SET 16 B, pipeline 16",
            support::set(b"key:w16", 16),
        ),
        (
            "through the proxy: SET 4 KB, pipeline 16",
            support::set(b"key:w4k", 4096),
        ),
        (
            "through the proxy: GET 16 B, pipeline 1",
            support::get(b"key:16"),
        ),
        (
            "through the proxy: SET 16 B, pipeline 1",
            support::set(b"key:w16", 16),
        ),
    ];
    for (name, one) in &cases {
        let depth = if name.ends_with("pipeline 16") { 16 } else { 1 };
        let batch = support::pipeline(one, depth);
        // A fresh connection per case: a GET connection has never written, so
        // read-your-writes does not send its reads to the master.
        let mut client = Client::connect(proxy.addr);
        for _ in 0..len.warmup {
            client.round_trip(&batch, depth);
        }
        let before = counts();
        let started = Instant::now();
        for _ in 0..len.batches {
            client.round_trip(&batch, depth);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = counts();
        let requests = (len.batches * depth) as f64;
        let raw = (after.0 - before.0) as f64;
        let allocs = raw - bg_per_sec * elapsed;
        let bytes = (after.1 - before.1) as f64 - bg_bytes_per_sec * elapsed;
        println!(
            "{:<48} {:>12.4} {:>14.1} {:>16.4}",
            name,
            allocs.max(0.0) / requests,
            bytes.max(0.0) / requests,
            raw / requests
        );
    }
    println!(
        "(through the proxy: background of {bg_per_sec:.0} allocations/s subtracted; \
         GETs went to replicas: {})",
        replica_reads(&set) > 0
    );
}

/// GETs the replicas served (`cmdstat_get`), to show the reads did go to replicas.
fn replica_reads(set: &common::ReplicaSet) -> u64 {
    set.replicas
        .iter()
        .map(|r| r.commandstats().get("get").copied().unwrap_or(0))
        .sum()
}

/// A blocking client that writes a batch and reads until it has as many replies; it
/// allocates nothing after its buffer is sized.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    scanner: ReplyScanner,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(common::CMD_TIMEOUT))
            .expect("read timeout");
        Client {
            stream,
            buf: vec![0; 256 * 1024],
            scanner: ReplyScanner::new(),
        }
    }

    fn round_trip(&mut self, batch: &[u8], replies: usize) {
        self.stream.write_all(batch).expect("write to the proxy");
        let mut filled = 0;
        let mut start = 0;
        let mut seen = 0;
        while seen < replies {
            match self.scanner.scan(&self.buf[start..filled]) {
                Ok(Some(n)) => {
                    assert!(
                        self.buf[start] != b'-',
                        "error reply: {}",
                        String::from_utf8_lossy(&self.buf[start..start + n])
                    );
                    start += n;
                    seen += 1;
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("bad reply from the proxy: {e}"),
            }
            assert!(filled < self.buf.len(), "replies larger than the buffer");
            let n = self
                .stream
                .read(&mut self.buf[filled..])
                .expect("read from the proxy");
            assert!(n > 0, "the proxy closed the connection");
            filled += n;
        }
        assert_eq!(start, filled, "more replies than requests");
    }
}
