//! Scripted sessions: pub/sub in RESP2 and RESP3, and `RESET`.

use super::compare::check_proxied;
use super::session::Session;

/// Pub/sub in RESP2 and RESP3.
pub(super) fn pubsub_sessions() -> Vec<Session> {
    vec![
        Session::new(
            "pubsub/subscribe, psubscribe, publish, unsubscribe (RESP2)",
            3,
        )
        .cmd(0, "SUBSCRIBE ps:news")
        .cmd(2, "PSUBSCRIBE ps:n*")
        .cmd(1, "PUBLISH ps:news hello")
        .read(0, 1)
        .read(2, 1)
        .cmd(0, "PING")
        .cmd(0, "PING hi")
        .cmd(0, "GET ps:k")
        .cmd(0, "UNSUBSCRIBE ps:news")
        .cmd(1, "PUBLISH ps:news again")
        .read(2, 1)
        .cmd(0, "PING")
        .cmd(2, "PUNSUBSCRIBE ps:n*")
        .cmd(1, "PUBLISH ps:news nobody")
        .cmd(2, "PING")
        .cmd(0, "GET ps:k"),
        Session::new("pubsub/several channels in one SUBSCRIBE", 2)
            .cmd_n(0, "SUBSCRIBE ps:a ps:b ps:c", 3)
            .cmd(1, "PUBLISH ps:b m1")
            .cmd(1, "PUBLISH ps:c m2")
            .read(0, 2)
            .cmd(0, "UNSUBSCRIBE ps:a")
            .cmd(0, "UNSUBSCRIBE ps:b")
            .cmd(0, "UNSUBSCRIBE ps:c")
            .cmd(0, "PING"),
        Session::new("pubsub/RESP3 subscribe via HELLO 3", 2)
            .cmd(0, "HELLO 3")
            .cmd(0, "SUBSCRIBE ps:r3")
            .cmd(1, "PUBLISH ps:r3 m")
            .read(0, 1)
            .cmd(0, "GET ps:missing")
            .cmd(0, "PING")
            .cmd(0, "UNSUBSCRIBE ps:r3")
            .cmd(1, "PUBLISH ps:r3 gone")
            .cmd(0, "PING"),
    ]
}

/// RESET after pub/sub, tracking, and of name, db and protocol.
pub(super) fn reset_sessions() -> Vec<Session> {
    vec![
        Session::new("reset/after SUBSCRIBE, then two MULTI/EXEC", 1)
            .cmd(0, "SUBSCRIBE rs:ch")
            .cmd(0, "RESET")
            .cmd(0, "MULTI")
            .cmd(0, "INCR rs:n")
            .cmd(0, "EXEC")
            .cmd(0, "MULTI")
            .cmd(0, "INCR rs:n")
            .cmd(0, "EXEC")
            .pipeline(
                0,
                &["MULTI", "INCR rs:n", "EXEC", "MULTI", "INCR rs:n", "EXEC"],
            )
            .cmd(0, "PING"),
        Session::new("reset/after SUBSCRIBE, pipelined", 2)
            .cmd(0, "SUBSCRIBE rs:ch2")
            .pipeline(0, &["RESET", "MULTI", "INCR rs:m", "EXEC", "GET rs:m"])
            .cmd(1, "PUBLISH rs:ch2 x")
            .cmd(0, "PING"),
        Session::new("reset/after CLIENT TRACKING ON", 2)
            .cmd(0, "HELLO 3")
            .cmd(0, "CLIENT TRACKING ON")
            .cmd(0, "CLIENT TRACKINGINFO")
            .cmd(0, "GET rs:tk")
            .cmd(0, "RESET")
            .cmd(0, "CLIENT TRACKINGINFO")
            .cmd(1, "SET rs:tk v")
            .cmd(0, "GET rs:tk")
            .cmd(0, "PING"),
        Session::new("reset/clears name, db and protocol", 1)
            .cmd(0, "CLIENT SETNAME x")
            .cmd(0, "HELLO 3")
            .cmd(0, "SELECT 2")
            .cmd(0, "SET rs:k v")
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "RESET")
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "GET rs:k")
            .cmd(0, "HELLO")
            .cmd(0, "SELECT 2")
            .cmd(0, "GET rs:k"),
        Session::new("reset/inside MULTI", 1)
            .cmd(0, "MULTI")
            .cmd(0, "SET rs:x 1")
            .cmd(0, "RESET")
            .cmd(0, "EXEC")
            .cmd(0, "GET rs:x"),
    ]
}

#[test]
fn pubsub() {
    check_proxied(&pubsub_sessions());
}

#[test]
fn reset() {
    check_proxied(&reset_sessions());
}
