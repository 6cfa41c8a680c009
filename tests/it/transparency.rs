//! Transparency checks that a byte-for-byte comparison with a direct Redis cannot make on
//! its own: state that must survive the proxy's own mechanisms (parking an idle client),
//! and commands the proxy must refuse because applied they would cut it off its
//! backends.
use crate::common::*;
use redis::Value;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn text(v: &Value) -> String {
    value_text(v).unwrap_or_else(|| format!("{v:?}"))
}

/// A proxy over `master` alone, with the master known to be healthy.
fn proxy_over(master: std::net::SocketAddr) -> ProxyUnderTest {
    let proxy = ProxyUnderTest::start(&format!(
        "backend:\n  master: \"{master}\"\n  replicas: []\n"
    ));
    proxy.wait_healthy(0);
    proxy
}

/// A Redis and a proxy over it alone.
fn master_only() -> (RedisServer, ProxyUnderTest) {
    let master = RedisServer::start();
    let proxy = proxy_over(master.addr());
    (master, proxy)
}

/// Idle clients, new or served, move into the parking lot (no task of their own) once
/// the janitor trims them; from there each one's next request is answered, a kill
/// closes it, and a client that hangs up while parked is gone.
#[test]
fn idle_clients_wait_in_the_parking_lot_and_come_back_from_it() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let (master, proxy) = master_only();
    let state = proxy.state().clone();
    let parked = || state.metrics.clients_parked.load(Ordering::Relaxed);
    let mut fresh: Vec<TcpStream> = (0..10).map(|_| raw(proxy.addr)).collect();
    let mut served: Vec<_> = (0..10).map(|_| proxy.conn()).collect();
    for (i, c) in served.iter_mut().enumerate() {
        let name = format!("served-{i}");
        assert_eq!(
            text(&query(c, &["CLIENT", "SETNAME", &name]).unwrap()),
            "OK"
        );
    }
    wait_until(
        "all 20 idle clients are parked",
        Duration::from_secs(15),
        || parked() == 20,
    );
    // Each comes back for its next request, with its state.
    for (i, c) in served.iter_mut().enumerate() {
        assert_eq!(
            text(&query(c, &["CLIENT", "GETNAME"]).unwrap()),
            format!("served-{i}")
        );
    }
    for s in &mut fresh {
        s.write_all(b"*3\r\n$3\r\nSET\r\n$5\r\nlot:k\r\n$1\r\nv\r\n")
            .unwrap();
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).expect("the SET's reply");
        assert_eq!(&ok, b"+OK\r\n");
    }
    assert_eq!(master.get("lot:k").as_deref(), Some("v"));
    assert!(
        parked() < 20,
        "served clients left the lot ({} parked)",
        parked()
    );
    wait_until("they are parked again", Duration::from_secs(15), || {
        parked() == 20
    });
    // A kill closes a parked client; one that hangs up while parked is gone too.
    let mut killer = proxy.conn();
    let listed = text(&query(&mut killer, &["CLIENT", "LIST"]).unwrap());
    let victim = listed
        .lines()
        .find(|l| l.contains(" name=served-3 "))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("served-3 is listed")
        .to_string();
    assert_eq!(
        query(&mut killer, &["CLIENT", "KILL", "ID", &victim]).unwrap(),
        Value::Int(1)
    );
    let mut dead = served.remove(3);
    assert!(
        query(&mut dead, &["PING"]).is_err(),
        "the killed client is closed"
    );
    drop(fresh.pop());
    wait_until(
        "the killed and the departed clients are gone",
        Duration::from_secs(10),
        || parked() <= 18 && state.sessions.len() == 19,
    );
    let mut buf = [0u8; 1];
    for s in &mut fresh {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(
            matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
            "a parked client gets nothing unasked"
        );
    }
}

