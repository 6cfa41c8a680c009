//! [`Relay`]: a TCP relay between a replica and its master that holds, delays or cuts the
//! replication stream.
//!
//! [`Relay::start`] acts on every connection it relays. [`Relay::start_replication_only`]
//! relays clients too but acts only on replication links: it is put in front of a Redis
//! Cluster master that announces the relay's port, so that both its replica and the
//! cluster's clients reach it through the relay (see [`RedisCluster`]).
//!
//! [`RedisCluster`]: super::RedisCluster

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{wait_until, POLL_INTERVAL, START_TIMEOUT};

/// Which relayed connections [`Relay::pause`], [`Relay::set_delay`] and [`Relay::cut`]
/// act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Every connection (the relay carries only a replica's link).
    All,
    /// Only replication links: connections whose client sends `REPLCONF`, `PSYNC` or
    /// `SYNC` among its first [`CLASSIFY_COMMANDS`] commands. Other clients' traffic flows
    /// untouched.
    ReplicationOnly,
}

/// How many commands of a connection a [`Scope::ReplicationOnly`] relay reads to tell a
/// replication link from a client. A replica's handshake is `PING`, maybe `AUTH`, then
/// `REPLCONF`s and `PSYNC`: its replication command comes within the first four.
const CLASSIFY_COMMANDS: usize = 8;

/// One open relayed connection, as [`Relay::cut`] and the counters see it.
struct OpenConn {
    /// The cut generation it was accepted under.
    generation: u64,
    /// Set once its client sent a replication command.
    replication: Arc<AtomicBool>,
}

impl OpenConn {
    fn affected(&self, scope: Scope) -> bool {
        scope == Scope::All || self.replication.load(Ordering::SeqCst)
    }
}

type OpenSet = Arc<Mutex<HashMap<usize, OpenConn>>>;

/// What the relay's connections obey; changed through a `watch` channel so every
/// connection task sees a change at once.
#[derive(Clone, Debug, Default)]
struct RelayState {
    /// Hold master→replica bytes (of the connections the relay's scope covers).
    paused: bool,
    /// Extra time each master→replica chunk waits before it is written.
    delay: Duration,
    /// Bumped by [`Relay::cut`]; a connection closes when it differs from the value it
    /// was accepted under.
    cut_generation: u64,
    /// Set on drop: stop accepting, close everything.
    shutdown: bool,
}

/// A TCP relay between a replica and its master, running on its own thread and tokio
/// runtime (so it works from sync tests and from `#[tokio::test]`s alike).
///
/// Point a replica at [`Relay::addr`]; each connection it accepts is relayed to the
/// target. The replica→master direction is copied as is (so ACKs flow and the master
/// keeps the replica); the master→replica direction can be held, delayed, or cut, which
/// makes the replica lag for real while its link stays up.
///
/// A relay from [`Relay::start_replication_only`] does that only to replication links
/// and relays every other connection untouched.
pub struct Relay {
    addr: SocketAddr,
    scope: Scope,
    control: watch::Sender<RelayState>,
    /// Open relayed connections by id.
    open: OpenSet,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay to `target` on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> Relay {
        Self::start_scoped(target, Scope::All)
    }

    /// Starts a relay to `target` whose [`pause`](Relay::pause), [`set_delay`](Relay::set_delay)
    /// and [`cut`](Relay::cut) act only on replication links: connections whose client
    /// sends `REPLCONF`, `PSYNC` or `SYNC` (a replica's handshake does, right after its
    /// `PING`). Other clients go through the same relay and are never held.
    pub fn start_replication_only(target: SocketAddr) -> Relay {
        Self::start_scoped(target, Scope::ReplicationOnly)
    }

