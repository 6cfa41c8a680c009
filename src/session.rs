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
//! Consecutive requests bound for the same connection are handed over as one byte range
//! of the read buffer, so a pipeline costs one lock and one copy per run, not per request.
//! On the way back, when the output buffer is empty and a slot holds exactly the replies
//! to the next requests, passed on unchanged, the slot's buffer becomes the output buffer
//! (no copy).
//!
//! Ordering across connections is kept by three barriers: a write waits until the
//! session's replica reads are answered (so a failed replica read can be retried on the
//! master before the write happens); a switch between shared and dedicated connections
//! waits until the other side is idle; a blocking command runs alone.

use crate::auth::User;
use crate::backend::{next_read_size, BackendError, Conn, ConnKey, Item, Sink, SlotQueue};
use crate::commands::{self, Class, Command};
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

/// The slot number of replies the session makes itself.
const LOCAL: u16 = u16::MAX;

/// Smallest and largest read from a client that is sending requests.
const MIN_READ: usize = 16 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Shared-connection requests a new client may have in flight before any reply arrived.
const INITIAL_WINDOW: u32 = 32;

/// `ROLE`, sent after a durable write or for `WAIT` to learn the master's offset.
const ROLE: &[u8] = b"*1\r\n$4\r\nROLE\r\n";

/// What to do with a request's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Forward it.
    Forward,
    /// A read sent to a replica; `retry` bytes of it are kept for a retry on the master.
    ReplicaRead { retry: u32 },
    /// A write: counts for read-your-writes.
    Write,
    /// A durable write: the reply is held until enough replicas hold it.
    Durable(Wait),
    /// The `ROLE` after a durable write or for `WAIT`: consumed, not forwarded.
    RoleProbe { wait: Option<(u32, u64)> },
    /// `EXEC` on the dedicated connection: applies a `SELECT` queued in the transaction.
    Exec,
    /// A blocking command on the dedicated connection.
    Blocking,
    /// Pub/sub or `MONITOR`: every frame of the dedicated connection, forever.
    Tunnel,
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
}

/// The session's dedicated master connection.
#[derive(Debug)]
struct Dedicated {
    conn: Arc<Conn>,
    slot: u16,
    backend: u32,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    Skip,
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
}

/// A run of consecutive requests for one connection, not yet handed over.
#[derive(Clone, Copy, Debug)]
struct Run {
    source: usize,
    dedicated: bool,
    retry: bool,
    start: usize,
    end: usize,
    count: u32,
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
    parser: RequestParser,
    pending: VecDeque<Pending>,
    /// The last latency computed (sent, now, µs): the requests of one batch share both
    /// instants, so their latency is computed once.
    latency_memo: Option<(Instant, Instant, u64)>,
    /// When the output buffer's newest bytes were produced (the last read of requests
    /// or of replies): a reply written then counts as activity at this time.
    replies_at: Instant,
    local: SlotQueue,
    retry_buf: BytesMut,
    sources: Vec<Source>,
    slot_refs: Vec<u32>,
    slot_used: Vec<bool>,
    dedicated: Option<Dedicated>,
    db: u32,
    resp3: bool,
    user: Option<Arc<User>>,
    authenticated: bool,
    name: String,
    mode: Mode,
    multi_select: Option<u32>,
    shared_in_flight: u32,
    dedicated_in_flight: u32,
    writes_in_flight: u32,
    replica_reads_in_flight: u32,
    blocking_in_flight: bool,
    last_write_ack: Option<Instant>,
    prefer: Option<usize>,
    turn: usize,
    view_epoch: u64,
    reply_mode: ReplyMode,
    held: Option<Box<Held>>,
    held_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    view_rx: Option<tokio::sync::watch::Receiver<u64>>,
    closing: bool,
    /// This batch's counts; allocated while the client is active, freed when idle.
    stats: Option<Box<Local>>,
    last_cmd: &'static str,
    settings_gen: u64,
    /// Rule hits since the last flush: one per rule, then the default.
    hits: Vec<u32>,
    /// While writes wait for a failover to finish: until when.
    master_wait: Option<Instant>,
    /// Whether this session may end its task when idle ([`Session::run_parkable`]).
    may_park: bool,
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

/// What an idle client's session keeps while it has no task: enough to resume exactly
/// where it was (database, protocol, user, read-your-writes state).
#[derive(Debug, Clone)]
pub struct Parked {
    db: u32,
    resp3: bool,
    user: Option<Arc<User>>,
    authenticated: bool,
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
        let authenticated = !proxy.settings.load().users.required();
        let epoch = proxy.view.load().epoch;
        Session {
            proxy,
            handle,
            id,
            sink,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            parser: RequestParser::new(),
            pending: VecDeque::new(),
            latency_memo: None,
            replies_at: Instant::now(),
            local: SlotQueue::default(),
            retry_buf: BytesMut::new(),
            sources: Vec::new(),
            slot_refs: Vec::new(),
            slot_used: Vec::new(),
            dedicated: None,
            db: 0,
            resp3: false,
            user: None,
            authenticated,
            name: String::new(),
            mode: Mode::Normal,
            multi_select: None,
            shared_in_flight: 0,
            dedicated_in_flight: 0,
            writes_in_flight: 0,
            replica_reads_in_flight: 0,
            blocking_in_flight: false,
            last_write_ack: None,
            prefer: None,
            turn: id as usize,
            view_epoch: epoch,
            reply_mode: ReplyMode::On,
            held: None,
            held_sleep: None,
            view_rx: None,
            closing: false,
            stats: None,
            last_cmd: "NULL",
            settings_gen: 0,
            hits: Vec::new(),
            may_park: false,
            master_wait: None,
            window: INITIAL_WINDOW,
            reply_est: 0,
            window_budget: 0,
            window_max: u32::MAX,
            read_chunk: MIN_READ,
        }
    }

    /// A session resuming a parked client.
    pub fn resume(proxy: Arc<Proxy>, handle: Arc<SessionHandle>, p: Parked) -> Session {
        let mut s = Session::new(proxy, handle);
        s.db = p.db;
        s.resp3 = p.resp3;
        s.user = p.user;
        s.authenticated = p.authenticated;
        s.last_write_ack = p.last_write_ack;
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
            && !self.closing
            && !self.blocking_in_flight
            && self.reply_mode == ReplyMode::On
            && self.dedicated.is_none();
        idle.then(|| Parked {
            db: self.db,
            resp3: self.resp3,
            user: self.user.clone(),
            authenticated: self.authenticated,
            last_write_ack: self.last_write_ack,
            turn: self.turn,
        })
    }

    /// Serve until the client leaves, or until it idles with nothing in flight and may
    /// give up its state: then [`End::Parked`] is returned and [`Session::park`] gives
    /// what to resume with.
    pub async fn serve_parkable<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> End {
        self.may_park = true;
        self.serve(stream).await
    }

    /// Give up the session's state for parking (after [`End::Parked`]); `None` if it is
    /// not idle after all. Counters are flushed; the inbox (owned by the handle) stays.
    pub fn park(&mut self) -> Option<Parked> {
        let p = self.parkable()?;
        if let Some(st) = self.stats.as_mut() {
            st.flush(&self.proxy.metrics);
        }
        self.handle.inbox.state.lock().slots = Vec::new();
        Some(p)
    }

    /// End the session: close its dedicated connection and its inbox, flush counters.
    pub fn close(&mut self) {
        self.shutdown();
    }