#[test]
fn a_parked_client_keeps_its_name_database_and_protocol_state() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let mut c = proxy.conn();
    assert_eq!(
        text(&query(&mut c, &["CLIENT", "SETNAME", "worker-7"]).unwrap()),
        "OK"
    );
    assert_eq!(text(&query(&mut c, &["SELECT", "3"]).unwrap()), "OK");
    let id = match query(&mut c, &["CLIENT", "ID"]).unwrap() {
        Value::Int(n) => u64::try_from(n).expect("an id"),
        other => panic!("CLIENT ID: {other:?}"),
    };
    // The janitor asks an idle client to give up its session; once the request was
    // taken (and not re-armed by activity), the client is parked.
    let state = proxy.state().clone();
    wait_until("the idle client is parked", Duration::from_secs(10), || {
        state.sessions.get(&id).is_some_and(|h| {
            h.inbox.trimmed.load(Ordering::Relaxed) && !h.inbox.trim.load(Ordering::Relaxed)
        })
    });
    assert_eq!(
        text(&query(&mut c, &["CLIENT", "GETNAME"]).unwrap()),
        "worker-7",
        "the name survives parking"
    );
    let info = text(&query(&mut c, &["CLIENT", "INFO"]).unwrap());
    assert!(info.contains(" name=worker-7 "), "{info}");
    assert!(info.contains(" db=3 "), "{info}");
    // And RESET clears it, as Redis's does.
    assert_eq!(text(&query(&mut c, &["RESET"]).unwrap()), "RESET");
    assert_eq!(query(&mut c, &["CLIENT", "GETNAME"]).unwrap(), Value::Nil);
    let info = text(&query(&mut c, &["CLIENT", "INFO"]).unwrap());
    assert!(
        info.contains(" name= ") && info.contains(" db=0 "),
        "{info}"
    );
}

#[test]
fn commands_that_would_lock_the_proxy_out_are_refused_and_change_nothing() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let mut c = proxy.conn();
    for args in [
        &["CONFIG", "SET", "requirepass", "s3cret"][..],
        &[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "noeviction",
            "requirepass",
            "x",
        ][..],
        &["ACL", "SETUSER", "default", "resetpass"][..],
        &["ACL", "DELUSER", "someone", "default"][..],
    ] {
        let err = query(&mut c, args).expect_err("refused");
        let msg = format!("{err}");
        assert!(msg.contains("redsplit"), "{args:?}: {msg}");
    }
    assert_eq!(
        set.master.cmd(&["CONFIG", "GET", "requirepass"]),
        Value::Array(vec![
            Value::BulkString(b"requirepass".to_vec()),
            Value::BulkString(Vec::new())
        ]),
        "the master's password is untouched"
    );
    // Other CONFIG SETs and ACL users go through, and new backend connections still work.
    assert_eq!(
        text(&query(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).unwrap()),
        "OK"
    );
    assert_eq!(
        text(
            &query(
                &mut c,
                &["ACL", "SETUSER", "reporter", "on", ">pw", "+get", "~r:*"]
            )
            .unwrap()
        ),
        "OK"
    );
    let mut t = proxy.conn();
    assert_eq!(text(&query(&mut t, &["MULTI"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut t, &["INCR", "n"]).unwrap()), "QUEUED");
    assert_eq!(
        query(&mut t, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Int(1)])
    );
}

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

/// `CLIENT ID` is the same before, during and after `CLIENT TRACKING on` (whose tunnel
/// to the master answers it), so a redirect to the client's own id works there, as on
/// Redis.
#[test]
fn client_id_stays_the_same_while_tracking() {
    let (master, proxy) = master_only();
    for (world, addr) in [("direct", master.addr()), ("proxied", proxy.addr)] {
        let mut c = connect(addr);
        let id = query(&mut c, &["CLIENT", "ID"]).unwrap();
        assert_eq!(
            text(&query(&mut c, &["CLIENT", "TRACKING", "on"]).unwrap()),
            "OK"
        );
        assert_eq!(
            query(&mut c, &["CLIENT", "ID"]).unwrap(),
            id,
            "{world}: tracking on"
        );
        assert_eq!(
            text(&query(&mut c, &["CLIENT", "TRACKING", "off"]).unwrap()),
            "OK"
        );
        assert_eq!(
            query(&mut c, &["CLIENT", "ID"]).unwrap(),
            id,
            "{world}: tracking off"
        );
        let own = match &id {
            Value::Int(n) => n.to_string(),
            other => panic!("{world}: CLIENT ID: {other:?}"),
        };
        assert_eq!(
            text(&query(&mut c, &["CLIENT", "TRACKING", "on", "REDIRECT", &own]).unwrap()),
            "OK",
            "{world}: a redirect to itself"
        );
        assert_eq!(
            query(&mut c, &["CLIENT", "GETREDIR"]).unwrap(),
            id,
            "{world}: GETREDIR names the client"
        );
    }
}

