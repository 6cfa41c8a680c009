//! Order between clients: what one client sent before another client's command reached
//! the proxy, Redis sees first. These tests count, over many rounds, how often a later
//! command overtook an earlier one; `scripts/test.sh` runs them on their own, one at a
//! time, after the rest, so that other tests' load on the machine does not reorder
//! what the test's own clients send.
use crate::common::*;
use redis::Value;
use std::time::Duration;

/// Order between clients: a blocking command the proxy received before another client's
/// push must reach Redis first, even when a new backend connection would take long to
/// set up (here every reply from the master comes 150 ms late, handshakes included).
#[test]
fn a_blocking_command_is_not_overtaken_by_a_later_push_from_another_client() {
    use std::io::{Read, Write};
    let master = RedisServer::start();
    let relay = Relay::start(master.addr());
    let proxy = proxy_over(relay.addr());
    let mut b = proxy.conn();
    for round in 0..3 {
        relay.set_delay(Duration::ZERO);
        assert_eq!(text(&query(&mut b, &["SET", "warm", "1"]).unwrap()), "OK");
        // The proxy's connections to the master are set up, as between bursts of traffic.
        wait_until(
            "the proxy's master connections are ready",
            SYNC_TIMEOUT,
            || {
                let list = text(&master.cmd(&["CLIENT", "LIST"]));
                list.matches("name=redsplit ").count() >= 3
            },
        );
        relay.set_delay(Duration::from_millis(150));
        let key = format!("order:q{round}");
        let mut a = std::net::TcpStream::connect(proxy.addr).expect("connect");
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let blpop = format!(
            "*3\r\n$5\r\nBLPOP\r\n${}\r\n{key}\r\n$1\r\n5\r\n",
            key.len()
        );
        a.write_all(blpop.as_bytes()).unwrap();
        // Once the proxy shows the client blocked, it has taken the BLPOP.
        wait_until("the proxy took the BLPOP", SYNC_TIMEOUT, || {
            let list = text(&query(&mut b, &["CLIENT", "LIST", "TYPE", "normal"]).unwrap());
            list.lines().any(|l| l.contains(" flags=b "))
        });
        // The push and the pop in one pipeline: Redis runs both at once when they arrive.
        let (push, pop): (Value, Value) = redis::pipe()
            .cmd("RPUSH")
            .arg(&key)
            .arg("x")
            .cmd("LPOP")
            .arg(&key)
            .query(&mut b)
            .unwrap();
        assert_eq!(push, Value::Int(1));
        if pop != Value::Nil {
            // Which master connections there were (their age tells whether the BLPOP's
            // was one that had just opened, and what each ran last).
            panic!(
                "round {round}: the pop took the element before the blocked client; \
                 the master's clients then:\n{}",
                text(&master.cmd(&["CLIENT", "LIST"]))
            );
        }
        let want = format!("*2\r\n${}\r\n{key}\r\n$1\r\nx\r\n", key.len());
        let mut got = vec![0u8; want.len()];
        a.read_exact(&mut got).expect("the BLPOP's reply");
        assert_eq!(String::from_utf8_lossy(&got), want, "round {round}");
    }
}

/// Requests of different clients reach Redis in the order they reached the proxy. Three
/// clients each send `BLPOP` and, with no wait for them, another client pushes three
/// elements and pops: on Redis the pop finds the list empty (the blocked clients took
/// them all), every round. Through the proxy too: one event loop serves the clients in
/// the order their requests arrive, and a `BLPOP` whose new dedicated connection is
/// still opening holds the master's later requests (the backend's write gate) until it
/// is written. Run against both for the comparison.
#[test]
fn blocking_commands_sent_just_before_another_clients_push_are_served_first() {
    use std::io::{Read, Write};
    let master = RedisServer::start();
    let proxy = proxy_over(master.addr());
    const ROUNDS: usize = 60;
    const BLOCKED: usize = 3;
    let overtaken = |addr: std::net::SocketAddr| -> usize {
        let mut b = connect(addr);
        let mut overtaken = 0;
        for round in 0..ROUNDS {
            let key = format!("race:{round}");
            let mut blocked = Vec::new();
            for _ in 0..BLOCKED {
                let mut a = std::net::TcpStream::connect(addr).expect("connect");
                a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                // An established connection, as Redis's own tests' clients have (a new
                // one's first request can wait for Redis to accept it).
                a.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
                let mut pong = [0u8; 7];
                a.read_exact(&mut pong).expect("PONG");
                blocked.push(a);
            }
            let blpop = format!(
                "*3\r\n$5\r\nBLPOP\r\n${}\r\n{key}\r\n$1\r\n0\r\n",
                key.len()
            );
            for a in &mut blocked {
                a.write_all(blpop.as_bytes()).unwrap();
            }
            let (_, pop): (Value, Value) = redis::pipe()
                .cmd("RPUSH")
                .arg(&key)
                .arg(vec!["x"; BLOCKED])
                .cmd("LPOP")
                .arg(&key)
                .query(&mut b)
                .unwrap();
            if pop != Value::Nil {
                // A push came first: more elements unblock the late BLPOPs.
                overtaken += 1;
                query(&mut b, &["RPUSH", &key, "y", "y", "y"]).unwrap();
            }
            for a in &mut blocked {
                let mut got = [0u8; 1];
                a.read_exact(&mut got).expect("the BLPOP's reply");
                assert_eq!(got[0], b'*', "round {round}");
            }
        }
        overtaken
    };
    let direct = overtaken(master.addr());
    let proxied = overtaken(proxy.addr);
    assert_eq!(
        (direct, proxied),
        (0, 0),
        "rounds of {ROUNDS} in which the later push overtook a BLPOP (direct, proxied)"
    );
}

