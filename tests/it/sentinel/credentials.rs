//! Credentials: the proxy logs in to the Sentinels and to the backends as the users it is
//! given, and with a wrong Sentinel password finds no master.

use crate::common::*;
use redis::Value;
use std::time::Duration;

use super::{init_logs, sentinel_yaml, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, NAME};

#[test]
fn sentinel_and_backend_credentials_are_used() {
    init_logs();
    let set = ReplicaSet::start(2, false);
    let sentinels = Sentinels::start(3, &set.master, NAME, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS);
    for i in 0..3 {
        sentinels.cmd(
            i,
            &[
                "ACL",
                "SETUSER",
                "watcher",
                "on",
                ">sentinel-pw",
                "allchannels",
                "+@all",
            ],
        );
    }
    for s in std::iter::once(&set.master).chain(&set.replicas) {
        s.cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">node-pw",
            "allkeys",
            "allchannels",
            "+@all",
        ]);
    }
    let yaml = |sentinel_pw: &str| {
        sentinel_yaml(&sentinels, "").replacen(
            "backend:\n  sentinel:\n",
            &format!(
                "backend:\n  username: app\n  password: node-pw\n  sentinel:\n    username: watcher\n    password: {sentinel_pw}\n"
            ),
            1,
        )
    };
    let proxy = ProxyUnderTest::start(&yaml("sentinel-pw"));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    query(&mut c, &["SET", "k", "v"]).unwrap();
    assert_eq!(set.master.get("k").as_deref(), Some("v"));
    // The proxy's connections (named `redsplit`) authenticated as the configured users.
    let users = |list: Value| -> Vec<String> {
        value_text(&list)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("name=redsplit"))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
            .map(String::from)
            .collect()
    };
    for i in 0..3 {
        let u = users(sentinels.cmd(i, &["CLIENT", "LIST"]));
        assert!(
            !u.is_empty() && u.iter().all(|u| u == "watcher"),
            "sentinel {i}: {u:?}"
        );
    }
    for s in std::iter::once(&set.master).chain(&set.replicas) {
        let u = users(s.cmd(&["CLIENT", "LIST"]));
        assert!(
            !u.is_empty() && u.iter().all(|u| u == "app"),
            "{}: {u:?}",
            s.addr()
        );
    }
    // With a wrong Sentinel password nothing is discovered: writes fail fast.
    for i in 0..3 {
        sentinels.cmd(i, &["ACL", "LOG", "RESET"]);
    }
    let wrong = ProxyUnderTest::start(&yaml("wrong"));
    // Every Sentinel refuses the proxy's login several times: the refresher asks all of
    // them at start and again every 100 ms while nothing is discovered, whereas a
    // subscriber alone, backing off, is refused five times only after 1.5 s. So the
    // refresher has been refused too, and found no master.
    wait_until(
        "every Sentinel refused the wrong password five times",
        Duration::from_secs(10),
        || (0..3).all(|i| refused_logins(&sentinels, i, "watcher") >= 5),
    );
    assert!(wrong.state().view.load().master.is_none());
    let e = query(&mut wrong.conn(), &["SET", "k", "w"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no master is known"), "{e}");
}

/// How many logins as `user` Sentinel `i` refused since its `ACL LOG` was last reset
/// (the log counts repeats of one refusal in a single entry).
fn refused_logins(sentinels: &Sentinels, i: usize, user: &str) -> i64 {
    let Ok(Value::Array(entries)) = sentinels.try_cmd(i, &["ACL", "LOG"]) else {
        return 0;
    };
    let field = |entry: &[Value], name: &str| {
        entry
            .chunks(2)
            .find(|kv| kv.first().and_then(value_text).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).cloned())
    };
    let text = |entry: &[Value], name: &str| field(entry, name).as_ref().and_then(value_text);
    entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(entry)
                if text(entry, "reason").as_deref() == Some("auth")
                    && text(entry, "username").as_deref() == Some(user) =>
            {
                match field(entry, "count") {
                    Some(Value::Int(n)) => Some(n),
                    _ => None,
                }
            }
            _ => None,
        })
        .sum()
}