/// A client logged in as a Redis ACL user reads, as that user, from the replicas that
/// know it, and from the master through those that do not (Redis does not replicate ACL
/// changes): no read fails.
#[test]
fn a_redis_acl_user_reads_replicas_that_know_it_and_the_master_otherwise() {
    let set = ReplicaSet::start(2, false);
    for s in [&set.master, &set.replicas[0]] {
        s.cmd(&["ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all"]);
    }
    set.master.set("k", "v");
    set.wait_synced(SYNC_TIMEOUT);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "routing:\n  replica_choice: round_robin\n",
    ));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    assert_eq!(
        text(&query(&mut c, &["AUTH", "alice", "pw"]).unwrap()),
        "OK"
    );
    let before = (set.master.calls("get"), set.replicas[0].calls("get"));
    for _ in 0..40 {
        assert_eq!(text(&query(&mut c, &["GET", "k"]).unwrap()), "v");
    }
    let after = (set.master.calls("get"), set.replicas[0].calls("get"));
    assert!(
        after.1 > before.1,
        "replica 0 (which knows alice) served reads"
    );
    assert!(
        after.0 > before.0,
        "reads meant for replica 1 (which does not know alice) went to the master"
    );
    let list = text(&set.replicas[0].cmd(&["CLIENT", "LIST"]));
    assert!(list.contains(" user=alice "), "{list}");
    let list = text(&set.replicas[1].cmd(&["CLIENT", "LIST"]));
    assert!(!list.contains(" user=alice "), "{list}");
    assert_eq!(text(&query(&mut c, &["ACL", "WHOAMI"]).unwrap()), "alice");
}

/// With users in `proxy.yaml`, logins as Redis users are off unless `redis_users: true`;
/// on, a proxy user still wins and a Redis user is checked by the master.
#[test]
fn redis_users_are_off_beside_proxy_users_unless_turned_on() {
    let set = ReplicaSet::start(1, false);
    set.master
        .cmd(&["ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all"]);
    let users = "users:\n  - name: app\n    password: apppw\n";
    let off = ProxyUnderTest::start(&proxy_yaml(&set, users));
    off.wait_healthy(1);
    let mut c = off.conn();
    let err = query(&mut c, &["AUTH", "alice", "pw"]).unwrap_err();
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
    drop(off);
    let on = ProxyUnderTest::start(&proxy_yaml(&set, &format!("{users}redis_users: true\n")));
    on.wait_healthy(1);
    let mut c = on.conn();
    let err = query(&mut c, &["GET", "k"]).unwrap_err();
    assert!(err.to_string().contains("NOAUTH"), "{err}");
    assert_eq!(
        text(&query(&mut c, &["AUTH", "app", "apppw"]).unwrap()),
        "OK"
    );
    assert_eq!(text(&query(&mut c, &["ACL", "WHOAMI"]).unwrap()), "default");
    assert_eq!(
        text(&query(&mut c, &["AUTH", "alice", "pw"]).unwrap()),
        "OK"
    );
    assert_eq!(text(&query(&mut c, &["ACL", "WHOAMI"]).unwrap()), "alice");
    let err = query(&mut c, &["PROXY", "CONFIG"]).unwrap_err();
    assert!(err.to_string().contains("'proxy|config'"), "{err}");
}

/// A killed client is gone for everyone at once, as in Redis (which frees it before it
/// answers the kill): `CLIENT LIST` pipelined right after `CLIENT KILL` does not show it.
#[test]
fn a_killed_client_is_not_listed_after_the_kill() {
    let set = ReplicaSet::start(0, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(0);
    let mut a = proxy.conn();
    for _ in 0..5 {
        let mut b = proxy.conn();
        let id = match query(&mut b, &["CLIENT", "ID"]).unwrap() {
            Value::Int(n) => n.to_string(),
            other => panic!("CLIENT ID: {other:?}"),
        };
        let (killed, listed): (i64, String) = redis::pipe()
            .cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .cmd("CLIENT")
            .arg("LIST")
            .arg("ID")
            .arg(&id)
            .query(&mut a)
            .expect("kill and list");
        assert_eq!(killed, 1);
        assert_eq!(listed, "", "the killed client {id} is still listed");
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&id)
            .query(&mut a)
            .unwrap();
        assert_eq!(killed, 0, "a killed client cannot be killed again");
    }
}

