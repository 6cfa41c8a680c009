//! Hardening against real Redis: bad input, slow and vanishing clients, backend faults,
//! access control and secrets.
//!
//! Every abuse runs beside a well-behaved client ([`Side`]) whose SET/GET replies are
//! checked throughout; the test fails on any wrong or failed reply of it. Memory is the
//! resident set of this process (the proxy runs in it), read from `/proc/self/status`:
//! tests that measure it hold [`exclusive`], every other test holds [`shared`], so no
//! other test allocates while a measurement runs.
//!
//! The memory bounds asserted (growth over a baseline taken just before the abuse):
//! - declared sizes (200 clients each declaring a 512 MB bulk or a 1 000 000-element
//!   request, then stalling), deep nesting, garbage: < 32 MB;
//! - a 1 000 000-command pipeline: < 64 MB at its peak;
//! - 5 000 clients connected at once: < 64 MB while connected (about 13 KB each, the
//!   client sockets of this process included);
//! - clients that never read (1 MB replies, a pub/sub flood): < 64 MB at the peak, with
//!   8 MB and 4 MB output buffer limits; and for a never-reading client's burst of
//!   requests, Redis's own memory peak stays < 128 MB (it was 1 GB before the proxy
//!   bounded what one client has in flight by its reply sizes);
//! - a 100 MB value: it round-trips intact; once its client has left, memory is back to
//!   within 48 MB of the baseline (the value passes through four buffers on its way).

use crate::common::*;
use redis::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Held by a test that measures memory: no other test of this binary runs an in-process
/// proxy meanwhile.
fn exclusive() -> ExclusiveMemory {
    capture_logs();
    exclusive_memory()
}

/// Held by every test that does not measure memory.
fn shared() -> SharedMemory {
    capture_logs();
    shared_memory()
}

/// Read until the peer closes (EOF or reset) or `within` passes; the bytes read and
/// whether it closed.
fn read_to_close(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
        if Instant::now() >= deadline {
            return (out, false);
        }
    }
}

/// Send `bytes` and expect `reply` then the connection closed, as Redis does after a
/// protocol error. When the proxy closes with some of our bytes unread, the kernel may
/// reset the connection and drop the reply; `exact` says the bytes are few enough that
/// the reply must arrive.
fn expect_error_and_close(addr: SocketAddr, bytes: &[u8], reply: &str, exact: bool) {
    let mut s = raw(addr);
    let _ = s.write_all(bytes);
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed, "the proxy closed the connection after {reply:?}");
    let got = String::from_utf8_lossy(&got);
    if exact {
        assert_eq!(got, reply);
    } else {
        assert!(
            reply.starts_with(&*got),
            "{got:?} is not a prefix of {reply:?}"
        );
    }
}

/// Whether the proxy closed `s` within `within` (any bytes it sent are ignored).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    read_to_close(s, within).1
}

/// A well-behaved client in the background: SET then GET of its own keys, each reply
/// checked. Any failed or wrong reply fails the test at [`Side::finish`].
struct Side {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Side {
    fn start(addr: SocketAddr, tag: &str) -> Side {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let tag = tag.to_owned();
        let thread = {
            let (stop, ops) = (stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut c = try_connect(addr).map_err(|e| format!("side connect: {e}"))?;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("side:{tag}:{}", i % 64);
                    let val = format!("v{i}");
                    match query(&mut c, &["SET", &key, &val]) {
                        Ok(v) if text(&v) == "OK" => {}
                        other => return Err(format!("side SET {key}: {other:?}")),
                    }
                    match query(&mut c, &["GET", &key]) {
                        Ok(v) if text(&v) == val => {}
                        other => return Err(format!("side GET {key}: {other:?}, want {val}")),
                    }
                    ops.fetch_add(2, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        };
        let side = Side {
            stop,
            ops,
            thread: Some(thread),
        };
        side.progress("the side client starts");
        side
    }

    /// Wait until the side client has completed more requests (it is still served).
    fn progress(&self, what: &str) {
        let n = self.ops.load(Ordering::Relaxed);
        let ops = self.ops.clone();
        wait_until(
            &format!("the side client is served ({what})"),
            Duration::from_secs(10),
            || ops.load(Ordering::Relaxed) >= n + 20 || self.failed(),
        );
        assert!(!self.failed(), "the side client failed ({what})");
    }

    fn failed(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }

    /// Stop and check every reply was right; the number of requests it made.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let result = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("side thread");
        if let Err(e) = result {
            panic!("the side client saw a wrong or failed reply: {e}");
        }
        self.ops.load(Ordering::Relaxed)
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connected_clients(s: &RedisServer) -> u64 {
    s.info("clients")["connected_clients"].parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// Logs: every event of this binary is formatted and checked for secrets.
// ---------------------------------------------------------------------------------------

/// Strings no log line, reply or endpoint may show.
const SECRETS: &[&str] = &[
    "Backend-Pa55word-7d1e",
    "Wrong-Backend-Pa55-91c",
    "User-Pa55word-ab34",
    "Reader-Pa55word-5f0c",
    "Admin-T0ken-8e2a",
    "Attempted-Pa55-33d9",
];

/// Log lines that contained a secret, and how many lines were written in all.
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOG_LINES: AtomicU64 = AtomicU64::new(0);

struct LeakCheck;

impl Write for LeakCheck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG_LINES.fetch_add(1, Ordering::Relaxed);
        let line = String::from_utf8_lossy(buf);
        if SECRETS.iter().any(|s| line.contains(s)) {
            LEAKS.lock().unwrap().push(line.into_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install, once, a subscriber that formats every event at every level and checks it.
fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LeakCheck)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
    });
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

#[test]
fn broken_streams_get_redis_errors_and_are_closed() {
    let _g = exclusive();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "limits:\n  client_query_buffer_limit: 32mb\n",
    ));
    proxy.wait_healthy(1);
    let side = Side::start(proxy.addr, "broken");
    let base = rss_mb();

    // Redis's errors, word for word, then the connection closes.
    let cases: &[(&[u8], &str)] = &[
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*3000000000\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n:1\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n*1\r\n*1\r\n",
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            // A declared 4 GB bulk.
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4294967296\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-2\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"GET \"abc\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            b"PING\r\n*1\r\n$x\r\n",
            "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
        ),
    ];
    for (bytes, reply) in cases {
        expect_error_and_close(proxy.addr, bytes, reply, true);
    }
    let long = vec![b'a'; 70 * 1024];
    expect_error_and_close(
        proxy.addr,
        &long,
        "-ERR Protocol error: too big inline request\r\n",
        false,
    );
    let mut hdr = b"*1\r\n$".to_vec();
    hdr.extend_from_slice(&[b'1'; 70 * 1024]);
    expect_error_and_close(
        proxy.addr,
        &hdr,
        "-ERR Protocol error: too big bulk count string\r\n",
        false,
    );
    side.progress("after the protocol errors");

