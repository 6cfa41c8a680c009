//! Scripted sessions: SCAN-family loops, and `TOUCH` with `OBJECT IDLETIME`.

use super::compare::check_proxied;
use super::resp::Val;
use super::session::Session;

/// SCAN-family loops over 1000 elements.
pub(super) fn scan_sessions() -> Vec<Session> {
    let sets: Vec<String> = (0..1000).map(|i| format!("SET key:{i} v")).collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let members: String = (0..1000).map(|i| format!(" m{i}")).collect();
    let fields: String = (0..1000).map(|i| format!(" f{i} v{i}")).collect();
    let zmembers: String = (0..1000).map(|i| format!(" {i} z{i}")).collect();
    vec![
        Session::new("scan/SCAN COUNT 5 over 1000 keys", 2)
            .pipeline(0, &sets)
            .cmd(1, "DBSIZE")
            .scan(1, "SCAN {cursor} COUNT 5", false)
            .scan(1, "SCAN {cursor} MATCH key:1* COUNT 10", false)
            .scan(1, "SCAN {cursor} COUNT 50 TYPE string", false),
        Session::new("scan/SSCAN, HSCAN, ZSCAN over 1000 members", 2)
            .cmd(0, &format!("SADD sc:set{members}"))
            .cmd(0, &format!("HSET sc:hash{fields}"))
            .cmd(0, &format!("ZADD sc:zset{zmembers}"))
            .cmd(1, "OBJECT ENCODING sc:set")
            .cmd(1, "OBJECT ENCODING sc:hash")
            .cmd(1, "OBJECT ENCODING sc:zset")
            .scan(1, "SSCAN sc:set {cursor} COUNT 5", false)
            .scan(1, "HSCAN sc:hash {cursor} COUNT 5", true)
            .scan(1, "ZSCAN sc:zset {cursor} COUNT 5", true),
    ]
}

/// TOUCH resets the idle time of the key on the master.
pub(super) fn touch_sessions() -> Vec<Session> {
    vec![
        Session::new("touch/TOUCH then OBJECT IDLETIME on the master", 2)
            .cmd(0, "SET to:k v")
            .await_master(
                "OBJECT IDLETIME to:k",
                "to:k idle for a second",
                |v| matches!(v, Val::Int(n) if *n >= 1),
            )
            .cmd(1, "TOUCH to:k to:missing")
            .on_master("OBJECT IDLETIME to:k")
            .cmd(1, "OBJECT IDLETIME to:k"),
    ]
}

#[test]
fn scan_loops() {
    check_proxied(&scan_sessions());
}

#[test]
fn touch_idletime() {
    check_proxied(&touch_sessions());
}
