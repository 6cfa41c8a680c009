//! Pipelined connections to one Redis, and the inboxes replies are delivered to.
//!
//! A [`Conn`] carries the requests of many sessions at once. A session appends a run of
//! request bytes to the connection's outbox under a short lock, together with one
//! [`Waiter`] that says where the run's replies go; the connection's task writes
//! everything queued in one write, reads replies, delimits them with the
//! [`ReplyScanner`], and copies each run of replies into its session's [`Inbox`] slot.
//! Nothing is allocated per request: buffers and queues keep their capacity.
//!
//! The same type serves a session alone (a *dedicated* connection, for transactions,
//! blocking commands and pub/sub): in stream mode every frame goes to one inbox slot
//! without request matching.
//!
//! A connection that fails (refused, closed, protocol garbage, or a request unanswered
//! for `command_timeout_ms`) fails every waiter with a [`BackendError`] naming the role
//! and address; the [`Pool`] replaces it, with exponential backoff and jitter between
//! failed attempts.

use crate::config::Secret;
use crate::protocol::{encode_command, ReplyScanner};
use crate::reply::Decoded;
use crate::tls::BackendStream;
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The role a backend plays, for routing and for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The master.
    Master,
    /// A replica.
    Replica,
}

impl Role {
    /// `master` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// Why a backend request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect or complete the handshake.
    Connect,
    /// The connection broke (closed, reset, bad data).
    Lost,
    /// A request went unanswered for too long.
    Timeout,
    /// The connection was closed by the proxy (topology change, shutdown).
    Closed,
}

/// A backend failure, with a message fit to send to a client after `-ERR `.
#[derive(Clone, Debug)]
pub struct BackendError {
    /// What happened.
    pub kind: ErrorKind,
    /// E.g. `redsplit: master 127.0.0.1:6379 unreachable: Connection refused`.
    pub message: Arc<str>,
}

impl BackendError {
    fn new(kind: ErrorKind, label: &str, what: impl std::fmt::Display) -> Self {
        BackendError {
            kind,
            message: format!("redsplit: {label} {what}").into(),
        }
    }
}

/// How to reach and set up a connection to one backend.
#[derive(Clone, Debug)]
pub struct ConnParams {
    /// `host:port`.
    pub addr: String,
    /// The backend's role, for messages.
    pub role: Role,
    /// ACL user (empty: default).
    pub username: String,
    /// Password (empty: none).
    pub password: Secret,
    /// Connect and handshake timeout.
    pub connect_timeout: Duration,
    /// TLS towards this backend (or why it cannot be set up).
    pub tls: Option<Result<crate::tls::Target, Arc<str>>>,
    /// The configuration `tls` was built from (to tell whether a reload changed it).
    pub tls_source: Option<crate::config::BackendTlsConfig>,
}

impl ConnParams {
    /// `master 127.0.0.1:6379`.
    pub fn label(&self) -> String {
        format!("{} {}", self.role.as_str(), self.addr)
    }
}

/// Per-connection setup: which database, which protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Selected database.
    pub db: u32,
    /// RESP3 (`HELLO 3`) or RESP2.
    pub resp3: bool,
}

/// One delivered item in an inbox slot.
#[derive(Debug)]
pub enum Item {
    /// A complete reply of this many bytes, at the front of the slot's data.
    Reply(usize),
    /// The request failed without a reply.
    Failed(BackendError),
}

/// The replies one session receives from one source, in order.
#[derive(Debug, Default)]
pub struct SlotQueue {
    /// Reply bytes, back to back.
    pub data: BytesMut,
    /// One entry per reply (or failure), in arrival order.
    pub items: VecDeque<Item>,
}

impl SlotQueue {
    /// Pop the front item; for a reply, its bytes are at `data[..len]` until `consume`.
    pub fn front(&self) -> Option<&Item> {
        self.items.front()
    }

    /// Each queued item's reply bytes, in order (`None` for a failure).
    pub fn frames(&self) -> impl Iterator<Item = Option<&[u8]>> {
        let mut off = 0;
        self.items.iter().map(move |item| match item {
            Item::Reply(len) => {
                let frame = self.data.get(off..off + len);
                off += len;
                frame
            }
            Item::Failed(_) => None,
        })
    }

    /// Drop the front item (and its bytes).
    pub fn consume(&mut self) {
        if let Some(Item::Reply(len)) = self.items.pop_front() {
            self.data.advance(len);
        }
        if self.items.is_empty() {
            self.data.clear();
        }
    }

