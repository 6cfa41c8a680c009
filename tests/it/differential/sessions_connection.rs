//! Scripted sessions: `CLIENT` subcommands, RESP3 types, and Redis's own ACL users.

use super::compare::check_proxied;
use super::session::{Cmd, Session};

/// CLIENT subcommands.
pub(super) fn client_sessions() -> Vec<Session> {
    vec![
        Session::new("client/SETNAME, GETNAME, NO-EVICT", 2)
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "CLIENT SETNAME alice")
            .cmd(0, "CLIENT GETNAME")
            .cmd(1, "CLIENT GETNAME")
            .cmd(0, "CLIENT SETNAME \"bad name\"")
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "CLIENT NO-EVICT on")
            .cmd(0, "CLIENT NO-EVICT off")
            .cmd(0, "CLIENT NO-EVICT maybe"),
        Session::new("client/LIST ID own id, INFO, TYPE bogus", 1)
            .cmd(0, "CLIENT SETNAME lister")
            .capture(0, "CLIENT ID", "me")
            .cmd(0, "CLIENT LIST ID {me}")
            .cmd(0, "CLIENT INFO")
            .cmd(0, "CLIENT LIST TYPE bogus")
            .cmd(0, "CLIENT LIST ID 999999999")
            .cmd(0, "CLIENT LIST ID notanumber"),
        Session::new(
            "client/LIST TYPE pubsub while another client is subscribed",
            2,
        )
        .cmd(1, "SUBSCRIBE cl:ch")
        .cmd(0, "CLIENT LIST TYPE pubsub")
        .cmd(0, "PUBLISH cl:ch x")
        .read(1, 1),
        Session::new("client/REPLY OFF, ON, SKIP", 1)
            .cmd(0, "SET cr:k 1")
            .send(0, "CLIENT REPLY OFF")
            .send(0, "INCR cr:k")
            .cmd(0, "CLIENT REPLY ON")
            .send(0, "CLIENT REPLY SKIP")
            .send(0, "INCR cr:k")
            .cmd(0, "GET cr:k")
            .cmds(
                0,
                vec![
                    Cmd::parse("CLIENT REPLY SKIP"),
                    Cmd::parse("INCR cr:k"),
                    Cmd::parse("GET cr:k"),
                ],
                1,
            )
            .cmd(0, "GET cr:k"),
        Session::new(
            "client/UNBLOCK a client blocked in BLPOP (TIMEOUT and ERROR)",
            2,
        )
        .capture(0, "CLIENT ID", "a")
        .send(0, "BLPOP cu:q 5")
        .cmd(1, "CLIENT UNBLOCK {a} TIMEOUT")
        .read(0, 1)
        .send(0, "BLPOP cu:q 5")
        .cmd(1, "CLIENT UNBLOCK {a} ERROR")
        .read(0, 1)
        .cmd(1, "CLIENT UNBLOCK {a}")
        .cmd(0, "PING"),
        Session::new("client/TRACKING REDIRECT to another client (RESP2)", 3)
            .capture(1, "CLIENT ID", "b")
            .cmd(1, "SUBSCRIBE __redis__:invalidate")
            .cmd(0, "CLIENT TRACKING on REDIRECT {b}")
            .cmd(0, "GET ct:k")
            .cmd(2, "SET ct:k 1")
            .read(1, 1)
            .cmd(0, "GET ct:k")
            .cmd(0, "CLIENT GETREDIR")
            .cmd(2, "SET ct:k 2")
            .read(1, 1),
        Session::new(
            "client/TRACKING REDIRECT to the client itself (RESP2, RESP3)",
            2,
        )
        .capture(0, "CLIENT ID", "a")
        .cmd(0, "CLIENT TRACKING on REDIRECT {a}")
        .cmd(0, "CLIENT GETREDIR")
        .cmd(0, "GET cs:k")
        .cmd(1, "SET cs:k 1")
        .cmd(0, "GET cs:k")
        .cmd(0, "CLIENT TRACKING off")
        .cmd(0, "CLIENT GETREDIR")
        .cmd_n(0, "HELLO 3", 1)
        .cmd(0, "CLIENT TRACKING on REDIRECT {a}")
        .cmd(0, "CLIENT GETREDIR")
        .cmd(0, "GET cs:k")
        .cmd(1, "SET cs:k 2")
        .read(0, 1)
        .cmd(0, "GET cs:k"),
        Session::new("client/TRACKING off, then on again with BCAST REDIRECT", 3)
            .capture(1, "CLIENT ID", "b")
            .cmd(1, "SUBSCRIBE __redis__:invalidate")
            .cmd(0, "CLIENT TRACKING on REDIRECT {b}")
            .cmd(0, "CLIENT TRACKING off")
            .cmd(0, "CLIENT TRACKING on BCAST REDIRECT {b}")
            .cmd(0, "CLIENT GETREDIR")
            .cmd(2, "SET ctb:k 1")
            .read(1, 1)
            .cmd(0, "CLIENT TRACKING on REDIRECT 999999999")
            .cmd(0, "CLIENT GETREDIR"),
        Session::new("client/KILL argument errors", 2)
            .cmd(0, "CLIENT KILL ID 0")
            .cmd(0, "CLIENT KILL ID abc")
            .cmd(0, "CLIENT KILL TYPE wrong_type")
            .cmd(0, "CLIENT KILL TYPE pubsub")
            .cmd(0, "CLIENT KILL TYPE master")
            .cmd(0, "CLIENT KILL SKIPME yes_or_no")
            .cmd(0, "CLIENT KILL ID 5 SKIPME")
            .cmd(0, "CLIENT KILL ADDR 1.2.3.4:5 SKIPME no")
            .cmd(0, "CLIENT KILL LADDR 1.2.3.4:5")
            .cmd(0, "CLIENT KILL USER default ID 999999999")
            .cmd(0, "CLIENT KILL 1.2.3.4:5")
            .cmd(0, "CLIENT KILL BOGUS x")
            .cmd(1, "PING")
            .cmd(0, "PING"),
        Session::new("client/KILL ID", 2)
            .capture(0, "CLIENT ID", "a")
            .cmd(1, "CLIENT KILL ID {a}")
            .cmd(0, "PING")
            .cmd(1, "CLIENT KILL ID 999999999")
            .cmd(1, "PING"),
    ]
}

