//! Differential tests: the proxy must be invisible.
//!
//! Every scripted session (and every randomized case) runs twice: once in world
//! "direct" (clients talk to a master that has 2 replicas) and once in world "proxied"
//! (another master + 2 replicas, with redsplit in front, configured so reads really go
//! to replicas: `routing.default` is `replica` with a 1000 ms budget and read-your-writes
//! on). The raw reply bytes of every step are recorded per world and compared byte for
//! byte, step by step; the first difference is printed with the step, the client, the
//! command and both replies (escaped).
//!
//! How a session runs (the same in both worlds):
//! - Each client is a raw TCP connection ([`RespConn`]); commands are sent as exact bytes
//!   (RESP arrays of bulk strings, or inline/raw bytes), and each reply is read as one
//!   complete raw frame (RESP2 and RESP3 types, attributes, pushes, streamed aggregates).
//!   A reply missing after [`READ_TIMEOUT`] is recorded as `<no reply ...>` (and the
//!   client is not read again), a closed connection as `<connection closed>` (whether
//!   it was closed by a FIN or a reset, which depends only on timing).
//! - A step that sends without reading a reply (a blocking command whose reply comes
//!   later, `CLIENT REPLY OFF`) waits until the server end of that connection has read
//!   every byte sent (nothing is left unsent on the client socket, and the server
//!   socket's receive queue in `/proc/net/tcp` is empty): the server (Redis, or the
//!   proxy) has *received* the command before another client's next command is sent.
//!   No fixed sleeps.
//! - After a step that writes (any command but a known read-only one, see [`READ_ONLY`];
//!   a blocking command sent without reading its reply has written nothing yet), before
//!   the next step of a different client, the world's replicas are waited for until they
//!   have the master's replication offset, so a read routed to a replica is never
//!   legitimately stale. (Skipped while the master answers `-BUSY`.)
//! - Between sessions sharing a world pair: clients are closed, a busy script is killed,
//!   blocked clients are unblocked, `FLUSHALL`, `FUNCTION FLUSH`, `SCRIPT FLUSH`, sync.
//!
//! What is normalized before comparing, because it differs by nature between two Redis
//! servers or two connections (nothing else is):
//! - `CLIENT LIST` / `CLIENT INFO` replies: the values of `id=`, `addr=`, `laddr=`, `fd=`,
//!   `age=`, `idle=`, `qbuf=`, `qbuf-free=`, `argv-mem=`, `multi-mem=`, `obl=`, `oll=`,
//!   `omem=`, `tot-mem=`, `rbs=`, `rbp=`, `events=` become `*` (the bulk length is
//!   recomputed).
//! - The integer reply of `CLIENT ID`; and the reply of `CLIENT GETREDIR` when it is the
//!   id a client of the session learned from `CLIENT ID` (it becomes that variable's
//!   name, so a wrong id still differs).
//! - The value of the `id` field in the reply of `HELLO`.
//! - Timing, in one place: a [`Step::AwaitClient`] repeats a command until its reply
//!   holds a condition, and records the last reply. Used for `PING` while a script is
//!   busy, which the proxy answers from its monitor's last look at the master (at most
//!   one poll interval old) where Redis answers it at once.
//! - SCAN-family cursors: a [`Step::Scan`] runs the whole iteration loop and records,
//!   instead of per-call bytes, whether it ended with cursor 0 and the sorted *set* of
//!   elements gathered (`field=value` / `member=score` pairs for HSCAN/ZSCAN).
//!
//! Not normalized, so kept out of the sessions: the order of `SMEMBERS` (and similar) on
//! sets of strings, which Redis 7.0 keeps in a hash table whose order depends on each
//! process's random hash seed (it differs between two direct servers just the same);
//! sessions use integer sets (intset, sorted) for `SMEMBERS`.
//!
//! The proxied world asserts at start that plain reads from a fresh client are served
//! by the replicas. Each test groups a few sessions on one world pair, runs them all, and
//! fails listing the first difference of every session that differs.
//!
//! The tests `harness_is_deterministic_direct_vs_direct` (every scripted session) and
//! `randomized_direct_vs_direct` run on two direct worlds and must pass: they check the
//! harness, not the proxy.
//!
//! Randomized mode (`randomized_sessions_match`): proptest generates 20–40 commands over
//! 3 clients (strings, counters, lists, hashes, integer sets, MULTI/EXEC/DISCARD blocks,
//! SELECT, wrong-type/arity/unknown-command errors) over a small key space and shrinks
//! a difference to a minimal case. `DIFF_CASES=n` changes the number of cases (24).
//!
//! Run: `cargo test --test it -- differential::` (`--nocapture` prints each session's
//! verdict as it goes; `DIFF_DUMP=1` also prints every reply of both worlds).
//!
//! [`RespConn`]: resp::RespConn
//! [`READ_ONLY`]: world::READ_ONLY
//! [`Step::AwaitClient`]: session::Step::AwaitClient
//! [`Step::Scan`]: session::Step::Scan

