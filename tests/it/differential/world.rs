//! A world (a master with 2 replicas, with or without redsplit in front) and how it runs
//! a session: waits for the replicas after writes, blocking commands, SCAN loops, and the
//! reset between sessions.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use crate::common::*;

use super::resp::{decode, esc, val_bytes, RespConn, Val};
use super::session::{Cmd, Record, Session, Step};
use super::READ_TIMEOUT;

/// Most calls a SCAN loop makes before it is recorded as not finishing.
const SCAN_MAX_CALLS: usize = 5_000;
/// Extra `redis-server` arguments of every world: a script is BUSY after 100 ms.
const REDIS_ARGS: &[&str] = &["--busy-reply-threshold", "100"];

/// A master with 2 replicas, and optionally redsplit in front.
pub(super) struct World {
    pub(super) label: &'static str,
    /// Declared first: the proxy stops before the servers.
    proxy: Option<ProxyUnderTest>,
    set: ReplicaSet,
}

/// The proxied world's configuration: every read goes to a replica within 1000 ms of
/// staleness, with read-your-writes, as in the shipped `proxy.yaml` default.
const PROXY_EXTRA: &str = "\
routing:
  default:
    consistency: replica
    max_lag_ms: 1000
    read_your_writes: true
  fallback: master
replication:
  poll_interval_ms: 50
";

impl World {
    /// World "direct" (`proxied == false`) or "proxied".
    fn start(label: &'static str, proxied: bool) -> World {
        let set = ReplicaSet::start_with(2, false, REDIS_ARGS);
        let proxy = proxied.then(|| {
            let proxy = ProxyUnderTest::start(&proxy_yaml(&set, PROXY_EXTRA));
            proxy.wait_in_pool(2);
            proxy
        });
        let world = World { label, proxy, set };
        if world.proxy.is_some() {
            world.check_reads_reach_replicas();
        }
        world
    }

    /// Two worlds started in parallel.
    pub(super) fn pair(a: (&'static str, bool), b: (&'static str, bool)) -> (World, World) {
        std::thread::scope(|s| {
            let other = s.spawn(|| World::start(b.0, b.1));
            let first = World::start(a.0, a.1);
            (first, other.join().expect("world starts"))
        })
    }

    /// Where the session's clients connect.
    fn addr(&self) -> SocketAddr {
        self.proxy
            .as_ref()
            .map_or(self.set.master.addr(), |p| p.addr)
    }

    /// Asserts that the proxied world's configuration really sends reads to replicas.
    fn check_reads_reach_replicas(&self) {
        let gets = |s: &RedisServer| s.commandstats().get("get").copied().unwrap_or(0);
        let before: u64 = self.set.replicas.iter().map(gets).sum();
        let mut c = RespConn::connect(self.addr());
        for _ in 0..10 {
            assert_eq!(c.call(&["GET", "__difftest_probe__"]), b"$-1\r\n");
        }
        let after: u64 = self.set.replicas.iter().map(gets).sum();
        assert_eq!(after - before, 10, "the proxied world reads from replicas");
    }

    /// Waits until every replica has the master's replication offset (skipped when the
    /// master does not answer `INFO`, e.g. `-BUSY` in a script: nothing is written then).
    fn sync(&self) {
        let offset = |s: &RedisServer, field: &str| -> Option<u64> {
            let info = s.try_cmd(&["INFO", "replication"]).ok()?;
            parse_info(&value_text(&info)?).get(field)?.parse().ok()
        };
        let Some(target) = offset(&self.set.master, "master_repl_offset") else {
            return;
        };
        for (i, r) in self.set.replicas.iter().enumerate() {
            wait_until(
                &format!("{}: replica {i} reaches offset {target}", self.label),
                SYNC_TIMEOUT,
                || offset(r, "slave_repl_offset").is_some_and(|o| o >= target),
            );
        }
    }

