//! Access control and secrets: the proxy users' permissions, commands taken off the deny
//! list, and secrets that never leak.

use crate::common::*;
use redis::Value;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{expect_error_and_close, read_to_close, shared, LEAKS, LOG_LINES, SECRETS};

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