    /// Serve the client until it leaves or is dropped.
    #[allow(clippy::manual_async_fn)]
    pub fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut stream: S,
    ) -> impl Future<Output = End> {
        // An `async move` block rather than an `async fn`: the session and the stream
        // are stored once in the future, not copied into a second slot (this state is
        // the bulk of what an idle client costs).
        async move {
            let end = self.serve(&mut stream).await;
            self.shutdown();
            end
        }
    }

    fn shutdown(&mut self) {
        self.handle.inbox.close();
        if let Some(d) = self.dedicated.take() {
            d.conn.close("client disconnected");
        }
        if let Some(st) = self.stats.as_mut() {
            st.flush(&self.proxy.metrics);
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) -> End {
        loop {
            if self.handle.inbox.kill.load(Ordering::Relaxed) {
                let _ = Box::pin(flush_now(stream, &mut self.wbuf)).await;
                return End::Dropped("killed".into());
            }
            if self.handle.inbox.trim.swap(false, Ordering::Relaxed) {
                self.trim_buffers();
                if self.may_park && self.parkable().is_some() {
                    return End::Parked;
                }
            }
            // Work until nothing more can be done without waiting.
            let mut rounds = 0;
            loop {
                let before = (self.pending.len(), self.rbuf.len(), self.wbuf.len());
                if let Err(e) = self.process() {
                    self.closing = true;
                    self.push_local_error(&format!("ERR {}", e.0));
                }
                self.drain();
                rounds += 1;
                if before == (self.pending.len(), self.rbuf.len(), self.wbuf.len()) || rounds > 64 {
                    break;
                }
            }
            if let Some(st) = self.stats.as_mut() {
                st.flush(&self.proxy.metrics);
            }
            let limits = &self.proxy.settings.load().config.limits;
            let out_limit = if self.mode == Mode::Tunnel {
                limits.pubsub_output_buffer_limit.0
            } else {
                limits.client_output_buffer_limit.0
            };
            if out_limit > 0 && self.wbuf.len() as u64 > out_limit {
                return self.limited("output", self.wbuf.len());
            }
            if self.rbuf.len() as u64 > limits.client_query_buffer_limit.0 {
                return self.limited("query", self.rbuf.len());
            }
            if self.closing && self.pending.is_empty() {
                let _ = Box::pin(flush_now(stream, &mut self.wbuf)).await;
                return End::Closed;
            }
            let draining = self.handle.inbox.drain.load(Ordering::Relaxed);
            if draining && self.pending.is_empty() && self.wbuf.is_empty() {
                return End::Closed;
            }
            // Wait for the next thing to do.
            let can_read = !self.closing
                && !draining
                && self.rbuf.len() < read_allowance(self, limits.max_pipeline);
            // An idle client holds no read buffer: the first read after idling goes to
            // the stack and only data that arrived is kept.
            if can_read && self.rbuf.capacity() > 0 {
                let want = if self.rbuf.is_empty() {
                    4096
                } else {
                    self.read_chunk
                };
                if self.rbuf.capacity() - self.rbuf.len() < want / 4 {
                    self.rbuf.reserve(want);
                }
            }
            let mut view_changed = self.view_rx.as_mut().map(|rx| Box::pin(rx.changed()));
            let event = std::future::poll_fn(|cx| {
                if !self.wbuf.is_empty() {
                    match Pin::new(&mut *stream).poll_write(cx, &self.wbuf) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed),
                        Poll::Ready(Ok(n)) => {
                            self.wbuf.advance(n);
                            // As in Redis, replies written count as activity.
                            self.handle
                                .last_active_ms
                                .store(self.proxy.uptime_ms(self.replies_at), Ordering::Relaxed);
                            return Poll::Ready(Event::Progress);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::Error(e.to_string())),
                        Poll::Pending => {}
                    }
                }
                if can_read && self.rbuf.capacity() == 0 {
                    let mut tmp = [0u8; 2048];
                    let mut rb = tokio::io::ReadBuf::new(&mut tmp);
                    match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                            return Poll::Ready(Event::Closed)
                        }
                        Poll::Ready(Ok(())) => {
                            self.rbuf.reserve(4096);
                            self.rbuf.extend_from_slice(rb.filled());
                            return Poll::Ready(Event::Progress);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::Error(e.to_string())),
                        Poll::Pending => {}
                    }
                } else if can_read {
                    let spare = self.rbuf.capacity() - self.rbuf.len();
                    match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut self.rbuf)
                    {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed),
                        Poll::Ready(Ok(n)) => {
                            self.read_chunk =
                                next_read_size(self.read_chunk, n, spare, MIN_READ, MAX_READ);
                            return Poll::Ready(Event::Progress);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::Error(e.to_string())),
                        Poll::Pending => {}
                    }
                }
                if self.handle.inbox.notify.poll(cx).is_ready() {
                    return Poll::Ready(Event::Progress);
                }
                if let Some(s) = self.held_sleep.as_mut() {
                    if s.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Progress);
                    }
                }
                if let Some(f) = view_changed.as_mut() {
                    if f.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Progress);
                    }
                }
                Poll::Pending
            })
            .await;
            drop(view_changed);
            match event {
                Event::Progress => {}
                Event::Closed => return End::Closed,
                Event::Error(e) => return End::Dropped(e),
            }
        }
    }

    /// A client over one of its buffer limits is closed, as Redis closes it.
    fn limited(&self, which: &str, bytes: usize) -> End {
        self.proxy
            .metrics
            .clients_limited
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            client = self.id,
            bytes,
            "client {which} buffer limit reached; closing"
        );
        End::Dropped(format!("{which} buffer limit"))
    }

    fn trim_buffers(&mut self) {
        if let Some(st) = self.stats.take() {
            let mut st = st;
            st.flush(&self.proxy.metrics);
        }
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        if self.retry_buf.is_empty() {
            self.retry_buf = BytesMut::new();
        }
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
            self.local.trim();
            let mut st = self.handle.inbox.state.lock();
            for s in st.slots.iter_mut() {
                s.trim();
            }
        }
        self.parser.args = Vec::new();
        self.parser.inline_buf = Vec::new();
    }

    // ---------------------------------------------------------------- requests

    /// Parse and dispatch as many buffered requests as the barriers allow.
    fn process(&mut self) -> Result<(), ProtocolError> {
        if self.rbuf.is_empty() || self.closing || self.held.is_some() {
            return Ok(());
        }
        let settings = self.proxy.settings.load();
        let view = self.proxy.view.load();
        if view.epoch != self.view_epoch {
            self.on_new_epoch(&view);
        }
        if settings.policy.generation != self.settings_gen {
            self.on_new_settings(&settings);
        }
        if self.master_wait.is_some() && !view.switching {
            // The failover is over (or abandoned): writes go (or fail) now.
            self.master_wait = None;
            if self.held.is_none() {
                self.view_rx = None;
            }
        }
        let now = Instant::now();
        self.replies_at = now;
        self.handle
            .last_active_ms
            .store(self.proxy.uptime_ms(now), Ordering::Relaxed);
        if self.handle.inbox.trimmed.load(Ordering::Relaxed) {
            // Active again: the janitor may trim this client's buffers next time it idles.
            self.handle.inbox.trimmed.store(false, Ordering::Relaxed);
        }
        self.prefer = None;
        let max_pipeline = settings.config.limits.max_pipeline;
        self.window_budget = settings.config.limits.client_output_buffer_limit.0;
        self.window_max = u32::try_from(max_pipeline).unwrap_or(u32::MAX).max(1);
        let rbuf = std::mem::take(&mut self.rbuf);
        let mut consumed = 0usize;
        let mut run: Option<Run> = None;
        let mut result = Ok(());
        self.parser.unauthenticated = !self.authenticated;
        while consumed < rbuf.len() && !self.closing {
            if self.pending.len() >= max_pipeline
                || self.shared_in_flight >= self.window
                || self.blocking_in_flight
                || self.held.is_some()
            {
                break;
            }
            let parsed = match self
                .parser
                .parse(rbuf.get(consumed..).unwrap_or_default(), &settings.limits)
            {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let (len, inline) = match parsed {
                Parsed::Empty { len } => {
                    consumed += len;
                    continue;
                }
                Parsed::Multibulk { len } => (len, false),
                Parsed::Inline { len } => (len, true),
            };
            let args = std::mem::take(&mut self.parser.args);
            let inline_buf = std::mem::take(&mut self.parser.inline_buf);
            let buf: &[u8] = if inline {
                &inline_buf
            } else {
                rbuf.get(consumed..consumed + len).unwrap_or_default()
            };
            let req = Request { buf, args: &args };
            let stop = self.dispatch(
                &req, consumed, inline, &mut run, &rbuf, &settings, &view, now,
            );
            self.parser.args = args;
            self.parser.inline_buf = inline_buf;
            if stop == Stop::Wait {
                break;
            }
            consumed += len;
        }
        if let Some(r) = run.take() {
            self.flush_run(&r, &rbuf);
        }
        self.flush_counters(&settings);
        self.rbuf = rbuf;
        self.rbuf.advance(consumed);
        if consumed > 0 {
            self.parser.reset();
        }
        result
    }

    /// Route one request. Returns `Stop::Wait` when a barrier holds it back (it stays in
    /// the buffer and is dispatched later).
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        req: &Request,
        offset: usize,
        inline: bool,
        run: &mut Option<Run>,
        rbuf: &[u8],
        settings: &Settings,
        view: &View,
        now: Instant,
    ) -> Stop {
        let cmd = commands::lookup(req);
        let name = req.arg(0);
        self.last_cmd = cmd.map(|c| c.name).unwrap_or("unknown");
        // Authentication gate.
        if !self.authenticated {
            let allowed = matches!(
                cmd.map(|c| c.name),
                Some("auth" | "hello" | "quit" | "reset")
            );
            if !allowed {
                self.stats().request(class_index(cmd.map(|c| c.class)));
                self.flush_pending_run(run, rbuf);
                self.push_local_raw(reply::NOAUTH);
                return Stop::More;
            }
        }
        // Tunnel mode: everything goes to the dedicated connection, but QUIT and RESET.
        if self.mode == Mode::Tunnel {
            return self.dispatch_tunnel(req, cmd, run, rbuf, settings);
        }
        if cmd.is_none() && name.eq_ignore_ascii_case(b"proxy") && self.mode != Mode::Multi {
            self.stats().request(class_index(Some(Class::Connection)));
            self.flush_pending_run(run, rbuf);
            self.proxy_command(req, settings, view, now);
            return Stop::More;
        }
        let Some(cmd) = cmd else {
            // Unknown to the table: the master answers (module command or an error).
            self.stats().request(class_index(None));
            if matches!(self.mode, Mode::Multi | Mode::Watch) {
                return self.dispatch_dedicated_mode(req, None, run, rbuf, settings, view);
            }
            return self.send_to_master(req, offset, inline, run, rbuf, view, now, Kind::Write);
        };
        self.stats().request(class_index(Some(cmd.class)));
        if settings.deny.denies(cmd) {
            self.flush_pending_run(run, rbuf);
            self.push_local_error(&format!(
                "NOPERM the '{}' command is disabled by the proxy (deny_commands)",
                String::from_utf8_lossy(name).to_lowercase()
            ));
            return Stop::More;
        }
        if let Some(user) = &self.user {
            if !user.may_run(cmd) {
                self.flush_pending_run(run, rbuf);
                self.push_local_error(&format!(
                    "NOPERM this user has no permissions to run the '{}' command",
                    cmd.name
                ));
                return Stop::More;
            }
            if !user.all_keys() {
                let mut ok = true;
                commands::for_each_key(cmd, req, |i| ok &= user.may_touch(req.arg(i)));
                if !ok {
                    self.flush_pending_run(run, rbuf);
                    self.push_local_error("NOPERM this user has no permissions to access one of the keys used as arguments");
                    return Stop::More;
                }
            }
        }
        if matches!(self.mode, Mode::Multi | Mode::Watch) {
            return self.dispatch_dedicated_mode(req, Some(cmd), run, rbuf, settings, view);
        }
        match cmd.class {
            Class::Connection => {
                self.flush_pending_run(run, rbuf);
                self.local_command(req, cmd, settings, view)
            }
            Class::Transaction => self.transaction(req, cmd, run, rbuf, settings, view),
            Class::PubSub => self.pubsub(req, cmd, offset, inline, run, rbuf, view, now),
            _ if commands::is_blocking(cmd, req) => {
                if name.eq_ignore_ascii_case(b"wait") {
                    self.flush_pending_run(run, rbuf);
                    return self.wait_command(req, settings, view, now);
                }
                self.blocking(req, run, rbuf, view)
            }
            Class::Read => self.read(req, cmd, offset, inline, run, rbuf, settings, view, now),
            Class::Write | Class::Admin => {
                if name.eq_ignore_ascii_case(b"monitor") {
                    return self.enter_tunnel(req, run, rbuf, view);
                }
                let wait = if settings.policy.rules.iter().any(|r| r.wait.is_some()) {
                    settings
                        .policy
                        .resolve(cmd, |f| commands::for_each_key(cmd, req, |i| f(req.arg(i))))
                        .wait
                } else {
                    None
                };
                let kind = match wait {
                    Some(w) => Kind::Durable(w),
                    None => Kind::Write,
                };
                self.send_to_master(req, offset, inline, run, rbuf, view, now, kind)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        offset: usize,
        inline: bool,
        run: &mut Option<Run>,
        rbuf: &[u8],
        settings: &Settings,
        view: &View,
        now: Instant,
    ) -> Stop {
        let policy = &settings.policy;
        let resolved = policy.resolve(cmd, |f| commands::for_each_key(cmd, req, |i| f(req.arg(i))));
        self.count_hit(resolved.rule);
        let sess = SessionReads {
            writes_in_flight: self.writes_in_flight > 0,
            last_write_ack: self.last_write_ack,
            prefer: self.prefer,
            turn: self.turn,
        };
        let d = router::route_read(&resolved.level, &sess, policy, view, now);
        self.turn = self.turn.wrapping_add(1);
        match d.target {
            Target::Replica(i) => {
                let Some(r) = view.replicas.get(i) else {
                    return Stop::More;
                };
                if self.dedicated_in_flight > 0 {
                    return self.barrier(run, rbuf);
                }
                self.stats().route(1, d.reason);
                if let Some(s) = r.staleness_ms(now) {
                    self.stats()
                        .staleness
                        .observe(s.saturating_mul(1000), &STALENESS_BOUNDS_US);
                }
                self.prefer = Some(i);
                let backend = r.backend.clone();
                self.send_shared(
                    &backend,
                    req,
                    offset,
                    inline,
                    run,
                    rbuf,
                    Kind::ReplicaRead {
                        retry: req.buf.len() as u32,
                    },
                    true,
                    now,
                );
                Stop::More
            }
            Target::Master => {
                self.stats().route(0, d.reason);
                self.master_read(req, offset, inline, run, rbuf, view, now)
            }
            Target::Reject => {
                self.stats().route(2, d.reason);
                self.flush_pending_run(run, rbuf);
                self.push_local_error(&reject_message(d, &resolved.level, view, policy));
                Stop::More
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn master_read(
        &mut self,
        req: &Request,
        offset: usize,
        inline: bool,
        run: &mut Option<Run>,
        rbuf: &[u8],
        view: &View,
        now: Instant,
    ) -> Stop {
        let Some(m) = view.master.as_ref() else {
            self.flush_pending_run(run, rbuf);
            self.push_local_error("ERR redsplit: no master is known");
            return Stop::More;
        };
        if self.dedicated_in_flight > 0 {
            return self.barrier(run, rbuf);
        }
        let backend = m.backend.clone();
        self.send_shared(
            &backend,
            req,
            offset,
            inline,
            run,
            rbuf,
            Kind::Forward,
            true,
            now,
        );
        Stop::More
    }

    #[allow(clippy::too_many_arguments)]
    fn send_to_master(
        &mut self,
        req: &Request,
        offset: usize,
        inline: bool,
        run: &mut Option<Run>,
        rbuf: &[u8],
        view: &View,
        now: Instant,
        kind: Kind,
    ) -> Stop {
        let d = router::route_write(view);
        if view.master.is_none() && view.switching {
            // A planned failover: hold the write (and what follows it) until the new
            // master is known, for at most `hold_writes_ms`.
            let hold = self
                .proxy
                .settings
                .load()
                .config
                .backend
                .sentinel
                .as_ref()
                .map_or(0, |s| s.hold_writes_ms);
            let deadline = *self
                .master_wait
                .get_or_insert(now + Duration::from_millis(hold));
            if now < deadline {
                if self.view_rx.is_none() {
                    self.view_rx = Some(self.proxy.view_version.subscribe());
                }
                return self.barrier(run, rbuf);
            }
        }
        let Some(m) = view.master.as_ref().filter(|_| d.target == Target::Master) else {
            self.stats().route(2, Reason::NoMaster);
            self.flush_pending_run(run, rbuf);
            self.push_local_error(if view.switching {
                "ERR redsplit: no master is known (a failover is under way)"
            } else {
                "ERR redsplit: no master is known"
            });
            return Stop::More;
        };
        // A write waits for this session's replica reads (they may need a retry on the
        // master first) and for its dedicated connection to be idle.
        if self.replica_reads_in_flight > 0 || self.dedicated_in_flight > 0 {
            return self.barrier(run, rbuf);
        }
        self.stats().route(0, Reason::Write);
        let backend = m.backend.clone();
        if let Kind::Durable(_) = kind {
            self.flush_pending_run(run, rbuf);
            self.send_shared(&backend, req, offset, inline, run, rbuf, kind, false, now);
            self.flush_pending_run(run, rbuf);
            self.send_bytes_shared(&backend, ROLE, Kind::RoleProbe { wait: None }, now);
            self.proxy.monitor.poll_now();
        } else {
            self.send_shared(&backend, req, offset, inline, run, rbuf, kind, false, now);
        }
        Stop::More
    }

    /// Hold the rest of the buffer until in-flight requests complete.
    fn barrier(&mut self, run: &mut Option<Run>, rbuf: &[u8]) -> Stop {
        self.flush_pending_run(run, rbuf);
        Stop::Wait
    }

    fn flush_pending_run(&mut self, run: &mut Option<Run>, rbuf: &[u8]) {
        if let Some(r) = run.take() {
            self.flush_run(&r, rbuf);
        }
    }

    /// Queue `req` for `backend`'s shared connection (extending the current run when
    /// possible).
    #[allow(clippy::too_many_arguments)]
    fn send_shared(
        &mut self,
        backend: &Arc<Backend>,
        req: &Request,
        offset: usize,
        inline: bool,
        run: &mut Option<Run>,
        rbuf: &[u8],
        kind: Kind,
        read: bool,
        now: Instant,
    ) {
        let key = ConnKey {
            db: self.db,
            resp3: self.resp3,
        };
        let source = match self.source_for(backend, key) {
            Ok(i) => i,
            Err(e) => {
                self.flush_pending_run(run, rbuf);
                self.fail_request(kind, req.buf, &e, now);
                return;
            }
        };
        let slot = match self.sources.get_mut(source) {
            Some(s) => {
                s.served += 1;
                s.slot
            }
            None => 0,
        };
        let silent = self.take_silent();
        self.push_pending(Pending {
            slot,
            kind,
            path: PATH_SHARED,
            silent,
            read,
            sent: now,
        });
        if let Kind::ReplicaRead { .. } = kind {
            self.retry_buf.extend_from_slice(req.buf);
        }
        if inline {
            self.flush_pending_run(run, rbuf);
            if let Some(s) = self.sources.get(source) {
                if let Err(e) = s.conn.send(req.buf, &self.sink, s.slot, 1) {
                    self.handle.inbox.push_failed(slot, &e, 1);
                }
            }
            return;
        }
        let len = req.buf.len();
        match run {
            Some(r) if r.source == source && !r.dedicated && !r.retry && r.end == offset => {
                r.end += len;
                r.count += 1;
            }
            _ => {
                self.flush_pending_run(run, rbuf);
                *run = Some(Run {
                    source,
                    dedicated: false,
                    retry: false,
                    start: offset,
                    end: offset + len,
                    count: 1,
                });
            }
        }
    }

    /// Queue bytes the proxy itself makes for the master's shared connection.
    fn send_bytes_shared(
        &mut self,
        backend: &Arc<Backend>,
        bytes: &[u8],
        kind: Kind,
        now: Instant,
    ) {
        let key = ConnKey {
            db: self.db,
            resp3: self.resp3,
        };
        match self.source_for(backend, key) {
            Ok(i) => {
                let Some(s) = self.sources.get(i) else { return };
                let slot = s.slot;
                let res = s.conn.send(bytes, &self.sink, slot, 1);
                self.push_pending(Pending {
                    slot,
                    kind,
                    path: PATH_SHARED,
                    silent: false,
                    read: false,
                    sent: now,
                });
                if let Err(e) = res {
                    self.handle.inbox.push_failed(slot, &e, 1);
                }
            }
            Err(e) => self.fail_request(kind, bytes, &e, now),
        }
    }

    fn flush_run(&mut self, r: &Run, rbuf: &[u8]) {
        let bytes = rbuf.get(r.start..r.end).unwrap_or_default();
        if r.dedicated {
            if let Some(d) = &self.dedicated {
                if let Err(e) = d.conn.send(bytes, &self.sink, d.slot, r.count) {
                    self.handle.inbox.push_failed(d.slot, &e, r.count);
                }
            }
            return;
        }
        if let Some(s) = self.sources.get(r.source) {
            let slot = if r.retry { s.retry_slot } else { s.slot };
            if let Err(e) = s.conn.send(bytes, &self.sink, slot, r.count) {
                self.handle.inbox.push_failed(slot, &e, r.count);
            }
        }
    }

    /// A request that could not be sent at all: answer it now, in order.
    fn fail_request(&mut self, kind: Kind, bytes: &[u8], err: &BackendError, now: Instant) {
        if let Kind::ReplicaRead { .. } = kind {
            // Try the master instead.
            let view = self.proxy.view.load_full();
            if let Some(m) = view.master.as_ref() {
                let backend = m.backend.clone();
                self.stats().retries += 1;
                self.send_bytes_shared(&backend, bytes, Kind::Forward, now);
                return;
            }
        }
        self.stats().backend_failures += 1;
        if matches!(kind, Kind::RoleProbe { .. }) {
            return;
        }
        self.push_local_error(&format!("ERR {}", err.message));
    }

    fn source_for(&mut self, backend: &Arc<Backend>, key: ConnKey) -> Result<usize, BackendError> {
        if let Some(i) = self
            .sources
            .iter()
            .position(|s| s.backend == backend.id && s.key == key)
        {
            let failed = self.sources.get(i).is_some_and(|s| s.conn.is_failed());
            if !failed {
                return Ok(i);
            }
            let s = self.sources.swap_remove(i);
            self.release_slot(s.slot);
            self.release_slot(s.retry_slot);
        }
        let conn = backend.pool.get(key, self.id)?;
        let slot = self.alloc_slot();
        let retry_slot = self.alloc_slot();
        self.sources.push(Source {
            backend: backend.id,
            backend_ref: backend.clone(),
            served: 0,
            key,
            conn,
            slot,
            retry_slot,
        });
        Ok(self.sources.len() - 1)
    }

    fn alloc_slot(&mut self) -> u16 {
        if let Some(i) = (0..self.slot_used.len()).find(|i| {
            !self.slot_used.get(*i).copied().unwrap_or(true)
                && self.slot_refs.get(*i).copied().unwrap_or(1) == 0
        }) {
            if let Some(u) = self.slot_used.get_mut(i) {
                *u = true;
            }
            return i as u16;
        }
        self.slot_used.push(true);
        self.slot_refs.push(0);
        (self.slot_used.len() - 1) as u16
    }

    fn release_slot(&mut self, slot: u16) {
        if let Some(u) = self.slot_used.get_mut(slot as usize) {
            *u = false;
        }
    }

    fn push_pending(&mut self, p: Pending) {
        if p.slot != LOCAL {
            if let Some(r) = self.slot_refs.get_mut(p.slot as usize) {
                *r += 1;
            }
            match p.path {
                PATH_SHARED => self.shared_in_flight += 1,
                PATH_DEDICATED => self.dedicated_in_flight += 1,
                _ => {}
            }
            match p.kind {
                Kind::Write | Kind::Durable(_) | Kind::Exec => self.writes_in_flight += 1,
                Kind::ReplicaRead { .. } => self.replica_reads_in_flight += 1,
                _ => {}
            }
        }
        self.pending.push_back(p);
    }

    fn take_silent(&mut self) -> bool {
        match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        }
    }

    /// A reload happened: re-resolve the user (permissions may have changed; a removed
    /// user must authenticate again).
    fn on_new_settings(&mut self, settings: &Settings) {
        if self.settings_gen != 0 {
            if !settings.users.required() {
                self.authenticated = true;
                self.user = None;
            } else if let Some(u) = self.user.take() {
                self.user = settings.users.by_name(&u.name);
                self.authenticated = self.user.is_some();
            } else {
                // Authenticated while no users existed; users were added since.
                self.authenticated = false;
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
        let live: Vec<u32> = view
            .master
            .iter()
            .map(|m| m.backend.id)
            .chain(view.replicas.iter().map(|r| r.backend.id))
            .collect();
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
            } else {
                i += 1;
            }
        }
        let master = view.master.as_ref().map(|m| m.backend.id);
        if self
            .dedicated
            .as_ref()
            .is_some_and(|d| Some(d.backend) != master)
            && self.dedicated_in_flight == 0
            && self.mode == Mode::Normal
        {
            if let Some(d) = self.dedicated.take() {
                d.conn.close("the master changed");
                self.release_slot(d.slot);
            }
        }
    }

    // ---------------------------------------------------------------- dedicated

    /// The dedicated master connection, opened (or reopened) as needed.
    fn dedicated_conn(&mut self, view: &View) -> Result<(), String> {
        let key = ConnKey {
            db: self.db,
            resp3: self.resp3,
        };
        let master = view
            .master
            .as_ref()
            .ok_or_else(|| "ERR redsplit: no master is known".to_string())?;
        if let Some(d) = &self.dedicated {
            if d.backend == master.backend.id && !d.conn.is_failed() && d.key == key {
                return Ok(());
            }
        }
        if let Some(d) = self.dedicated.take() {
            d.conn.close("replaced");
            self.release_slot(d.slot);
        }
        let conn = master.backend.pool.dedicated(key);
        let slot = self.alloc_slot();
        self.dedicated = Some(Dedicated {
            conn,
            slot,
            backend: master.backend.id,
            key,
        });
        Ok(())
    }

    fn send_dedicated(&mut self, req: &Request, kind: Kind, now: Instant) {
        let Some(d) = &self.dedicated else { return };
        let slot = d.slot;
        let count = if kind == Kind::Tunnel { 0 } else { 1 };
        let res = d.conn.send(req.buf, &self.sink, slot, count);
        if kind == Kind::Tunnel {
            if let Err(e) = res {
                self.push_local_error(&format!("ERR {}", e.message));
                self.closing = true;
            }
            return;
        }
        let silent = self.take_silent();
        self.push_pending(Pending {
            slot,
            kind,
            path: PATH_DEDICATED,
            silent,
            read: false,
            sent: now,
        });
        if let Err(e) = res {
            self.handle.inbox.push_failed(slot, &e, 1);
        }
    }

    fn dispatch_dedicated_mode(
        &mut self,
        req: &Request,
        cmd: Option<&'static Command>,
        run: &mut Option<Run>,
        rbuf: &[u8],
        _settings: &Settings,
        view: &View,
    ) -> Stop {
        self.flush_pending_run(run, rbuf);
        let now = Instant::now();
        let name = cmd.map(|c| c.name).unwrap_or("");
        match (name, cmd) {
            ("quit", _) => {
                self.push_local_raw(reply::OK);
                self.closing = true;
                return Stop::More;
            }
            ("reset", Some(cmd)) => {
                if !self.pending.is_empty() {
                    return Stop::Wait;
                }
                return self.local_command(req, cmd, _settings, view);
            }
            (n, Some(cmd)) if n == "auth" || n == "hello" || n.starts_with("client|") => {
                if self.mode == Mode::Multi {
                    self.push_local_error("ERR Command not allowed inside a transaction");
                    return Stop::More;
                }
                return self.local_command(req, cmd, _settings, view);
            }
            _ => {}
        }
        if self.shared_in_flight > 0 {
            return Stop::Wait;
        }
        if let Err(e) = self.dedicated_conn(view) {
            self.push_local_error(&e);
            return Stop::More;
        }
        let mut kind = Kind::Forward;
        match (self.mode, name) {
            (Mode::Multi, "exec") => {
                kind = Kind::Exec;
                self.mode = Mode::Normal;
            }
            (Mode::Multi, "discard") => {
                self.mode = Mode::Normal;
                self.multi_select = None;
            }
            (Mode::Watch, "unwatch") => self.mode = Mode::Normal,
            (Mode::Watch, "multi") => self.mode = Mode::Multi,
            (Mode::Watch, "exec") => {
                self.push_local_error("ERR EXEC without MULTI");
                return Stop::More;
            }
            (Mode::Watch, "discard") => {
                self.push_local_error("ERR DISCARD without MULTI");
                return Stop::More;
            }
            (Mode::Multi, "select") => {
                if let Some(db) = parse_int(req.arg(1)).and_then(|d| u32::try_from(d).ok()) {
                    self.multi_select = Some(db);
                }
            }
            (Mode::Watch, "select") => match self.check_select(req) {
                Ok(db) => self.db = db,
                Err(e) => {
                    self.push_local_error(&e);
                    return Stop::More;
                }
            },
            _ => {}
        }
        if self.mode != Mode::Multi && cmd.is_some_and(|c| commands::is_blocking(c, req)) {
            kind = Kind::Blocking;
            self.blocking_in_flight = true;
            self.set_flags("b");
            if let Some(d) = &self.dedicated {
                d.conn.blocking.store(true, Ordering::Relaxed);
            }
        }
        self.send_dedicated(req, kind, now);
        Stop::More
    }

    fn blocking(&mut self, req: &Request, run: &mut Option<Run>, rbuf: &[u8], view: &View) -> Stop {
        self.flush_pending_run(run, rbuf);
        if !self.pending.is_empty() {
            return Stop::Wait;
        }
        if let Err(e) = self.dedicated_conn(view) {
            self.push_local_error(&e);
            return Stop::More;
        }
        if let Some(d) = &self.dedicated {
            d.conn.blocking.store(true, Ordering::Relaxed);
        }
        self.blocking_in_flight = true;
        self.set_flags("b");
        self.send_dedicated(req, Kind::Blocking, Instant::now());
        Stop::More
    }

    fn transaction(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        run: &mut Option<Run>,
        rbuf: &[u8],
        settings: &Settings,
        view: &View,
    ) -> Stop {
        self.flush_pending_run(run, rbuf);
        match cmd.name {
            "multi" | "watch" => {
                if !self.pending.is_empty() {
                    return Stop::Wait;
                }
                if let Err(e) = self.dedicated_conn(view) {
                    self.push_local_error(&e);
                    return Stop::More;
                }
                self.mode = if cmd.name == "multi" {
                    Mode::Multi
                } else {
                    Mode::Watch
                };
                self.multi_select = None;
                let _ = settings;
                self.send_dedicated(req, Kind::Forward, Instant::now());
            }
            "exec" => self.push_local_error("ERR EXEC without MULTI"),
            "discard" => self.push_local_error("ERR DISCARD without MULTI"),
            _ => self.push_local_raw(reply::OK), // UNWATCH with nothing watched
        }
        Stop::More
    }

    // ---------------------------------------------------------------- pub/sub

    #[allow(clippy::too_many_arguments)]
    fn pubsub(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        offset: usize,
        inline: bool,
        run: &mut Option<Run>,
        rbuf: &[u8],
        view: &View,
        now: Instant,
    ) -> Stop {
        match cmd.name {
            "subscribe" | "psubscribe" | "ssubscribe" => self.enter_tunnel(req, run, rbuf, view),
            "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
                // Not subscribed: Redis answers one frame per channel, with count 0.
                self.flush_pending_run(run, rbuf);
                let kind = Value::bulk(cmd.name);
                let frames: Vec<Value> = if req.argc() <= 1 {
                    vec![Value::Null]
                } else {
                    (1..req.argc()).map(|i| Value::bulk(req.arg(i))).collect()
                };
                let mut out = BytesMut::new();
                for ch in frames {
                    let v = vec![kind.clone(), ch, Value::Int(0)];
                    let v = if self.resp3 {
                        Value::Push(v)
                    } else {
                        Value::Array(v)
                    };
                    v.encode(self.resp3, &mut out);
                }
                self.push_local_bytes(&out);
                Stop::More
            }
            _ => self.send_to_master(req, offset, inline, run, rbuf, view, now, Kind::Forward),
        }
    }

    fn enter_tunnel(
        &mut self,
        req: &Request,
        run: &mut Option<Run>,
        rbuf: &[u8],
        view: &View,
    ) -> Stop {
        self.flush_pending_run(run, rbuf);
        if !self.pending.is_empty() {
            return Stop::Wait;
        }
        if let Err(e) = self.dedicated_conn(view) {
            self.push_local_error(&e);
            return Stop::More;
        }
        let Some(d) = &self.dedicated else {
            return Stop::More;
        };
        d.conn.set_stream(&self.sink, d.slot);
        let slot = d.slot;
        self.mode = Mode::Tunnel;
        let name = req.arg(0);
        self.set_flags(if name.eq_ignore_ascii_case(b"monitor") {
            "O"
        } else if name.eq_ignore_ascii_case(b"client") {
            "t"
        } else {
            "P"
        });
        self.push_pending(Pending {
            slot,
            kind: Kind::Tunnel,
            path: PATH_DEDICATED,
            silent: false,
            read: false,
            sent: Instant::now(),
        });
        self.send_dedicated(req, Kind::Tunnel, Instant::now());
        Stop::More
    }

    fn dispatch_tunnel(
        &mut self,
        req: &Request,
        cmd: Option<&'static Command>,
        run: &mut Option<Run>,
        rbuf: &[u8],
        settings: &Settings,
    ) -> Stop {
        self.flush_pending_run(run, rbuf);
        match cmd.map(|c| c.name) {
            Some("quit") => {
                self.end_tunnel();
                self.push_local_raw(reply::OK);
                self.closing = true;
            }
            Some("reset") => {
                self.end_tunnel();
                let view = self.proxy.view.load_full();
                if let Some(c) = cmd {
                    return self.local_command(req, c, settings, &view);
                }
            }
            _ => self.send_dedicated(req, Kind::Tunnel, Instant::now()),
        }
        Stop::More
    }

    /// Leave tunnel mode: the dedicated connection is closed (its server-side state goes
    /// with it) after the frames already received are forwarded.
    fn end_tunnel(&mut self) {
        self.drain();
        if let Some(p) = self.pending.front() {
            if p.kind == Kind::Tunnel {
                let slot = p.slot;
                self.pending.pop_front();
                if let Some(r) = self.slot_refs.get_mut(slot as usize) {
                    *r = r.saturating_sub(1);
                }
                self.dedicated_in_flight = self.dedicated_in_flight.saturating_sub(1);
                let mut st = self.handle.inbox.state.lock();
                if let Some(q) = st.slots.get_mut(slot as usize) {
                    q.items.clear();
                    q.data.clear();
                }
            }
        }
        if let Some(d) = self.dedicated.take() {
            d.conn.close("client left pub/sub");
            self.release_slot(d.slot);
        }
        self.mode = Mode::Normal;
        self.set_flags("");
    }

    // ---------------------------------------------------------------- WAIT

    fn wait_command(
        &mut self,
        req: &Request,
        _settings: &Settings,
        view: &View,
        now: Instant,
    ) -> Stop {
        if req.argc() != 3 {
            self.push_local_error("ERR wrong number of arguments for 'wait' command");
            return Stop::More;
        }
        let (Some(n), Some(t)) = (parse_int(req.arg(1)), parse_int(req.arg(2))) else {
            self.push_local_error("ERR value is not an integer or out of range");
            return Stop::More;
        };
        if t < 0 {
            self.push_local_error("ERR timeout is negative");
            return Stop::More;
        }
        if self.replica_reads_in_flight > 0 || self.dedicated_in_flight > 0 {
            return Stop::Wait;
        }
        let Some(m) = view.master.as_ref() else {
            self.push_local_error("ERR redsplit: no master is known");
            return Stop::More;
        };
        let backend = m.backend.clone();
        let n = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        self.send_bytes_shared(
            &backend,
            ROLE,
            Kind::RoleProbe {
                wait: Some((n, t as u64)),
            },
            now,
        );
        self.proxy.monitor.poll_now();
        Stop::More
    }

    fn count_replicas_at(&self, target: u64, master: Option<u32>) -> u32 {
        let view = self.proxy.view.load();
        if view
            .master
            .as_ref()
            .is_some_and(|m| Some(m.backend.id) != master)
        {
            return 0;
        }
        view.replicas
            .iter()
            .filter(|r| {
                r.reachable
                    && matches!(
                        r.health,
                        crate::topology::Health::Ok | crate::topology::Health::LinkDown
                    )
            })
            .filter(|r| r.offset.is_some_and(|o| o >= target))
            .count() as u32
    }

    /// Check a held reply; `true` when it was released.
    fn check_held(&mut self, now: Instant) -> bool {
        let Some(h) = &self.held else { return true };
        let have = self.count_replicas_at(h.target, h.master);
        let done = have >= h.replicas;
        let expired = h.deadline.is_some_and(|d| now >= d);
        if !done && !expired {
            if self.view_rx.is_none() {
                self.view_rx = Some(self.proxy.view_version.subscribe());
            }
            if let Some(rx) = self.view_rx.as_mut() {
                rx.mark_unchanged();
            }
            self.proxy.monitor.poll_now();
            return false;
        }
        let Some(h) = self.held.take() else {
            return true;
        };
        self.held_sleep = None;
        self.view_rx = None;
        let mut out = BytesMut::new();
        match h.reply {
            Some(reply) => {
                if done {
                    self.proxy
                        .metrics
                        .durable_ok
                        .fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(&reply);
                } else {
                    self.proxy
                        .metrics
                        .durable_timeout
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats().errors += 1;
                    Value::error(format!(
                        "ERR redsplit: write applied on the master but reached only {have} of {} replicas within {} ms",
                        h.replicas,
                        now.duration_since(h.started).as_millis()
                    ))
                    .encode(self.resp3, &mut out);
                }
            }
            None => Value::Int(i64::from(have)).encode(self.resp3, &mut out),
        }
        if !h.silent {
            self.wbuf.extend_from_slice(&out);
            self.stats().replies += 1;
        }
        true
    }

    // ---------------------------------------------------------------- replies

    /// Move every completed reply, in request order, to the output buffer.
    fn drain(&mut self) {
        let now = Instant::now();
        self.replies_at = now;
        let handle = self.handle.clone();
        let inbox = &handle.inbox;
        let mut st = inbox.state.lock();
        loop {
            if let Some(h) = &self.held {
                // A durable write's reply waits for the ROLE after it, then for replicas.
                let probe_next = h.target == u64::MAX
                    && matches!(
                        self.pending.front(),
                        Some(Pending {
                            kind: Kind::RoleProbe { wait: None },
                            ..
                        })
                    );
                if !probe_next {
                    drop(st);
                    if !self.check_held(now) {
                        return;
                    }
                    st = inbox.state.lock();
                    continue;
                }
            }
            let Some(p) = self.pending.front().copied() else {
                break;
            };
            if p.slot == LOCAL {
                let Some(Item::Reply(len)) = self.local.front() else {
                    break;
                };
                let len = *len;
                if !p.silent {
                    self.wbuf
                        .extend_from_slice(self.local.data.get(..len).unwrap_or_default());
                    self.stats().replies += 1;
                }
                self.local.consume();
                self.pending.pop_front();
                continue;
            }
            let Some(q) = st.slots.get_mut(p.slot as usize) else {
                break;
            };
            if p.kind == Kind::Tunnel {
                // Forward every frame that arrived.
                while let Some(item) = q.items.pop_front() {
                    match item {
                        Item::Reply(len) => {
                            let frame = q.data.get(..len).unwrap_or_default();
                            self.wbuf.extend_from_slice(frame);
                            q.data.advance(len);
                        }
                        Item::Failed(e) => {
                            Value::error(format!("ERR {}", e.message))
                                .encode(self.resp3, &mut self.wbuf);
                            self.closing = true;
                        }
                    }
                }
                q.data.clear();
                if self.closing {
                    self.pending.pop_front();
                }
                break;
            }
            if self.wbuf.is_empty() && self.take_whole_slot(q, now) {
                continue;
            }
            let Some(item) = q.items.front() else { break };
            match item {
                Item::Reply(len) => {
                    let len = *len;
                    let frame = q.data.get(..len).unwrap_or_default();
                    if let Kind::ReplicaRead { retry } = p.kind {
                        if retryable_reply(frame) {
                            q.consume();
                            let bytes = BytesMut::from(
                                self.retry_buf.get(..retry as usize).unwrap_or_default(),
                            );
                            self.complete(&p, now);
                            self.retry_on_master(p, &bytes, now);
                            continue;
                        }
                    }
                    self.finish_reply(&p, frame, now);
                    q.consume();
                }
                Item::Failed(e) => {
                    let e = e.clone();
                    q.consume();
                    if let Kind::ReplicaRead { retry } = p.kind {
                        let bytes = BytesMut::from(
                            self.retry_buf.get(..retry as usize).unwrap_or_default(),
                        );
                        self.complete(&p, now);
                        self.retry_on_master(p, &bytes, now);
                        continue;
                    }
                    self.stats().backend_failures += 1;
                    self.complete(&p, now);
                    self.pending.pop_front();
                    match p.kind {
                        Kind::RoleProbe { wait: Some(_) } => {}
                        Kind::RoleProbe { wait: None } => {
                            // The durable write's reply is held; release it as an error.
                            if let Some(h) = self.held.as_mut() {
                                h.target = u64::MAX;
                                h.deadline = Some(now);
                            }
                        }
                        _ => {
                            if !p.silent {
                                self.stats().errors += 1;
                                self.stats().replies += 1;
                                Value::error(format!("ERR {}", e.message))
                                    .encode(self.resp3, &mut self.wbuf);
                            }
                        }
                    }
                    if p.kind == Kind::Blocking {
                        self.end_blocking();
                    }
                }
            }
        }
    }

    /// When everything queued in `q` is the replies to the next requests, each forwarded
    /// as it came (the common case: a batch of plain reads or writes), settle them and
    /// hand the slot's buffer over as the output buffer, which must be empty, instead of
    /// copying the bytes. False (and nothing done) otherwise.
    fn take_whole_slot(&mut self, q: &mut SlotQueue, now: Instant) -> bool {
        let Some(slot) = self.pending.front().map(|p| p.slot) else {
            return false;
        };
        let whole = !q.items.is_empty()
            && q.items.len() <= self.pending.len()
            && q.frames().zip(self.pending.iter()).all(|(frame, p)| {
                frame.is_some_and(|f| p.slot == slot && !p.silent && forwarded_as_is(p.kind, f))
            });
        if !whole {
            return false;
        }
        for frame in q.frames().flatten() {
            if let Some(p) = self.pending.front().copied() {
                self.account_reply(&p, frame, now);
            }
        }
        q.items.clear();
        std::mem::swap(&mut self.wbuf, &mut q.data);
        q.data.clear();
        true
    }

    /// Bookkeeping when a remote request completes (before any retry).
    fn complete(&mut self, p: &Pending, now: Instant) {
        if let Some(r) = self.slot_refs.get_mut(p.slot as usize) {
            *r = r.saturating_sub(1);
        }
        match p.path {
            PATH_SHARED => self.shared_in_flight = self.shared_in_flight.saturating_sub(1),
            PATH_DEDICATED => self.dedicated_in_flight = self.dedicated_in_flight.saturating_sub(1),
            _ => {}
        }
        match p.kind {
            Kind::Write | Kind::Durable(_) | Kind::Exec => {
                self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
                self.last_write_ack = Some(now);
            }
            Kind::ReplicaRead { retry } => {
                self.replica_reads_in_flight = self.replica_reads_in_flight.saturating_sub(1);
                self.retry_buf
                    .advance((retry as usize).min(self.retry_buf.len()));
            }
            _ => {}
        }
        let us = match self.latency_memo {
            Some((sent, at, us)) if sent == p.sent && at == now => us,
            _ => {
                let us = now.saturating_duration_since(p.sent).as_micros() as u64;
                self.latency_memo = Some((p.sent, now, us));
                us
            }
        };
        if p.read {
            self.stats().read_latency.observe(us, &LATENCY_BOUNDS_US);
        } else if matches!(
            p.kind,
            Kind::Write | Kind::Durable(_) | Kind::Forward | Kind::Exec
        ) {
            self.stats().write_latency.observe(us, &LATENCY_BOUNDS_US);
        }
    }

    /// Send the front request (a failed replica read) again, to the master, through a
    /// slot of its own so that its reply cannot be confused with the master's other
    /// replies to this session.
    fn retry_on_master(&mut self, p: Pending, bytes: &[u8], now: Instant) {
        self.pending.pop_front();
        self.stats().retries += 1;
        let view = self.proxy.view.load_full();
        // The master, or while none is known (a failover), another healthy replica.
        let failed = self
            .sources
            .iter()
            .find(|s| s.slot == p.slot || s.retry_slot == p.slot)
            .map(|s| s.backend);
        let backend =
            match view.master.as_ref().filter(|m| !m.down) {
                Some(m) => m.backend.clone(),
                None => match view.replicas.iter().find(|r| {
                    r.health == crate::topology::Health::Ok && Some(r.backend.id) != failed
                }) {
                    Some(r) => r.backend.clone(),
                    None => {
                        self.answer_front(
                            p,
                            "ERR redsplit: the replica failed and no master is known",
                            now,
                        );
                        return;
                    }
                },
            };
        let key = ConnKey {
            db: self.db,
            resp3: self.resp3,
        };
        match self.source_for(&backend, key) {
            Ok(i) => {
                let Some(s) = self.sources.get(i) else { return };
                let slot = s.retry_slot;
                let res = s.conn.send(bytes, &self.sink, slot, 1);
                if let Some(r) = self.slot_refs.get_mut(slot as usize) {
                    *r += 1;
                }
                self.shared_in_flight += 1;
                self.pending.push_front(Pending {
                    slot,
                    kind: Kind::Forward,
                    path: PATH_SHARED,
                    silent: p.silent,
                    read: true,
                    sent: p.sent,
                });
                if let Err(e) = res {
                    self.handle.inbox.push_failed(slot, &e, 1);
                }
            }
            Err(e) => self.answer_front(p, &format!("ERR {}", e.message), now),
        }
    }

    /// Answer the request that was at the front with an error made here.
    fn answer_front(&mut self, p: Pending, msg: &str, now: Instant) {
        let mut data = Value::error(msg).to_bytes(self.resp3);
        let len = data.len();
        data.extend_from_slice(&self.local.data);
        self.local.data = data;
        self.local.items.push_front(Item::Reply(len));
        self.pending.push_front(Pending {
            slot: LOCAL,
            kind: Kind::Forward,
            path: PATH_LOCAL,
            silent: p.silent,
            read: true,
            sent: now,
        });
    }

    /// A reply for the front request arrived: forward it (or act on it).
    fn finish_reply(&mut self, p: &Pending, frame: &[u8], now: Instant) {
        if forwarded_as_is(p.kind, frame) {
            self.account_reply(p, frame, now);
            if !p.silent {
                self.wbuf.extend_from_slice(frame);
            }
            return;
        }
        self.settle(p, frame.len(), now);
        match p.kind {
            Kind::RoleProbe { wait } => {
                let offset = Decoded::parse(frame, self.resp3)
                    .and_then(|d| d.into_items())
                    .and_then(|items| items.get(1).and_then(|o| o.as_int()))
                    .and_then(|o| u64::try_from(o).ok());
                match wait {
                    Some((n, timeout_ms)) => {
                        let target = offset.unwrap_or(u64::MAX);
                        self.hold(Held {
                            target,
                            replicas: n,
                            deadline: (timeout_ms > 0)
                                .then(|| now + Duration::from_millis(timeout_ms)),
                            started: now,
                            reply: None,
                            silent: p.silent,
                            master: None,
                        });
                    }
                    None => {
                        if let Some(h) = self.held.as_mut() {
                            h.target = offset.unwrap_or(u64::MAX);
                        }
                    }
                }
            }
            Kind::Durable(w) => {
                // Hold the reply until `w.replicas` replicas reach the offset the
                // following ROLE reports.
                self.hold(Held {
                    target: u64::MAX,
                    replicas: w.replicas,
                    deadline: Some(now + Duration::from_millis(w.timeout_ms)),
                    started: now,
                    reply: Some(BytesMut::from(frame)),
                    silent: p.silent,
                    master: None,
                });
            }
            _ => {}
        }
    }

    /// Bookkeeping for a reply passed on unchanged: everything `finish_reply` does for
    /// it but the copy to the output buffer.
    fn account_reply(&mut self, p: &Pending, frame: &[u8], now: Instant) {
        self.settle(p, frame.len(), now);
        match p.kind {
            Kind::Exec => {
                if let Some(db) = self.multi_select.take() {
                    if matches!(frame.first(), Some(b'*')) && !frame.starts_with(b"*-1") {
                        self.db = db;
                    }
                }
            }
            Kind::Blocking => self.end_blocking(),
            Kind::Write if frame.starts_with(b"-READONLY") => {
                // The master we write to is not a master any more.
                self.proxy.monitor.poll_now();
                self.proxy.recheck.notify_one();
            }
            _ => {}
        }
        if is_error(frame) {
            self.stats().errors += 1;
        }
        if !p.silent {
            self.stats().replies += 1;
        }
    }

    /// The front request `p` is answered by a reply of `len` bytes: adjust the window,
    /// complete it and take it off the queue.
    fn settle(&mut self, p: &Pending, len: usize, now: Instant) {
        if p.path == PATH_SHARED {
            self.on_shared_reply(len);
        }
        self.complete(p, now);
        self.pending.pop_front();
    }

    /// Adjust the in-flight window (the `window` field) to a reply of `len` bytes.
    fn on_shared_reply(&mut self, len: usize) {
        let len = len as u64;
        self.reply_est = len.max(self.reply_est - self.reply_est / 16);
        let cap = if self.window_budget == 0 {
            self.window_max
        } else {
            u32::try_from(self.window_budget / self.reply_est.max(1))
                .unwrap_or(u32::MAX)
                .clamp(1, self.window_max)
        };
        self.window = self.window.saturating_add(1).min(cap);
    }

    fn hold(&mut self, mut h: Held) {
        h.master = self.proxy.view.load().master.as_ref().map(|m| m.backend.id);
        self.held_sleep = h
            .deadline
            .map(|d| Box::pin(tokio::time::sleep_until(d.into())));
        self.held = Some(Box::new(h));
    }

    fn end_blocking(&mut self) {
        self.blocking_in_flight = false;
        self.set_flags("");
        if let Some(d) = &self.dedicated {
            d.conn.blocking.store(false, Ordering::Relaxed);
        }
    }

    /// Publish the client's `CLIENT LIST` flags for others to see; the janitor's idle
    /// timeout spares `P` (pub/sub), `O` (MONITOR) and `b` (blocked), as Redis does.
    fn set_flags(&self, flags: &'static str) {
        self.handle.info.lock().flags = flags;
    }

    // ---------------------------------------------------------------- local replies

    fn push_local_raw(&mut self, bytes: &[u8]) {
        self.push_local_bytes(bytes);
    }

    fn push_local_bytes(&mut self, bytes: &[u8]) {
        let silent = self.take_silent();
        if self.pending.is_empty() {
            if !silent {
                self.wbuf.extend_from_slice(bytes);
                self.stats().replies += 1;
            }
            return;
        }
        self.local.data.extend_from_slice(bytes);
        self.local.items.push_back(Item::Reply(bytes.len()));
        self.pending.push_back(Pending {
            slot: LOCAL,
            kind: Kind::Forward,
            path: PATH_LOCAL,
            silent,
            read: false,
            sent: Instant::now(),
        });
    }

    fn push_local_value(&mut self, v: &Value) {
        let b = v.to_bytes(self.resp3);
        self.push_local_bytes(&b);
    }

    fn push_local_error(&mut self, msg: &str) {
        self.stats().errors += 1;
        self.stats().touch();
        self.push_local_value(&Value::error(msg));
    }

    // ---------------------------------------------------------------- local commands

    fn check_select(&self, req: &Request) -> Result<u32, String> {
        if req.argc() != 2 {
            return Err("ERR wrong number of arguments for 'select' command".into());
        }
        let n = parse_int(req.arg(1))
            .ok_or_else(|| "ERR value is not an integer or out of range".to_string())?;
        let dbs = i64::from(self.proxy.info.load().databases);
        if n < 0 || n >= dbs {
            return Err("ERR DB index is out of range".into());
        }
        Ok(n as u32)
    }

    fn local_command(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        view: &View,
    ) -> Stop {
        if !commands::arity_ok(cmd, req.argc()) {
            self.push_local_error(&format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.name
            ));
            return Stop::More;
        }
        match cmd.name {
            "ping" => match req.argc() {
                1 => self.push_local_raw(reply::PONG),
                2 => self.push_local_value(&Value::bulk(req.arg(1))),
                _ => self.push_local_error("ERR wrong number of arguments for 'ping' command"),
            },
            "echo" => self.push_local_value(&Value::bulk(req.arg(1))),
            "quit" => {
                self.push_local_raw(reply::OK);
                self.closing = true;
            }
            "select" => match self.check_select(req) {
                Ok(db) => {
                    self.db = db;
                    self.handle.info.lock().db = db;
                    self.push_local_raw(reply::OK);
                }
                Err(e) => self.push_local_error(&e),
            },
            "auth" => self.auth(req, settings),
            "hello" => self.hello(req, settings),
            "reset" => {
                if !self.pending.is_empty() {
                    return Stop::Wait;
                }
                if let Some(d) = self.dedicated.take() {
                    d.conn.close("client reset");
                    self.release_slot(d.slot);
                }
                self.mode = Mode::Normal;
                self.set_flags("");
                self.db = 0;
                self.resp3 = false;
                self.reply_mode = ReplyMode::On;
                self.multi_select = None;
                self.user = None;
                self.authenticated = !settings.users.required();
                {
                    let mut info = self.handle.info.lock();
                    info.db = 0;
                    info.resp = 2;
                    info.user = Box::default();
                }
                self.push_local_raw(b"+RESET\r\n");
            }
            _ if cmd.name.starts_with("client|") => {
                return self.client_command(req, cmd, settings, view)
            }
            _ => self.push_local_error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'",
                cmd.name
            )),
        }
        Stop::More
    }

    /// `PROXY STATUS | EXPLAIN cmd… | CONFIG | HELP`.
    fn proxy_command(&mut self, req: &Request, settings: &Settings, view: &View, now: Instant) {
        let sub = req.arg(1).to_ascii_lowercase();
        match sub.as_slice() {
            b"status" if req.argc() == 2 => {
                let v = introspect::status(view, settings, now);
                self.push_local_value(&v);
            }
            b"explain" if req.argc() >= 3 => {
                let args: Vec<&[u8]> = (2..req.argc()).map(|i| req.arg(i)).collect();
                let sess = SessionReads {
                    writes_in_flight: self.writes_in_flight > 0,
                    last_write_ack: self.last_write_ack,
                    prefer: None,
                    turn: self.turn,
                };
                let v = introspect::explain(&args, &sess, view, settings, now);
                self.push_local_value(&v);
            }
            b"config" if req.argc() == 2 => {
                if self.user.as_ref().is_some_and(|u| !u.is_admin()) {
                    self.push_local_error(
                        "NOPERM this user has no permissions to run the 'proxy|config' command",
                    );
                    return;
                }
                let v = introspect::config(settings);
                self.push_local_value(&v);
            }
            b"help" => {
                let v = Value::Array(introspect::HELP.iter().map(|l| Value::simple(*l)).collect());
                self.push_local_value(&v);
            }
            _ => self.push_local_error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try PROXY HELP.",
                String::from_utf8_lossy(req.arg(1))
            )),
        }
    }

    fn auth(&mut self, req: &Request, settings: &Settings) {
        let (user, pass) = match req.argc() {
            2 => (&b"default"[..], req.arg(1)),
            3 => (req.arg(1), req.arg(2)),
            _ => {
                self.push_local_error("ERR syntax error");
                return;
            }
        };
        if !settings.users.required() {
            if req.argc() == 2 {
                self.push_local_error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            } else if user == b"default" {
                self.push_local_raw(reply::OK);
            } else {
                self.push_local_raw(reply::WRONGPASS);
            }
            return;
        }
        match settings.users.check(user, pass) {
            Some(u) => {
                self.handle.info.lock().user = u.name.as_str().into();
                self.user = Some(u);
                self.authenticated = true;
                self.push_local_raw(reply::OK);
            }
            None => {
                tracing::info!(client = self.id, user = %String::from_utf8_lossy(user), "authentication failed");
                self.push_local_raw(reply::WRONGPASS);
            }
        }
    }

    fn hello(&mut self, req: &Request, settings: &Settings) {
        let mut proto = if self.resp3 { 3 } else { 2 };
        let mut i = 1;
        if req.argc() >= 2 {
            match parse_int(req.arg(1)) {
                Some(v) if v == 2 || v == 3 => proto = v,
                Some(_) => {
                    self.push_local_error("NOPROTO unsupported protocol version");
                    return;
                }
                None => {
                    self.push_local_error("ERR Protocol version is not an integer or out of range");
                    return;
                }
            }
            i = 2;
        }
        let mut auth: Option<(&[u8], &[u8])> = None;
        let mut setname: Option<&[u8]> = None;
        while i < req.argc() {
            let opt = req.arg(i);
            let more = req.argc() - i - 1;
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                auth = Some((req.arg(i + 1), req.arg(i + 2)));
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                setname = Some(req.arg(i + 1));
                i += 2;
            } else {
                self.push_local_error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                ));
                return;
            }
        }
        if let Some((u, p)) = auth {
            if settings.users.required() {
                match settings.users.check(u, p) {
                    Some(user) => {
                        self.handle.info.lock().user = user.name.as_str().into();
                        self.user = Some(user);
                        self.authenticated = true;
                    }
                    None => {
                        self.push_local_raw(reply::WRONGPASS);
                        return;
                    }
                }
            } else if u != b"default" {
                self.push_local_raw(reply::WRONGPASS);
                return;
            }
        }
        if !self.authenticated {
            self.push_local_error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }
        if let Some(n) = setname {
            if let Err(e) = valid_name(n) {
                self.push_local_error(e);
                return;
            }
            self.name = String::from_utf8_lossy(n).into_owned();
            self.handle.info.lock().name = self.name.as_str().into();
        }
        self.resp3 = proto == 3;
        self.handle.info.lock().resp = proto as u8;
        let version = self.proxy.info.load().redis_version.clone();
        let v = Value::Map(vec![
            (Value::bulk("server"), Value::bulk("redis")),
            (Value::bulk("version"), Value::bulk(version)),
            (Value::bulk("proto"), Value::Int(proto)),
            (Value::bulk("id"), Value::Int(self.id as i64)),
            (Value::bulk("mode"), Value::bulk("standalone")),
            (Value::bulk("role"), Value::bulk("master")),
            (Value::bulk("modules"), Value::Array(vec![])),
        ]);
        self.push_local_value(&v);
    }

    fn client_command(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        view: &View,
    ) -> Stop {
        let sub = cmd.name.trim_start_matches("client|");
        match sub {
            "id" => self.push_local_value(&Value::Int(self.id as i64)),
            "getname" => {
                if self.name.is_empty() {
                    self.push_local_value(&Value::Null)
                } else {
                    let n = self.name.clone();
                    self.push_local_value(&Value::bulk(n))
                }
            }
            "setname" => match valid_name(req.arg(2)) {
                Ok(()) => {
                    self.name = String::from_utf8_lossy(req.arg(2)).into_owned();
                    self.handle.info.lock().name = self.name.as_str().into();
                    self.push_local_raw(reply::OK);
                }
                Err(e) => self.push_local_error(e),
            },
            "info" => {
                let line = self.client_line(&self.handle.clone(), true);
                self.push_local_value(&Value::Verbatim(line));
            }
            "list" => {
                let mut out = String::new();
                let mut ids: Vec<u64> = self.proxy.sessions.iter().map(|e| *e.key()).collect();
                ids.sort_unstable();
                for id in ids {
                    if let Some(h) = self.proxy.sessions.get(&id).map(|e| e.value().clone()) {
                        out.push_str(&self.client_line(&h, h.id == self.id));
                    }
                }
                self.push_local_value(&Value::Verbatim(out));
            }
            "kill" => self.client_kill(req),
            "reply" => {
                let arg = req.arg(2);
                if arg.eq_ignore_ascii_case(b"on") {
                    self.reply_mode = ReplyMode::On;
                    self.push_local_raw(reply::OK);
                } else if arg.eq_ignore_ascii_case(b"off") {
                    self.reply_mode = ReplyMode::Off;
                } else if arg.eq_ignore_ascii_case(b"skip") {
                    self.reply_mode = ReplyMode::Skip;
                } else {
                    self.push_local_error("ERR syntax error");
                }
            }
            "no-evict" | "no-touch" => self.push_local_raw(reply::OK),
            "tracking" => {
                let on = req.arg(2).eq_ignore_ascii_case(b"on");
                if on {
                    let mut none = None;
                    return self.enter_tunnel(req, &mut none, &[], view);
                }
                self.push_local_raw(reply::OK);
            }
            "getredir" => self.push_local_value(&Value::Int(-1)),
            "trackinginfo" => self.push_local_value(&Value::Map(vec![
                (Value::bulk("flags"), Value::Array(vec![Value::bulk("off")])),
                (Value::bulk("redirect"), Value::Int(-1)),
                (Value::bulk("prefixes"), Value::Array(vec![])),
            ])),
            "unblock" => self.client_unblock(req),
            "caching" => self.push_local_error("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"),
            _ => {
                // PAUSE, UNPAUSE and anything newer: the master decides.
                let _ = settings;
                let mut none = None;
                return self.send_to_master(req, 0, true, &mut none, &[], view, Instant::now(), Kind::Forward);
            }
        }
        Stop::More
    }

    fn client_line(&self, h: &SessionHandle, me: bool) -> String {
        let info = h.info.lock().clone();
        let now = Instant::now();
        let idle = self
            .proxy
            .uptime_ms(now)
            .saturating_sub(h.last_active_ms.load(Ordering::Relaxed))
            / 1000;
        let (flags, multi, cmd) = if me {
            let f = match self.mode {
                Mode::Multi => "x",
                Mode::Tunnel => "P",
                _ if self.blocking_in_flight => "b",
                _ => "N",
            };
            (
                f.to_string(),
                if self.mode == Mode::Multi { 0 } else { -1 },
                self.last_cmd.to_string(),
            )
        } else {
            (
                if info.flags.is_empty() {
                    "N".to_string()
                } else {
                    info.flags.to_string()
                },
                -1,
                "NULL".to_string(),
            )
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}\n",
            h.id,
            h.peer,
            h.local,
            info.name,
            self.proxy.uptime_ms(now).saturating_sub(h.created_ms) / 1000,
            idle,
            flags,
            if me { self.db } else { info.db },
            multi,
            if cmd.is_empty() { "NULL" } else { &cmd },
            info.user_name(),
            if me { if self.resp3 { 3 } else { 2 } } else { info.resp.max(2) },
        )
    }

    fn client_kill(&mut self, req: &Request) {
        // CLIENT KILL addr:port | CLIENT KILL [ID id] [ADDR a] [LADDR a] [USER u] [SKIPME yes/no]
        let mut id = None;
        let mut addr = None;
        let mut laddr = None;
        let mut user = None;
        let mut skipme = true;
        let old_form = req.argc() == 3;
        if old_form {
            addr = Some(String::from_utf8_lossy(req.arg(2)).into_owned());
        } else {
            let mut i = 2;
            while i + 1 < req.argc() {
                let k = req.arg(i).to_ascii_lowercase();
                let v = String::from_utf8_lossy(req.arg(i + 1)).into_owned();
                match k.as_slice() {
                    b"id" => match v.parse::<u64>() {
                        Ok(n) => id = Some(n),
                        Err(_) => {
                            self.push_local_error("ERR client-id should be greater than 0");
                            return;
                        }
                    },
                    b"addr" => addr = Some(v),
                    b"laddr" => laddr = Some(v),
                    b"user" => user = Some(v),
                    b"skipme" => skipme = v.eq_ignore_ascii_case("yes"),
                    _ => {
                        self.push_local_error("ERR syntax error");
                        return;
                    }
                }
                i += 2;
            }
            if (req.argc() - 2) % 2 != 0 {
                self.push_local_error("ERR syntax error");
                return;
            }
        }
        let mut killed = 0;
        for e in self.proxy.sessions.iter() {
            let h = e.value();
            if skipme && h.id == self.id && !old_form {
                continue;
            }
            if id.is_some_and(|i| i != h.id)
                || addr.as_ref().is_some_and(|a| *a != h.peer.to_string())
                || laddr.as_ref().is_some_and(|a| *a != h.local.to_string())
                || user
                    .as_ref()
                    .is_some_and(|u| u != h.info.lock().user_name())
            {
                continue;
            }
            h.inbox.kill.store(true, Ordering::Relaxed);
            h.inbox.notify.notify();
            killed += 1;
        }
        if old_form {
            if killed == 0 {
                self.push_local_error("ERR No such client");
            } else {
                self.push_local_raw(reply::OK);
            }
        } else {
            self.push_local_value(&Value::Int(killed));
        }
    }

    fn client_unblock(&mut self, req: &Request) {
        let Some(id) = parse_int(req.arg(2)).and_then(|i| u64::try_from(i).ok()) else {
            self.push_local_error("ERR value is not an integer or out of range");
            return;
        };
        let found = self.proxy.sessions.get(&id).map(|e| e.value().clone());
        let _ = found;
        // Blocked clients wait on their own dedicated connections; the proxy does not
        // map their ids (yet the reply must be Redis's: 0 = not blocked here).
        self.push_local_value(&Value::Int(0));
    }
}