    /// Release memory held by an empty queue.
    pub fn trim(&mut self) {
        if self.items.is_empty() {
            self.data = BytesMut::new();
            self.items = VecDeque::new();
        }
    }
}

/// Wakes one task: a pending flag and the task's waker. Like `Notify::notify_one` with a
/// single waiter, but polled in place, so a waiting task stores no future for it (an idle
/// client's task stays small).
#[derive(Debug, Default)]
pub struct Signal {
    pending: AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl Signal {
    /// Wake the task, or make its next poll ready if it is not waiting.
    pub fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready (and consumed) once [`Signal::notify`] was called since the last ready poll.
    pub fn poll(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.pending.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Where a session's replies arrive. Backends push into slots; the session drains them.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The slots, under one short lock.
    pub state: Mutex<InboxState>,
    /// Wakes the session.
    pub notify: Signal,
    /// Asks the session to stop (client kill, idle timeout, shutdown).
    pub kill: AtomicBool,
    /// Asks the session to release idle buffers.
    pub trim: AtomicBool,
    /// Set once the janitor asked for a trim; the session clears it when active again.
    pub trimmed: AtomicBool,
    /// Asks the session to stop reading and finish (graceful shutdown).
    pub drain: AtomicBool,
}

/// The lock-protected part of an [`Inbox`].
#[derive(Debug, Default)]
pub struct InboxState {
    /// Set when the session is gone: deliveries are dropped.
    pub closed: bool,
    /// One queue per source.
    pub slots: Vec<SlotQueue>,
}

impl InboxState {
    fn slot(&mut self, slot: u16) -> &mut SlotQueue {
        let i = slot as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, SlotQueue::default);
        }
        // The resize above makes the index valid.
        &mut self.slots[i]
    }
}

impl Inbox {
    /// A new, empty inbox.
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// Append complete replies (`lens` gives each length; `data` holds them back to back).
    pub fn push_replies(&self, slot: u16, data: &[u8], lens: &[usize]) {
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            let q = st.slot(slot);
            q.data.extend_from_slice(data);
            q.items.extend(lens.iter().map(|l| Item::Reply(*l)));
        }
        self.notify.notify();
    }

    /// Record `count` failed requests.
    pub fn push_failed(&self, slot: u16, err: &BackendError, count: u32) {
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            let q = st.slot(slot);
            for _ in 0..count {
                q.items.push_back(Item::Failed(err.clone()));
            }
        }
        self.notify.notify();
    }

    /// Mark the session gone and free what was queued for it.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.slots = Vec::new();
    }
}

/// What owns an [`Inbox`]: connections hold their waiters' owners through this, so an
/// inbox can live inside a bigger per-client structure (one allocation per client).
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The inbox replies are delivered to.
    fn inbox(&self) -> &Inbox;
}

impl Sink for Inbox {
    fn inbox(&self) -> &Inbox {
        self
    }
}

