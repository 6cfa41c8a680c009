//! One client connection: decode requests, answer the proxy's own commands, route the
//! rest, and return replies in request order.
//!
//! A session keeps a FIFO of `Pending` requests. Each names the *slot* its reply will
//! arrive in: the session's own queue for replies it makes itself, or a slot of its
//! [`Inbox`](crate::backend::Inbox) fed by one backend connection (each connection
//! answers in order, so each slot is a FIFO too). Draining takes the front request's
//! reply from its slot, so replies go back in request order even when consecutive
//! requests of a pipeline went to different backends.
//!
//! The requests of one batch bound for the same connection are gathered as byte ranges
//! of the read buffer and handed over together when the batch ends, so a pipeline costs
//! one lock and one write per connection, not per request, even when its requests
//! alternate between connections (replica reads among writes, keys of several cluster
//! shards). On the way back, when the output buffer is empty and a slot holds exactly
//! the replies to the next requests, passed on unchanged, the slot's buffer becomes the
//! output buffer (no copy); and the replies of one batch are written together, as Redis
//! writes a pipeline's, rather than once per backend that answered.
//!
//! Ordering across connections is kept by three barriers: a write waits until the
//! session's replica reads are answered (so a failed replica read can be retried on the
//! master before the write happens); a switch between shared and dedicated connections
//! waits until the other side is idle; a blocking command runs alone.
//!
//! The parts, one concern each (all are `impl Session` blocks over the fields below):
//! - `connection`: the socket loop, buffer limits, and when the session may park;
//! - `dispatch`: parse requests and route each (gates, reads, writes);
//! - `cluster`: in front of a Redis Cluster, the shard of each request's slot, `MOVED`
//!   and `ASK` followed, requests across slots split and their replies merged, keyless
//!   ones sent to every shard;
//! - `outbound`: requests gathered for shared connections, sources, slots, in-flight
//!   counts and per-shard read-your-writes counts;
//! - `dedicated`: transactions, blocking commands, pub/sub and tracking on the session's
//!   own master connection;
//! - `durable`: durable writes and `WAIT`, replies held until replicas catch up;
//! - `orphans`: blocked clients that hung up, noticed (through one shared epoll set)
//!   before any session's next request reaches the master;
//! - `hedge`: replica reads unanswered after the hedge delay, also sent to the master;
//!   the race between the two replies and the discarding of the loser;
//! - `replies`: draining the inbox in request order, retries, forwarding;
//! - `login`: `AUTH` and `HELLO`, as a `proxy.yaml` user or as a Redis ACL user whose
//!   login the master checks (the session waits for its answer);
//! - `state`: [`ClientState`], the one record of the connection's state as Redis
//!   defines it;
//! - `local`: the other commands the proxy answers itself (`CLIENT`, `PROXY`, …);
//! - `queued`: those commands inside `MULTI`: a stand-in queued in the master's
//!   transaction, the proxy's answer spliced into the `EXEC` reply in its place;
//! - `own`: the decisions of all the commands the proxy answers itself (argument
//!   checks, errors, replies, the `CLIENT LIST`/`KILL` filters, `HELLO`'s options), as
//!   plain functions of the client's state, unit-tested; `local` and `login` are the
//!   glue that applies them to the session.

use crate::backend::{
    next_read_size, BackendError, Conn, ConnKey, ControlConn, Front, InboxState, Sink, SlotQueue,
    PUSHES,
};
use crate::commands::{self, Class, Command, Flags};
use crate::cursor;
use crate::introspect;
use crate::metrics::{class_index, Local, LATENCY_BOUNDS_US, STALENESS_BOUNDS_US};
use crate::policy::Wait;
use crate::protocol::{parse_int, Parsed, ProtocolError, Request, RequestParser};
use crate::proxy::{Proxy, SessionHandle, Settings};
use crate::reply::{self, Decoded, Value};
use crate::router::{self, Decision, Reason, SessionReads, Target};
use crate::topology::{Backend, View};
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