    // Deep nesting: a million levels (4 MB) is refused at the second byte of nesting.
    let deep = b"*1\r\n".repeat(1_000_000);
    let writer = {
        let mut s = raw(proxy.addr);
        let reader = s.try_clone().unwrap();
        (
            std::thread::spawn(move || {
                let _ = s.write_all(&deep);
            }),
            reader,
        )
    };
    let (w, mut r) = writer;
    let (got, closed) = read_to_close(&mut r, Duration::from_secs(5));
    assert!(closed, "deep nesting closes the connection");
    assert!(
        "-ERR Protocol error: expected '$', got '*'\r\n"
            .starts_with(&*String::from_utf8_lossy(&got)),
        "{got:?}"
    );
    w.join().unwrap();
    side.progress("after deep nesting");

    // Garbage: seeded random bytes on 20 connections. Whatever the proxy makes of them
    // (inline commands, errors, a protocol error), it stays up for everyone else.
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..20 {
        let mut s = raw(proxy.addr);
        let junk: Vec<u8> = (0..64 * 1024).map(|_| rng.u8(..)).collect();
        let _ = s.write_all(&junk);
        let _ = read_to_close(&mut s, Duration::from_millis(100));
    }
    side.progress("after garbage");

    // Declared sizes cost nothing until the bytes arrive: 100 clients each declare a
    // 512 MB bulk and 100 a million-element request, then stall.
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = raw(proxy.addr);
        let bytes: &[u8] = if i % 2 == 0 {
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\nabc"
        } else {
            b"*1000000\r\n$5\r\nRPUSH\r\n$4\r\nlist\r\n"
        };
        s.write_all(bytes).unwrap();
        stalled.push(s);
    }
    let state = proxy.state().clone();
    wait_until(
        "the stalled clients are connected",
        Duration::from_secs(10),
        || state.sessions.len() >= 201,
    );
    side.progress("beside 200 stalled clients");
    let grown = rss_mb() - base;
    eprintln!(
        "memory after protocol errors, deep nesting, garbage and 200 declarations: +{grown:.1} MB"
    );
    assert!(grown < 32.0, "declared sizes allocated: +{grown:.1} MB");
    drop(stalled);

    // A million-element request that does arrive is forwarded whole.
    let mut req = b"*1000002\r\n$5\r\nRPUSH\r\n$7\r\nbiglist\r\n".to_vec();
    for _ in 0..1_000_000 {
        req.extend_from_slice(b"$1\r\nx\r\n");
    }
    let mut s = raw(proxy.addr);
    let w = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&req).unwrap())
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(read_n(&mut s, 10), b":1000000\r\n");
    w.join().unwrap();
    assert_eq!(set.master.cmd(&["LLEN", "biglist"]), Value::Int(1_000_000));

    // The query buffer limit: a client that sends more than 32 MB of one request is
    // closed without a reply, as Redis closes it.
    let mut s = raw(proxy.addr);
    let w = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$100000000\r\n");
            let chunk = vec![b'q'; 1 << 20];
            for _ in 0..100 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        })
    };
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(closed && got.is_empty(), "closed without a reply: {got:?}");
    w.join().unwrap();
    assert!(
        proxy
            .state()
            .metrics
            .clients_limited
            .load(Ordering::Relaxed)
            >= 1
    );
    side.progress("after the query buffer limit");
    side.finish();
}