/// A subscriber's `UNSUBSCRIBE` sent just before another client's `PUBLISH` is served
/// first: the publish reaches no one, directly and through the proxy, every round.
#[test]
fn an_unsubscribe_sent_just_before_another_clients_publish_is_served_first() {
    use std::io::{Read, Write};
    let master = RedisServer::start();
    let proxy = proxy_over(master.addr());
    const ROUNDS: usize = 40;
    let received = |addr: std::net::SocketAddr| -> usize {
        let mut p = connect(addr);
        let mut received = 0;
        for round in 0..ROUNDS {
            let ch = format!("ch:{round}");
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let sub = format!("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{ch}\r\n", ch.len());
            s.write_all(sub.as_bytes()).unwrap();
            let confirm = format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n{ch}\r\n:1\r\n", ch.len());
            let mut got = vec![0u8; confirm.len()];
            s.read_exact(&mut got).expect("the subscription");
            assert_eq!(String::from_utf8_lossy(&got), confirm);
            let unsub = format!("*2\r\n$11\r\nUNSUBSCRIBE\r\n${}\r\n{ch}\r\n", ch.len());
            s.write_all(unsub.as_bytes()).unwrap();
            let n: i64 = redis::cmd("PUBLISH")
                .arg(&ch)
                .arg("m")
                .query(&mut p)
                .unwrap();
            received += usize::try_from(n).unwrap_or(0);
            // The unsubscription's confirmation comes next, and no message before it.
            let unconfirm = format!(
                "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{ch}\r\n:0\r\n",
                ch.len()
            );
            let mut got = vec![0u8; unconfirm.len()];
            s.read_exact(&mut got).expect("the unsubscription");
            if String::from_utf8_lossy(&got) != unconfirm {
                received += 1;
            }
        }
        received
    };
    let direct = received(master.addr());
    let proxied = received(proxy.addr);
    assert_eq!(
        (direct, proxied),
        (0, 0),
        "rounds of {ROUNDS} in which the later PUBLISH reached the unsubscribing client (direct, proxied)"
    );
}

/// A client blocked in `BLPOP` that disconnects takes no element pushed after it left:
/// Redis sees the end of its dedicated connection before another client's push that
/// the proxy read later, as Redis sees a direct client's close before a later push.
/// (Otherwise the element goes to a connection nobody reads, and is lost.)
#[test]
fn a_blocked_client_that_disconnects_takes_no_later_push() {
    use std::io::Write;
    let (master, proxy) = master_only();
    for (world, addr) in [("direct", master.addr()), ("proxied", proxy.addr)] {
        let mut b = connect(addr);
        let mut lost = Vec::new();
        for round in 0..50 {
            let key = format!("gone:{world}:{round}");
            let mut a = raw(addr);
            let blpop = format!(
                "*3\r\n$5\r\nBLPOP\r\n${}\r\n{key}\r\n$1\r\n0\r\n",
                key.len()
            );
            a.write_all(blpop.as_bytes()).expect("send BLPOP");
            master.wait_blocked_clients(1, SYNC_TIMEOUT);
            drop(a);
            assert_eq!(query(&mut b, &["RPUSH", &key, "x"]).unwrap(), Value::Int(1));
            if master.cmd(&["LLEN", &key]) != Value::Int(1) {
                lost.push(round);
            }
            master.wait_blocked_clients(0, SYNC_TIMEOUT);
        }
        assert!(
            lost.is_empty(),
            "{world}: the disconnected client took the push in rounds {lost:?}"
        );
    }
}