mod cluster;
mod connection;
mod dedicated;
mod dispatch;
mod durable;
mod fencing;
mod hedge;
mod local;
mod login;
mod orphans;
mod outbound;
mod own;
mod queued;
mod replies;
mod state;

use fencing::FENCE_NONE;
pub use state::{ClientState, ReplyMode};

/// The slot number of replies the session makes itself.
const LOCAL: u16 = u16::MAX;

/// Smallest and largest read from a client that is sending requests.
const MIN_READ: usize = 16 * 1024;
const MAX_READ: usize = 64 * 1024;

/// How long a failed replica read with nowhere to go waits before looking again, when no
/// new view came first.
const RETRY_RECHECK: Duration = Duration::from_millis(50);

/// Output buffer size past which replies are left in the inbox until the client has read
/// some ([`Session::drain`]).
const OUTPUT_SOFT_CAP: usize = 1 << 20;

/// The most reply bytes held back while the rest of their client batch is still being
/// answered ([`Session::holds_output`]).
const OUTPUT_HOLD_MAX: usize = 64 * 1024;

/// Shared-connection requests a new client may have in flight before any reply arrived.
const INITIAL_WINDOW: u32 = 32;

/// `RESET`, sent on the dedicated connection to leave pub/sub, tracking or `MONITOR`.
const RESET: &[u8] = b"*1\r\n$5\r\nRESET\r\n";
/// Its reply, which no streamed frame can be mistaken for (those are arrays or pushes).
const RESET_REPLY: &[u8] = reply::RESET;

/// Replies of a tracking tunnel that name the redirect target (`CLIENT GETREDIR`,
/// `CLIENT TRACKINGINFO`), which Redis answers with the backend's id of the target's
/// connection: they are given back the proxy's id of that client. `CLIENT ID` there is
/// answered by Redis too (with the tunnel connection's id): it is given back the
/// client's own proxy id.
#[derive(Debug, Default)]
struct Tracking {
    /// The proxy id of the client invalidations are redirected to, if any.
    redirect: Option<u64>,
    /// The redirect is to the client itself, sent as tracking without a redirect (the
    /// same delivery: pushes in RESP3, none in RESP2), so replies naming 0 name it.
    to_self: bool,
    /// Requests sent on the tunnel (the `CLIENT TRACKING` that opened it is the first).
    sent: u64,
    /// Non-push frames received on it.
    seen: u64,
    /// Which of those (by number) to rewrite.
    rewrites: VecDeque<u64>,
    /// Which of those (by number) answer `CLIENT ID`: the master's id of the tunnel's
    /// connection, given back as the client's proxy id.
    own_ids: VecDeque<u64>,
}

/// How a client leaves the tunnel: the command that ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TunnelExit {
    Reset,
    Quit,
}

/// `ROLE`, sent after a durable write or for `WAIT` to learn the master's offset.
const ROLE: &[u8] = b"*1\r\n$4\r\nROLE\r\n";

/// What to do with a request's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Forward it.
    Forward,
    /// A read sent to a replica; `retry` bytes of it are kept for a retry on the master
    /// (or a hedge).
    ReplicaRead { retry: u32, hedge: Hedge },
    /// A read sent to the master; `retry` bytes of it are kept to send it again if the
    /// master's connection fails (on the master again, or on the new master after a
    /// failover; never on a replica: its rule sent it to the master).
    MasterRead { retry: u32 },
    /// A write: counts for read-your-writes. In front of a cluster, `keep` bytes of it
    /// are kept in `Session::redirect_buf` to follow a `MOVED` or `ASK` its node answers.
    Write { keep: u32 },
    /// A durable write: the reply is held until enough replicas hold it.
    Durable(Wait),
    /// The `ROLE` after a durable write or for `WAIT`: consumed, not forwarded.
    RoleProbe { wait: Option<(u32, u32)> },
    /// `EXEC` on the dedicated connection: applies a `SELECT` queued in the transaction.
    Exec,
    /// A blocking command on the dedicated connection.
    Blocking,
    /// Pub/sub or `MONITOR`: every frame of the dedicated connection, forever.
    Tunnel,
    /// A login as a Redis ACL user, checked by the master ([`login`]).
    Login,
    /// Sent only for its effect on the connection (a refusal marking the transaction
    /// failed): the reply is dropped.
    Dropped,
}