/// RESP3 types, and the same data read in RESP2 by another client.
pub(super) fn resp3_sessions() -> Vec<Session> {
    vec![Session::new("resp3/maps, sets, doubles, nulls", 2)
        .cmd(0, "HELLO 3")
        .cmd(0, "HSET r3:h f1 v1 f2 v2")
        .cmd(0, "SADD r3:s 3 1 2")
        .cmd(0, "ZADD r3:z 1.5 a 2 b")
        .cmd(0, "SET r3:str v")
        .cmd(1, "HELLO 3")
        .cmd(1, "HGETALL r3:h")
        .cmd(1, "SMEMBERS r3:s")
        .cmd(1, "ZSCORE r3:z a")
        .cmd(1, "ZRANGE r3:z 0 -1 WITHSCORES")
        .cmd(1, "GET r3:missing")
        .cmd(1, "HGET r3:h nope")
        .cmd(1, "ZSCORE r3:z nope")
        .cmd(1, "LRANGE r3:missing 0 -1")
        .cmd(1, "MGET r3:str r3:missing")
        .cmd(1, "EXISTS r3:str")
        .cmd(1, "INCRBYFLOAT r3:f 1.5")
        .cmd(1, "CLIENT TRACKINGINFO")
        .cmd(1, "GET r3:h")
        .cmd(0, "HGETALL r3:h")
        .cmd(0, "ZRANGE r3:z 0 -1 WITHSCORES")
        .cmd(0, "RESET")
        .cmd(0, "HGETALL r3:h")
        .cmd(0, "SMEMBERS r3:s")
        .cmd(0, "ZSCORE r3:z a")
        .cmd(0, "GET r3:missing")]
}