#[test]
fn a_hundred_megabyte_value_round_trips_and_is_released() {
    let _g = exclusive();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let side = Side::start(proxy.addr, "big");
    // Warm the pools and buffers a little, then take the baseline.
    let base = rss_mb();
    const N: usize = 100 * 1024 * 1024;
    let peak;
    {
        let mut s = raw(proxy.addr);
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let w = {
            let mut s = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut req = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${N}\r\n").into_bytes();
                req.reserve(N + 2);
                req.extend((0..N).map(|i| (i % 251) as u8));
                req.extend_from_slice(b"\r\n");
                s.write_all(&req).unwrap();
            })
        };
        assert_eq!(read_n(&mut s, 5), b"+OK\r\n");
        w.join().unwrap();
        side.progress("after the 100 MB SET");
        s.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n").unwrap();
        let header = format!("${N}\r\n");
        assert_eq!(read_n(&mut s, header.len()), header.as_bytes());
        let body = read_n(&mut s, N + 2);
        assert!(
            body[..N]
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8),
            "the value came back intact"
        );
        assert_eq!(&body[N..], b"\r\n");
        peak = rss_mb() - base;
        drop(body);
        side.progress("after the 100 MB GET");
    }
    let state = proxy.state().clone();
    wait_until("the big client is gone", Duration::from_secs(5), || {
        state.sessions.len() == 1
    });
    set.master.cmd(&["DEL", "big"]);
    let mut after = 0.0;
    let released = (0..100).any(|_| {
        after = rss_mb() - base;
        if after < 48.0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    eprintln!("100 MB value: peak +{peak:.0} MB, after the client left +{after:.1} MB");
    assert!(
        released,
        "memory not released: +{after:.1} MB after the client left"
    );
    side.progress("at the end");
    side.finish();
}

#[test]
fn a_million_command_pipeline() {
    let _g = exclusive();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    set.master.set("pk", "pv");
    set.wait_synced(SYNC_TIMEOUT);
    let side = Side::start(proxy.addr, "pipe");
    let base = rss_mb();
    const N: usize = 1_000_000;
    // Mostly PING (answered by the proxy), every 50th a GET and every 500th an INCR (to
    // the backends).
    let kind = |i: usize| match i % 500 {
        0 => 2,
        x if x % 50 == 0 => 1,
        _ => 0,
    };
    let s = raw(proxy.addr);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut batch = Vec::with_capacity(1 << 20);
            for i in 0..N {
                batch.extend_from_slice(match kind(i) {
                    2 => &b"*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n"[..],
                    1 => b"*2\r\n$3\r\nGET\r\n$2\r\npk\r\n",
                    _ => b"*1\r\n$4\r\nPING\r\n",
                });
                if batch.len() >= 1 << 20 {
                    s.write_all(&batch).unwrap();
                    batch.clear();
                }
            }
            s.write_all(&batch).unwrap();
        })
    };
    let mut r = std::io::BufReader::with_capacity(1 << 16, s);
    let mut line = Vec::new();
    let mut peak = 0.0f64;
    let mut incr = 0;
    for i in 0..N {
        line.clear();
        std::io::BufRead::read_until(&mut r, b'\n', &mut line).unwrap();
        match kind(i) {
            2 => {
                incr += 1;
                assert_eq!(line, format!(":{incr}\r\n").as_bytes(), "reply {i}");
            }
            1 => {
                assert_eq!(line, b"$2\r\n", "reply {i}");
                line.clear();
                std::io::BufRead::read_until(&mut r, b'\n', &mut line).unwrap();
                assert_eq!(line, b"pv\r\n", "reply {i}");
            }
            _ => assert_eq!(line, b"+PONG\r\n", "reply {i}"),
        }
        if i % 100_000 == 0 {
            peak = peak.max(rss_mb() - base);
        }
    }
    writer.join().unwrap();
    eprintln!("1 000 000-command pipeline: peak +{peak:.1} MB");
    assert!(peak < 64.0, "pipeline memory +{peak:.1} MB");
    side.progress("after the pipeline");
    side.finish();
}

#[test]
fn five_thousand_clients_at_once_and_max_clients() {
    let _g = exclusive();
    let want: libc::rlim_t = 16_384;
    // SAFETY: plain syscalls on this process's own limits.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let side = Side::start(proxy.addr, "many");
    let base = rss_mb();
    let mut clients: Vec<TcpStream> = (0..5000).map(|_| raw(proxy.addr)).collect();
    for c in &mut clients {
        c.write_all(b"PING\r\n").unwrap();
    }
    for c in &mut clients {
        assert_eq!(read_n(c, 7), b"+PONG\r\n");
    }
    let state = proxy.state().clone();
    assert!(state.sessions.len() >= 5000);
    side.progress("beside 5 000 clients");
    let grown = rss_mb() - base;
    eprintln!("5 000 clients: +{grown:.1} MB");
    assert!(grown < 64.0, "5 000 clients took +{grown:.1} MB");
    drop(clients);
    wait_until(
        "the 5 000 clients are gone",
        Duration::from_secs(10),
        || state.sessions.len() == 1,
    );
    side.finish();

    // Past max_clients: Redis's error, and the connection closes.
    let small = ProxyUnderTest::start(&proxy_yaml(&set, "limits:\n  max_clients: 10\n"));
    let mut held: Vec<TcpStream> = (0..10).map(|_| raw(small.addr)).collect();
    for c in &mut held {
        c.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_n(c, 7), b"+PONG\r\n");
    }
    let mut extra = raw(small.addr);
    let (got, closed) = read_to_close(&mut extra, Duration::from_secs(5));
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    assert!(closed);
    assert!(
        small
            .state()
            .metrics
            .clients_rejected
            .load(Ordering::Relaxed)
            >= 1
    );
    drop(held);
    let s2 = small.state().clone();
    wait_until("room again", Duration::from_secs(5), || {
        s2.sessions.is_empty()
    });
    let mut again = small.conn();
    assert_eq!(text(&query(&mut again, &["PING"]).unwrap()), "PONG");
}

// ---------------------------------------------------------------------------------------
// Slow and vanishing clients
// ---------------------------------------------------------------------------------------

/// A client socket with a small receive buffer, so that unread replies pile up in the
/// proxy quickly.
fn slow_reader(addr: SocketAddr) -> TcpStream {
    let s = raw(addr);
    let size: libc::c_int = 16 * 1024;
    // SAFETY: setsockopt on a socket this function owns, with a valid int.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s
}

#[test]
fn clients_that_never_read_are_disconnected_over_their_output_limit() {
    let _g = exclusive();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "limits:\n  client_output_buffer_limit: 8mb\n  pubsub_output_buffer_limit: 4mb\n",
    ));
    proxy.wait_healthy(1);
    let big = "x".repeat(1 << 20);
    set.master.set("bigkey", &big);
    set.wait_synced(SYNC_TIMEOUT);
    let side = Side::start(proxy.addr, "noread");
    let state = proxy.state().clone();
    let base = rss_mb();
    let mut peak = 0.0f64;

    // GET of a 1 MB value in a loop, never reading.
    let mut s = slow_reader(proxy.addr);
    let started = Instant::now();
    let mut sent = 0;
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(20) {
        if s.write_all(b"*2\r\n$3\r\nGET\r\n$6\r\nbigkey\r\n").is_err() {
            cut = true;
            break;
        }
        sent += 1;
        peak = peak.max(rss_mb() - base);
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "never-reading client: cut after {sent} GETs of 1 MB in {:?}; peak +{peak:.1} MB",
        started.elapsed()
    );
    assert!(cut, "the client was disconnected");
    assert!(
        sent < 200,
        "disconnected near its 8 MB limit, not after {sent} MB"
    );
    assert!(state.metrics.clients_limited.load(Ordering::Relaxed) >= 1);
    side.progress("after the never-reading client");

    // A subscriber that never reads while a publisher floods its channel.
    let mut sub = slow_reader(proxy.addr);
    sub.write_all(b"SUBSCRIBE flood\r\n").unwrap();
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nflood\r\n:1\r\n";
    assert_eq!(read_n(&mut sub, confirm.len()), confirm);
    let mut publisher = proxy.conn();
    let msg = "m".repeat(64 * 1024);
    let limited_before = state.metrics.clients_limited.load(Ordering::Relaxed);
    let mut published = 0;
    loop {
        let receivers = query(&mut publisher, &["PUBLISH", "flood", &msg]).unwrap();
        published += 1;
        peak = peak.max(rss_mb() - base);
        if receivers == Value::Int(0) {
            break;
        }
        assert!(published < 2000, "the subscriber was never disconnected");
    }
    eprintln!(
        "never-reading subscriber: cut after {published} messages of 64 KB; peak +{peak:.1} MB"
    );
    assert!(state.metrics.clients_limited.load(Ordering::Relaxed) > limited_before);
    assert!(closed_within(&mut sub, Duration::from_secs(5)));
    assert!(
        peak < 64.0,
        "memory while clients did not read: +{peak:.1} MB"
    );
    side.progress("after the flood");
    side.finish();
}

