//! [`Conn`]: one pipelined connection to one Redis, shared by many sessions (or
//! dedicated to one). Sessions queue requests with [`Conn::send`]; an idle plain-TCP
//! connection is written at once from the sending task, a busy one by the writer task,
//! which coalesces what every ready session queued into one write. The reader task
//! delimits replies and hands each run to the [`Waiter`] at the front of the queue (or,
//! in stream mode, to the stream's slot). The [`watchdog`] fails connections whose
//! oldest request waited too long.

use super::gate::Gate;
use super::handshake::connect;
use super::inbox::{same_sink, Sink, Waiter, CHUNK};
use super::{BackendError, ConnKey, ConnParams, ErrorKind, Role};
use crate::protocol::ReplyScanner;
use crate::tls::BackendStream;
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

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
    /// Outside stream mode, on a RESP3 connection: where its pushes go (slot
    /// [`PUSHES`](super::PUSHES)), whatever requests wait. A push is never a reply
    /// there, so without this sink it is dropped, never taken for one.
    push_sink: Option<Arc<dyn Sink>>,
    /// When the oldest unanswered request was sent, or the last reply arrived since.
    busy_since: Option<Instant>,
    /// Requests queued or in flight.
    in_flight: u64,
    /// The writer holds bytes it is writing (so nobody may write around it).
    writing: bool,
    /// The socket's write half, for writing straight from the sending task when nothing
    /// is queued (plain TCP only): saves a task wake-up per batch.
    direct: Option<Arc<tokio::net::tcp::OwnedWriteHalf>>,
    /// In the backend's [`Gate`] queue: queued bytes wait for this connection's turn.
    in_gate: bool,
}

/// The most spans one direct (vectored) write takes; what is beyond waits for the
/// writer.
const MAX_DIRECT_SPANS: usize = 16;

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

