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

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

/// How long a client waits for one reply frame before recording `<no reply ...>`.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a send-only step waits for the server to read what was sent.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(2);
/// Most calls a SCAN loop makes before it is recorded as not finishing.
const SCAN_MAX_CALLS: usize = 5_000;
/// Extra `redis-server` arguments of every world: a script is BUSY after 100 ms.
const REDIS_ARGS: &[&str] = &["--busy-reply-threshold", "100"];

// ---------------------------------------------------------------------------------------
// RESP frames
// ---------------------------------------------------------------------------------------

/// Position of the `\r\n` ending the line that starts at `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Parses a RESP length or integer line.
fn parse_len(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length {:?}", line.escape_ascii().to_string()))
}

/// The end of the complete RESP2/RESP3 frame starting at `pos`: `Ok(None)` while it is
/// incomplete, `Err` when the bytes are not RESP. Handles every type, nulls (`$-1`,
/// `*-1`, `_`), nested aggregates, pushes (`>`), attributes (`|`, which precede the
/// value they annotate: both are one frame) and streamed strings/aggregates (`$?`, `*?`).
fn frame_end(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(next)),
        b'$' | b'!' | b'=' => {
            if line == b"?" {
                // Streamed string: `;len\r\n<data>\r\n` chunks until `;0\r\n`.
                let mut p = next;
                loop {
                    let Some(ceol) = find_crlf(buf, p + 1) else {
                        return Ok(None);
                    };
                    if buf[p] != b';' {
                        return Err("streamed string chunk without ';'".into());
                    }
                    let n = parse_len(&buf[p + 1..ceol])?;
                    if n == 0 {
                        return Ok(Some(ceol + 2));
                    }
                    let end = ceol + 2 + usize::try_from(n).map_err(|e| e.to_string())? + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    p = end;
                }
            }
            let n = parse_len(line)?;
            if n < 0 {
                return if kind == b'$' && n == -1 {
                    Ok(Some(next))
                } else {
                    Err(format!("negative length {n}"))
                };
            }
            let end = next + usize::try_from(n).map_err(|e| e.to_string())? + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            Ok(Some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let per = if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut p = next;
            if line == b"?" {
                loop {
                    match buf.get(p) {
                        None => return Ok(None),
                        Some(b'.') => {
                            return match find_crlf(buf, p + 1) {
                                Some(e) if e == p + 1 => Ok(Some(e + 2)),
                                Some(_) => Err("bad end of streamed aggregate".into()),
                                None => Ok(None),
                            };
                        }
                        Some(_) => match frame_end(buf, p)? {
                            Some(e) => p = e,
                            None => return Ok(None),
                        },
                    }
                }
            }
            let n = parse_len(line)?;
            if n < 0 {
                return if kind == b'*' && n == -1 {
                    Ok(Some(next))
                } else {
                    Err(format!("negative count {n}"))
                };
            }
            for _ in 0..n * per {
                match frame_end(buf, p)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // The attribute is followed by the reply it annotates.
                return frame_end(buf, p);
            }
            Ok(Some(p))
        }
        other => Err(format!("unexpected type byte {:?}", other as char)),
    }
}

/// A decoded reply, as much as the harness needs to look inside one (SCAN replies,
/// integers to capture); comparisons always use the raw bytes.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    /// `+`, `-`, `,`, `(`, `#`, `_` and other one-line types: the line.
    Line(u8, Vec<u8>),
    /// `:`.
    Int(i64),
    /// `$`, `=`, `!`; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*`, `~`, `>`, `%` (flattened), `|` skipped; `None` for `*-1`.
    Agg(Option<Vec<Val>>),
}

/// Decodes one complete frame (as returned by [`RespConn::read_reply`]).
fn decode(buf: &[u8]) -> Option<Val> {
    decode_at(buf, 0).map(|(v, _)| v)
}