/// Whether a replica read was also sent elsewhere ([`hedge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hedge {
    /// Not hedged (yet).
    No,
    /// Also sent; its reply arrives in this slot (a source's hedge slot).
    Sent(u16),
    /// Not to be hedged: no target, or the hedge failed.
    Spent,
}

/// One request awaiting its reply.
#[derive(Clone, Copy, Debug)]
struct Pending {
    slot: u16,
    kind: Kind,
    /// Where the request went: 0 local, 1 shared connection, 2 dedicated.
    path: u8,
    /// `CLIENT REPLY OFF/SKIP`: drop the reply.
    silent: bool,
    /// A read (for the latency histogram).
    read: bool,
    sent: Instant,
    /// What its reply needs besides forwarding.
    mark: Mark,
    /// What the write fenced in the key fence (`fencing::FENCE_*`, or how many hashes
    /// it pushed on `Session::fence_keys`).
    fence: u16,
    /// In front of a cluster, a write's place in `Session::shard_writes` (its shard's
    /// read-your-writes), or [`NO_SHARD`]: counted for every shard.
    shard: u8,
}

/// [`Pending::shard`] of a request not counted for one shard.
const NO_SHARD: u8 = u8::MAX;

/// This client's writes to one cluster shard: what read-your-writes waits for before
/// the shard's replicas may serve its reads again.
#[derive(Clone, Copy, Debug, Default)]
struct ShardWrites {
    /// The shard ([`View::shard`]); 0 for writes counted for every shard.
    shard: u64,
    /// Sent, not yet answered.
    in_flight: u32,
    /// When the last one was answered.
    ack: Option<Instant>,
}

/// What a pending request's reply needs besides forwarding ([`Pending::mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    None,
    /// A SCAN-family reply: its cursor is tagged with the node that answered
    /// ([`crate::cursor`]).
    Scan,
    /// The reply of a keyspace `SCAN`: tagged as `Scan`'s, and in a cluster the end of
    /// one master's iteration leads to the next master's.
    KeyspaceScan,
    /// The reply of a script or function the master ran: once it is in, that script
    /// is over, and the master is no longer busy with it.
    Script,
    /// The reply of one part of a request split across a cluster's slots: collected
    /// until the last part's, then merged into the request's one reply.
    Part,
}

const PATH_LOCAL: u8 = 0;
const PATH_SHARED: u8 = 1;
const PATH_DEDICATED: u8 = 2;

/// A shared connection the session uses.
#[derive(Debug)]
struct Source {
    backend: u32,
    backend_ref: Arc<Backend>,
    /// Requests sent since the last flush of counters.
    served: u32,
    key: ConnKey,
    conn: Arc<Conn>,
    slot: u16,
    retry_slot: u16,
    /// Where hedges sent to this backend answer (hedges only, so its items arrive in
    /// the order the hedges were sent, which is request order).
    hedge_slot: u16,
    /// Replica read latencies (sum in µs, count) since the last flush to the backend's
    /// smoothed latency.
    latency_sum_us: u64,
    latency_n: u32,
    /// The connection was not ready when the source was made: replies to what was sent
    /// before it was include the connection's set-up and are not counted as latency.
    warming: bool,
}

/// The session's dedicated master connection.
#[derive(Debug)]
struct Dedicated {
    conn: Arc<Conn>,
    slot: u16,
    backend: u32,
    /// The cluster shard of that master ([`View::shard`]; 0 outside a cluster).
    shard: u64,
    key: ConnKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    /// `WATCH` is active: everything goes to the dedicated connection.
    Watch,
    /// Inside `MULTI`.
    Multi,
    /// Subscribed or monitoring: the dedicated connection streams.
    Tunnel,
}