/// One pipeline of many large replies that the client never reads: the replies waiting
/// in the proxy count against the client's output limit from when their length is read,
/// before their bytes are, and the output buffer counts at the most it held since it was
/// last empty, so the proxy holds at most about the limit for it (Redis holds up to the
/// limit plus one reply), however many of those replies the pipeline asked for. Replies
/// wait in chunks, large ones in the very buffers they were read into, and the output
/// buffer takes one chunk at a time: no buffer is grown, and copied, to the limit's size.
fn pipeline_of_large_replies_is_cut(limit_mb: usize, reply_mb: usize) {
    let _g = exclusive();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        &format!("limits:\n  client_output_buffer_limit: {limit_mb}mb\n"),
    ));
    proxy.wait_healthy(1);
    set.master.set("huge", &"h".repeat(reply_mb << 20));
    let state = proxy.state().clone();
    let base = rss_mb();
    let mut s = slow_reader(proxy.addr);
    let pipeline = b"*2\r\n$3\r\nGET\r\n$4\r\nhuge\r\n".repeat(100);
    s.write_all(&pipeline).unwrap();
    let mut peak = 0.0f64;
    wait_until("the client is cut", Duration::from_secs(30), || {
        peak = peak.max(rss_mb() - base);
        state.metrics.clients_limited.load(Ordering::Relaxed) >= 1
    });
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    eprintln!("100 GETs of {reply_mb} MB, never read, limit {limit_mb} MB: peak +{peak:.1} MB");
    // Before the cut, at most the limit; after it, the output buffer and the reply being
    // read when it came, less than that. The margin (small buffers, the allocator's own)
    // stays below one reply: Redis itself holds up to the limit plus one reply.
    let bound = limit_mb as f64 * 1.2;
    assert!(
        peak < bound,
        "the proxy held +{peak:.1} MB for a client with a {limit_mb} MB limit (bound {bound:.0} MB)"
    );
}

#[test]
fn a_pipeline_of_large_replies_is_cut_within_the_limit() {
    pipeline_of_large_replies_is_cut(16, 4);
}

#[test]
fn a_pipeline_of_16_mb_replies_is_cut_near_a_64_mb_limit() {
    pipeline_of_large_replies_is_cut(64, 16);
}

/// A client that pipelines requests with large replies as fast as it can and never
/// reads: besides its own output limit, what it has in flight on a shared connection is
/// bounded by the size of its replies, so Redis never builds much more reply data for it
/// than the proxy would buffer (without that bound, its first 4096 requests made Redis
/// build 1 GB of replies here, 4 GB with 1 MB values, stalling everyone meanwhile).
#[test]
fn a_never_reading_burst_is_bounded_at_the_backend() {
    let _g = exclusive();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "limits:\n  client_output_buffer_limit: 8mb\n",
    ));
    proxy.wait_healthy(1);
    set.master.set("burst", &"b".repeat(256 * 1024));
    set.master.cmd(&["CONFIG", "RESETSTAT"]);
    let mut side = proxy.conn();
    let mut s = slow_reader(proxy.addr);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if s.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nburst\r\n").is_err() {
                    return;
                }
            }
        })
    };
    while !writer.is_finished() && started.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        query(&mut side, &["GET", "burst"]).unwrap();
        slowest = slowest.max(t.elapsed());
    }
    writer.join().unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    let peak: u64 = set.master.info("memory")["used_memory_peak"]
        .parse()
        .unwrap();
    eprintln!(
        "burst: Redis peak {} MB, slowest side GET {slowest:?}",
        peak >> 20
    );
    assert!(
        peak < 128 << 20,
        "Redis buffered {} MB for one client",
        peak >> 20
    );
    assert!(
        slowest < Duration::from_millis(500),
        "others waited {slowest:?}"
    );
}

#[test]
fn idle_clients_are_closed_but_not_subscribers_or_blocked_ones() {
    let _g = shared();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, "limits:\n  idle_timeout_ms: 1000\n"));
    proxy.wait_healthy(1);
    let side = Side::start(proxy.addr, "idle");
    let mut idle = raw(proxy.addr);
    idle.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_n(&mut idle, 7), b"+PONG\r\n");
    let mut sub = raw(proxy.addr);
    sub.write_all(b"SUBSCRIBE news\r\n").unwrap();
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n";
    assert_eq!(read_n(&mut sub, confirm.len()), confirm);
    let mut blocked = raw(proxy.addr);
    blocked.write_all(b"BLPOP jobs 0\r\n").unwrap();
    let t = Instant::now();
    let (got, closed) = read_to_close(&mut idle, Duration::from_secs(5));
    assert!(
        closed && got.is_empty(),
        "the idle client is closed silently"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, not idle long enough"
    );
    // Both others have been idle past the timeout by now. A second idle client, opened
    // now, is closed only by a later round of the janitor: once it is, that round has
    // passed over the subscriber and the blocked client too. Show they still work.
    let mut idle2 = raw(proxy.addr);
    idle2.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_n(&mut idle2, 7), b"+PONG\r\n");
    let (_, closed) = read_to_close(&mut idle2, Duration::from_secs(5));
    assert!(closed, "the second idle client is closed too");
    set.master.cmd(&["PUBLISH", "news", "hello"]);
    let msg = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n";
    sub.set_read_timeout(Some(CMD_TIMEOUT)).unwrap();
    assert_eq!(read_n(&mut sub, msg.len()), msg);
    set.master.cmd(&["RPUSH", "jobs", "j1"]);
    blocked.set_read_timeout(Some(CMD_TIMEOUT)).unwrap();
    let popped = b"*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n";
    assert_eq!(read_n(&mut blocked, popped.len()), popped);
    side.progress("the side client is never idle");
    side.finish();
}