/// Redis's own ACL users, created on every server (ACL changes are not replicated):
/// logins (failed, then good, pipelined), key and command permissions on reads (served by
/// replicas), writes, scripts, transactions, blocking commands, pub/sub channels, the
/// commands the proxy answers itself (`CLIENT LIST`, `SELECT`), `HELLO 3 AUTH`, RESET.
pub(super) fn acl_sessions() -> Vec<Session> {
    let alice = [
        "ACL",
        "SETUSER",
        "alice",
        "on",
        ">pw",
        "~a:*",
        "+@all",
        "-client|list",
        "-select",
    ];
    let bob = [
        "ACL",
        "SETUSER",
        "bob",
        "on",
        ">bpw",
        "~*",
        "&*",
        "+@read",
        "+@connection",
        "+@pubsub",
        "-ping",
    ];
    let carol = [
        "ACL", "SETUSER", "carol", "on", ">cpw", "~*", "&*", "+@all", "-select", "-client",
    ];
    vec![
        Session::new("acl/Redis ACL users", 3)
            .on_all_nodes(&alice)
            .on_all_nodes(&bob)
            .cmd(0, "SET b:1 secret")
            // A kill by a user no client is logged in as: Redis says whether it is one.
            .cmd(2, "CLIENT KILL USER nosuchuser")
            .cmd(2, "CLIENT KILL USER bob")
            .cmd(2, "CLIENT KILL USER bob SKIPME no")
            .cmd(0, "AUTH alice wrong")
            .cmd(0, "ACL WHOAMI")
            .pipeline(
                0,
                &["AUTH alice pw", "ACL WHOAMI", "SET a:1 one", "GET a:1"],
            )
            .pipeline(0, &["AUTH alice nope", "GET a:1", "ACL WHOAMI"])
            .cmd(0, "GET b:1")
            .cmd(0, "SET b:2 x")
            .cmd(0, "MGET a:1 b:1")
            .args(0, &["EVAL", "return redis.call('get','b:1')", "0"])
            .args(0, &["EVAL", "return redis.call('get',KEYS[1])", "1", "a:1"])
            .cmd(0, "CLIENT LIST")
            .cmd(0, "SELECT 1")
            .cmd(0, "SELECT 0")
            .cmd(0, "PING")
            .cmd(0, "CLIENT GETNAME")
            .cmd(0, "MULTI")
            .cmd(0, "SET a:2 two")
            .cmd(0, "SET b:3 three")
            .cmd(0, "EXEC")
            .cmd(0, "BLPOP b:list 0.01")
            .cmd(0, "BLPOP a:list 0.01")
            .cmd(0, "SUBSCRIBE ch")
            .cmd_n(1, "HELLO 3 AUTH bob bpw SETNAME bobconn", 1)
            .cmd(1, "ACL WHOAMI")
            .cmd(1, "GET a:1")
            .cmd(1, "GET b:1")
            .cmd(1, "SET a:9 no")
            .cmd(1, "PING")
            .cmd(1, "CLIENT GETNAME")
            .cmd(1, "SUBSCRIBE ch")
            .cmd(2, "PUBLISH ch hello")
            .read(1, 1)
            .cmd(1, "RESET")
            .cmd(1, "ACL WHOAMI")
            .cmd(1, "GET b:1")
            .cmd(0, "RESET")
            .cmd(0, "ACL WHOAMI")
            .cmd(0, "HELLO 2 AUTH alice wrong")
            .cmd(0, "ACL WHOAMI")
            // Logins inside a transaction: the master checks them at EXEC.
            .cmd(2, "MULTI")
            .cmd(2, "AUTH alice wrong")
            .cmd(2, "PING")
            .cmd(2, "EXEC")
            .cmd(2, "ACL WHOAMI")
            .cmd(2, "MULTI")
            .cmd(2, "AUTH alice pw")
            .cmd(2, "CLIENT SETNAME ac")
            .cmd(2, "EXEC")
            .cmd(2, "ACL WHOAMI")
            .cmd(2, "GET b:1")
            .cmd(2, "GET a:1")
            .cmd(2, "CLIENT LIST")
            .cmd(2, "CLIENT GETNAME")
            .cmd(2, "MULTI")
            .cmd(2, "HELLO 3 AUTH bob bpw")
            .cmd(2, "HGETALL a:h")
            .cmd(2, "EXEC")
            .cmd(2, "ACL WHOAMI")
            .cmd(2, "SET a:9 no")
            .cmd(2, "HGETALL a:h")
            .on_all_nodes(&["ACL", "DELUSER", "alice", "bob"]),
        // A login keeps the database, as on Redis, for a user that may not `SELECT`
        // or name its connection: its connections are set up before they log in as it.
        Session::new(
            "acl/an ACL user without SELECT logs in in another database",
            2,
        )
        .on_all_nodes(&carol)
        .cmd(0, "SELECT 4")
        .cmd(0, "SET c:1 10")
        .cmd(0, "RPUSH c:l x")
        .cmd(0, "AUTH carol cpw")
        .cmd(0, "ACL WHOAMI")
        .cmd(0, "GET c:1")
        .cmd(0, "MULTI")
        .cmd(0, "INCR c:1")
        .cmd(0, "EXEC")
        .cmd(0, "BLPOP c:l 0.01")
        .cmd(0, "CLIENT GETNAME")
        .cmd(0, "SELECT 0")
        .cmd(0, "SUBSCRIBE ch")
        .cmd(1, "PUBLISH ch hi")
        .read(0, 1)
        .cmd(0, "RESET")
        .cmd(0, "GET c:1")
        .cmd(0, "SELECT 4")
        .cmd(0, "GET c:1")
        .on_all_nodes(&["ACL", "DELUSER", "carol"]),
    ]
}

#[test]
fn client_subcommands() {
    check_proxied(&client_sessions());
}

#[test]
fn resp3_types() {
    check_proxied(&resp3_sessions());
}

#[test]
fn redis_acl_users() {
    check_proxied(&acl_sessions());
}
