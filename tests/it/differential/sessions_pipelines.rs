//! Scripted sessions: pipelines, errors and inline commands; transactions.

use super::compare::check_proxied;
use super::session::Session;

/// Pipelines, mixed reads and writes, errors, inline commands.
pub(super) fn pipeline_sessions() -> Vec<Session> {
    let mut lines: Vec<String> = Vec::new();
    for i in 0..10 {
        lines.push(format!("SET p:{i} v{i}"));
        lines.push(format!("GET p:{i}"));
        lines.push("INCR p:ctr".into());
        lines.push(format!("RPUSH p:list {i}"));
    }
    lines.extend(
        [
            "LRANGE p:list 0 -1",
            "GET p:list",
            "LPUSH p:1 x",
            "GET",
            "SET p:only",
            "NOSUCHCOMMAND a b",
            "INCR p:0",
            "MGET p:0 p:1 p:missing",
            "DEL p:0 p:missing",
            "EXISTS p:0 p:1",
            "STRLEN p:9",
            "GET p:ctr",
            "PING",
            "ECHO hello",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mixed_raw = b"PING\r\n*3\r\n$3\r\nSET\r\n$5\r\nmixed\r\n$1\r\n7\r\nINCR mixed\r\n*2\r\n$3\r\nGET\r\n$5\r\nmixed\r\n";
    vec![
        Session::new("pipeline/mixed reads, writes and errors", 2)
            .pipeline(0, &refs)
            .pipeline(
                1,
                &[
                    "GET p:1",
                    "LRANGE p:list 0 2",
                    "GET p:ctr",
                    "TYPE p:list",
                    "LLEN p:1",
                ],
            ),
        Session::new("pipeline/errors", 1)
            .cmd(0, "SET e:s v")
            .cmd(0, "LPUSH e:s x")
            .cmd(0, "HGET e:s f")
            .cmd(0, "INCR e:s")
            .cmd(0, "GET")
            .cmd(0, "SET e:s v EX 0")
            .cmd(0, "SET e:s v BOGUS")
            .cmd(0, "NOSUCHCOMMAND")
            .cmd(0, "nosuchcommand with args")
            .cmd(0, "OBJECT NOSUCH e:s")
            .cmd(0, "CLIENT NOSUCH")
            .cmd(0, "GET e:s"),
        Session::new("pipeline/inline commands", 2)
            .raw(0, b"PING\r\n", 1)
            .raw(0, b"SET inl 5\r\nGET inl\r\n", 2)
            .raw(0, b"\r\nINCRBY inl 2\r\n", 1)
            .raw(0, b"ECHO \"a b\"\r\n", 1)
            .raw(0, b"NOSUCH inline\r\n", 1)
            .raw(0, mixed_raw, 4)
            .raw(1, b"GET inl\r\nGET mixed\r\n", 2),
    ]
}

/// MULTI/EXEC, DISCARD, EXECABORT, WATCH, SELECT inside MULTI.
pub(super) fn transaction_sessions() -> Vec<Session> {
    vec![
        Session::new("multi/exec", 1)
            .cmd(0, "MULTI")
            .cmd(0, "SET t:a 1")
            .cmd(0, "INCR t:a")
            .cmd(0, "GET t:a")
            .cmd(0, "LPUSH t:a x")
            .cmd(0, "EXEC")
            .cmd(0, "GET t:a")
            .pipeline(0, &["MULTI", "INCR t:a", "INCR t:a", "EXEC"]),
        Session::new("multi/discard", 1)
            .cmd(0, "MULTI")
            .cmd(0, "SET t:d 1")
            .cmd(0, "DISCARD")
            .cmd(0, "GET t:d")
            .cmd(0, "DISCARD")
            .cmd(0, "EXEC"),
        Session::new("multi/errors while queueing: EXECABORT", 1)
            .cmd(0, "MULTI")
            .cmd(0, "SET t:e")
            .cmd(0, "INCR t:e")
            .cmd(0, "EXEC")
            .cmd(0, "GET t:e")
            .cmd(0, "MULTI")
            .cmd(0, "NOSUCHCOMMAND x")
            .cmd(0, "EXEC")
            .cmd(0, "MULTI")
            .cmd(0, "MULTI")
            .cmd(0, "WATCH t:e")
            .cmd(0, "EXEC"),
        Session::new("multi/watch with a conflicting write", 2)
            .cmd(0, "SET t:w 1")
            .cmd(0, "WATCH t:w")
            .cmd(1, "SET t:w 2")
            .cmd(0, "MULTI")
            .cmd(0, "INCR t:w")
            .cmd(0, "EXEC")
            .cmd(0, "GET t:w"),
        // The WATCH lives on the connection: a SELECT under it must not lose it.
        Session::new("multi/watch, select away and back, conflicting write", 2)
            .cmd(0, "SET t:ws 1")
            .cmd(0, "WATCH t:ws")
            .cmd(0, "SELECT 1")
            .cmd(0, "GET t:ws")
            .cmd(0, "SELECT 0")
            .cmd(1, "SET t:ws 2")
            .cmd(0, "MULTI")
            .cmd(0, "INCR t:ws")
            .cmd(0, "EXEC")
            .cmd(0, "GET t:ws"),
        Session::new("multi/watch then unwatch", 2)
            .cmd(0, "SET t:u 1")
            .cmd(0, "WATCH t:u")
            .cmd(0, "UNWATCH")
            .cmd(1, "SET t:u 2")
            .cmd(0, "MULTI")
            .cmd(0, "INCR t:u")
            .cmd(0, "EXEC")
            .cmd(1, "GET t:u"),
        // The proxy answers these itself: queued in the transaction, answered at EXEC.
        Session::new("multi/CLIENT, AUTH and HELLO queued and run at EXEC", 1)
            .cmd(0, "MULTI")
            .cmd(0, "CLIENT SETNAME t1")
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "SET t:o v")
            .cmd(0, "CLIENT UNBLOCK 123456")
            .cmd(0, "CLIENT UNBLOCK x")
            .cmd(0, "CLIENT KILL ID 123456")
            .cmd(0, "AUTH x")
            .cmd(0, "AUTH a b c")
            .cmd(0, "HELLO 4")
            .cmd(0, "CLIENT NO-EVICT maybe")
            .cmd(0, "GET t:o")
            .cmd(0, "EXEC")
            .cmd(0, "CLIENT GETNAME")
            .pipeline(0, &["MULTI", "CLIENT SETNAME t2", "EXEC", "CLIENT GETNAME"])
            .cmd(0, "MULTI")
            .cmd(0, "CLIENT SETNAME t3")
            .cmd(0, "DISCARD")
            .cmd(0, "CLIENT GETNAME"),
        Session::new(
            "multi/CLIENT with an arity error or unknown subcommand: EXECABORT",
            1,
        )
        .cmd(0, "MULTI")
        .cmd(0, "CLIENT SETNAME a b")
        .cmd(0, "SET t:x 1")
        .cmd(0, "EXEC")
        .cmd(0, "MULTI")
        .cmd(0, "CLIENT NOSUCH")
        .cmd(0, "EXEC")
        .cmd(0, "GET t:x"),
        Session::new("multi/HELLO switching protocol inside MULTI", 1)
            .cmd(0, "HSET t:h f v")
            .cmd(0, "MULTI")
            .cmd(0, "HGETALL t:h")
            .cmd(0, "HELLO 3")
            .cmd(0, "HGETALL t:h")
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "EXEC")
            .cmd(0, "HGETALL t:h")
            .cmd(0, "MULTI")
            .cmd(0, "HELLO 2 SETNAME back")
            .cmd(0, "HGETALL t:h")
            .cmd(0, "EXEC")
            .cmd(0, "HGETALL t:h")
            .cmd(0, "CLIENT GETNAME"),
        Session::new("multi/CLIENT REPLY OFF and SKIP inside MULTI", 1)
            .cmd(0, "MULTI")
            .cmd(0, "CLIENT REPLY SKIP")
            .cmd(0, "PING")
            .cmd(0, "EXEC")
            .send(0, "PING")
            .cmd(0, "PING a")
            .cmd(0, "MULTI")
            .cmd(0, "CLIENT REPLY OFF")
            .cmd(0, "PING b")
            .send(0, "EXEC")
            .send(0, "PING c")
            .cmd(0, "CLIENT REPLY ON")
            .cmd(0, "PING d"),
        Session::new("multi/select inside multi", 2)
            .cmd(0, "SET t:s db0")
            .cmd(0, "MULTI")
            .cmd(0, "SELECT 1")
            .cmd(0, "SET t:s db1")
            .cmd(0, "GET t:s")
            .cmd(0, "EXEC")
            .cmd(0, "GET t:s")
            .cmd(0, "SELECT 0")
            .cmd(0, "GET t:s")
            .cmd(1, "SELECT 1")
            .cmd(1, "GET t:s"),
    ]
}

#[test]
fn pipelines_errors_inline() {
    check_proxied(&pipeline_sessions());
}

#[test]
fn transactions() {
    check_proxied(&transaction_sessions());
}