    fn start_scoped(target: SocketAddr, scope: Scope) -> Relay {
        let (control, state) = watch::channel(RelayState::default());
        let open = Arc::new(Mutex::new(HashMap::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = {
            let (open, accepted) = (open.clone(), accepted.clone());
            std::thread::Builder::new()
                .name(format!("relay-{target}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("relay runtime");
                    runtime.block_on(relay_main(target, scope, state, open, accepted, addr_tx));
                })
                .expect("start the relay thread")
        };
        let addr = addr_rx.recv().expect("relay bound its port");
        Relay {
            addr,
            scope,
            control,
            open,
            accepted,
            thread: Some(thread),
        }
    }

    /// Where to point the replica (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds every master→replica byte read from now on (kept in order, not dropped).
    /// The connection stays up, so the replica keeps `master_link_status:up` (until its
    /// `repl-timeout`) and serves stale data.
    pub fn pause(&self) {
        self.control.send_modify(|s| s.paused = true);
    }

    /// Releases the held bytes, in order, and forwards normally again.
    pub fn resume(&self) {
        self.control.send_modify(|s| s.paused = false);
    }

    /// Delays each master→replica chunk read from now on by `delay` after it was read.
    /// Chunks wait concurrently (a queue of release times), so order and throughput are
    /// kept: the stream arrives `delay` late, not `delay` per chunk. Zero turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.control.send_modify(|s| s.delay = delay);
    }

    /// Closes every relayed connection (both sides) and returns once they are closed;
    /// held bytes are dropped. New connections (a replica reconnecting) are accepted.
    pub fn cut(&self) {
        let mut generation = 0;
        self.control.send_modify(|s| {
            s.cut_generation += 1;
            generation = s.cut_generation;
        });
        let scope = self.scope;
        wait_until("relayed connections are closed", START_TIMEOUT, || {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.values()
                .all(|c| c.generation >= generation || !c.affected(scope))
        });
    }

    /// Relayed connections currently open.
    pub fn connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Open connections known to be replication links (their client sent `REPLCONF`,
    /// `PSYNC` or `SYNC`), whatever the relay's scope.
    pub fn replication_connections(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| c.replication.load(Ordering::SeqCst))
            .count()
    }

    /// Connections accepted since start (a replica reconnecting adds one).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.control.send_modify(|s| s.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The relay's accept loop. Returning drops the runtime, and with it every connection.
async fn relay_main(
    target: SocketAddr,
    scope: Scope,
    state: watch::Receiver<RelayState>,
    open: OpenSet,
    accepted: Arc<AtomicUsize>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("relay bind");
    addr_tx
        .send(listener.local_addr().expect("relay address"))
        .expect("Relay::start waits for the address");
    let mut shutdown = state.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| s.shutdown) => return,
            accept = listener.accept() => {
                let Ok((replica, _)) = accept else {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    continue;
                };
                let id = accepted.fetch_add(1, Ordering::SeqCst);
                let generation = state.borrow().cut_generation;
                let replication = Arc::new(AtomicBool::new(false));
                open.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    id,
                    OpenConn { generation, replication: replication.clone() },
                );
                let guard = OpenGuard { id, open: open.clone() };
                let conn = Conn { generation, scope, replication };
                tokio::spawn(relay_connection(replica, target, conn, state.clone(), guard));
            }
        }
    }
}

/// Removes a connection from the open set when its task ends or is dropped.
struct OpenGuard {
    id: usize,
    open: OpenSet,
}

/// What one connection task knows about itself.
#[derive(Clone)]
struct Conn {
    /// The cut generation it was accepted under.
    generation: u64,
    scope: Scope,
    /// Set by the upstream copy once the client sent a replication command.
    replication: Arc<AtomicBool>,
}

impl Conn {
    /// Whether pause, delay and cut apply to this connection (now).
    fn affected(&self) -> bool {
        self.scope == Scope::All || self.replication.load(Ordering::SeqCst)
    }
}