#[test]
fn a_half_sent_request_holds_no_backend_connection() {
    let _g = shared();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let side = Side::start(proxy.addr, "half");
    side.progress("warming the pools");
    let before = connected_clients(&set.master);
    // 50 clients stall mid-request: inside a bulk, inside a header, between arguments,
    // and after a complete request of the same pipeline.
    let parts: [&[u8]; 4] = [
        b"*3\r\n$3\r\nSET\r\n$2\r\nhs\r\n$10\r\nabc",
        b"*3\r\n$3\r\nSE",
        b"*2\r\n$3\r\nGET\r\n",
        b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1",
    ];
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut s = raw(proxy.addr);
            s.write_all(parts[i % 4]).unwrap();
            s
        })
        .collect();
    for s in stalled.iter_mut().skip(3).step_by(4) {
        assert_eq!(read_n(s, 7), b"+PONG\r\n");
    }
    side.progress("beside 50 stalled clients");
    let during = connected_clients(&set.master);
    assert!(
        during <= before,
        "stalled clients hold backend connections: {during} vs {before}"
    );
    // The first one finishes its request: it is served.
    stalled[0].write_all(b"defghij\r\n").unwrap();
    assert_eq!(read_n(&mut stalled[0], 5), b"+OK\r\n");
    assert_eq!(set.master.get("hs").as_deref(), Some("abcdefghij"));
    drop(stalled);
    let state = proxy.state().clone();
    wait_until(
        "the stalled clients are gone",
        Duration::from_secs(5),
        || state.sessions.len() == 1,
    );
    // The finished SET may have opened the master pool's other shared connection.
    assert!(connected_clients(&set.master) <= before + 1);
    side.finish();
}

// ---------------------------------------------------------------------------------------
// Backend faults, under load
// ---------------------------------------------------------------------------------------

