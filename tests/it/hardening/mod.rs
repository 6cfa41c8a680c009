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
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod access_control;
mod backend_faults;
mod bad_input;
mod slow_clients;

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
