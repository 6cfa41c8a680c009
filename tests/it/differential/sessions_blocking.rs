//! Scripted sessions: blocking commands woken by another client, and long-running
//! scripts and functions.

use super::compare::check_proxied;
use super::resp::Val;
use super::session::Session;

/// Blocking commands woken by another client, and a timeout.
pub(super) fn blocking_sessions() -> Vec<Session> {
    vec![
        Session::new("blocking/BLPOP woken by another client's push", 2)
            .send(0, "BLPOP b:q 5")
            .cmd(1, "LPUSH b:q x")
            .cmd(1, "LPUSH b:q y")
            .read(0, 1)
            .cmd(1, "LRANGE b:q 0 -1"),
        Session::new("blocking/BLPOP, then a pipelined push and LLEN", 2)
            .send(0, "BLPOP b:q2 5")
            .pipeline(1, &["RPUSH b:q2 x", "LLEN b:q2"])
            .read(0, 1)
            .cmd(1, "LLEN b:q2"),
        // The push and the pop reach the proxy after the BLPOP did, so Redis must see
        // the BLPOP first: it takes the pushed element and the LPOP finds none.
        Session::new("blocking/BLPOP, then another client's push and pop", 2)
            .send(0, "BLPOP b:q3 5")
            .pipeline(1, &["RPUSH b:q3 x", "LPOP b:q3"])
            .read(0, 1)
            .cmd(1, "LLEN b:q3"),
        Session::new("blocking/BLMOVE", 2)
            .send(0, "BLMOVE b:src b:dst LEFT RIGHT 5")
            .cmd(1, "LPUSH b:src a")
            .cmd(1, "LPUSH b:src b")
            .read(0, 1)
            .cmd(1, "LRANGE b:dst 0 -1")
            .cmd(1, "LRANGE b:src 0 -1"),
        Session::new("blocking/BRPOPLPUSH", 2)
            .send(0, "BRPOPLPUSH b:s2 b:d2 5")
            .cmd(1, "RPUSH b:s2 one")
            .cmd(1, "RPUSH b:s2 two")
            .read(0, 1)
            .cmd(1, "LRANGE b:d2 0 -1"),
        Session::new("blocking/XREAD BLOCK woken by XADD", 2)
            .cmd(1, "XADD b:st 1-1 f old")
            .send(0, "XREAD BLOCK 5000 STREAMS b:st $")
            .cmd(1, "XADD b:st 2-1 f new")
            .read(0, 1)
            .cmd(1, "XLEN b:st"),
        Session::new("blocking/BLPOP timeout", 1)
            .cmd(0, "BLPOP b:none 0.1")
            .cmd(0, "BZPOPMIN b:znone 0.1")
            .cmd(0, "PING"),
    ]
}

/// A script that runs `us` microseconds, by the server's clock, and returns `done`.
fn ends_by_itself(us: u64) -> String {
    format!("local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] - t0 > {us} then break end end return 'done'")
}

/// Long-running scripts and functions, killed by another client.
pub(super) fn script_sessions() -> Vec<Session> {
    let library = "#!lua name=difflib\nredis.register_function('spin', function(keys, args) while true do end end)";
    let long = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] - t0 > 3500000 then break end end redis.call('SET', 'long:k', 'done') return 'finished'";
    vec![
        Session::new(
            "scripts/a script that runs longer than a replica's command timeout",
            1,
        )
        .args(0, &["EVAL", long, "0"])
        .cmd(0, "GET long:k"),
        // Its reply says the master is done with it: PING answers at once as Redis does.
        Session::new(
            "scripts/a busy script that ends by itself, then PING at once",
            2,
        )
        .send(0, &format!("EVAL \"{}\" 0", ends_by_itself(400_000)))
        .await_client(
            1,
            "PING",
            |v| matches!(v, Val::Line(b'-', e) if e.starts_with(b"BUSY")),
        )
        .read(0, 1)
        .cmd(0, "PING")
        .cmd(1, "PING"),
        Session::new("scripts/EVAL busy, then PING, MULTI, SCRIPT KILL", 2)
            .cmd(1, "SET sc:x 1")
            .send(0, "EVAL \"while true do end\" 0")
            .await_client(
                1,
                "PING",
                |v| matches!(v, Val::Line(b'-', e) if e.starts_with(b"BUSY")),
            )
            .cmd(1, "MULTI")
            .cmd(1, "INCR sc:x")
            .cmd(1, "EXEC")
            .cmd(1, "SCRIPT KILL")
            .read(0, 1)
            .cmd(1, "GET sc:x")
            .cmd(0, "PING")
            .cmd(1, "SCRIPT KILL"),
        Session::new("scripts/EVAL busy, then SCRIPT KILL at once", 2)
            .send(0, "EVAL \"while true do end\" 0")
            .cmd(1, "SCRIPT KILL")
            .read(0, 1)
            .cmd(0, "PING"),
        Session::new("scripts/EVAL busy, then MULTI, INCR, EXEC", 2)
            .cmd(1, "SET sc:y 1")
            .send(0, "EVAL \"while true do end\" 0")
            .cmd(1, "MULTI")
            .cmd(1, "INCR sc:y")
            .cmd(1, "EXEC")
            .cmd(1, "SCRIPT KILL")
            .read(0, 1)
            .cmd(1, "GET sc:y"),
        Session::new("scripts/FCALL busy, then FUNCTION KILL at once", 2)
            .args(0, &["FUNCTION", "LOAD", library])
            .send(0, "FCALL spin 0")
            .cmd(1, "FUNCTION KILL")
            .read(0, 1)
            .cmd(0, "PING"),
        Session::new("scripts/FCALL busy, then PING, FUNCTION KILL", 2)
            .args(0, &["FUNCTION", "LOAD", library])
            .send(0, "FCALL spin 0")
            .await_client(
                1,
                "PING",
                |v| matches!(v, Val::Line(b'-', e) if e.starts_with(b"BUSY")),
            )
            .cmd(1, "FUNCTION KILL")
            .read(0, 1)
            .cmd(0, "PING")
            .cmd(1, "FUNCTION KILL"),
    ]
}

#[test]
fn blocking_commands() {
    check_proxied(&blocking_sessions());
}

#[test]
fn busy_scripts() {
    check_proxied(&script_sessions());
}