fn decode_at(buf: &[u8], pos: usize) -> Option<(Val, usize)> {
    let kind = *buf.get(pos)?;
    let eol = find_crlf(buf, pos + 1)?;
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match kind {
        b':' => Some((Val::Int(parse_len(line).ok()?), next)),
        b'$' | b'=' | b'!' => {
            let n = parse_len(line).ok()?;
            if n < 0 {
                return Some((Val::Bulk(None), next));
            }
            let end = next + usize::try_from(n).ok()?;
            Some((Val::Bulk(Some(buf.get(next..end)?.to_vec())), end + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_len(line).ok()?;
            if n < 0 {
                return Some((Val::Agg(None), next));
            }
            let per = if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut p = next;
            let mut items = Vec::new();
            for _ in 0..n * per {
                let (v, e) = decode_at(buf, p)?;
                items.push(v);
                p = e;
            }
            if kind == b'|' {
                return decode_at(buf, p);
            }
            Some((Val::Agg(Some(items)), p))
        }
        _ => Some((Val::Line(kind, line.to_vec()), next)),
    }
}

/// The bytes of a bulk (or simple) string value.
fn val_bytes(v: &Val) -> Option<&[u8]> {
    match v {
        Val::Bulk(Some(b)) | Val::Line(b'+', b) => Some(b),
        _ => None,
    }
}

/// RESP array of bulk strings for `args`.
fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Bytes shown escaped (`\r\n` visible), for messages.
fn esc(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

// ---------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------

/// A raw RESP client: sends exact bytes, reads exactly one complete reply frame at a time
/// as raw bytes, with [`READ_TIMEOUT`] per frame so a missing reply fails a comparison
/// instead of hanging the test.
struct RespConn {
    stream: TcpStream,
    /// Received bytes not yet returned as frames.
    buf: Vec<u8>,
    /// Set once a read timed out, the connection closed, or garbage arrived: what every
    /// later read returns at once.
    dead: Option<Vec<u8>>,
}

impl RespConn {
    /// Connects to `addr` (with [`CMD_TIMEOUT`]).
    fn connect(addr: SocketAddr) -> RespConn {
        let stream = TcpStream::connect_timeout(&addr, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(CMD_TIMEOUT))
            .expect("write timeout");
        RespConn {
            stream,
            buf: Vec::new(),
            dead: None,
        }
    }

    /// Writes `bytes` in one `write_all`.
    fn send(&mut self, bytes: &[u8]) {
        if self.dead.is_some() {
            return;
        }
        if let Err(e) = self.stream.write_all(bytes) {
            self.dead = Some(format!("<write failed: {e}>").into_bytes());
        }
    }

    /// Sends `args` as a RESP array and reads its reply.
    fn call(&mut self, args: &[&str]) -> Vec<u8> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.send(&encode(&args));
        self.read_reply(READ_TIMEOUT)
    }

    /// Reads one complete frame; a marker in `<...>` (never valid RESP) when there is
    /// none within `timeout`, the connection closed, or the bytes are not RESP.
    fn read_reply(&mut self, timeout: Duration) -> Vec<u8> {
        if let Some(dead) = &self.dead {
            return dead.clone();
        }
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match frame_end(&self.buf, 0) {
                Ok(Some(end)) => return self.buf.drain(..end).collect(),
                Ok(None) => {}
                Err(e) => {
                    let marker = format!("<not RESP ({e}): {}>", esc(&self.buf)).into_bytes();
                    self.dead = Some(b"<not read: garbage arrived earlier>".to_vec());
                    return marker;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let marker = if self.buf.is_empty() {
                    format!("<no reply within {timeout:?}>")
                } else {
                    format!("<incomplete reply after {timeout:?}: {}>", esc(&self.buf))
                };
                self.dead = Some(b"<not read: an earlier reply timed out>".to_vec());
                return marker.into_bytes();
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    let marker = if self.buf.is_empty() {
                        b"<connection closed>".to_vec()
                    } else {
                        format!("<connection closed mid-frame: {}>", esc(&self.buf)).into_bytes()
                    };
                    self.dead = Some(b"<connection closed>".to_vec());
                    return marker;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset && self.buf.is_empty() => {
                    // Closed with a reset instead of a FIN (the server closed while
                    // bytes of ours were unread): to a client, the same closed connection.
                    self.dead = Some(b"<connection closed>".to_vec());
                    return b"<connection closed>".to_vec();
                }
                Err(e) => {
                    let marker = format!("<read error: {e}>").into_bytes();
                    self.dead = Some(marker.clone());
                    return marker;
                }
            }
        }
    }

    /// Waits (up to [`CONSUME_TIMEOUT`]) until the server end of this connection has read
    /// everything sent on it: nothing is left unsent on the client side (`SIOCOUTQNSD`;
    /// on loopback, sent bytes are in the peer's receive queue) and the server side's
    /// receive queue in `/proc/net/tcp` is empty. The server then holds the command in
    /// its own hands (Redis has run it or blocked on it; the proxy has received it).
    /// Giving up is not an error: whatever follows shows the difference, if any.
    fn wait_consumed(&self) {
        let (Ok(local), Ok(peer)) = (self.stream.local_addr(), self.stream.peer_addr()) else {
            return;
        };
        let deadline = Instant::now() + CONSUME_TIMEOUT;
        while Instant::now() < deadline {
            let server_rx = tcp_rx_queues().get(&(peer.port(), local.port())).copied();
            if self.unsent() == 0 && server_rx.unwrap_or(0) == 0 {
                return;
            }

            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Bytes written on this socket that the kernel has not sent yet.
    fn unsent(&self) -> libc::c_int {
        use std::os::fd::AsRawFd;
        /// `SIOCOUTQNSD` from `linux/sockios.h`.
        const SIOCOUTQNSD: libc::c_ulong = 0x894B;
        let mut n: libc::c_int = 0;
        // SAFETY: the ioctl writes one int through the pointer, on our own socket.
        let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), SIOCOUTQNSD, &mut n) };
        if rc == 0 {
            n
        } else {
            0
        }
    }
}

/// `(local port, remote port) → rx_queue` (bytes received, not yet read by the
/// application) of the 127.0.0.1 sockets in `/proc/net/tcp`.
fn tcp_rx_queues() -> HashMap<(u16, u16), u64> {
    // Read in big chunks: each read of this seq_file walks the socket table again.
    let mut raw = Vec::new();
    if let Ok(mut file) = std::fs::File::open("/proc/net/tcp") {
        let mut chunk = vec![0u8; 4 << 20];
        while let Ok(n @ 1..) = file.read(&mut chunk) {
            raw.extend_from_slice(&chunk[..n]);
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let port = |a: &str| -> Option<u16> {
            let (ip, port) = a.split_once(':')?;
            (ip == "0100007F").then_some(())?;
            u16::from_str_radix(port, 16).ok()
        };
        let (Some(l), Some(r)) = (port(f[1]), port(f[2])) else {
            continue;
        };
        let Some(rx) = f[4]
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
        else {
            continue;
        };
        out.insert((l, r), rx);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// One command of a step.
#[derive(Clone, Debug)]
enum Cmd {
    /// Sent as a RESP array of bulk strings; `{name}` in an argument is replaced by a
    /// captured variable.
    Args(Vec<String>),
    /// Sent exactly as given (inline commands, mixed pipelines).
    Raw(Vec<u8>),
}

impl Cmd {
    /// Parses `line` into words: whitespace separates them, `"..."` quotes (with `\"`,
    /// `\\`, `\n`, `\r` escapes).
    fn parse(line: &str) -> Cmd {
        let mut words = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&first) = chars.peek() else { break };
            let mut word = String::new();
            if first == '"' {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('r') => word.push('\r'),
                            Some(other) => word.push(other),
                            None => {}
                        },
                        c => word.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
            words.push(word);
        }
        Cmd::Args(words)
    }

    /// The words, variables substituted.
    fn words(&self, vars: &HashMap<String, String>) -> Vec<Vec<u8>> {
        match self {
            Cmd::Args(words) => words
                .iter()
                .map(|w| {
                    let mut w = w.clone();
                    for (k, v) in vars {
                        w = w.replace(&format!("{{{k}}}"), v);
                    }
                    w.into_bytes()
                })
                .collect(),
            Cmd::Raw(bytes) => bytes
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
        }
    }

    /// The bytes sent.
    fn bytes(&self, vars: &HashMap<String, String>) -> Vec<u8> {
        match self {
            Cmd::Args(_) => encode(&self.words(vars)),
            Cmd::Raw(bytes) => bytes.clone(),
        }
    }

    /// How the command is shown in a difference.
    fn label(&self) -> String {
        match self {
            Cmd::Args(words) => words
                .iter()
                .map(|w| {
                    if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '"') {
                        format!("{w:?}")
                    } else {
                        w.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Cmd::Raw(bytes) => format!("raw \"{}\"", esc(bytes)),
        }
    }
}

/// One step of a session.
#[derive(Clone, Debug)]
enum Step {
    /// Client `client` writes `cmds` in one `write`, then reads `replies` frames (0: the
    /// replies are read by a later [`Step::Read`], or there are none). With `capture`,
    /// the integer reply is kept as that variable for later `{name}` arguments.
    Send {
        client: usize,
        cmds: Vec<Cmd>,
        replies: usize,
        capture: Option<&'static str>,
    },
    /// Client `client` reads `n` more frames (pushes, the reply of a blocking command).
    Read { client: usize, n: usize },
    /// A whole SCAN-family loop: `args` with `{cursor}`, from 0 until the cursor is 0;
    /// `pairs` for HSCAN/ZSCAN. Records one synthetic reply (see the module docs).
    Scan {
        client: usize,
        args: Cmd,
        pairs: bool,
    },
    /// A command on the world's master itself (not through a client of the session),
    /// to look at the backend's state; its reply is recorded like a client's.
    OnMaster { cmd: Cmd },
    /// A command on every server of the world, master and replicas, not recorded: for
    /// what Redis does not replicate (`ACL SETUSER`).
    OnAllNodes { words: Vec<String> },
    /// Polls a command on the master until `until` holds for its reply (not recorded).
    AwaitMaster {
        cmd: Cmd,
        what: &'static str,
        until: fn(&Val) -> bool,
    },
    /// Repeats a command on a client until `until` holds for its reply (or the
    /// deadline passes); the last reply is recorded. For what a world shows within a
    /// bounded time rather than at once (the proxy answers `PING` from its monitor's
    /// last look at the master, at most one poll interval old).
    AwaitClient {
        client: usize,
        cmd: Cmd,
        until: fn(&Val) -> bool,
    },
}

impl Step {
    fn client(&self) -> Option<usize> {
        match self {
            Step::Send { client, .. }
            | Step::Read { client, .. }
            | Step::Scan { client, .. }
            | Step::AwaitClient { client, .. } => Some(*client),
            Step::OnMaster { .. } | Step::AwaitMaster { .. } | Step::OnAllNodes { .. } => None,
        }
    }
}

/// A scripted session: a name, how many clients, the steps.
#[derive(Clone, Debug)]
struct Session {
    name: String,
    clients: usize,
    steps: Vec<Step>,
}

impl Session {
    /// An empty session of `clients` clients.
    fn new(name: &str, clients: usize) -> Session {
        Session {
            name: name.to_owned(),
            clients,
            steps: Vec::new(),
        }
    }

    fn push(mut self, step: Step) -> Session {
        if let Some(c) = step.client() {
            assert!(c < self.clients, "{}: client {c} out of range", self.name);
        }
        self.steps.push(step);
        self
    }

    /// Client `c` sends `line` and reads its reply.
    fn cmd(self, c: usize, line: &str) -> Session {
        self.cmds(c, vec![Cmd::parse(line)], 1)
    }

    /// Client `c` sends the given words (for arguments with newlines) and reads 1 reply.
    fn args(self, c: usize, args: &[&str]) -> Session {
        let cmd = Cmd::Args(args.iter().map(|a| (*a).to_owned()).collect());
        self.cmds(c, vec![cmd], 1)
    }

    /// Client `c` sends `line` and reads `replies` frames.
    fn cmd_n(self, c: usize, line: &str, replies: usize) -> Session {
        self.cmds(c, vec![Cmd::parse(line)], replies)
    }

    /// Client `c` sends `line` without reading a reply now.
    fn send(self, c: usize, line: &str) -> Session {
        self.cmds(c, vec![Cmd::parse(line)], 0)
    }

    /// Client `c` writes all `lines` in one write, then reads one reply per line.
    fn pipeline(self, c: usize, lines: &[&str]) -> Session {
        let cmds: Vec<Cmd> = lines.iter().map(|l| Cmd::parse(l)).collect();
        let n = cmds.len();
        self.cmds(c, cmds, n)
    }

    /// Client `c` writes `bytes` as they are and reads `replies` frames.
    fn raw(self, c: usize, bytes: &[u8], replies: usize) -> Session {
        self.cmds(c, vec![Cmd::Raw(bytes.to_vec())], replies)
    }

    fn cmds(self, client: usize, cmds: Vec<Cmd>, replies: usize) -> Session {
        self.push(Step::Send {
            client,
            cmds,
            replies,
            capture: None,
        })
    }

    /// Client `c` runs `line` (e.g. `CLIENT ID`) and keeps its integer reply as `var`.
    fn capture(self, c: usize, line: &str, var: &'static str) -> Session {
        self.push(Step::Send {
            client: c,
            cmds: vec![Cmd::parse(line)],
            replies: 1,
            capture: Some(var),
        })
    }

    /// Client `c` reads `n` more frames.
    fn read(self, c: usize, n: usize) -> Session {
        self.push(Step::Read { client: c, n })
    }

    /// Client `c` runs a whole SCAN-family loop (`line` contains `{cursor}`).
    fn scan(self, c: usize, line: &str, pairs: bool) -> Session {
        self.push(Step::Scan {
            client: c,
            args: Cmd::parse(line),
            pairs,
        })
    }

    /// `line` on the world's master, recorded.
    fn on_master(self, line: &str) -> Session {
        self.push(Step::OnMaster {
            cmd: Cmd::parse(line),
        })
    }

    /// The given words on every server of the world (not recorded).
    fn on_all_nodes(self, words: &[&str]) -> Session {
        self.push(Step::OnAllNodes {
            words: words.iter().map(|w| (*w).to_owned()).collect(),
        })
    }

    /// Repeats `line` on client `c` until `until` holds for its reply; records the last.
    fn await_client(self, c: usize, line: &str, until: fn(&Val) -> bool) -> Session {
        self.push(Step::AwaitClient {
            client: c,
            cmd: Cmd::parse(line),
            until,
        })
    }

    /// Polls `line` on the world's master until `until` holds.
    fn await_master(self, line: &str, what: &'static str, until: fn(&Val) -> bool) -> Session {
        self.push(Step::AwaitMaster {
            cmd: Cmd::parse(line),
            what,
            until,
        })
    }
}

/// One recorded reply.
#[derive(Clone, Debug)]
struct Record {
    /// Step index in the session (0-based).
    step: usize,
    /// The client, `None` for [`Step::OnMaster`].
    client: Option<usize>,
    /// The command it answers, as shown in a difference.
    label: String,
    /// The words of that command (for normalization), if known.
    words: Vec<Vec<u8>>,
    /// The raw reply (or a `<...>` marker).
    reply: Vec<u8>,
}

// ---------------------------------------------------------------------------------------
// Worlds
// ---------------------------------------------------------------------------------------

/// A master with 2 replicas, and optionally redsplit in front.
struct World {
    label: &'static str,
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
    fn pair(a: (&'static str, bool), b: (&'static str, bool)) -> (World, World) {
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
    fn reset(&self) {
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
    fn run(&self, session: &Session) -> Vec<Record> {
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

// ---------------------------------------------------------------------------------------
// Normalization and comparison
// ---------------------------------------------------------------------------------------

/// `CLIENT LIST`/`CLIENT INFO` fields whose values differ by nature.
const VOLATILE_CLIENT_FIELDS: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "age",
    "idle",
    "qbuf",
    "qbuf-free",
    "argv-mem",
    "multi-mem",
    "obl",
    "oll",
    "omem",
    "tot-mem",
    "rbs",
    "rbp",
    "events",
];

/// The reply with the fields listed in the module docs normalized, chosen by the words
/// of the command it answers.
fn normalize(words: &[Vec<u8>], reply: &[u8]) -> Vec<u8> {
    let upper: Vec<String> = words
        .iter()
        .take(2)
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["CLIENT", "ID"] if reply.starts_with(b":") => b":<id>\r\n".to_vec(),
        ["CLIENT", "LIST" | "INFO"] => normalize_client_list(reply),
        ["HELLO", ..] | ["EXEC", ..] => normalize_hello(reply),
        _ => reply.to_vec(),
    }
}

/// Normalizes the volatile fields of a `CLIENT LIST`/`INFO` bulk (`$`) or verbatim (`=`)
/// string, re-encoding its length.
fn normalize_client_list(reply: &[u8]) -> Vec<u8> {
    let Some(&kind @ (b'$' | b'=')) = reply.first() else {
        return reply.to_vec();
    };
    let Some(Val::Bulk(Some(body))) = decode(reply) else {
        return reply.to_vec();
    };
    let (prefix, text) = if kind == b'=' && body.len() >= 4 {
        (
            body[..4].to_vec(),
            String::from_utf8_lossy(&body[4..]).into_owned(),
        )
    } else {
        (Vec::new(), String::from_utf8_lossy(&body).into_owned())
    };
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            line.split(' ')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if VOLATILE_CLIENT_FIELDS.contains(&k) => format!("{k}=*"),
                    _ => kv.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut new_body = prefix;
    new_body.extend_from_slice(lines.join("\n").as_bytes());
    let mut out = format!("{}{}\r\n", kind as char, new_body.len()).into_bytes();
    out.extend_from_slice(&new_body);
    out.extend_from_slice(b"\r\n");
    out
}

/// Replaces the integer after the `id` key of a `HELLO` reply by `<id>`.
fn normalize_hello(reply: &[u8]) -> Vec<u8> {
    let key = b"$2\r\nid\r\n:";
    let Some(at) = reply.windows(key.len()).position(|w| w == key) else {
        return reply.to_vec();
    };
    let start = at + key.len();
    let Some(end) = find_crlf(reply, start) else {
        return reply.to_vec();
    };
    let mut out = reply[..start].to_vec();
    out.extend_from_slice(b"<id>");
    out.extend_from_slice(&reply[end..]);
    out
}

/// A window of `bytes` around offset `at`, escaped.
fn window(bytes: &[u8], at: usize) -> String {
    const BEFORE: usize = 80;
    const LEN: usize = 400;
    let start = at.saturating_sub(BEFORE);
    let end = (start + LEN).min(bytes.len());
    format!(
        "{}\"{}\"{} ({} bytes)",
        if start > 0 { "…" } else { "" },
        esc(&bytes[start..end]),
        if end < bytes.len() { "…" } else { "" },
        bytes.len()
    )
}

/// Compares two worlds' records step by step; the first difference, readably.
fn first_difference(
    session: &Session,
    names: (&str, &str),
    a: &[Record],
    b: &[Record],
) -> Option<String> {
    let width = names.0.len().max(names.1.len());
    for i in 0..a.len().max(b.len()) {
        let (ra, rb) = (a.get(i), b.get(i));
        let na = ra.map(|r| normalize(&r.words, &r.reply));
        let nb = rb.map(|r| normalize(&r.words, &r.reply));
        if na == nb {
            continue;
        }
        let r = ra.or(rb).expect("one side has a record");
        let who = r
            .client
            .map_or("the master".to_owned(), |c| format!("client {c}"));
        let at = match (&na, &nb) {
            (Some(x), Some(y)) => x.iter().zip(y).take_while(|(p, q)| p == q).count(),
            _ => 0,
        };
        let show = |n: &Option<Vec<u8>>| {
            n.as_ref()
                .map_or("<no such reply>".to_owned(), |n| window(n, at))
        };
        return Some(format!(
            "session `{}`: first difference at step {} ({who}): {}\n  {:width$}: {}\n  {:width$}: {}",
            session.name,
            r.step,
            r.label,
            names.0,
            show(&na),
            names.1,
            show(&nb),
        ));
    }
    None
}

/// Prints every record of both worlds (`DIFF_DUMP=1`), to see what a session does.
fn dump(session: &Session, names: (&str, &str), a: &[Record], b: &[Record]) {
    eprintln!("== {}", session.name);
    for i in 0..a.len().max(b.len()) {
        let r = a.get(i).or(b.get(i)).expect("a record");
        let show = |r: Option<&Record>| r.map_or("-".to_owned(), |r| window(&r.reply, 0));
        eprintln!(
            "  step {} client {:?}: {}\n    {}: {}\n    {}: {}",
            r.step,
            r.client,
            r.label,
            names.0,
            show(a.get(i)),
            names.1,
            show(b.get(i))
        );
    }
}

/// Runs every session on both worlds (concurrently), resetting between sessions, and
/// panics listing the first difference of every session that differs.
fn check(sessions: &[Session], a: &World, b: &World) {
    let mut failures = Vec::new();
    for session in sessions {
        let started = Instant::now();
        let (ra, rb) = std::thread::scope(|s| {
            let other = s.spawn(|| b.run(session));
            let first = a.run(session);
            (first, other.join().expect("session runs"))
        });
        std::thread::scope(|s| {
            s.spawn(|| b.reset());
            a.reset();
        });
        if std::env::var_os("DIFF_DUMP").is_some() {
            dump(session, (a.label, b.label), &ra, &rb);
        }
        match first_difference(session, (a.label, b.label), &ra, &rb) {
            None => eprintln!("PASS {} ({:?})", session.name, started.elapsed()),
            Some(diff) => {
                eprintln!("FAIL {diff}");
                failures.push(diff);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} sessions differ between {} and {}:\n\n{}",
        failures.len(),
        sessions.len(),
        a.label,
        b.label,
        failures.join("\n\n")
    );
}

/// Runs `sessions` direct vs proxied.
fn check_proxied(sessions: &[Session]) {
    let (direct, proxied) = World::pair(("direct", false), ("proxied", true));
    check(sessions, &direct, &proxied);
}

// ---------------------------------------------------------------------------------------
// The scripted sessions
// ---------------------------------------------------------------------------------------

/// Pipelines, mixed reads and writes, errors, inline commands.
fn pipeline_sessions() -> Vec<Session> {
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
fn transaction_sessions() -> Vec<Session> {
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

/// Blocking commands woken by another client, and a timeout.
fn blocking_sessions() -> Vec<Session> {
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

/// Pub/sub in RESP2 and RESP3.
fn pubsub_sessions() -> Vec<Session> {
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
fn reset_sessions() -> Vec<Session> {
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

/// SCAN-family loops over 1000 elements.
fn scan_sessions() -> Vec<Session> {
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

/// Long-running scripts and functions, killed by another client.
fn script_sessions() -> Vec<Session> {
    let library = "#!lua name=difflib\nredis.register_function('spin', function(keys, args) while true do end end)";
    let long = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] - t0 > 3500000 then break end end redis.call('SET', 'long:k', 'done') return 'finished'";
    vec![
        Session::new(
            "scripts/a script that runs longer than a replica's command timeout",
            1,
        )
        .args(0, &["EVAL", long, "0"])
        .cmd(0, "GET long:k"),
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

/// CLIENT subcommands.
fn client_sessions() -> Vec<Session> {
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
fn resp3_sessions() -> Vec<Session> {
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

/// TOUCH resets the idle time of the key on the master.
fn touch_sessions() -> Vec<Session> {
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

/// Redis's own ACL users, created on every server (ACL changes are not replicated):
/// logins (failed, then good, pipelined), key and command permissions on reads (served by
/// replicas), writes, scripts, transactions, blocking commands, pub/sub channels, the
/// commands the proxy answers itself (`CLIENT LIST`, `SELECT`), `HELLO 3 AUTH`, RESET.
fn acl_sessions() -> Vec<Session> {
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
    vec![Session::new("acl/Redis ACL users", 3)
        .on_all_nodes(&alice)
        .on_all_nodes(&bob)
        .cmd(0, "SET b:1 secret")
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
        .on_all_nodes(&["ACL", "DELUSER", "alice", "bob"])]
}

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

#[test]
fn pipelines_errors_inline() {
    check_proxied(&pipeline_sessions());
}

#[test]
fn transactions() {
    check_proxied(&transaction_sessions());
}

#[test]
fn blocking_commands() {
    check_proxied(&blocking_sessions());
}

#[test]
fn pubsub() {
    check_proxied(&pubsub_sessions());
}

#[test]
fn reset() {
    check_proxied(&reset_sessions());
}

#[test]
fn scan_loops() {
    check_proxied(&scan_sessions());
}

#[test]
fn busy_scripts() {
    check_proxied(&script_sessions());
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
fn touch_idletime() {
    check_proxied(&touch_sessions());
}

#[test]
fn redis_acl_users() {
    check_proxied(&acl_sessions());
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

// ---------------------------------------------------------------------------------------
// Randomized sessions
// ---------------------------------------------------------------------------------------

const RAND_KEYS: &[&str] = &["k0", "k1", "k2", "k3"];
const RAND_VALUES: &[&str] = &["a", "bb", "1", "42", "-3", "x y"];

/// One command of the randomized vocabulary (its words).
fn rand_command() -> impl Strategy<Value = Vec<String>> {
    let key = proptest::sample::select(RAND_KEYS);
    let val = proptest::sample::select(RAND_VALUES);
    let field = proptest::sample::select(&["f0", "f1", "f2"][..]);
    let int = 0i64..6;
    let w = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    prop_oneof![
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["SET", k, v])),
        key.clone().prop_map(move |k| w(&["GET", k])),
        key.clone().prop_map(move |k| w(&["INCR", k])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["INCRBY", k, &n.to_string()])),
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["APPEND", k, v])),
        key.clone().prop_map(move |k| w(&["DEL", k])),
        (key.clone(), key.clone()).prop_map(move |(a, b)| w(&["EXISTS", a, b])),
        key.clone().prop_map(move |k| w(&["TYPE", k])),
        (key.clone(), key.clone()).prop_map(move |(a, b)| w(&["MGET", a, b])),
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["LPUSH", k, v])),
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["RPUSH", k, v])),
        key.clone().prop_map(move |k| w(&["LPOP", k])),
        key.clone().prop_map(move |k| w(&["LRANGE", k, "0", "-1"])),
        key.clone().prop_map(move |k| w(&["LLEN", k])),
        (key.clone(), field.clone(), val.clone()).prop_map(move |(k, f, v)| w(&["HSET", k, f, v])),
        (key.clone(), field.clone()).prop_map(move |(k, f)| w(&["HGET", k, f])),
        key.clone().prop_map(move |k| w(&["HGETALL", k])),
        (key.clone(), field.clone()).prop_map(move |(k, f)| w(&["HDEL", k, f])),
        (key.clone(), field.clone(), int.clone()).prop_map(move |(k, f, n)| w(&[
            "HINCRBY",
            k,
            f,
            &n.to_string()
        ])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["SADD", k, &n.to_string()])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["SREM", k, &n.to_string()])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["SISMEMBER", k, &n.to_string()])),
        key.clone().prop_map(move |k| w(&["SCARD", k])),
        key.clone().prop_map(move |k| w(&["SMEMBERS", k])),
        Just(w(&["DBSIZE"])),
        Just(w(&["PING"])),
        val.prop_map(move |v| w(&["ECHO", v])),
        Just(w(&["GET"])),
        key.clone().prop_map(move |k| w(&["SET", k])),
        key.prop_map(move |k| w(&["NOSUCHCMD", k])),
    ]
}

/// One entry of a randomized session: a command, a MULTI block, or a SELECT.
#[derive(Clone, Debug)]
enum RandItem {
    Cmd(Vec<String>),
    /// MULTI, the commands, then EXEC (or DISCARD when the flag is false).
    Multi(Vec<Vec<String>>, bool),
    Select(u8),
}

fn rand_item() -> impl Strategy<Value = RandItem> {
    prop_oneof![
        8 => rand_command().prop_map(RandItem::Cmd),
        1 => (proptest::collection::vec(rand_command(), 1..4), proptest::bool::weighted(0.8))
            .prop_map(|(cmds, exec)| RandItem::Multi(cmds, exec)),
        1 => (0u8..3).prop_map(RandItem::Select),
    ]
}

/// A session from generated `(client, item)` entries.
fn rand_session(items: &[(usize, RandItem)]) -> Session {
    let mut s = Session::new("randomized", 3);
    let words = |w: &[String]| Cmd::Args(w.to_vec());
    for (c, item) in items {
        match item {
            RandItem::Cmd(w) => s = s.cmds(*c, vec![words(w)], 1),
            RandItem::Select(db) => s = s.cmd(*c, &format!("SELECT {db}")),
            RandItem::Multi(cmds, exec) => {
                s = s.cmd(*c, "MULTI");
                for w in cmds {
                    s = s.cmds(*c, vec![words(w)], 1);
                }
                s = s.cmd(*c, if *exec { "EXEC" } else { "DISCARD" });
            }
        }
    }
    s
}

/// Runs proptest-generated sessions on worlds `a` and `b`; a difference is shrunk to a
/// minimal case, which the panic shows.
fn check_randomized(a: &World, b: &World, default_cases: u32) {
    let cases = std::env::var("DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec((0usize..3, rand_item()), 20..40);
    let result = runner.run(&strategy, |items| {
        let session = rand_session(&items);
        let (ra, rb) = std::thread::scope(|s| {
            let other = s.spawn(|| b.run(&session));
            let first = a.run(&session);
            (first, other.join().expect("session runs"))
        });
        std::thread::scope(|s| {
            s.spawn(|| b.reset());
            a.reset();
        });
        if std::env::var_os("DIFF_DUMP").is_some() {
            dump(&session, (a.label, b.label), &ra, &rb);
        }
        match first_difference(&session, (a.label, b.label), &ra, &rb) {
            None => Ok(()),
            Some(diff) => {
                let script: Vec<String> = session
                    .steps
                    .iter()
                    .map(|st| match st {
                        Step::Send { client, cmds, .. } => {
                            format!("  client {client}: {}", cmds[0].label())
                        }
                        other => format!("  {other:?}"),
                    })
                    .collect();
                Err(TestCaseError::fail(format!(
                    "{diff}\nsession:\n{}",
                    script.join("\n")
                )))
            }
        }
    });
    if let Err(e) = result {
        panic!(
            "randomized sessions differ between {} and {}: {e}",
            a.label, b.label
        );
    }
}

#[test]
fn randomized_sessions_match() {
    let (direct, proxied) = World::pair(("direct", false), ("proxied", true));
    check_randomized(&direct, &proxied, 24);
}

/// The randomized mode's harness is deterministic too.
#[test]
fn randomized_direct_vs_direct() {
    let (a, b) = World::pair(("direct-a", false), ("direct-b", false));
    check_randomized(&a, &b, 8);
}
