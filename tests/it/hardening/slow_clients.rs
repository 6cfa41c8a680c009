//! Slow and vanishing clients: clients that never read (output limits, large replies,
//! bursts), idle clients, and half-sent requests.

use crate::common::*;
use redis::Value;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{exclusive, read_to_close, shared, Side};

/// Whether the proxy closed `s` within `within` (any bytes it sent are ignored).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    read_to_close(s, within).1
}

fn connected_clients(s: &RedisServer) -> u64 {
    s.info("clients")["connected_clients"].parse().unwrap()
}

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