/// A reply held back until replicas catch up (durable write, `WAIT`).
#[derive(Debug)]
struct Held {
    target: u64,
    replicas: u32,
    deadline: Option<Instant>,
    started: Instant,
    /// The write's reply (durable), or `None` for `WAIT` (the reply is a count).
    reply: Option<BytesMut>,
    silent: bool,
    /// The master the target offset is from; replicas of another master never count.
    master: Option<u32>,
    /// The write is one part of a request split across a cluster's slots: once
    /// released, its reply joins the merge rather than going to the client.
    part: bool,
}

/// A failed replica read waiting to be retried (the session's `retry_wait`).
#[derive(Debug)]
struct RetryWait {
    /// The read, as it was at the front of the queue.
    p: Pending,
    /// Its request.
    bytes: BytesMut,
    /// The backend it failed on.
    failed: Option<u32>,
    /// In front of a cluster: the node a redirection named, not in the slot map yet (the
    /// request waits for the map to name it).
    redirect: Option<Box<cluster::Redirected>>,
    /// When it fails if still nowhere to go (`command_timeout_ms` after it was sent).
    until: Instant,
    /// Wakes the session to look again (also woken by a new view).
    sleep: Pin<Box<tokio::time::Sleep>>,
}

/// The requests of one batch for one connection, not yet handed over: spans of the
/// batch's read buffer, sent together when the batch ends (or a step needs them out
/// first), so requests for several connections interleaved in one pipeline (replica
/// reads among writes, keys of several cluster shards) cost one send per connection.
#[derive(Debug, Default)]
struct Gather {
    /// The position in `sources` of the backend's connection ([`Session::source_for`]
    /// keeps a position the same backend's).
    source: usize,
    /// The slot the requests wait on: its source's slot when the first was gathered.
    slot: u16,
    /// Requests gathered.
    count: u32,
    /// Their byte ranges in the read buffer, in order, adjacent ones merged.
    spans: Vec<(usize, usize)>,
}

/// One batch of requests parsed from the read buffer: what routing each of them needs
/// (the settings, view and time the batch started with), and how many of the
/// session's gathers hold its requests not yet handed to a connection.
/// Every step that sends around them first hands them over
/// ([`Session::send_gathered`]), which keeps each connection's requests in order.
struct Batch<'a> {
    /// The read buffer the requests (and the gathers) are spans of.
    rbuf: &'a [u8],
    settings: &'a Settings,
    /// The view routing this request: the proxy's, or in a cluster the view of the
    /// request's shard ([`Session::cluster_route`]).
    view: &'a View,
    /// The proxy's view as loaded for this batch.
    top: &'a View,
    now: Instant,
    /// How many of the session's gathers hold this batch's requests.
    open: usize,
}

impl<'a> Batch<'a> {
    /// A batch for a request the proxy makes or answers outside the read buffer.
    fn outside(settings: &'a Settings, view: &'a View, now: Instant) -> Batch<'a> {
        Batch {
            rbuf: &[],
            settings,
            view,
            top: view,
            now,
            open: 0,
        }
    }
}

/// Why the request loop stopped before the buffer was empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    More,
    Wait,
}