    /// Cleans up after a session (its clients are already closed): kills a busy
    /// script or function, unblocks blocked clients, empties every database, drops
    /// functions and scripts, waits for the replicas, and for the proxy's read pool.
    pub(super) fn reset(&self) {
        let mut m = RespConn::connect(self.set.master.addr());
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let pong = m.call(&["PING"]);
            if pong == b"+PONG\r\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: master does not answer PING: {}",
                self.label,
                esc(&pong)
            );
            if pong.starts_with(b"<") {
                m = RespConn::connect(self.set.master.addr());
            }
            m.call(&["SCRIPT", "KILL"]);
            m.call(&["FUNCTION", "KILL"]);
            std::thread::sleep(POLL_INTERVAL);
        }
        let list = m.call(&["CLIENT", "LIST", "TYPE", "normal"]);
        for line in String::from_utf8_lossy(&list).lines() {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name))
                    .unwrap_or("")
                    .to_owned()
            };
            if field("flags=").contains('b') {
                m.call(&["CLIENT", "UNBLOCK", &field("id=")]);
            }
        }
        for cmd in [
            &["FLUSHALL"][..],
            &["FUNCTION", "FLUSH"],
            &["SCRIPT", "FLUSH"],
        ] {
            let reply = m.call(cmd);
            assert_eq!(
                reply,
                b"+OK\r\n",
                "{}: {cmd:?}: {}",
                self.label,
                esc(&reply)
            );
        }
        drop(m);
        self.sync();
        if let Some(proxy) = &self.proxy {
            let state = proxy.state().clone();
            wait_until(
                "the proxy has both replicas in its read pool again",
                SYNC_TIMEOUT,
                || {
                    let v = state.view.load();
                    v.master_up() && v.replicas.iter().filter(|r| r.in_pool & 1 == 1).count() >= 2
                },
            );
        }
    }

    /// Runs `session` and records every reply.
    pub(super) fn run(&self, session: &Session) -> Vec<Record> {
        let mut clients: Vec<RespConn> = (0..session.clients)
            .map(|_| RespConn::connect(self.addr()))
            .collect();
        let mut master = RespConn::connect(self.set.master.addr());
        let mut vars: HashMap<String, String> = HashMap::new();
        let mut records = Vec::new();
        let mut last_client = None;
        let mut wrote = false;
        for (i, step) in session.steps.iter().enumerate() {
            if let Some(c) = step.client() {
                if wrote && last_client.is_some_and(|l| l != c) {
                    self.sync();
                    wrote = false;
                }
                last_client = Some(c);
            }
            if let Step::Send { cmds, replies, .. } = step {
                wrote |= cmds.iter().any(|c| {
                    let words = c.words(&vars);
                    !(is_read_only(&words) || *replies == 0 && is_blocking(&words))
                });
            }
            match step {
                Step::Send {
                    client,
                    cmds,
                    replies,
                    capture,
                } => {
                    let conn = &mut clients[*client];
                    let bytes: Vec<u8> = cmds.iter().flat_map(|c| c.bytes(&vars)).collect();
                    conn.send(&bytes);
                    if *replies == 0 {
                        conn.wait_consumed();
                    }
                    for r in 0..*replies {
                        let mut reply = conn.read_reply(READ_TIMEOUT);
                        let (label, words) = if *replies == cmds.len() {
                            (cmds[r].label(), cmds[r].words(&vars))
                        } else if cmds.len() == 1 {
                            (
                                format!("{} (reply {} of {replies})", cmds[0].label(), r + 1),
                                Vec::new(),
                            )
                        } else {
                            (
                                format!(
                                    "pipeline of {} (reply {} of {replies})",
                                    cmds.len(),
                                    r + 1
                                ),
                                Vec::new(),
                            )
                        };
                        if words_are(&words, &["CLIENT", "GETREDIR"]) {
                            reply = name_captured_id(&reply, &vars);
                        }
                        if let Some(var) = capture {
                            let value = match decode(&reply) {
                                Some(Val::Int(n)) => n.to_string(),
                                _ => String::from_utf8_lossy(&reply).into_owned(),
                            };
                            vars.insert((*var).to_owned(), value);
                        }
                        records.push(Record {
                            step: i,
                            client: Some(*client),
                            label,
                            words,
                            reply,
                        });
                    }
                }
                Step::Read { client, n } => {
                    for r in 0..*n {
                        records.push(Record {
                            step: i,
                            client: Some(*client),
                            label: format!("(read pending frame {} of {n})", r + 1),
                            words: Vec::new(),
                            reply: clients[*client].read_reply(READ_TIMEOUT),
                        });
                    }
                }
                Step::Scan {
                    client,
                    args,
                    pairs,
                } => {
                    let reply = scan_loop(&mut clients[*client], args, *pairs, &vars);
                    records.push(Record {
                        step: i,
                        client: Some(*client),
                        label: format!("loop of {}", args.label()),
                        words: Vec::new(),
                        reply,
                    });
                }
                Step::OnMaster { cmd } => {
                    master.send(&cmd.bytes(&vars));
                    records.push(Record {
                        step: i,
                        client: None,
                        label: format!("{} (on the master)", cmd.label()),
                        words: cmd.words(&vars),
                        reply: master.read_reply(READ_TIMEOUT),
                    });
                }
                Step::OnAllNodes { words } => {
                    let args: Vec<&str> = words.iter().map(String::as_str).collect();
                    for server in std::iter::once(&self.set.master).chain(&self.set.replicas) {
                        server.cmd(&args);
                    }
                }
                Step::AwaitClient { client, cmd, until } => {
                    let deadline = Instant::now() + SYNC_TIMEOUT;
                    let reply = loop {
                        clients[*client].send(&cmd.bytes(&vars));
                        let reply = clients[*client].read_reply(READ_TIMEOUT);
                        if decode(&reply).is_some_and(|v| until(&v)) || Instant::now() >= deadline {
                            break reply;
                        }
                        std::thread::sleep(POLL_INTERVAL);
                    };
                    records.push(Record {
                        step: i,
                        client: Some(*client),
                        label: format!("{} (repeated until it holds)", cmd.label()),
                        words: cmd.words(&vars),
                        reply,
                    });
                }
                Step::AwaitMaster { cmd, what, until } => {
                    wait_until(&format!("{}: {what}", self.label), SYNC_TIMEOUT, || {
                        master.send(&cmd.bytes(&vars));
                        decode(&master.read_reply(READ_TIMEOUT)).is_some_and(|v| until(&v))
                    });
                }
            }
        }
        records
    }
}