use std::time::Duration;

use compare::{check, normalize_client_list, normalize_hello};
use resp::{esc, frame_end};
use session::Session;
use sessions_blocking::{blocking_sessions, script_sessions};
use sessions_connection::{acl_sessions, client_sessions, resp3_sessions};
use sessions_keyspace::{scan_sessions, touch_sessions};
use sessions_pipelines::{pipeline_sessions, transaction_sessions};
use sessions_pubsub::{pubsub_sessions, reset_sessions};
use world::World;

mod compare;
mod randomized;
mod resp;
mod session;
mod sessions_blocking;
mod sessions_connection;
mod sessions_keyspace;
mod sessions_pipelines;
mod sessions_pubsub;
mod world;

/// How long a client waits for one reply frame before recording `<no reply ...>`.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Every scripted session.
fn all_sessions() -> Vec<Session> {
    [
        pipeline_sessions(),
        transaction_sessions(),
        blocking_sessions(),
        pubsub_sessions(),
        reset_sessions(),
        scan_sessions(),
        script_sessions(),
        client_sessions(),
        resp3_sessions(),
        touch_sessions(),
        acl_sessions(),
    ]
    .concat()
}

/// The harness itself is deterministic: every scripted session gives the same bytes on
/// two direct worlds.
#[test]
fn harness_is_deterministic_direct_vs_direct() {
    let (a, b) = World::pair(("direct-a", false), ("direct-b", false));
    check(&all_sessions(), &a, &b);
}

#[test]
fn frame_scanner_finds_boundaries() {
    let frames: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":12\r\n",
        b"$-1\r\n",
        b"$0\r\n\r\n",
        b"$5\r\na\r\nbc\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
        b"_\r\n",
        b"#t\r\n",
        b",1.5\r\n",
        b"(123\r\n",
        b"!3\r\nerr\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%1\r\n+k\r\n~2\r\n:1\r\n:2\r\n",
        b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b"$?\r\n;2\r\nab\r\n;0\r\n",
        b"*?\r\n:1\r\n:2\r\n.\r\n",
    ];
    for f in frames {
        assert_eq!(frame_end(f, 0), Ok(Some(f.len())), "{}", esc(f));
        for cut in 0..f.len() {
            assert_eq!(frame_end(&f[..cut], 0), Ok(None), "{} cut at {cut}", esc(f));
        }
        let mut two = f.to_vec();
        two.extend_from_slice(b"+next\r\n");
        assert_eq!(frame_end(&two, 0), Ok(Some(f.len())));
    }
    assert!(frame_end(b"?x\r\n", 0).is_err());
    assert_eq!(
        normalize_hello(b"*4\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:17\r\n"),
        b"*4\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:<id>\r\n"
    );
    assert_eq!(
        normalize_client_list(b"$24\r\nid=7 addr=1.2.3.4:5 db=0\r\n"),
        b"$16\r\nid=* addr=* db=0\r\n"
    );
}
