//! The core proxy against real Redis: any client works through redsplit unchanged.
mod common;

use common::*;
use redis::Value;
use std::time::Duration;

fn text(v: &Value) -> String {
    value_text(v).unwrap_or_else(|| format!("{v:?}"))
}

#[test]
fn set_get_and_reads_go_to_replicas() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    assert_eq!(text(&query(&mut c, &["SET", "k", "v"]).unwrap()), "OK");
    set.wait_synced(SYNC_TIMEOUT);
    // Reads from a fresh connection (no read-your-writes constraint).
    let mut r = proxy.conn();
    let before: u64 = set.replicas.iter().map(|s| s.commandstats().get("get").copied().unwrap_or(0)).sum();
    for _ in 0..20 {
        assert_eq!(text(&query(&mut r, &["GET", "k"]).unwrap()), "v");
    }
    let after: u64 = set.replicas.iter().map(|s| s.commandstats().get("get").copied().unwrap_or(0)).sum();
    assert_eq!(after - before, 20, "plain reads are served by replicas");
    assert_eq!(set.master.commandstats().get("get").copied().unwrap_or(0), 0);
}

#[test]
fn deep_pipeline_keeps_order() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    let mut p = redis::pipe();
    for i in 0..2000 {
        match i % 4 {
            0 => p.cmd("INCR").arg("ctr"),
            1 => p.cmd("GET").arg("ctr"),
            2 => p.cmd("PING"),
            _ => p.cmd("ECHO").arg(i),
        };
    }
    let replies: Vec<Value> = p.query(&mut c).unwrap();
    assert_eq!(replies.len(), 2000);
    for (i, v) in replies.iter().enumerate() {
        let n = (i / 4 + 1) as i64;
        match i % 4 {
            0 => assert_eq!(v, &Value::Int(n), "reply {i}"),
            1 => assert_eq!(text(v), n.to_string(), "reply {i} reads its own write"),
            2 => assert_eq!(text(v), "PONG"),
            _ => assert_eq!(text(v), i.to_string()),
        }
    }
    let _ = Duration::from_millis(1);
}