/// One client.
pub struct Session {
    proxy: Arc<Proxy>,
    handle: Arc<SessionHandle>,
    id: u64,
    /// This client's handle as the owner of its inbox, for backend waiters.
    sink: Arc<dyn Sink>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The most `wbuf` has held since it was last empty: what it occupies in memory,
    /// which writing part of it does not give back (a reply taken whole stays one
    /// allocation until written out), and what counts against the output limit.
    wbuf_held: usize,
    parser: RequestParser,
    pending: VecDeque<Pending>,
    /// The last latency computed (sent, now, µs): the requests of one batch share both
    /// instants, so their latency is computed once.
    latency_memo: Option<(Instant, Instant, u64)>,
    /// When the output buffer's newest bytes were produced (the last read of requests
    /// or of replies): a reply written then counts as activity at this time.
    replies_at: Instant,
    local: SlotQueue,
    /// The bytes of every pending replica read and master read (`retry` bytes each), in
    /// `pending` order: kept to send a read again (or hedge it) if its backend fails.
    retry_buf: BytesMut,
    /// In front of a cluster, the bytes of every pending write on a shared connection
    /// (`Kind::Write`'s `keep`), in request order.
    redirect_buf: BytesMut,
    /// Replies to drop as they arrive, per slot: the losers of hedge races (each slot is
    /// a FIFO, and a loser is always older than anything still expected there).
    drops: Vec<(u16, u32)>,
    /// When the oldest unhedged replica read reaches the hedge delay (if any may).
    hedge_at: Option<Instant>,
    /// Wakes the session at `hedge_at`.
    hedge_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    sources: Vec<Source>,
    /// Requests gathered per connection in the current batch (its first `open`; the
    /// rest keep their capacity for the next batch).
    gather: Vec<Gather>,
    slot_refs: Vec<u32>,
    slot_used: Vec<bool>,
    /// Slots of closed dedicated connections, freed once the connection is gone.
    retired: Vec<(u16, std::sync::Weak<Conn>)>,
    dedicated: Option<Dedicated>,
    /// The client's state as Redis defines it (the one record; published to the handle).
    client: ClientState,
    mode: Mode,
    multi_select: Option<u32>,
    /// In front of a cluster: the slot of the open transaction's (or WATCH's) keys.
    tx_slot: Option<u16>,
    /// In front of a cluster: `MULTI` was answered but not sent yet; it goes to the
    /// shard of the transaction's first command, just before that command.
    multi_deferred: bool,
    /// In front of a cluster: the requests split across slots whose parts' replies are
    /// being collected, oldest first.
    merges: VecDeque<cluster::Merge>,
    /// The master the session's last write went to (in a cluster, `WAIT` counts the
    /// replicas of that shard).
    last_write_master: Option<u32>,
    shared_in_flight: u32,
    dedicated_in_flight: u32,
    writes_in_flight: u32,
    replica_reads_in_flight: u32,
    blocking_in_flight: bool,
    /// The client's socket, watched for a hang-up while a blocking command is out.
    client_fd: Option<std::os::fd::RawFd>,
    /// That watch, while it is on ([`orphans`]).
    orphan: Option<orphans::Watched>,
    last_write_ack: Option<Instant>,
    /// When the request last answered was sent ([`Pending::sent`]: its client batch).
    done_sent: Option<Instant>,
    /// In front of a cluster, the writes and acknowledgements above per shard (at most
    /// [`NO_SHARD`] entries; an idle one is reused for another shard), and those of
    /// writes no one shard answers (a redirected write, a fan-out), which every shard's
    /// reads wait for.
    shard_writes: Vec<ShardWrites>,
    loose_writes: ShardWrites,
    prefer: Option<usize>,
    turn: usize,
    view_epoch: u64,
    held: Option<Box<Held>>,
    held_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    view_rx: Option<tokio::sync::watch::Receiver<u64>>,
    /// A failed replica read with nowhere to go yet, waiting for a master or a replica
    /// that can answer ([`router::retry_target`]); nothing after it is answered meanwhile.
    retry_wait: Option<Box<RetryWait>>,
    closing: bool,
    /// A tracking tunnel's replies that name the redirect target.
    tracking: Tracking,
    /// Set while a SCAN-family request or a script is being sent: how its pending entry
    /// is marked.
    mark_next: Mark,
    /// Set while a fenced write is being sent: the fence tag its pending entry takes.
    next_fence: u16,
    /// Key hashes fenced by this session's writes in flight, oldest first.
    fence_keys: VecDeque<u64>,
    /// This session's keyspace-wide writes in flight (each holds the global fence).
    fence_globals: u32,
    /// Key hashes of the writes queued in the open transaction, fenced at `EXEC`.
    tx_fence: Vec<u64>,
    /// The open transaction queued a write that fences the whole keyspace.
    tx_fence_global: bool,
    /// Set while the tunnel is being left: requests wait until it is.
    tunnel_exit: Option<TunnelExit>,
    /// Set while the master checks a login: requests wait until it answered.
    login: Option<Box<login::LoginCheck>>,
    /// The proxy's own commands queued in the open transaction; once its `EXEC` is
    /// sent, requests wait until its reply is in.
    tx_own: Option<Box<queued::TxOwn>>,
    /// This batch's counts; allocated while the client is active, freed when idle.
    stats: Option<Box<Local>>,
    settings_gen: u64,
    /// Rule hits since the last flush: one per rule, then the default.
    hits: Vec<u32>,
    /// While writes wait for a failover to finish: until when.
    master_wait: Option<Instant>,
    /// While a read waits for a master or a replica that can answer (the master is
    /// down and none can): until when, and the timer that wakes the session then.
    read_wait: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
    /// Shared-connection requests this client may have in flight: it starts at
    /// [`INITIAL_WINDOW`] and grows by one per reply (doubling per round trip), but never
    /// past what `client_output_buffer_limit` holds at the size of the client's recent
    /// replies, nor past `max_pipeline`. So a client that pipelines requests with large
    /// replies cannot make a backend build more reply data for it than it may buffer.
    window: u32,
    /// The size of this client's recent large replies (decays by 1/16 per reply).
    reply_est: u64,
    /// `client_output_buffer_limit` (0: none) and `max_pipeline`, from the settings.
    window_budget: u64,
    window_max: u32,
    /// How much a read from the client asks for once requests are streaming: doubled
    /// while reads fill the buffer (large requests, deep pipelines), halved when they
    /// come in small, between [`MIN_READ`] and [`MAX_READ`].
    read_chunk: usize,
    /// The bytes in the client's query buffer while its requests are dispatched: as on
    /// Redis, the whole of what was read, the requests already handled included, until
    /// the batch ends. Its own `CLIENT LIST`/`CLIENT INFO` line shows it as `qbuf`.
    qbuf: usize,
}