/// Commands that change nothing a replica receives (the sync rule skips them); any
/// other command counts as a write.
const READ_ONLY: &[&str] = &[
    "GET",
    "MGET",
    "EXISTS",
    "TYPE",
    "STRLEN",
    "LRANGE",
    "LLEN",
    "HGET",
    "HGETALL",
    "HLEN",
    "SISMEMBER",
    "SMISMEMBER",
    "SCARD",
    "SMEMBERS",
    "ZSCORE",
    "ZRANGE",
    "ZCARD",
    "XLEN",
    "XRANGE",
    "DBSIZE",
    "PING",
    "ECHO",
    "SELECT",
    "CLIENT",
    "HELLO",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "WATCH",
    "UNWATCH",
    "MULTI",
    "DISCARD",
    "RESET",
    "OBJECT",
    "SCAN",
    "SSCAN",
    "HSCAN",
    "ZSCAN",
    "TTL",
    "PTTL",
    "INFO",
];

/// Commands that block (or run on) until another client acts: sent without reading
/// the reply, they have written nothing yet.
const BLOCKING: &[&str] = &[
    "BLPOP",
    "BRPOP",
    "BLMOVE",
    "BRPOPLPUSH",
    "BZPOPMIN",
    "BZPOPMAX",
    "XREAD",
    "EVAL",
    "FCALL",
];

/// Whether `words` is a command that writes nothing (see [`READ_ONLY`]).
fn is_read_only(words: &[Vec<u8>]) -> bool {
    words.first().is_some_and(|w| {
        READ_ONLY
            .iter()
            .any(|r| w.eq_ignore_ascii_case(r.as_bytes()))
    })
}

/// Whether `words` is a blocking command (see [`BLOCKING`]).
fn is_blocking(words: &[Vec<u8>]) -> bool {
    words.first().is_some_and(|w| {
        BLOCKING
            .iter()
            .any(|r| w.eq_ignore_ascii_case(r.as_bytes()))
    })
}

/// Whether `words` start with `prefix` (case-insensitively).
fn words_are(words: &[Vec<u8>], prefix: &[&str]) -> bool {
    words.len() >= prefix.len()
        && words
            .iter()
            .zip(prefix)
            .all(|(w, p)| w.eq_ignore_ascii_case(p.as_bytes()))
}

/// An integer reply equal to a captured client id becomes `:<{name}>` (the reply of
/// `CLIENT GETREDIR` names a client id, which must be the one that client learned).
fn name_captured_id(reply: &[u8], vars: &HashMap<String, String>) -> Vec<u8> {
    if let Some(Val::Int(n)) = decode(reply) {
        if let Some((name, _)) = vars.iter().find(|(_, v)| **v == n.to_string()) {
            return format!(":<{{{name}}}>\r\n").into_bytes();
        }
    }
    reply.to_vec()
}

/// Runs a SCAN-family loop and describes its outcome as one synthetic reply: whether it
/// ended with cursor 0, and the sorted set of distinct elements gathered.
fn scan_loop(
    conn: &mut RespConn,
    args: &Cmd,
    pairs: bool,
    vars: &HashMap<String, String>,
) -> Vec<u8> {
    let mut cursor = "0".to_owned();
    let mut seen = BTreeSet::new();
    let mut calls = 0;
    let status = loop {
        let mut vars = vars.clone();
        vars.insert("cursor".into(), cursor.clone());
        conn.send(&args.bytes(&vars));
        let reply = conn.read_reply(READ_TIMEOUT);
        calls += 1;
        let parsed = match decode(&reply) {
            Some(Val::Agg(Some(items))) if items.len() == 2 => match (&items[0], &items[1]) {
                (Val::Bulk(Some(c)), Val::Agg(Some(elems))) => Some((c.clone(), elems.clone())),
                _ => None,
            },
            _ => None,
        };
        let Some((next, elems)) = parsed else {
            break format!("stopped after {calls} calls on reply {}", esc(&reply));
        };
        let texts: Vec<String> = elems
            .iter()
            .map(|e| val_bytes(e).map_or_else(|| format!("{e:?}"), esc))
            .collect();
        if pairs {
            for pair in texts.chunks(2) {
                seen.insert(pair.join("="));
            }
        } else {
            seen.extend(texts);
        }
        if next == b"0" {
            break "ended with cursor 0".to_owned();
        }
        if calls >= SCAN_MAX_CALLS {
            break format!("did not end after {calls} calls");
        }
        cursor = String::from_utf8_lossy(&next).into_owned();
    };
    let elements: Vec<String> = seen.into_iter().collect();
    format!(
        "<scan {status}; {} distinct elements: {}>",
        elements.len(),
        elements.join(" ")
    )
    .into_bytes()
}