/// Readers and a writer in the background; every reply checked, read latencies kept.
struct Load {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    max_read: Arc<Mutex<Duration>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `readers` threads GET `key` (expecting `value`); one thread SETs its own keys.
    fn start(addr: SocketAddr, readers: usize, key: &str, value: &str) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            reads: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            max_read: Arc::new(Mutex::new(Duration::ZERO)),
            threads: Vec::new(),
        };
        let mut threads = Vec::new();
        for _ in 0..readers {
            let (stop, reads, errors, max_read) = (
                load.stop.clone(),
                load.reads.clone(),
                load.errors.clone(),
                load.max_read.clone(),
            );
            let (key, value) = (key.to_owned(), value.to_owned());
            threads.push(std::thread::spawn(move || {
                let mut c = connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = query(&mut c, &["GET", &key]);
                    let took = t.elapsed();
                    match r {
                        Ok(v) if value_text(&v).as_deref() == Some(&value) => {}
                        other => {
                            let what = format!("{other:?}");
                            errors.lock().unwrap().push(format!(
                                "GET after {took:?}: {}",
                                &what[..what.len().min(200)]
                            ));
                            if other.is_err() {
                                c = connect(addr);
                            }
                        }
                    }
                    let mut m = max_read.lock().unwrap();
                    *m = (*m).max(took);
                    drop(m);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        {
            let (stop, writes, errors) =
                (load.stop.clone(), load.writes.clone(), load.errors.clone());
            threads.push(std::thread::spawn(move || {
                let mut c = connect(addr);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match query(&mut c, &["SET", &format!("w:{}", i % 100), "1"]) {
                        Ok(v) if text(&v) == "OK" => {}
                        other => errors.lock().unwrap().push(format!("SET: {other:?}")),
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        Load { threads, ..load }
    }

    /// Wait until `n` more reads completed.
    fn reads_continue(&self, n: u64, what: &str) {
        let start = self.reads.load(Ordering::Relaxed);
        let reads = self.reads.clone();
        wait_until(what, Duration::from_secs(15), || {
            reads.load(Ordering::Relaxed) >= start + n
        });
    }

    /// Stop; the errors seen and the slowest read.
    fn finish(self) -> (Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        let max = *self.max_read.lock().unwrap();
        (errors, max)
    }
}

#[test]
fn a_stopped_replica_costs_reads_at_most_the_command_timeout() {
    let _g = shared();
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "  command_timeout_ms: 500\n  connect_timeout_ms: 500\n",
    ));
    proxy.wait_in_pool(2);
    set.master.set("r", "1");
    set.wait_synced(SYNC_TIMEOUT);
    let load = Load::start(proxy.addr, 4, "r", "1");
    load.reads_continue(500, "reads flow");
    // SIGSTOP: the replica's sockets stay open; it just never answers.
    set.replicas[0].pause();
    load.reads_continue(2000, "reads continue while the replica is stopped");
    // Until the monitor takes it out of the pool, and after.
    let state = proxy.state().clone();
    let stopped = set.replicas[0].addr().to_string();
    wait_until(
        "the stopped replica leaves the read pool",
        SYNC_TIMEOUT,
        || {
            state
                .view
                .load()
                .replicas
                .iter()
                .any(|r| r.backend.addr == stopped && r.in_pool & 1 == 0)
        },
    );
    load.reads_continue(500, "reads still continue");
    set.replicas[0].resume();
    proxy.wait_in_pool(2);
    let served = set.replicas[0].calls("get");
    let r0 = set.replicas[0].calls("get");
    wait_until(
        "the thawed replica serves reads again",
        Duration::from_secs(10),
        || set.replicas[0].calls("get") > r0 + 10,
    );
    let (errors, max) = load.finish();
    eprintln!("stopped replica: slowest read {max:?}; replica 0 had served {served} GETs");
    assert!(errors.is_empty(), "no read or write failed: {errors:?}");
    assert!(
        max < Duration::from_millis(500 + 1000),
        "a read waited {max:?}, more than the command timeout + 1 s"
    );
}

#[test]
fn a_replica_cut_off_mid_load_loses_no_read() {
    let _g = shared();
    let set = ReplicaSet::start(2, false);
    // The proxy reaches replica 0 through a relay, which can cut every connection.
    let relay = Relay::start(set.replicas[0].addr());
    let yaml = format!(
        "backend:\n  master: \"{}\"\n  replicas: [\"{}\", \"{}\"]\n  reconnect_min_ms: 20\n  reconnect_max_ms: 200\n",
        set.master.addr(),
        relay.addr(),
        set.replicas[1].addr()
    );
    let proxy = ProxyUnderTest::start(&yaml);
    proxy.wait_in_pool(2);
    // A 256 KB value: replies are mid-flight when the cut comes.
    let value = "v".repeat(256 * 1024);
    set.master.set("cutkey", &value);
    set.wait_synced(SYNC_TIMEOUT);
    let load = Load::start(proxy.addr, 4, "cutkey", &value);
    load.reads_continue(200, "reads flow");
    for round in 0..5 {
        let g0 = set.replicas[0].calls("get");
        wait_until(
            "reads go through the relay",
            Duration::from_secs(10),
            || set.replicas[0].calls("get") > g0 + 5,
        );
        relay.cut();
        load.reads_continue(50, &format!("reads continue after cut {round}"));
    }
    let accepted = relay.accepted();
    proxy.wait_in_pool(2);
    let g0 = set.replicas[0].calls("get");
    wait_until(
        "the proxy reconnects through the relay",
        Duration::from_secs(10),
        || set.replicas[0].calls("get") > g0 + 5,
    );
    let (errors, max) = load.finish();
    eprintln!("cut replica: slowest read {max:?}; relay accepted {accepted} connections");
    assert!(errors.is_empty(), "no read or write failed: {errors:?}");
    assert!(max < Duration::from_secs(2), "a read waited {max:?}");
}

#[test]
fn master_down_reads_follow_the_policy_and_writes_resume_after_restart() {
    let _g = shared();
    let mut set = ReplicaSet::start(1, false);
    let serve = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    let refuse = ProxyUnderTest::start(&proxy_yaml(&set, "routing:\n  on_master_down: error\n"));
    serve.wait_in_pool(1);
    refuse.wait_in_pool(1);
    set.master.set("md", "1");
    set.wait_synced(SYNC_TIMEOUT);
    let load = Load::start(serve.addr, 2, "md", "1");
    load.reads_continue(200, "reads flow");
    set.master.kill();
    let master = set.master.addr().to_string();
    // Writes fail fast, naming the master.
    for p in [&serve, &refuse] {
        let mut w = p.conn();
        let t = Instant::now();
        let e = query(&mut w, &["SET", "x", "1"]).unwrap_err().to_string();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the write failed in {:?}",
            t.elapsed()
        );
        assert!(e.contains("master") && e.contains(&master), "{e}");
    }
    for p in [&serve, &refuse] {
        let state = p.state().clone();
        wait_until(
            "the monitor sees the master down",
            Duration::from_secs(10),
            || state.view.load().master.as_ref().is_some_and(|m| m.down),
        );
    }
    // serve_replicas: reads go on from the replica, whose staleness bound grows.
    let mut r = serve.conn();
    assert_eq!(text(&query(&mut r, &["GET", "md"]).unwrap()), "1");
    let staleness =
        |p: &ProxyUnderTest| p.state().view.load().replicas[0].staleness_ms(Instant::now());
    let s1 = staleness(&serve).expect("a staleness bound");
    wait_until(
        "the staleness bound grows while the master is down",
        Duration::from_secs(5),
        || staleness(&serve).is_some_and(|s2| s2 >= s1 + 250),
    );

    // error: reads are refused, saying why.
    let mut e = refuse.conn();
    let err = query(&mut e, &["GET", "md"]).unwrap_err().to_string();
    assert!(
        err.contains("master") && err.contains("down") && err.contains("on_master_down"),
        "{err}"
    );
    load.reads_continue(200, "reads continue from the replica");
    let (mut errors, _) = load.finish();
    // The writer of the load failed while the master was down, as it must.
    errors.retain(|e| !e.starts_with("SET"));
    eprintln!("read errors around the master's death: {errors:?}");

    // The master comes back: writes resume, through reconnect backoff (at most
    // reconnect_max_ms, 2 s by default).
    set.master.restart();
    let t = Instant::now();
    for p in [&serve, &refuse] {
        let mut w = p.conn();
        wait_until("writes succeed again", Duration::from_secs(10), || {
            query(&mut w, &["SET", "back", "1"]).is_ok()
        });
    }
    let took = t.elapsed();
    eprintln!("writes resumed {took:?} after the master restarted");
    assert!(
        took < Duration::from_secs(5),
        "writes resumed after {took:?}"
    );
    let state = refuse.state().clone();
    wait_until("the master is up again", Duration::from_secs(10), || {
        state.view.load().master.as_ref().is_some_and(|m| !m.down)
    });
    let mut e = refuse.conn();
    wait_until("reads are served again", Duration::from_secs(10), || {
        query(&mut e, &["GET", "back"]).is_ok()
    });
}

// ---------------------------------------------------------------------------------------
// Access control and secrets
// ---------------------------------------------------------------------------------------

/// Authenticate `c` as `user`.
fn login(addr: SocketAddr, user: &str, pass: &str) -> redis::Connection {
    let mut c = connect(addr);
    assert_eq!(text(&query(&mut c, &["AUTH", user, pass]).unwrap()), "OK");
    c
}

fn err_of(c: &mut redis::Connection, args: &[&str]) -> String {
    match query(c, args) {
        Ok(v) => panic!("{args:?} succeeded: {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// `args` is refused with `-NOPERM …` and the message contains `want`.
fn assert_noperm(c: &mut redis::Connection, args: &[&str], want: &str) {
    let e = match query(c, args) {
        Ok(v) => panic!("{args:?} succeeded: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.code(), Some("NOPERM"), "{args:?}: {e}");
    assert!(
        e.detail().unwrap_or_default().contains(want),
        "{args:?}: {e}"
    );
}

const USERS: &str = "admin:
  listen: \"127.0.0.1:0\"
users:
  - {name: admin, password: Admin-Pw, admin: true}
  - {name: plain, password: Plain-Pw}
  - {name: reader, password: Reader-Pw, commands: read}
  - {name: getset, password: GetSet-Pw, commands: [get, set]}
  - {name: app, password: App-Pw, keys: [\"app:*\"]}
";

#[test]
fn permissions_of_every_kind() {
    let _g = shared();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, USERS));
    proxy.wait_healthy(1);
    set.master.set("app:1", "a");
    set.master.set("other", "o");
    set.wait_synced(SYNC_TIMEOUT);

    // Before AUTH: NOAUTH, and Redis's small-request limits.
    let mut anon = connect(proxy.addr);
    assert!(err_of(&mut anon, &["GET", "app:1"]).contains("NOAUTH"));
    expect_error_and_close(
        proxy.addr,
        b"*11\r\n",
        "-ERR Protocol error: unauthenticated multibulk length\r\n",
        true,
    );
    expect_error_and_close(
        proxy.addr,
        b"*2\r\n$20000\r\n",
        "-ERR Protocol error: unauthenticated bulk length\r\n",
        true,
    );

    // A read-only user.
    let mut reader = login(proxy.addr, "reader", "Reader-Pw");
    assert_eq!(text(&query(&mut reader, &["GET", "app:1"]).unwrap()), "a");
    assert_eq!(
        query(&mut reader, &["EXISTS", "other"]).unwrap(),
        Value::Int(1)
    );
    assert_noperm(
        &mut reader,
        &["SET", "app:1", "x"],
        "this user has no permissions to run the 'set' command",
    );
    assert_noperm(&mut reader, &["DEL", "other"], "'del'");
    assert_noperm(&mut reader, &["PUBLISH", "ch", "m"], "'publish'");
    assert_noperm(&mut reader, &["EVAL", "return 1", "0"], "'eval'");
    assert_eq!(
        query(&mut reader, &["EVAL_RO", "return 1", "0"]).unwrap(),
        Value::Int(1)
    );

    // A user with a command list.
    let mut gs = login(proxy.addr, "getset", "GetSet-Pw");
    assert_eq!(text(&query(&mut gs, &["SET", "k1", "v"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut gs, &["GET", "k1"]).unwrap()), "v");
    assert_eq!(text(&query(&mut gs, &["PING"]).unwrap()), "PONG");
    assert_noperm(
        &mut gs,
        &["DEL", "k1"],
        "no permissions to run the 'del' command",
    );
    assert_noperm(&mut gs, &["MGET", "k1"], "'mget'");

    // Key patterns.
    let mut app = login(proxy.addr, "app", "App-Pw");
    assert_eq!(text(&query(&mut app, &["GET", "app:1"]).unwrap()), "a");
    assert_eq!(
        text(&query(&mut app, &["SET", "app:2", "b"]).unwrap()),
        "OK"
    );
    let keys = "this user has no permissions to access one of the keys used as arguments";
    assert_noperm(&mut app, &["GET", "other"], keys);
    assert_noperm(&mut app, &["MSET", "app:3", "c", "other", "d"], keys);
    assert_noperm(&mut app, &["RENAME", "app:1", "elsewhere"], keys);
    // Scripts and SORT BY/GET can reach keys they do not name: refused whole to a
    // key-restricted user, even when every named key is allowed.
    let undeclared = "can reach keys it does not name";
    assert_noperm(&mut app, &["EVAL", "return 1", "1", "other"], undeclared);
    assert_noperm(
        &mut app,
        &["EVAL_RO", "return redis.call('get','other')", "1", "app:1"],
        undeclared,
    );
    assert_noperm(
        &mut app,
        &["EVAL_RO", "return redis.call('get','other')", "0"],
        undeclared,
    );
    assert_noperm(&mut app, &["FCALL_RO", "f", "1", "app:1"], undeclared);
    assert_noperm(&mut app, &["SORT", "app:list", "BY", "other*"], undeclared);
    assert_noperm(
        &mut app,
        &["SORT_RO", "app:list", "GET", "other*"],
        undeclared,
    );
    assert_eq!(
        query(&mut app, &["SORT", "app:list"]).unwrap(),
        Value::Array(vec![]),
        "a SORT of its own key, without patterns, runs"
    );
    assert_eq!(
        set.master.get("app:3"),
        None,
        "nothing of a refused command ran"
    );

    // admin: false refuses admin commands (and the ones that wipe databases).
    let mut plain = login(proxy.addr, "plain", "Plain-Pw");
    assert_eq!(text(&query(&mut plain, &["SET", "p", "1"]).unwrap()), "OK");
    assert_noperm(
        &mut plain,
        &["CONFIG", "GET", "maxmemory"],
        "this user has no permissions to run the 'config|get' command",
    );
    assert_noperm(&mut plain, &["FLUSHALL"], "'flushall'");
    assert_noperm(&mut plain, &["FLUSHDB"], "'flushdb'");
    assert_noperm(&mut plain, &["SAVE"], "'save'");
    assert_noperm(&mut plain, &["PROXY", "CONFIG"], "'proxy|config'");
    assert_eq!(
        set.master.get("p").as_deref(),
        Some("1"),
        "nothing was flushed"
    );

    // admin: true allows them.
    let mut admin = login(proxy.addr, "admin", "Admin-Pw");
    let cfg = query(&mut admin, &["CONFIG", "GET", "maxmemory"]).unwrap();
    assert!(
        matches!(cfg, Value::Array(ref a) if a.len() == 2),
        "{cfg:?}"
    );
    assert_eq!(text(&query(&mut admin, &["FLUSHDB"]).unwrap()), "OK");
    assert!(query(&mut admin, &["PROXY", "CONFIG"]).is_ok());

    // The default deny list refuses, even to an admin.
    for cmd in [
        &["SHUTDOWN"][..],
        &["SHUTDOWN", "NOSAVE"],
        &["DEBUG", "SLEEP", "0"],
        &["MONITOR"],
        &["REPLICAOF", "NO", "ONE"],
        &["SLAVEOF", "NO", "ONE"],
        &["FAILOVER"],
        &["SYNC"],
        &["CLUSTER", "INFO"],
    ] {
        let name = cmd[0].to_lowercase();
        assert_noperm(
            &mut admin,
            cmd,
            &format!("the '{name}' command is disabled by the proxy (deny_commands)"),
        );
    }
    assert!(
        set.master.try_cmd(&["PING"]).is_ok(),
        "the master is still up"
    );
}

#[test]
fn commands_removed_from_the_deny_list_pass() {
    let _g = shared();
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        &format!("{USERS}deny_commands: [SHUTDOWN]\n"),
    ));
    proxy.wait_healthy(1);
    let mut admin = login(proxy.addr, "admin", "Admin-Pw");
    assert_eq!(
        text(&query(&mut admin, &["DEBUG", "SLEEP", "0"]).unwrap()),
        "OK"
    );
    assert_eq!(
        text(&query(&mut admin, &["REPLICAOF", "NO", "ONE"]).unwrap()),
        "OK"
    );
    assert_noperm(
        &mut admin,
        &["SHUTDOWN"],
        "disabled by the proxy (deny_commands)",
    );
    // Allowed by the proxy, still refused to a user without admin.
    let mut plain = login(proxy.addr, "plain", "Plain-Pw");
    assert_noperm(&mut plain, &["DEBUG", "SLEEP", "0"], "'debug'");
    assert_noperm(&mut plain, &["MONITOR"], "'monitor'");
    // MONITOR passes for the admin and streams what others do.
    let mut mon = raw(proxy.addr);
    mon.write_all(b"AUTH admin Admin-Pw\r\nMONITOR\r\n")
        .unwrap();
    assert_eq!(read_n(&mut mon, 10), b"+OK\r\n+OK\r\n");
    let mut c = login(proxy.addr, "plain", "Plain-Pw");
    let mut seen = Vec::new();
    mon.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    wait_until("MONITOR shows a command", Duration::from_secs(5), || {
        let _ = query(&mut c, &["SET", "monitored", "1"]);
        let mut buf = [0u8; 4096];
        if let Ok(n) = mon.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).contains("\"monitored\"")
    });
}

#[test]
fn secrets_never_leak() {
    let _g = shared();
    let backend_pw = SECRETS[0];
    // The backends require an ACL user with a password; the default user stays open for
    // the harness's own helpers.
    let acl = format!(">{backend_pw}");
    let set = ReplicaSet::start_with(
        1,
        false,
        &["--user", "redsplit", "on", &acl, "~*", "&*", "+@all"],
    );
    let yaml = |pw: &str| {
        proxy_yaml(
            &set,
            &format!(
                "  username: redsplit\n  password: \"{pw}\"\nadmin:\n  listen: \"127.0.0.1:0\"\n  token: \"{}\"\nusers:\n  - {{name: app, password: \"{}\", admin: true}}\n  - {{name: reader, password: \"{}\", commands: read}}\n",
                SECRETS[4], SECRETS[2], SECRETS[3]
            ),
        )
    };
    let yaml_ok = yaml(backend_pw);
    let proxy = ProxyUnderTest::start(&yaml_ok);
    proxy.wait_healthy(1);
    let mut c = login(proxy.addr, "app", SECRETS[2]);
    assert_eq!(text(&query(&mut c, &["SET", "s", "1"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut c, &["GET", "s"]).unwrap()), "1");
    let clean = |what: &str, body: &str| {
        for s in SECRETS {
            assert!(!body.contains(s), "{what} shows a secret: {body}");
        }
    };

    // PROXY CONFIG, PROXY STATUS, CLIENT LIST.
    for args in [
        &["PROXY", "CONFIG"][..],
        &["PROXY", "STATUS"],
        &["CLIENT", "LIST"],
    ] {
        let v = query(&mut c, args).unwrap();
        clean(&format!("{args:?}"), &format!("{v:?}"));
    }
    let v = query(&mut c, &["PROXY", "CONFIG"]).unwrap();
    assert!(
        format!("{v:?}").contains("redsplit"),
        "the config is shown: {v:?}"
    );

    // The admin endpoint.
    let admin = proxy.admin_addr.expect("admin endpoint");
    for path in ["/status", "/metrics", "/"] {
        let mut s = raw(admin);
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            SECRETS[4]
        )
        .unwrap();
        let (body, _) = read_to_close(&mut s, Duration::from_secs(5));
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
            "{path}: {body}"
        );
        clean(path, &body);
    }

    // Error messages: a wrong user password, a wrong backend password.
    let mut bad = connect(proxy.addr);
    let e = err_of(&mut bad, &["AUTH", "app", SECRETS[5]]);
    assert!(e.contains("WRONGPASS"), "{e}");
    clean("WRONGPASS", &e);
    let wrong = ProxyUnderTest::start(&yaml(SECRETS[1]));
    let mut w = login(wrong.addr, "app", SECRETS[2]);
    let e = err_of(&mut w, &["SET", "s", "2"]);
    assert!(
        e.contains("master") && e.contains("refused the handshake"),
        "{e}"
    );
    clean("a backend error", &e);

    // Debug output (what a panic message would print).
    let settings = proxy.state().settings.load_full();
    clean("Debug of the settings", &format!("{settings:?}"));
    clean("Debug of the config", &format!("{:?}", settings.config));

    // And no log line of this test binary, at any level.
    drop(wrong);
    drop(proxy);
    let leaks = LEAKS.lock().unwrap().clone();
    assert!(leaks.is_empty(), "secrets in logs: {leaks:?}");
    assert!(LOG_LINES.load(Ordering::Relaxed) > 0, "logs were captured");
}