/// How the session ended.
#[derive(Debug)]
pub enum End {
    /// The client closed the connection or sent `QUIT`.
    Closed,
    /// A protocol error, a limit, or a kill.
    Dropped(String),
    /// The client went idle with nothing in flight; its state is in the [`Parked`] the
    /// run returned, and the connection stays open.
    Parked,
}

/// What an idle client's session keeps while it has no task, beside its [`ClientState`]
/// (which stays published in its handle): its read-your-writes state and its place in
/// the replica rotation.
#[derive(Debug, Clone)]
pub struct Parked {
    last_write_ack: Option<Instant>,
    turn: usize,
}

impl Session {
    /// This batch's counters.
    #[inline]
    fn stats(&mut self) -> &mut Local {
        self.stats.get_or_insert_with(Default::default)
    }

    /// A session for a newly accepted client.
    pub fn new(proxy: Arc<Proxy>, handle: Arc<SessionHandle>) -> Session {
        let id = handle.id;
        let sink: Arc<dyn Sink> = handle.clone();
        // A new client's state was set up with its handle; a parked one's was published.
        let client = handle.state.lock().clone();
        let epoch = proxy.view.load().epoch;
        Session {
            proxy,
            handle,
            id,
            sink,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            wbuf_held: 0,
            parser: RequestParser::new(),
            pending: VecDeque::new(),
            latency_memo: None,
            replies_at: Instant::now(),
            local: SlotQueue::default(),
            retry_buf: BytesMut::new(),
            redirect_buf: BytesMut::new(),
            drops: Vec::new(),
            hedge_at: None,
            hedge_sleep: None,
            sources: Vec::new(),
            gather: Vec::new(),
            slot_refs: Vec::new(),
            slot_used: Vec::new(),
            retired: Vec::new(),
            dedicated: None,
            client,
            mode: Mode::Normal,
            multi_select: None,
            tx_slot: None,
            multi_deferred: false,
            merges: VecDeque::new(),
            last_write_master: None,
            shared_in_flight: 0,
            dedicated_in_flight: 0,
            writes_in_flight: 0,
            replica_reads_in_flight: 0,
            blocking_in_flight: false,
            client_fd: None,
            orphan: None,
            last_write_ack: None,
            done_sent: None,
            shard_writes: Vec::new(),
            loose_writes: ShardWrites::default(),
            prefer: None,
            turn: id as usize,
            view_epoch: epoch,
            held: None,
            held_sleep: None,
            view_rx: None,
            retry_wait: None,
            closing: false,
            tracking: Tracking::default(),
            mark_next: Mark::None,
            next_fence: FENCE_NONE,
            fence_keys: VecDeque::new(),
            fence_globals: 0,
            tx_fence: Vec::new(),
            tx_fence_global: false,
            tunnel_exit: None,
            login: None,
            tx_own: None,
            stats: None,
            settings_gen: 0,
            hits: Vec::new(),
            master_wait: None,
            read_wait: None,
            window: INITIAL_WINDOW,
            reply_est: 0,
            window_budget: 0,
            window_max: u32::MAX,
            read_chunk: MIN_READ,
            qbuf: 0,
        }
    }

