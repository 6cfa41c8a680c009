//! Transparency checks that a byte-for-byte comparison with a direct Redis cannot make on
//! its own: state that must survive the proxy's own mechanisms (parking an idle client),
//! and commands the proxy must refuse because applied they would cut it off its
//! backends.
use crate::common::*;
use redis::Value;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// A client's own `CLIENT INFO` line (as its `CLIENT LIST` line) shows the query buffer Redis shows:
/// the bytes of the read that holds the command (two pipelined in one write show both,
/// an inline one its own length), the same directly and through the proxy.
#[test]
fn a_clients_own_line_shows_its_query_buffer_as_redis_does() {
    use std::io::Write;
    let (master, proxy) = master_only();
    let qbufs = |addr| {
        let mut s = raw(addr);
        let info = b"*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n";
        let mut out = Vec::new();
        for pipeline in [&[&info[..], &info[..]][..], &[&b"CLIENT INFO\r\n"[..]][..]] {
            s.write_all(&pipeline.concat()).unwrap();
            for line in read_replies(&mut s, pipeline.len()) {
                let line = String::from_utf8(line).unwrap();
                let q = line
                    .split(' ')
                    .find_map(|f| f.strip_prefix("qbuf="))
                    .unwrap_or_else(|| panic!("no qbuf in {line}"))
                    .to_owned();
                out.push(q);
            }
        }
        out
    };
    assert_eq!(qbufs(proxy.addr), qbufs(master.addr()));
}

/// `n` replies from `s`, read as they come (pipelined replies may share a read).
fn read_replies(s: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let mut scanner = redsplit::protocol::ReplyScanner::new();
        if let Some(len) = scanner.scan(&got).expect("a RESP reply") {
            out.push(got.drain(..len).collect());
            continue;
        }
        let k = s.read(&mut buf).expect("a reply");
        assert!(k > 0, "closed after {got:?}");
        got.extend_from_slice(&buf[..k]);
    }
    out
}

/// While the master is paused for writes by a `CLIENT PAUSE` sent through the proxy, a
/// paused write (or `PUBLISH`, which may replicate) holds up only its own client, as on
/// Redis: another client's `GET` and `PING` are answered at once, Redis counts the
/// writers as blocked, and the write is
/// done (and read back by its client) once `CLIENT UNPAUSE` comes; the same with the
/// pause sent inside `MULTI`, which Redis applies at `EXEC`. Run against Redis directly
/// too, for the comparison.
#[test]
fn a_write_held_by_client_pause_holds_up_only_its_client() {
    use std::io::{Read, Write};
    let (master, proxy) = master_only();
    let blocked = || {
        let info = text(&master.cmd(&["INFO", "clients"]));
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    let run = |addr: std::net::SocketAddr, in_multi: bool| -> Vec<String> {
        let mut admin = connect(addr);
        let mut other = connect(addr);
        let mut writer = raw(addr);
        let pause = ["CLIENT", "PAUSE", "20000", "WRITE"];
        let mut seen = if in_multi {
            // Applied at EXEC, as Redis applies it.
            vec![
                text(&query(&mut admin, &["MULTI"]).unwrap()),
                text(&query(&mut admin, &pause).unwrap()),
                format!("{:?}", query(&mut admin, &["EXEC"]).unwrap()),
            ]
        } else {
            vec![text(&query(&mut admin, &pause).unwrap())]
        };
        writer
            .write_all(b"*3\r\n$3\r\nSET\r\n$5\r\npause\r\n$1\r\nv\r\n")
            .unwrap();
        wait_until("the write is held", Duration::from_secs(10), || {
            blocked() == 1
        });
        // A command that may replicate is held too.
        let mut publisher = raw(addr);
        publisher
            .write_all(b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\nm\r\n")
            .unwrap();
        wait_until("the PUBLISH is held", Duration::from_secs(10), || {
            blocked() == 2
        });
        seen.push(text(&query(&mut other, &["GET", "pause"]).unwrap()));
        seen.push(text(&query(&mut other, &["PING"]).unwrap()));
        seen.push(format!("blocked_clients:{}", blocked()));
        seen.push(text(&query(&mut admin, &["CLIENT", "UNPAUSE"]).unwrap()));
        let mut ok = [0u8; 5];
        writer.read_exact(&mut ok).expect("the write's reply");
        seen.push(String::from_utf8_lossy(&ok).into_owned());
        seen.push(String::from_utf8_lossy(&read_reply(&mut publisher)).into_owned());
        writer
            .write_all(b"*2\r\n$3\r\nGET\r\n$5\r\npause\r\n")
            .unwrap();
        seen.push(String::from_utf8_lossy(&read_reply(&mut writer)).into_owned());
        query(&mut admin, &["DEL", "pause"]).unwrap();
        seen
    };
    for in_multi in [false, true] {
        let direct = run(master.addr(), in_multi);
        assert!(direct.contains(&"nil".to_owned()), "{direct:?}");
        assert_eq!(run(proxy.addr, in_multi), direct, "in MULTI: {in_multi}");
    }
}