/// Events that wake the session.
enum Event {
    Progress,
    Closed,
    Error(String),
}

/// How much unparsed request data the session reads ahead: a little while it may not
/// dispatch (a blocking command or a held reply outstanding, `max_pipeline` requests in
/// flight, or its window full), so that a deep pipeline waits in the client's socket,
/// not in the proxy.
fn read_allowance(s: &Session, max_pipeline: usize) -> usize {
    if s.blocking_in_flight
        || s.held.is_some()
        || s.pending.len() >= max_pipeline.min(4096)
        || s.shared_in_flight >= s.window
    {
        // Keep reading a little, to notice a client that goes away while it waits.
        64 * 1024
    } else {
        usize::MAX
    }
}

/// Write whatever is buffered, ignoring errors (the connection is closing).
async fn flush_now<S: AsyncWrite + Unpin>(
    stream: &mut S,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if !wbuf.is_empty() {
        let res = tokio::time::timeout(Duration::from_secs(1), stream.write_all(wbuf)).await;
        wbuf.clear();
        res.map_err(|_| std::io::Error::other("timeout"))??;
    }
    stream.flush().await
}

/// Whether the reply `frame` to a request of `kind` goes to the client as it is, after
/// `account_reply`'s bookkeeping (rather than being retried, consumed, held or streamed).
fn forwarded_as_is(kind: Kind, frame: &[u8]) -> bool {
    match kind {
        Kind::RoleProbe { .. } | Kind::Tunnel => false,
        // A durable write's success is held until replicas have it; its error is not.
        Kind::Durable(_) => is_error(frame),
        Kind::ReplicaRead { .. } => !retryable_reply(frame),
        Kind::Forward | Kind::Write | Kind::Exec | Kind::Blocking => true,
    }
}

fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-') | Some(b'!'))
}

/// Replies from a replica that mean "ask the master instead".
fn retryable_reply(frame: &[u8]) -> bool {
    frame.starts_with(b"-LOADING")
        || frame.starts_with(b"-NOSCRIPT")
        || frame.starts_with(b"-MASTERDOWN")
}

fn valid_name(n: &[u8]) -> Result<(), &'static str> {
    if n.iter().any(|c| *c < b'!' || *c > b'~') {
        Err("ERR Client names cannot contain spaces, newlines or special characters.")
    } else {
        Ok(())
    }
}

/// The error for a read that could not be routed.
fn reject_message(
    d: Decision,
    level: &crate::policy::Level,
    view: &View,
    policy: &crate::policy::Policy,
) -> String {
    match d.reason {
        Reason::NoMaster
            if policy.on_master_down == crate::config::OnMasterDown::Error
                && view.master.as_ref().is_some_and(|m| m.down) =>
        {
            format!(
                "ERR redsplit: the master {} is down and reads are refused (routing.on_master_down: error)",
                view.master.as_ref().map(|m| m.backend.addr.as_str()).unwrap_or("?")
            )
        }
        Reason::NoMaster => "ERR redsplit: the master is down and no replica can serve this read".into(),
        Reason::OwnWrite => "ERR redsplit: no replica has this client's last write yet (fallback: error)".into(),
        Reason::OverBudget => format!(
            "ERR redsplit: no replica is within the staleness budget ({}) for this read (fallback: error)",
            budget_text(level)
        ),
        _ => format!("ERR redsplit: no healthy replica for this read ({} known; fallback: error)", view.replicas.len()),
    }
}

fn budget_text(level: &crate::policy::Level) -> String {
    match (level.budget.max_lag_ms, level.budget.max_lag_bytes) {
        (Some(ms), Some(b)) => format!("{ms} ms, {b} bytes"),
        (Some(ms), None) => format!("{ms} ms"),
        (None, Some(b)) => format!("{b} bytes"),
        (None, None) => "unbounded".into(),
    }
}