    /// A session resuming a parked client.
    pub fn resume(proxy: Arc<Proxy>, handle: Arc<SessionHandle>, p: Parked) -> Session {
        let mut s = Session::new(proxy, handle);
        s.last_write_ack = p.last_write_ack;
        // Which shards those writes went to is not kept: in a cluster, all wait for it.
        s.loose_writes.ack = p.last_write_ack;
        // Re-check the user against whatever settings run now.
        s.settings_gen = u64::MAX;
        s.turn = p.turn;
        s
    }

    /// The state to park, if this session may give up its task now: idle, nothing in
    /// flight or buffered, no server-side state (transaction, subscription, blocking).
    fn parkable(&self) -> Option<Parked> {
        let idle = self.mode == Mode::Normal
            && self.pending.is_empty()
            && self.rbuf.is_empty()
            && self.wbuf.is_empty()
            && self.held.is_none()
            && self.retry_wait.is_none()
            && !self.closing
            && !self.blocking_in_flight
            && self.client.reply == ReplyMode::On
            && self.dedicated.is_none()
            && self.drops.is_empty()
            && self.retired.iter().all(|(_, c)| c.strong_count() == 0);
        idle.then_some(Parked {
            last_write_ack: self.last_write_ack,
            turn: self.turn,
        })
    }

    /// Serve until the client leaves, or until it idles with nothing in flight and may
    /// give up its state: then [`End::Parked`] is returned and [`Session::park`] gives
    /// what to resume with.
    pub async fn serve_parkable<S: AsyncRead + AsyncWrite + Unpin + std::os::fd::AsRawFd>(
        &mut self,
        stream: &mut S,
    ) -> End {
        self.client_fd = Some(stream.as_raw_fd());
        self.serve(stream).await
    }

    /// Give up the session's state for parking (after [`End::Parked`]); `None` if it is
    /// not idle after all. Counters are flushed; the inbox (owned by the handle) stays.
    pub fn park(&mut self) -> Option<Parked> {
        let p = self.parkable()?;
        if let Some(st) = self.stats.as_mut() {
            st.flush(&self.proxy.metrics);
        }
        self.handle.inbox.state.lock().release();
        self.publish();
        Some(p)
    }

    /// Publish the client's state to its handle, for `CLIENT LIST` of other clients,
    /// the janitor and a later resume.
    fn publish(&self) {
        let mut published = self.handle.state.lock();
        if !published.same_as(&self.client) {
            published.clone_from(&self.client);
        }
    }

