//! Bad input: broken streams, a 100 MB value, a 1 000 000-command pipeline, and 5 000
//! clients at once (with `max_clients`).

use crate::common::*;
use redis::Value;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{exclusive, expect_error_and_close, read_to_close, Side};

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