/// Whether two sinks are the same object.
#[inline]
fn same_sink(a: &Arc<dyn Sink>, b: &Arc<dyn Sink>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Where the replies of a run of requests go.
#[derive(Debug)]
pub struct Waiter {
    /// The session's inbox.
    pub sink: Arc<dyn Sink>,
    /// The slot within it.
    pub slot: u16,
    /// How many replies.
    pub count: u32,
}

#[derive(Debug)]
enum State {
    Connecting,
    Ready,
    Failed(BackendError),
}

#[derive(Debug)]
struct Inner {
    state: State,
    out: BytesMut,
    waiters: VecDeque<Waiter>,
    /// Stream mode: frames without a waiter go here.
    stream_sink: Option<(Arc<dyn Sink>, u16)>,
    /// When the oldest unanswered request was sent, or the last reply arrived since.
    busy_since: Option<Instant>,
    /// Requests queued or in flight.
    in_flight: u64,
    /// The writer holds bytes it is writing (so nobody may write around it).
    writing: bool,
    /// The socket's write half, for writing straight from the sending task when nothing
    /// is queued (plain TCP only): saves a task wake-up per batch.
    direct: Option<Arc<tokio::net::tcp::OwnedWriteHalf>>,
}

/// Capacity above which an idle connection's request buffers are released.
const RELEASE_OUT: usize = 1 << 20;

/// Smallest and largest read from a backend socket.
const MIN_READ: usize = 16 * 1024;
const MAX_READ: usize = 256 * 1024;

/// The next read size after a read of `n` bytes into `spare` free bytes with `chunk`
/// asked for: doubled (up to `max`) when the read filled the buffer, halved (down to
/// `min`) when it came in small, so large transfers take few system calls and small
/// ones keep small buffers.
pub fn next_read_size(chunk: usize, n: usize, spare: usize, min: usize, max: usize) -> usize {
    if n == spare {
        (chunk * 2).min(max)
    } else if n < chunk / 8 {
        (chunk / 2).max(min)
    } else {
        chunk
    }
}

/// A pipelined connection to one Redis.
#[derive(Debug)]
pub struct Conn {
    /// Unique id.
    pub id: u64,
    /// `master 127.0.0.1:6379`, for messages.
    pub label: Arc<str>,
    /// Database and protocol this connection was set up for.
    pub key: ConnKey,
    inner: Mutex<Inner>,
    wake: Notify,
    tasks: Mutex<Vec<AbortHandle>>,
    became_ready: AtomicBool,
    /// Set once the connection failed (a lock-free check for senders).
    failed: AtomicBool,
    /// The backend's `CLIENT ID` for this connection (dedicated connections), or -1.
    pub backend_client_id: AtomicI64,
    /// Set while a blocking command is outstanding: the timeout watchdog leaves the
    /// connection alone.
    pub blocking: AtomicBool,
    /// The backend-wide count of requests in flight (for `least_outstanding`).
    outstanding: Arc<AtomicU64>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Every live connection, for the timeout watchdog.
static LIVE: std::sync::LazyLock<dashmap::DashMap<u64, Weak<Conn>>> =
    std::sync::LazyLock::new(Default::default);

impl Conn {
    /// Start connecting; requests may be queued at once and are written when the
    /// connection is ready (or fail if it cannot be made within the connect timeout).
    pub fn spawn(
        params: Arc<ConnParams>,
        key: ConnKey,
        outstanding: Arc<AtomicU64>,
        want_client_id: bool,
    ) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            label: params.label().into(),
            key,
            inner: Mutex::new(Inner {
                state: State::Connecting,
                out: BytesMut::new(),
                waiters: VecDeque::new(),
                stream_sink: None,
                busy_since: None,
                in_flight: 0,
                writing: false,
                direct: None,
            }),
            wake: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            became_ready: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            backend_client_id: AtomicI64::new(-1),
            blocking: AtomicBool::new(false),
            outstanding,
        });
        LIVE.insert(conn.id, Arc::downgrade(&conn));
        let c = conn.clone();
        let handle = tokio::spawn(async move {
            let err = match c.clone().run(params, want_client_id).await {
                Ok(()) => return,
                Err(e) => e,
            };
            c.fail(err);
        });
        conn.tasks.lock().push(handle.abort_handle());
        conn
    }

    /// Whether the connection has failed (it will never recover; get a new one).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the handshake completed.
    pub fn is_ready(&self) -> bool {
        matches!(self.inner.lock().state, State::Ready)
    }

    /// Queue `data` (`count` complete requests); their replies go to `sink`'s `slot`.
    pub fn send(
        &self,
        data: &[u8],
        sink: &Arc<dyn Sink>,
        slot: u16,
        count: u32,
    ) -> Result<(), BackendError> {
        let was_empty;
        let mut written = 0;
        {
            let mut g = self.inner.lock();
            if let State::Failed(e) = &g.state {
                return Err(e.clone());
            }
            was_empty = g.out.is_empty();
            // An idle connection (nothing queued, being written or awaiting replies) is
            // written at once, saving a task wake-up: that is the latency path. A busy one
            // is left to the writer, which lets the other ready sessions queue theirs
            // first and sends them all in one write: that is the throughput path.
            if was_empty && !g.writing && g.waiters.is_empty() {
                if let Some(w) = &g.direct {
                    match w.try_write(data) {
                        Ok(n) => written = n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The writer will meet the error again and fail the connection.
                        Err(_) => {}
                    }
                }
            }
            if written < data.len() {
                g.out
                    .extend_from_slice(data.get(written..).unwrap_or_default());
            }
            if count > 0 {
                if g.waiters.is_empty() {
                    g.busy_since = Some(Instant::now());
                }
                g.in_flight += u64::from(count);
                match g.waiters.back_mut() {
                    Some(w) if w.slot == slot && same_sink(&w.sink, sink) => w.count += count,
                    _ => g.waiters.push_back(Waiter {
                        sink: sink.clone(),
                        slot,
                        count,
                    }),
                }
            }
        }
        if count > 0 {
            self.outstanding
                .fetch_add(u64::from(count), Ordering::Relaxed);
        }
        if was_empty && written < data.len() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Switch to stream mode: every frame from now on goes to `sink`'s `slot`. Call only
    /// when no request of this connection is waiting.
    pub fn set_stream(&self, sink: &Arc<dyn Sink>, slot: u16) {
        self.inner.lock().stream_sink = Some((sink.clone(), slot));
    }

    /// Close the connection; waiters get `reason`.
    pub fn close(&self, reason: &str) {
        self.fail(BackendError::new(ErrorKind::Closed, &self.label, reason));
    }

    /// Fail the connection and everything waiting on it.
    pub fn fail(&self, err: BackendError) {
        let (waiters, sink, in_flight) = {
            let mut g = self.inner.lock();
            if matches!(g.state, State::Failed(_)) {
                return;
            }
            g.state = State::Failed(err.clone());
            self.failed.store(true, Ordering::Relaxed);
            g.out = BytesMut::new();
            g.direct = None;
            let n = g.in_flight;
            g.in_flight = 0;
            (std::mem::take(&mut g.waiters), g.stream_sink.take(), n)
        };
        self.outstanding.fetch_sub(in_flight, Ordering::Relaxed);
        match err.kind {
            ErrorKind::Closed => {
                tracing::debug!(conn = %self.label, error = %err.message, "backend connection closed")
            }
            _ => {
                tracing::warn!(conn = %self.label, error = %err.message, "backend connection failed")
            }
        }
        for w in waiters {
            w.sink.inbox().push_failed(w.slot, &err, w.count);
        }
        if let Some((sink, slot)) = sink {
            sink.inbox().push_failed(slot, &err, 1);
        }
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        LIVE.remove(&self.id);
    }

    /// Fail the connection if its oldest request has waited longer than `timeout`.
    fn check_timeout(&self, now: Instant, timeout: Duration) {
        if self.blocking.load(Ordering::Relaxed) {
            return;
        }
        let stalled = {
            let g = self.inner.lock();
            matches!(g.state, State::Ready | State::Connecting)
                && g.stream_sink.is_none()
                && g.busy_since
                    .is_some_and(|t| now.duration_since(t) > timeout)
        };
        if stalled {
            self.fail(BackendError::new(
                ErrorKind::Timeout,
                &self.label,
                format_args!("did not answer within {} ms", timeout.as_millis()),
            ));
        }
    }

    async fn run(
        self: Arc<Self>,
        params: Arc<ConnParams>,
        want_client_id: bool,
    ) -> Result<(), BackendError> {
        let label = self.label.clone();
        let stream = tokio::time::timeout(
            params.connect_timeout,
            connect(&params, self.key, want_client_id),
        )
        .await
        .map_err(|_| {
            BackendError::new(
                ErrorKind::Connect,
                &label,
                format_args!(
                    "unreachable: no connection within {} ms",
                    params.connect_timeout.as_millis()
                ),
            )
        })??;
        let (stream, client_id) = stream;
        if let Some(id) = client_id {
            self.backend_client_id.store(id, Ordering::Relaxed);
        }
        {
            let mut g = self.inner.lock();
            if let State::Failed(_) = g.state {
                return Ok(());
            }
            g.state = State::Ready;
            if g.busy_since.is_some() {
                g.busy_since = Some(Instant::now());
            }
        }
        self.became_ready.store(true, Ordering::Relaxed);
        match stream {
            BackendStream::Plain(tcp) => {
                let (rd, wr) = tcp.into_split();
                let wr = Arc::new(wr);
                self.inner.lock().direct = Some(wr.clone());
                tokio::select! {
                    e = self.write_direct(wr, &label) => Err(e),
                    e = self.read_replies(rd, &label) => Err(e),
                }
            }
            BackendStream::Tls(tls) => {
                let (rd, wr) = tokio::io::split(tls);
                tokio::select! {
                    e = self.write_stream(wr, &label) => Err(e),
                    e = self.read_replies(rd, &label) => Err(e),
                }
            }
        }
    }

    /// Take what sessions queued, under the lock, and mark it as being written.
    fn take_out(&self, buf: &mut BytesMut) -> bool {
        let mut g = self.inner.lock();
        if g.out.is_empty() {
            g.writing = false;
            if g.out.capacity() > RELEASE_OUT {
                g.out = BytesMut::new();
            }
            false
        } else {
            std::mem::swap(&mut g.out, buf);
            g.writing = true;
            true
        }
    }

    /// Empty the writer's buffer after a write. Under load its capacity is kept: the
    /// buffer goes back to the sessions at the next `take_out`, and growing a
    /// multi-megabyte buffer afresh for every write costs a copy per doubling and a page
    /// fault per page. A large one is released once nothing more is queued.
    fn recycle(&self, buf: &mut BytesMut) {
        buf.clear();
        if buf.capacity() > RELEASE_OUT && self.inner.lock().out.is_empty() {
            *buf = BytesMut::new();
        }
    }

    /// Like `take_out`, but first let every task that is ready run (and queue its
    /// requests), so that one write carries the batches of many sessions.
    async fn take_out_coalesced(&self, buf: &mut BytesMut) -> bool {
        if self.inner.lock().out.is_empty() {
            return self.take_out(buf);
        }
        tokio::task::yield_now().await;
        self.take_out(buf)
    }

    /// Write what sessions queue, through a stream (TLS).
    async fn write_stream<W: AsyncWrite + Unpin>(&self, mut wr: W, label: &str) -> BackendError {
        let mut buf = BytesMut::new();
        loop {
            if !self.take_out_coalesced(&mut buf).await {
                self.wake.notified().await;
                continue;
            }
            if let Err(e) = wr.write_all(&buf).await {
                return BackendError::new(
                    ErrorKind::Lost,
                    label,
                    format_args!("connection lost: {e}"),
                );
            }
            self.recycle(&mut buf);
        }
    }

    /// Write what sessions queue (plain TCP): what they could not write themselves.
    async fn write_direct(
        &self,
        wr: Arc<tokio::net::tcp::OwnedWriteHalf>,
        label: &str,
    ) -> BackendError {
        let mut buf = BytesMut::new();
        loop {
            if !self.take_out_coalesced(&mut buf).await {
                self.wake.notified().await;
                continue;
            }
            let mut done = 0;
            while done < buf.len() {
                if let Err(e) = wr.writable().await {
                    return BackendError::new(
                        ErrorKind::Lost,
                        label,
                        format_args!("connection lost: {e}"),
                    );
                }
                match wr.try_write(buf.get(done..).unwrap_or_default()) {
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return BackendError::new(
                            ErrorKind::Lost,
                            label,
                            format_args!("connection lost: {e}"),
                        )
                    }
                }
            }
            self.recycle(&mut buf);
        }
    }

    /// Read replies and hand them to the sessions waiting for them.
    async fn read_replies<R: AsyncRead + Unpin>(&self, mut rd: R, label: &str) -> BackendError {
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let mut scanner = ReplyScanner::new();
        let mut lens: Vec<usize> = Vec::new();
        let mut groups: Vec<(Arc<dyn Sink>, u16, usize)> = Vec::new();
        // Read size: doubled while reads fill the buffer (large replies), halved again
        // when they come in small, so big replies take few system calls.
        let mut chunk = MIN_READ;
        loop {
            if buf.capacity() - buf.len() < chunk / 4 {
                buf.reserve(chunk);
            }
            let spare = buf.capacity() - buf.len();
            match rd.read_buf(&mut buf).await {
                Ok(0) => return BackendError::new(ErrorKind::Lost, label, "closed the connection"),
                Ok(n) => chunk = next_read_size(chunk, n, spare, MIN_READ, MAX_READ),
                Err(e) => {
                    return BackendError::new(
                        ErrorKind::Lost,
                        label,
                        format_args!("connection lost: {e}"),
                    )
                }
            }
            let mut consumed = 0;
            lens.clear();
            loop {
                match scanner.scan(buf.get(consumed..).unwrap_or_default()) {
                    Ok(Some(n)) => {
                        lens.push(n);
                        consumed += n;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return BackendError::new(
                            ErrorKind::Lost,
                            label,
                            format_args!("sent a bad reply: {e}"),
                        )
                    }
                }
            }
            if lens.is_empty() {
                continue;
            }
            if let Err(e) = self.deliver(&buf[..consumed], &lens, &mut groups) {
                return e;
            }
            buf.advance(consumed);
            if buf.is_empty() && buf.capacity() > 1 << 20 {
                buf = BytesMut::with_capacity(MIN_READ);
            }
        }
    }

    fn deliver(
        &self,
        data: &[u8],
        lens: &[usize],
        groups: &mut Vec<(Arc<dyn Sink>, u16, usize)>,
    ) -> Result<(), BackendError> {
        groups.clear();
        let mut i = 0;
        let mut matched = 0u64;
        {
            let mut g = self.inner.lock();
            while i < lens.len() {
                let left = lens.len() - i;
                if let Some(front) = g.waiters.front_mut() {
                    let take = (front.count as usize).min(left);
                    front.count -= take as u32;
                    if front.count == 0 {
                        if let Some(w) = g.waiters.pop_front() {
                            groups.push((w.sink, w.slot, take));
                        }
                    } else {
                        groups.push((front.sink.clone(), front.slot, take));
                    }
                    matched += take as u64;
                    i += take;
                } else if let Some((sink, slot)) = &g.stream_sink {
                    groups.push((sink.clone(), *slot, left));
                    i += left;
                } else {
                    drop(g);
                    return Err(BackendError::new(
                        ErrorKind::Lost,
                        &self.label,
                        "sent a reply nobody asked for",
                    ));
                }
            }
            g.in_flight -= matched;
            g.busy_since = if g.waiters.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
        }
        if matched > 0 {
            self.outstanding.fetch_sub(matched, Ordering::Relaxed);
        }
        let mut off = 0;
        let mut li = 0;
        for (sink, slot, n) in groups.drain(..) {
            let these = lens.get(li..li + n).unwrap_or_default();
            let bytes: usize = these.iter().sum();
            sink.inbox()
                .push_replies(slot, data.get(off..off + bytes).unwrap_or_default(), these);
            off += bytes;
            li += n;
        }
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        LIVE.remove(&self.id);
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
}