/// `CLIENT TRACKING on REDIRECT` to a client that has not subscribed yet (so, through
/// the proxy, has no master connection of its own) is accepted as on Redis: the
/// invalidations before it subscribes are dropped, the later ones reach it. The same
/// session, on raw sockets, gives the same bytes directly and through the proxy.
#[test]
fn a_tracking_redirect_reaches_a_target_that_subscribes_later() {
    let (master, proxy) = master_only();
    let mut seen = Vec::new();
    // Through the proxy the target gets a master connection when the redirect comes (in
    // database 5, a new one; in 0, maybe one the pool set up ahead): the redirect waits
    // until Redis knows it.
    for (addr, db) in [
        (master.addr(), "0"),
        (proxy.addr, "0"),
        (master.addr(), "5"),
        (proxy.addr, "5"),
    ] {
        let (mut a, mut b, mut c) = (raw(addr), raw(addr), raw(addr));
        let say = |s: &mut TcpStream, args: &[&str]| {
            let mut out = Vec::new();
            redsplit::protocol::encode_command(&mut out, args.iter().map(|a| a.as_bytes()));
            s.write_all(&out).unwrap();
            read_reply(s)
        };
        assert_eq!(say(&mut b, &["SELECT", db]), b"+OK\r\n");
        assert_eq!(say(&mut c, &["SELECT", db]), b"+OK\r\n");
        assert_eq!(say(&mut a, &["SELECT", db]), b"+OK\r\n");
        let id = say(&mut b, &["CLIENT", "ID"]);
        let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
        let mut got = vec![
            say(&mut a, &["CLIENT", "TRACKING", "on", "REDIRECT", &id]),
            say(&mut a, &["CLIENT", "GETREDIR"]),
        ];
        // Before the target subscribes: Redis drops this invalidation.
        got.push(say(&mut a, &["GET", "rd:early"]));
        got.push(say(&mut c, &["SET", "rd:early", "1"]));
        got.push(say(&mut b, &["SUBSCRIBE", "__redis__:invalidate"]));
        got.push(say(&mut a, &["GET", "rd:late"]));
        got.push(say(&mut c, &["SET", "rd:late", "1"]));
        // The first message the target gets names the later key only.
        got.push(read_reply(&mut b));
        got.push(say(&mut a, &["CLIENT", "GETREDIR"]));
        let getredir = String::from_utf8_lossy(&got[1]).into_owned();
        assert_eq!(getredir, format!(":{id}\r\n"), "GETREDIR names the target");
        // Ids differ by nature between the two worlds; the rest must not.
        got.remove(1);
        got.pop();
        seen.push(got);
        for k in ["rd:early", "rd:late"] {
            say(&mut c, &["DEL", k]);
        }
    }
    let show = |v: &Vec<Vec<u8>>| {
        v.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    };
    for pair in seen.chunks(2) {
        assert_eq!(
            show(&pair[1]),
            show(&pair[0]),
            "proxied (left) vs direct (right)"
        );
        assert!(
            String::from_utf8_lossy(pair[0].last().unwrap()).contains("rd:late"),
            "{:?}",
            show(&pair[0])
        );
    }
}

/// A command the proxy refuses inside `MULTI` (denied, or one that would cut the proxy
/// off its backends) fails the transaction as Redis's own refusals do: `EXEC` answers
/// `EXECABORT` and nothing of it runs.
#[test]
fn a_command_the_proxy_refuses_inside_multi_aborts_the_transaction() {
    let set = ReplicaSet::start(0, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(0);
    let mut c = proxy.conn();
    for refused in [
        &["DEBUG", "SLEEP", "0"][..],
        &["CONFIG", "SET", "requirepass", "x"][..],
        &["CLIENT", "TRACKING", "on"][..],
    ] {
        assert_eq!(text(&query(&mut c, &["MULTI"]).unwrap()), "OK");
        assert_eq!(
            text(&query(&mut c, &["SET", "tx:k", "v"]).unwrap()),
            "QUEUED"
        );
        let err = query(&mut c, refused).unwrap_err();
        assert!(!err.to_string().is_empty(), "{refused:?} refused");
        let err = query(&mut c, &["EXEC"]).unwrap_err();
        assert!(
            err.to_string().to_ascii_uppercase().contains("EXECABORT"),
            "{refused:?}: {err}"
        );
        assert_eq!(set.master.get("tx:k"), None, "{refused:?}: nothing ran");
    }
    let pass = set.master.cmd(&["CONFIG", "GET", "requirepass"]);
    assert!(!format!("{pass:?}").contains("\"x\""), "{pass:?}");
    assert_eq!(text(&query(&mut c, &["PING"]).unwrap()), "PONG");
}