    /// End the session: close its dedicated connection and its inbox, flush counters.
    pub fn close(&mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.fence_release_all();
        self.handle.inbox.close();
        self.client.dedicated = None;
        self.publish();
        if let Some(d) = self.dedicated.take() {
            d.conn.close("client disconnected");
        }
        // Only once the connection is closed: until then another session's
        // [`orphans::reap`] may be the one to close it.
        self.unwatch_hangup();
        if let Some(st) = self.stats.as_mut() {
            st.flush(&self.proxy.metrics);
        }
    }

    /// A reload happened: re-resolve the user (permissions may have changed; a removed
    /// user must authenticate again).
    fn on_new_settings(&mut self, settings: &Settings) {
        if self.settings_gen != 0 {
            let redis_login = self.client.login().is_some();
            if redis_login && settings.users.redis() {
                // A Redis ACL user: Redis, not the configuration, says who it is.
            } else if !settings.users.required() {
                self.client.authenticated = true;
                self.client.user = None;
            } else if redis_login {
                // Logins as Redis users are no longer allowed, and users are required.
                self.client.authenticated = false;
                self.client.user = None;
            } else if let Some(u) = self.client.user.take() {
                self.client.user = settings.users.by_name(&u.name);
                self.client.authenticated = self.client.user.is_some();
            } else {
                // Authenticated while no users existed; users were added since.
                self.client.authenticated = false;
            }
        }
        self.settings_gen = settings.policy.generation;
        self.hits.clear();
        self.hits.resize(settings.policy.rules.len() + 1, 0);
    }

    /// Count a routing decision's rule, locally until the batch ends.
    #[inline]
    fn count_hit(&mut self, rule: Option<usize>) {
        let i = rule.unwrap_or(self.hits.len().saturating_sub(1));
        if let Some(h) = self.hits.get_mut(i) {
            *h += 1;
        }
    }

    /// Add this batch's rule hits and per-backend counts to the shared counters.
    fn flush_counters(&mut self, settings: &Settings) {
        let policy = &settings.policy;
        let n = self.hits.len();
        for (i, h) in self.hits.iter_mut().enumerate() {
            if *h > 0 {
                let c = if i + 1 == n {
                    &policy.default_hits
                } else {
                    match policy.rules.get(i) {
                        Some(r) => &r.hits,
                        None => continue,
                    }
                };
                c.fetch_add(u64::from(*h), Ordering::Relaxed);
                *h = 0;
            }
        }
        for s in self.sources.iter_mut() {
            if s.served > 0 {
                s.backend_ref
                    .served
                    .fetch_add(u64::from(s.served), Ordering::Relaxed);
                s.served = 0;
            }
        }
    }

    /// Drop connections to backends that left the topology.
    fn on_new_epoch(&mut self, view: &View) {
        self.view_epoch = view.epoch;
        let live: Vec<u32> = view.shard_views().flat_map(|v| v.backend_ids()).collect();
        let mut i = 0;
        while i < self.sources.len() {
            if self
                .sources
                .get(i)
                .is_some_and(|s| !live.contains(&s.backend))
            {
                let s = self.sources.swap_remove(i);
                self.release_slot(s.slot);
                self.release_slot(s.retry_slot);
                self.release_slot(s.hedge_slot);
            } else {
                i += 1;
            }
        }
        if self
            .dedicated
            .as_ref()
            .is_some_and(|d| !view.is_a_master(d.backend))
            && self.dedicated_in_flight == 0
            && self.mode == Mode::Normal
        {
            self.close_dedicated("the master changed");
        }
    }
}

impl Drop for Session {
    /// Writes still in flight end their key fences (see [`Session::close`], which does
    /// the same when the session ends normally).
    fn drop(&mut self) {
        self.unwatch_hangup();
        self.fence_release_all();
    }
}