/// Fail connections whose oldest request has waited longer than `timeout`; runs until
/// the runtime stops.
pub async fn watchdog(timeout: impl Fn() -> Duration) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let t = timeout();
        let conns: Vec<Arc<Conn>> = LIVE.iter().filter_map(|e| e.value().upgrade()).collect();
        for c in conns {
            c.check_timeout(now, t);
        }
    }
}

/// Connect and run the handshake: `HELLO 2|3 [AUTH …]` (which also tells the backend's
/// client id), `SELECT`, `CLIENT SETNAME`. `HELLO` is allowed while the server runs a
/// busy script, and a `CLIENT SETNAME` refused with `BUSY` is let go, so a connection to
/// the default database can be made while the server is `BUSY` (to reach it with
/// `SCRIPT KILL`, or to queue a transaction as a direct client can).
async fn connect(
    params: &ConnParams,
    key: ConnKey,
    want_client_id: bool,
) -> Result<(BackendStream, Option<i64>), BackendError> {
    let label = params.label();
    let tcp = TcpStream::connect(&params.addr).await.map_err(|e| {
        BackendError::new(ErrorKind::Connect, &label, format_args!("unreachable: {e}"))
    })?;
    let _ = tcp.set_nodelay(true);
    let target = match &params.tls {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return Err(BackendError::new(
                ErrorKind::Connect,
                &label,
                format_args!("TLS is misconfigured: {e}"),
            ))
        }
    };
    let mut stream = BackendStream::wrap(tcp, target).await.map_err(|e| {
        BackendError::new(
            ErrorKind::Connect,
            &label,
            format_args!("TLS handshake failed: {e}"),
        )
    })?;
    let mut hs = Vec::new();
    let mut expect = 0;
    let user = if params.username.is_empty() {
        "default"
    } else {
        params.username.as_str()
    };
    {
        let mut args: Vec<&[u8]> = vec![b"HELLO", if key.resp3 { b"3" } else { b"2" }];
        if !params.password.is_empty() {
            args.extend([
                b"AUTH".as_slice(),
                user.as_bytes(),
                params.password.expose().as_bytes(),
            ]);
        }
        encode_command(&mut hs, args.into_iter());
        expect += 1;
    }
    if key.db != 0 {
        encode_command(
            &mut hs,
            [b"SELECT".as_slice(), key.db.to_string().as_bytes()].into_iter(),
        );
        expect += 1;
    }
    encode_command(
        &mut hs,
        [b"CLIENT".as_slice(), b"SETNAME", b"redsplit"].into_iter(),
    );
    expect += 1;
    let setname = expect;
    let io = |e: std::io::Error| {
        BackendError::new(
            ErrorKind::Connect,
            &label,
            format_args!("handshake failed: {e}"),
        )
    };
    stream.write_all(&hs).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = ReplyScanner::new();
    let mut client_id = None;
    let mut got = 0;
    while got < expect {
        if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(BackendError::new(
                ErrorKind::Connect,
                &label,
                "closed the connection during the handshake",
            ));
        }
        while got < expect {
            let Some(n) = scanner.scan(&buf).map_err(|e| {
                BackendError::new(
                    ErrorKind::Connect,
                    &label,
                    format_args!("handshake failed: {e}"),
                )
            })?
            else {
                break;
            };
            let frame = buf.split_to(n);
            got += 1;
            if got == setname && frame.starts_with(b"-BUSY") {
                continue;
            }
            if let Some(b'-') = frame.first() {
                let text =
                    String::from_utf8_lossy(&frame[1..frame.len().saturating_sub(2)]).into_owned();
                return Err(BackendError::new(
                    ErrorKind::Connect,
                    &label,
                    format_args!("refused the handshake: {text}"),
                ));
            }
            if want_client_id && got == 1 {
                client_id = hello_id(&frame, key.resp3);
            }
        }
    }
    Ok((stream, client_id))
}