/// Shut a plain-TCP backend socket down from the calling task, so that Redis sees the
/// connection end before anything the proxy sends it afterwards on other connections
/// (the socket's own tasks are aborted too, but they drop it only when next scheduled).
fn shut_now(w: &tokio::net::tcp::OwnedWriteHalf) {
    use std::os::fd::AsFd;
    let stream: &tokio::net::TcpStream = w.as_ref();
    // A duplicate of the descriptor: shutting it down ends the socket they share.
    if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
        let _ = std::net::TcpStream::from(fd).shutdown(std::net::Shutdown::Both);
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
    /// The backend's role.
    pub role: Role,
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
    /// The registry this connection is in.
    live: Arc<LiveConns>,
    /// The write order of the backend's connections while one opens.
    gate: Arc<Gate>,
    /// This connection, for joining the gate's queue.
    me: Weak<Conn>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The live connections of one proxy, for its timeout [`watchdog`]: every [`Conn`]
/// registers in its pool's registry when it starts and leaves it when it fails or is
/// dropped. Each [`Backends`](crate::topology::Backends) set built from another shares
/// that one's registry, so one proxy's watchdog sees exactly its own connections.
#[derive(Debug, Default)]
pub struct LiveConns(dashmap::DashMap<u64, Weak<Conn>>);

impl LiveConns {
    /// The registered connections still alive.
    fn alive(&self) -> Vec<Arc<Conn>> {
        self.0.iter().filter_map(|e| e.value().upgrade()).collect()
    }
}

impl Conn {
    /// Start connecting; requests may be queued at once and are written when the
    /// connection is ready (or fail if it cannot be made within the connect timeout).
    pub fn spawn(
        params: Arc<ConnParams>,
        key: ConnKey,
        outstanding: Arc<AtomicU64>,
        want_client_id: bool,
        live: &Arc<LiveConns>,
        gate: &Arc<Gate>,
    ) -> Arc<Conn> {
        let conn = Arc::new_cyclic(|me| Conn {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            label: params.label().into(),
            role: params.role,
            key,
            inner: Mutex::new(Inner {
                state: State::Connecting,
                out: BytesMut::new(),
                waiters: VecDeque::new(),
                stream_sink: None,
                push_sink: None,
                busy_since: None,
                in_flight: 0,
                writing: false,
                direct: None,
                in_gate: false,
            }),
            wake: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            became_ready: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            backend_client_id: AtomicI64::new(-1),
            blocking: AtomicBool::new(false),
            outstanding,
            live: live.clone(),
            gate: gate.clone(),
            me: me.clone(),
        });
        live.0.insert(conn.id, Arc::downgrade(&conn));
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

    /// Why the connection failed, once it has.
    pub(super) fn failure(&self) -> Option<BackendError> {
        match &self.inner.lock().state {
            State::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Whether the handshake ever completed (a failure after it resets the backoff).
    pub(super) fn became_ready(&self) -> bool {
        self.became_ready.load(Ordering::Relaxed)
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
        self.send_spans(data, &[(0, data.len())], sink, slot, count)
    }

    /// Queue the `spans` of `buf` (byte ranges, in order, together `count` complete
    /// requests) as one write; their replies go to `sink`'s `slot`. A session whose
    /// requests for this connection are interleaved with others' in one batch sends
    /// them with one call (one lock, one waiter) instead of one per run.
    pub fn send_spans(
        &self,
        buf: &[u8],
        spans: &[(usize, usize)],
        sink: &Arc<dyn Sink>,
        slot: u16,
        count: u32,
    ) -> Result<(), BackendError> {
        let part = |&(a, b): &(usize, usize)| buf.get(a..b).unwrap_or_default();
        let total: usize = spans.iter().map(|s| part(s).len()).sum();
        let was_empty;
        let mut written = 0;
        {
            let mut g = self.inner.lock();
            if let State::Failed(e) = &g.state {
                return Err(e.clone());
            }
            was_empty = g.out.is_empty();
            let gate_open = self.gate.is_open();
            // An idle connection (nothing queued, being written or awaiting replies) is
            // written at once, saving a task wake-up: that is the latency path. A busy one
            // is left to the writer, which lets the other ready sessions queue theirs
            // first and sends them all in one write: that is the throughput path.
            if was_empty && !g.writing && g.waiters.is_empty() && gate_open {
                if let Some(w) = &g.direct {
                    let res = match spans {
                        [one] => w.try_write(part(one)),
                        _ => {
                            let mut io = [std::io::IoSlice::new(&[]); MAX_DIRECT_SPANS];
                            for (slice, s) in io.iter_mut().zip(spans) {
                                *slice = std::io::IoSlice::new(part(s));
                            }
                            let n = spans.len().min(MAX_DIRECT_SPANS);
                            w.try_write_vectored(io.get(..n).unwrap_or_default())
                        }
                    };
                    match res {
                        Ok(n) => written = n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The writer will meet the error again and fail the connection.
                        Err(_) => {}
                    }
                }
            }
            if written < total {
                // Queue what the direct write did not take, span by span.
                let mut skip = written;
                for s in spans {
                    let p = part(s);
                    if skip >= p.len() {
                        skip -= p.len();
                        continue;
                    }
                    g.out.extend_from_slice(p.get(skip..).unwrap_or_default());
                    skip = 0;
                }
                // Bytes that must wait (for the handshake, or for a connection that is
                // still opening) take their turn in the backend's write order.
                if !g.in_gate && (matches!(g.state, State::Connecting) || !gate_open) {
                    g.in_gate = true;
                    self.gate.join(self.id, self.me.clone());
                }
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
        if was_empty && written < total {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Switch to stream mode: every frame from now on goes to `sink`'s `slot`. Call only
    /// when no request of this connection is waiting.
    pub fn set_stream(&self, sink: &Arc<dyn Sink>, slot: u16) {
        self.inner.lock().stream_sink = Some((sink.clone(), slot));
    }

    /// Deliver this connection's RESP3 pushes to `sink` (slot
    /// [`PUSHES`](super::PUSHES)) while it is not in stream mode: it is the connection a
    /// tracking redirect names, and `sink` the client it redirects to.
    pub fn set_push_sink(&self, sink: &Arc<dyn Sink>) {
        self.inner.lock().push_sink = Some(sink.clone());
    }

    /// Close the connection; waiters get `reason`.
    pub fn close(&self, reason: &str) {
        self.fail(BackendError::closed(&self.label, reason));
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
            if std::mem::take(&mut g.in_gate) {
                self.gate.leave(self.id);
            }
            if let Some(w) = g.direct.take() {
                shut_now(&w);
            }
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
        self.live.0.remove(&self.id);
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
            self.fail(BackendError::timeout(&self.label, timeout));
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
            connect(&params, &self.key, want_client_id),
        )
        .await
        .map_err(|_| BackendError::connect_timeout(&label, params.connect_timeout))??;
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

    /// Take what sessions queued, under the lock, and mark it as being written; nothing
    /// while it waits for its turn in the backend's [`Gate`].
    fn take_out(&self, buf: &mut BytesMut) -> bool {
        let mut g = self.inner.lock();
        if g.in_gate && !self.gate.may_write(self.id) {
            // Not its turn: what is queued stays queued.
            g.writing = false;
            false
        } else if g.out.is_empty() {
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
        // A connection in the gate's queue keeps the gate shut: while it is open, no
        // lock is needed unless the buffer is to be released.
        if buf.capacity() <= RELEASE_OUT && self.gate.is_open() {
            return;
        }
        let mut g = self.inner.lock();
        if g.in_gate {
            // Its turn is over: the next connection may write. Bytes queued meanwhile
            // wait behind the others still queued.
            g.in_gate = false;
            self.gate.leave(self.id);
            if !g.out.is_empty() && !self.gate.is_open() {
                g.in_gate = true;
                self.gate.join(self.id, self.me.clone());
            }
        }
        if buf.capacity() > RELEASE_OUT && g.out.is_empty() {
            *buf = BytesMut::new();
        }
    }

    /// Wake the writer task (its turn in the backend's [`Gate`] has come).
    pub(super) fn wake_writer(&self) {
        self.wake.notify_one();
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
                return BackendError::lost(label, format_args!("connection lost: {e}"));
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
                    return BackendError::lost(label, format_args!("connection lost: {e}"));
                }
                match wr.try_write(buf.get(done..).unwrap_or_default()) {
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return BackendError::lost(label, format_args!("connection lost: {e}"))
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
        // The large reply being read, counted against its client's output limit.
        let mut expected: Option<Expected> = None;
        loop {
            let need = scanner.needs();
            if need > CHUNK {
                let kb = u32::try_from(need.div_ceil(1024)).unwrap_or(u32::MAX);
                match expected.as_mut() {
                    // A reply of large elements: each announced as its length is read.
                    Some(e) if kb > e.kb => {
                        e.sink.inbox().expect(kb - e.kb);
                        e.kb = kb;
                    }
                    Some(_) => {}
                    None => {
                        if let Some(sink) = self.reply_sink() {
                            sink.inbox().expect(kb);
                            expected = Some(Expected { sink, kb });
                        }
                    }
                }
            }
            if need > buf.capacity() && need - buf.len() > MAX_READ {
                // A large reply on its way: room for all of it at once (what has come
                // is copied once), not a buffer doubled, and copied, step by step.
                let mut whole = BytesMut::with_capacity(need);
                whole.extend_from_slice(&buf);
                buf = whole;
            } else if buf.capacity() - buf.len() < chunk / 4 {
                buf.reserve(chunk);
            }
            let spare = buf.capacity() - buf.len();
            match rd.read_buf(&mut buf).await {
                Ok(0) => return BackendError::lost(label, "closed the connection"),
                Ok(n) => chunk = next_read_size(chunk, n, spare, MIN_READ, MAX_READ),
                Err(e) => return BackendError::lost(label, format_args!("connection lost: {e}")),
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
                        return BackendError::lost(label, format_args!("sent a bad reply: {e}"))
                    }
                }
            }
            if lens.is_empty() {
                continue;
            }
            // The large reply, if one was on its way, is here: it counts as queued now.
            expected = None;
            if let Err(e) = self.match_waiters(&buf, &lens, &mut groups) {
                return e;
            }
            if groups.len() == 1 && consumed >= CHUNK {
                // Large replies for one session: their bytes are handed over, not copied.
                if let Some((sink, slot, _)) = groups.pop() {
                    sink.inbox().push_owned(slot, buf.split_to(consumed), &lens);
                }
            } else {
                self.deliver(
                    buf.get(..consumed).unwrap_or_default(),
                    &lens,
                    groups.drain(..),
                );
                buf.advance(consumed);
            }
            if buf.is_empty() && buf.capacity() > 1 << 20 {
                buf = BytesMut::with_capacity(MIN_READ);
            }
        }
    }

    /// Whose the next reply is: the front waiter's, or the stream's.
    fn reply_sink(&self) -> Option<Arc<dyn Sink>> {
        let g = self.inner.lock();
        match g.waiters.front() {
            Some(w) => Some(w.sink.clone()),
            None => g.stream_sink.as_ref().map(|(sink, _)| sink.clone()),
        }
    }

    /// Match the replies (`lens`, in order, back to back in `data`) with the waiters at
    /// the front of the queue: `groups` gets each run of replies' session, slot and
    /// count. Outside stream mode, a RESP3 connection's pushes are no replies: each goes
    /// to the push sink, or nowhere (a group with no slot's sink is dropped by
    /// [`Conn::deliver`]).
    fn match_waiters(
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
            let pushes = self.key.resp3 && g.stream_sink.is_none();
            // Offset of frame `i` in `data`; kept only when pushes are looked for.
            let mut at = 0usize;
            while i < lens.len() {
                let mut left = lens.len() - i;
                if pushes {
                    if data.get(at) == Some(&b'>') {
                        at += lens.get(i).copied().unwrap_or_default();
                        i += 1;
                        let sink = g.push_sink.clone().unwrap_or_else(super::inbox::nowhere);
                        groups.push((sink, super::PUSHES, 1));
                        continue;
                    }
                    // The replies before the next push.
                    let mut run = 0;
                    let mut end = at;
                    while let Some(n) = lens.get(i + run) {
                        if run > 0 && data.get(end) == Some(&b'>') {
                            break;
                        }
                        end += n;
                        run += 1;
                    }
                    left = run;
                }
                let before = i;
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
                    return Err(BackendError::lost(
                        &self.label,
                        "sent a reply nobody asked for",
                    ));
                }
                if pushes {
                    at += lens.get(before..i).map_or(0, |l| l.iter().sum::<usize>());
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
        Ok(())
    }

    /// Copy each group's replies (from `data`, back to back) into its session's inbox.
    fn deliver(
        &self,
        data: &[u8],
        lens: &[usize],
        groups: impl Iterator<Item = (Arc<dyn Sink>, u16, usize)>,
    ) {
        let mut off = 0;
        let mut li = 0;
        for (sink, slot, n) in groups {
            let these = lens.get(li..li + n).unwrap_or_default();
            let bytes: usize = these.iter().sum();
            sink.inbox()
                .push_replies(slot, data.get(off..off + bytes).unwrap_or_default(), these);
            off += bytes;
            li += n;
        }
    }
}

/// A large reply on its way to `sink`, `kb` KiB of it announced with
/// [`Inbox::expect`](super::Inbox::expect); dropped when it arrives, or when the
/// connection ends without it.
struct Expected {
    sink: Arc<dyn Sink>,
    kb: u32,
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.sink.inbox().expected_done(self.kb);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.live.0.remove(&self.id);
        if self.inner.get_mut().in_gate {
            self.gate.leave(self.id);
        }
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
}

/// Fail connections of `live` whose oldest request has waited longer than `timeouts`
/// allow (replica connections, master connections: `None` never); runs until the
/// runtime stops.
pub async fn watchdog(live: Arc<LiveConns>, timeouts: impl Fn() -> (Duration, Option<Duration>)) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let (replica, master) = timeouts();
        for c in live.alive() {
            let t = if c.role == Role::Master {
                master
            } else {
                Some(replica)
            };
            if let Some(t) = t {
                c.check_timeout(now, t);
            }
        }
    }
}