/// Whether a command name is one only a replica sends on its link to the master.
fn is_replication_command(name: &[u8]) -> bool {
    [&b"REPLCONF"[..], b"PSYNC", b"SYNC"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

/// The name of the first command in `buf` and the length of that whole command, or
/// `None` while it is incomplete. Handles RESP arrays of bulk strings (what replicas and
/// client libraries send) and inline commands; anything else yields an empty name for
/// the rest of the buffer.
fn first_command(buf: &[u8]) -> Option<(&[u8], usize)> {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let rest = buf.get(from..)?;
        let end = memchr::memchr(b'\n', rest)?;
        let text = rest.get(..end)?;
        Some((text.strip_suffix(b"\r").unwrap_or(text), from + end + 1))
    }
    fn number(text: &[u8]) -> Option<usize> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }
    if buf.first() != Some(&b'*') {
        let (text, next) = line(buf, 0)?;
        let name = text
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(&[]);
        return Some((name, next));
    }
    let (count, mut pos) = line(buf, 0)?;
    let Some(count) = count.get(1..).and_then(number) else {
        return Some((&[], buf.len()));
    };
    let mut name: &[u8] = &[];
    for i in 0..count {
        let (len, start) = line(buf, pos)?;
        let Some(len) = len.strip_prefix(b"$").and_then(number) else {
            return Some((&[], buf.len()));
        };
        let end = start + len;
        if buf.len() < end + 2 {
            return None;
        }
        if i == 0 {
            name = buf.get(start..end)?;
        }
        pos = end + 2;
    }
    Some((name, pos))
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Copies client→master bytes as they come. For a [`Scope::ReplicationOnly`] relay it
/// also reads the first [`CLASSIFY_COMMANDS`] commands and marks the connection a
/// replication link when one of them is `REPLCONF`, `PSYNC` or `SYNC`.
async fn copy_upstream(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    conn: Conn,
) {
    let mut pending = (conn.scope == Scope::ReplicationOnly).then(Vec::new);
    let mut seen = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if let Some(commands) = pending.as_mut() {
            commands.extend_from_slice(chunk);
            while let Some((name, len)) = first_command(commands) {
                if is_replication_command(name) {
                    conn.replication.store(true, Ordering::SeqCst);
                }
                commands.drain(..len);
                seen += 1;
                if conn.replication.load(Ordering::SeqCst) || seen >= CLASSIFY_COMMANDS {
                    break;
                }
            }
            if conn.replication.load(Ordering::SeqCst) || seen >= CLASSIFY_COMMANDS {
                pending = None;
            }
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Relays one replica connection to `target` until either side closes or a cut.
async fn relay_connection(
    replica: tokio::net::TcpStream,
    target: SocketAddr,
    conn: Conn,
    state: watch::Receiver<RelayState>,
    _guard: OpenGuard,
) {
    let Ok(master) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let _ = replica.set_nodelay(true);
    let _ = master.set_nodelay(true);
    let (replica_rd, mut replica_wr) = replica.into_split();
    let (mut master_rd, master_wr) = master.into_split();

    let upstream = copy_upstream(replica_rd, master_wr, conn.clone());

    // Master→replica: the reader stamps each chunk with its release time as it arrives;
    // the writer releases chunks in order, each at its time and only while not paused.
    let (queue_tx, mut queue_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader_state = state.clone();
    let reader_conn = conn.clone();
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            match master_rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let delay = if reader_conn.affected() {
                        reader_state.borrow().delay
                    } else {
                        Duration::ZERO
                    };
                    let release = Instant::now() + delay;
                    if queue_tx.send((release, buf.freeze())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut writer_state = state.clone();
    let writer_conn = conn.clone();
    let writer = async move {
        while let Some((release, chunk)) = queue_rx.recv().await {
            tokio::time::sleep_until(release.into()).await;
            if writer_state
                .wait_for(|s| !s.paused || !writer_conn.affected())
                .await
                .is_err()
                || replica_wr.write_all(&chunk).await.is_err()
            {
                return;
            }
        }
        let _ = replica_wr.shutdown().await;
    };
    let downstream = async { tokio::join!(reader, writer) };

    let mut cut_state = state;
    let cut = cut_state
        .wait_for(|s| (s.cut_generation != conn.generation && conn.affected()) || s.shutdown);

    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut => {}
    }
}