/// The `id` field of a `HELLO` reply.
fn hello_id(frame: &[u8], resp3: bool) -> Option<i64> {
    let items = Decoded::parse(frame, resp3)?.into_items()?;
    let mut it = items.chunks_exact(2);
    it.find(|kv| kv.first().and_then(|k| k.as_str()).as_deref() == Some("id"))?
        .get(1)?
        .as_int()
}

/// Reconnect bookkeeping for one pool position.
#[derive(Debug)]
struct PoolSlot {
    conn: Option<Arc<Conn>>,
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<BackendError>,
}

/// Shared connections to one backend: `size` per database and protocol version.
#[derive(Debug)]
pub struct Pool {
    params: Arc<ConnParams>,
    size: usize,
    backoff: (Duration, Duration),
    slots: dashmap::DashMap<ConnKey, Arc<Vec<Mutex<PoolSlot>>>>,
    /// Requests in flight on this backend's connections.
    pub outstanding: Arc<AtomicU64>,
}

impl Pool {
    /// A pool that opens connections on first use.
    pub fn new(
        params: ConnParams,
        size: usize,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> Pool {
        Pool {
            params: Arc::new(params),
            size: size.max(1),
            backoff: (backoff_min, backoff_max),
            slots: dashmap::DashMap::new(),
            outstanding: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The connection parameters.
    pub fn params(&self) -> &Arc<ConnParams> {
        &self.params
    }

    /// A usable shared connection for `key`, chosen by `hint`. Fails fast while the
    /// backend is in reconnect backoff.
    pub fn get(&self, key: ConnKey, hint: u64) -> Result<Arc<Conn>, BackendError> {
        let slots = self
            .slots
            .entry(key)
            .or_insert_with(|| {
                Arc::new(
                    (0..self.size)
                        .map(|_| {
                            Mutex::new(PoolSlot {
                                conn: None,
                                failures: 0,
                                next_attempt: None,
                                last_error: None,
                            })
                        })
                        .collect(),
                )
            })
            .clone();
        let idx = (hint % slots.len() as u64) as usize;
        let Some(slot) = slots.get(idx) else {
            return Err(BackendError::new(
                ErrorKind::Connect,
                &self.params.label(),
                "has no connection slot",
            ));
        };
        let mut s = slot.lock();
        if let Some(c) = &s.conn {
            if !c.is_failed() {
                return Ok(c.clone());
            }
            let err = {
                let g = c.inner.lock();
                match &g.state {
                    State::Failed(e) => Some(e.clone()),
                    _ => None,
                }
            };
            if c.became_ready.load(Ordering::Relaxed) {
                s.failures = 0;
                s.next_attempt = None;
            } else {
                s.failures = s.failures.saturating_add(1);
                let base = self.backoff.0.as_millis() as u64;
                let exp = base.saturating_mul(1u64 << s.failures.min(16).saturating_sub(1));
                let capped = exp.min(self.backoff.1.as_millis() as u64).max(1);
                // Full jitter in [capped/2, capped].
                let delay = capped / 2 + fastrand::u64(0..=capped / 2);
                s.next_attempt = Some(Instant::now() + Duration::from_millis(delay));
            }
            s.last_error = err;
            s.conn = None;
        }
        if let Some(t) = s.next_attempt {
            if Instant::now() < t {
                return Err(s.last_error.clone().unwrap_or_else(|| {
                    BackendError::new(ErrorKind::Connect, &self.params.label(), "is reconnecting")
                }));
            }
        }
        let c = Conn::spawn(self.params.clone(), key, self.outstanding.clone(), false);
        s.conn = Some(c.clone());
        Ok(c)
    }

    /// A new connection for one session alone.
    pub fn dedicated(&self, key: ConnKey) -> Arc<Conn> {
        Conn::spawn(self.params.clone(), key, Arc::new(AtomicU64::new(0)), true)
    }

    /// Close every shared connection (topology change, shutdown).
    pub fn close_all(&self, reason: &str) {
        for e in self.slots.iter() {
            for s in e.value().iter() {
                if let Some(c) = s.lock().conn.take() {
                    c.close(reason);
                }
            }
        }
    }
}

/// A plain request/reply connection for the proxy's own questions (the replication
/// monitor, Sentinel, start-up checks). Not pipelined, not shared.
#[derive(Debug)]
pub struct ControlConn {
    stream: BackendStream,
    buf: BytesMut,
    scanner: ReplyScanner,
    label: String,
}

impl ControlConn {
    /// Connect (and authenticate) within `params.connect_timeout`.
    pub async fn connect(params: &ConnParams) -> Result<ControlConn, BackendError> {
        let key = ConnKey {
            db: 0,
            resp3: false,
        };
        let label = params.label();
        let (stream, _) = tokio::time::timeout(params.connect_timeout, connect(params, key, false))
            .await
            .map_err(|_| {
                BackendError::new(
                    ErrorKind::Connect,
                    &label,
                    format_args!(
                        "unreachable: no connection within {} ms",
                        params.connect_timeout.as_millis()
                    ),
                )
            })??;
        Ok(ControlConn {
            stream,
            buf: BytesMut::with_capacity(4096),
            scanner: ReplyScanner::new(),
            label,
        })
    }

    /// Send one command and read its reply, within `timeout`.
    pub async fn call(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Decoded, BackendError> {
        let frame = self.call_raw(args, timeout).await?;
        Decoded::parse(&frame, false).ok_or_else(|| {
            BackendError::new(
                ErrorKind::Lost,
                &self.label,
                "sent a reply that does not decode",
            )
        })
    }

    /// Send one command and return its reply's raw bytes, within `timeout`.
    pub async fn call_raw(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<BytesMut, BackendError> {
        let mut req = Vec::new();
        encode_command(&mut req, args.iter().copied());
        let label = self.label.clone();
        let fut = async {
            self.stream.write_all(&req).await.map_err(|e| {
                BackendError::new(
                    ErrorKind::Lost,
                    &label,
                    format_args!("connection lost: {e}"),
                )
            })?;
            self.read_raw().await
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            BackendError::new(
                ErrorKind::Timeout,
                &self.label,
                format_args!("did not answer within {} ms", timeout.as_millis()),
            )
        })?
    }

    /// Read the next frame (for subscriptions).
    pub async fn read_frame(&mut self) -> Result<Decoded, BackendError> {
        let frame = self.read_raw().await?;
        Decoded::parse(&frame, false).ok_or_else(|| {
            BackendError::new(
                ErrorKind::Lost,
                &self.label,
                "sent a reply that does not decode",
            )
        })
    }

    async fn read_raw(&mut self) -> Result<BytesMut, BackendError> {
        loop {
            match self.scanner.scan(&self.buf) {
                Ok(Some(n)) => return Ok(self.buf.split_to(n)),
                Ok(None) => {}
                Err(e) => {
                    return Err(BackendError::new(
                        ErrorKind::Lost,
                        &self.label,
                        format_args!("sent a bad reply: {e}"),
                    ))
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(BackendError::new(
                        ErrorKind::Lost,
                        &self.label,
                        "closed the connection",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(BackendError::new(
                        ErrorKind::Lost,
                        &self.label,
                        format_args!("connection lost: {e}"),
                    ))
                }
            }
        }
    }

    /// Send a command without waiting for its reply (e.g. `SUBSCRIBE`).
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), BackendError> {
        let mut req = Vec::new();
        encode_command(&mut req, args.iter().copied());
        self.stream.write_all(&req).await.map_err(|e| {
            BackendError::new(
                ErrorKind::Lost,
                &self.label,
                format_args!("connection lost: {e}"),
            )
        })
    }
}
