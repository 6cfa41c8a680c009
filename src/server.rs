//! The listener, connection limits, background tasks and graceful shutdown.
//!
//! [`start`] binds, starts the replication monitor (its polls on a thread of their own),
//! the connection watchdog, the janitor (idle buffers, idle timeout), the admin endpoint
//! and the config watcher, and accepts clients until [`Handle::shutdown`]: then it stops accepting, lets every session finish
//! its in-flight replies within the grace period, and closes the rest.

use crate::backend::{ConnParams, ControlConn, Inbox, Role};
use crate::config::Config;
use crate::parking::ParkingLot;
use crate::proxy::{Proxy, ServerInfo, SessionHandle};
use crate::reply::{self, Decoded, Info};
use crate::session::ClientState;
use crate::session::{End, Parked, Session};
use crate::topology::Backends;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

/// A running proxy.
#[derive(Debug)]
pub struct Handle {
    /// The address clients connect to (the real port when `listen` said port 0).
    pub addr: SocketAddr,
    /// The admin endpoint's address, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The shared state.
    pub proxy: Arc<Proxy>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Dropped (with the handle, after shutdown) to end the monitor's thread.
    _monitor_thread: tokio::sync::oneshot::Sender<()>,
}

/// Start the thread the replication monitor's polls run on: a one-thread runtime of its
/// own, so that a busy event loop does not delay the offset samples every freshness
/// bound is made of. It runs until the returned sender is dropped.
fn start_monitor_thread(
) -> anyhow::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("redsplit-monitor".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(rt.handle().clone()));
            rt.block_on(async {
                let _ = stopped.await;
            });
        })
        .context("cannot start the monitor's thread")?;
    let handle = rx
        .recv()
        .context("the monitor's thread ended at start")?
        .context("cannot start the monitor's runtime")?;
    Ok((handle, stop))
}

/// Start the proxy with a validated configuration.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Handle> {
    let listen = config.listen.clone();
    let listener = bind(&listen)
        .await
        .with_context(|| format!("failed to listen at `listen` ({listen})"))?;
    let addr = listener.local_addr()?;
    let proxy = Proxy::new(config, config_path).map_err(|e| anyhow::anyhow!("tls: {e}"))?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Topology and monitor.
    let (monitor_rt, monitor_thread) = start_monitor_thread()?;
    proxy.monitor.poll_on(monitor_rt);
    let cfg = proxy.settings.load().config.clone();
    if cfg.backend.uses_cluster() {
        tasks.push(tokio::spawn(crate::cluster::run(
            proxy.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::cluster::watch_migrations(
            proxy.clone(),
            stop_rx.clone(),
        )));
    } else if cfg.backend.is_static() {
        let backends = Backends::from_static(&cfg, &proxy.monitor.backends());
        proxy.monitor.set_backends(&proxy, backends);
    } else {
        tasks.push(tokio::spawn(crate::sentinel::run(
            proxy.clone(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(probe_backends(proxy.clone())));
    {
        let p = Arc::downgrade(&proxy);
        let live = proxy.monitor.backends().conns;
        tasks.push(tokio::spawn(crate::backend::watchdog(live, move || {
            p.upgrade()
                .map(|p| p.settings.load().watchdog_timeouts())
                .unwrap_or((Duration::from_secs(3600), None))
        })));
    }
    tasks.push(tokio::spawn(janitor(proxy.clone(), stop_rx.clone())));
    tasks.push(tokio::spawn(crate::fence::sweeper(
        proxy.clone(),
        stop_rx.clone(),
    )));
    let admin_addr = crate::admin::start(proxy.clone(), stop_rx.clone()).await?;
    // SIGHUP is taken over here, before the first client is accepted: its default action
    // ends the process, and the reload task may not have run yet when one arrives.
    let hup = if proxy.config_path.is_some() {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP");
                None
            }
        }
    } else {
        None
    };
    tasks.push(tokio::spawn(crate::reload::watch(
        proxy.clone(),
        stop_rx.clone(),
        hup,
    )));
    let (lot, lot_task) = ParkingLot::start(proxy.clone())
        .context("cannot start the parking lot for idle clients")?;
    tasks.push(lot_task);
    tasks.push(tokio::spawn(accept_loop(
        proxy.clone(),
        listener,
        lot,
        stop_rx,
    )));
    tracing::info!(%addr, admin = ?admin_addr, "redsplit listening");
    Ok(Handle {
        addr,
        admin_addr,
        proxy,
        stop,
        tasks,
        _monitor_thread: monitor_thread,
    })
}

/// Connections the kernel may hold for the proxy to accept: a storm of new clients
/// waits in this queue rather than having its handshakes dropped and retried a second
/// later. (The kernel caps it at `net.core.somaxconn`.)
const LISTEN_BACKLOG: u32 = 65_535;

/// Listen at `listen` (`host:port`; the first address it resolves to that binds) with
/// [`LISTEN_BACKLOG`].
async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted proxy rebinds at once.
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

impl Handle {
    /// Stop accepting, let sessions finish in-flight replies for up to `grace`, then
    /// close everything.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let proxy = self.proxy.clone();
        for e in proxy.sessions.iter() {
            e.value().inbox.drain.store(true, Ordering::Relaxed);
            e.value().inbox.notify.notify();
        }
        let deadline = Instant::now() + grace;
        while !proxy.sessions.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = proxy.sessions.len();
        if left > 0 {
            tracing::warn!(
                clients = left,
                "grace period over; closing remaining clients"
            );
            for e in proxy.sessions.iter() {
                e.value().inbox.kill.store(true, Ordering::Relaxed);
                e.value().inbox.notify.notify();
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            while !proxy.sessions.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let cluster = proxy.cluster.backends();
        for b in std::iter::once(proxy.monitor.backends())
            .chain(cluster)
            .flat_map(|set| set.all().cloned().collect::<Vec<_>>())
        {
            b.pool.close_all("the proxy is shutting down");
        }
        for t in self.tasks {
            t.abort();
        }
        tracing::info!("redsplit stopped");
    }
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    lot: Arc<ParkingLot>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(s) => {
                backoff = Duration::from_millis(5);
                s
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let max = proxy.settings.load().config.limits.max_clients;
        if proxy.sessions.len() >= max {
            proxy
                .metrics
                .clients_rejected
                .fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut s = stream;
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    s.write_all(b"-ERR max number of clients reached\r\n"),
                )
                .await;
            });
            continue;
        }
        start_client(&proxy, &lot, stream, peer);
    }
}

/// Register a new client and start its task. Done here rather than in the task so that
/// the task holds only what serving needs (an idle client's task stays small).
fn start_client(proxy: &Arc<Proxy>, lot: &Arc<ParkingLot>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let id = proxy.next_session_id();
    let now_ms = proxy.uptime_ms(Instant::now());
    let handle = Arc::new(SessionHandle {
        id,
        peer,
        local,
        created_ms: now_ms,
        inbox: Inbox::new(),
        state: parking_lot::Mutex::new(ClientState::new(!proxy.settings.load().users.required())),
        last_active_ms: std::sync::atomic::AtomicU64::new(now_ms),
    });
    proxy.sessions.insert(id, handle.clone());
    proxy
        .metrics
        .clients_accepted
        .fetch_add(1, Ordering::Relaxed);
    proxy
        .metrics
        .clients_connected
        .fetch_add(1, Ordering::Relaxed);
    let tls = proxy.settings.load().tls.clone();
    match tls {
        // A new client waits for its first request in the lot, taskless.
        None => {
            let stream = match stream.into_std() {
                Ok(s) => match lot.park(s, handle.clone(), None) {
                    Ok(()) => return,
                    Err((s, _)) => TcpStream::from_std(s),
                },
                Err(e) => Err(e),
            };
            match stream {
                Ok(stream) => {
                    tokio::spawn(serve_plain(
                        proxy.clone(),
                        handle,
                        stream,
                        None,
                        lot.clone(),
                    ));
                }
                Err(e) => finish(proxy, &handle, End::Dropped(e.to_string())),
            }
        }
        // Boxed: a TLS connection's state is large and plain clients should not carry
        // room for it.
        Some(config) => {
            tokio::spawn(Box::pin(serve_tls(proxy.clone(), handle, stream, config)));
        }
    }
}

/// A client connection the proxy can wait on without reading: ready once the client
/// sent something (or closed), which stays to be read.
pub trait Peek: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// The socket as a std stream out of the runtime, for the parking lot; `Err(self)`
    /// when the client cannot park there.
    fn into_std_tcp(self) -> Result<std::io::Result<std::net::TcpStream>, Self>
    where
        Self: Sized;

    /// A socket the parking lot gave back, served again.
    fn from_std_tcp(stream: std::net::TcpStream) -> Option<Self>
    where
        Self: Sized;

    /// Ready with `Ok(n > 0)` when bytes wait to be read, `Ok(0)` at end of stream.
    fn poll_peek_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>>;
}

impl Peek for TcpStream {
    fn into_std_tcp(self) -> Result<std::io::Result<std::net::TcpStream>, Self> {
        Ok(self.into_std())
    }

    fn from_std_tcp(stream: std::net::TcpStream) -> Option<Self> {
        TcpStream::from_std(stream).ok()
    }

    fn poll_peek_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Peek, not just readiness: the runtime assumes a new connection readable, and
        // a client that has sent nothing should stay parked.
        let mut one = [0u8; 1];
        let mut peek = tokio::io::ReadBuf::new(&mut one);
        self.poll_peek(cx, &mut peek)
    }
}

impl Peek for tokio_rustls::server::TlsStream<TcpStream> {
    /// A TLS client keeps its task: its TLS state stays with it.
    fn into_std_tcp(self) -> Result<std::io::Result<std::net::TcpStream>, Self> {
        Err(self)
    }

    fn from_std_tcp(_: std::net::TcpStream) -> Option<Self> {
        None
    }

    /// Bytes of the next TLS record on the socket. A session parks only after its
    /// reads came up empty, so no decrypted data waits inside the TLS state then.
    fn poll_peek_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().0.poll_peek_ready(cx)
    }
}

/// Serve a plain TCP client ([`serve_parking`]): a new one, or one leaving the parking
/// lot with its session's state (`parked`). Once idle, it goes (back) to the lot.
pub(crate) fn serve_plain(
    proxy: Arc<Proxy>,
    handle: Arc<SessionHandle>,
    stream: TcpStream,
    parked: Option<Box<Parked>>,
    lot: Arc<ParkingLot>,
) -> impl std::future::Future<Output = ()> + Send {
    serve_parking(proxy, handle, stream, true, parked, Some(lot))
}

/// Serve a client, plain or TLS alike. Its session state lives in a box only while it
/// is active: one idle for a while with nothing in flight is *parked*. A plain client
/// (`lot` given) then goes to the [`ParkingLot`] and this task ends; a TLS client's task
/// keeps just the connection and a few fields and waits for the next byte. Either way
/// an idle client costs a few hundred bytes (plus its TLS state) instead of a whole
/// session. A TLS client starts active (`wait_first` false): its first request may
/// already sit decrypted in the TLS state, read with the handshake, where waiting on
/// the socket would not see it.
#[allow(clippy::manual_async_fn)]
fn serve_parking<S: Peek + std::os::fd::AsRawFd>(
    proxy: Arc<Proxy>,
    handle: Arc<SessionHandle>,
    mut stream: S,
    wait_first: bool,
    mut parked: Option<Box<Parked>>,
    lot: Option<Arc<ParkingLot>>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let mut wait = wait_first;
        loop {
            // Parked: wait for data, a kill, the proxy draining, or pushes to write (a
            // tracking redirect's invalidations). (Polled by hand: no readiness future
            // to store while the client idles.)
            if wait && !handle.inbox.state.lock().has_pushes() {
                loop {
                    let readable = std::future::poll_fn(|cx| {
                        if let std::task::Poll::Ready(r) = stream.poll_peek_ready(cx) {
                            return std::task::Poll::Ready(Some(r));
                        }
                        if handle.inbox.notify.poll(cx).is_ready() {
                            return std::task::Poll::Ready(None);
                        }
                        std::task::Poll::Pending
                    })
                    .await;
                    match readable {
                        Some(Ok(n)) if n > 0 => break,
                        // End of stream or a broken connection.
                        Some(_) => {
                            finish(&proxy, &handle, End::Closed);
                            return;
                        }
                        None => {
                            if handle.inbox.kill.load(Ordering::Relaxed) {
                                finish(&proxy, &handle, End::Dropped("killed".into()));
                                return;
                            }
                            if handle.inbox.drain.load(Ordering::Relaxed) {
                                finish(&proxy, &handle, End::Closed);
                                return;
                            }
                            if handle.inbox.state.lock().has_pushes() {
                                break;
                            }
                            // Idle past the trim: on to the lot, if it takes the client.
                            if handle.inbox.trim.swap(false, Ordering::Relaxed) && lot.is_some() {
                                let Some(kept) = to_lot(&proxy, &lot, stream, &handle, parked)
                                else {
                                    return;
                                };
                                (stream, parked) = kept;
                            }
                        }
                    }
                }
            }
            wait = true;
            // Active. (A trim asked for while parked is moot.)
            handle.inbox.trim.store(false, Ordering::Relaxed);
            let mut session = Box::new(match parked.take().map(|p| *p) {
                Some(p) => Session::resume(proxy.clone(), handle.clone(), p),
                None => Session::new(proxy.clone(), handle.clone()),
            });
            // Everything logged while the session is active names the client.
            let span = tracing::info_span!("client", id = handle.id, peer = %handle.peer);
            let end = Box::pin(session.serve_parkable(&mut stream).instrument(span)).await;
            if let End::Parked = end {
                if let Some(p) = session.park() {
                    drop(session);
                    parked = Some(Box::new(p));
                    // A plain client idles in the lot, its task and registration freed.
                    if lot.is_some() {
                        let Some(kept) = to_lot(&proxy, &lot, stream, &handle, parked) else {
                            return;
                        };
                        (stream, parked) = kept;
                    }
                    continue;
                }
            }
            session.close();
            finish(&proxy, &handle, end);
            return;
        }
    }
}

/// Hand an idle client to the parking lot (`lot`, if any). `None` when it is there, or
/// finished because its socket was lost on the way; otherwise the client back, to be
/// served on as before.
#[allow(clippy::type_complexity)]
fn to_lot<S: Peek>(
    proxy: &Proxy,
    lot: &Option<Arc<ParkingLot>>,
    stream: S,
    handle: &Arc<SessionHandle>,
    parked: Option<Box<Parked>>,
) -> Option<(S, Option<Box<Parked>>)> {
    let Some(lot) = lot else {
        return Some((stream, parked));
    };
    let std_stream = match stream.into_std_tcp() {
        Err(stream) => return Some((stream, parked)),
        Ok(Err(_)) => {
            finish(proxy, handle, End::Closed);
            return None;
        }
        Ok(Ok(s)) => s,
    };
    let (std_stream, parked) = lot.park(std_stream, handle.clone(), parked).err()?;
    match S::from_std_tcp(std_stream) {
        Some(stream) => Some((stream, parked)),
        None => {
            finish(proxy, handle, End::Closed);
            None
        }
    }
}

/// A client is gone: unregister it.
pub(crate) fn finish(proxy: &Proxy, handle: &SessionHandle, end: End) {
    tracing::debug!(client = handle.id, peer = %handle.peer, end = ?end, "client left");
    handle.inbox.close();
    proxy.sessions.remove(&handle.id);
    // After the client is gone from `sessions`: a redirect reserving a connection for it
    // meanwhile sees it gone, and closes what it reserved itself.
    if let Some((_, r)) = proxy.reserved.remove(&handle.id) {
        r.conn.close("client left");
    }
    proxy
        .metrics
        .clients_connected
        .fetch_sub(1, Ordering::Relaxed);
}

/// Serve a TLS client: the handshake (within 10 s), then as any client
/// ([`serve_parking`]).
async fn serve_tls(
    proxy: Arc<Proxy>,
    handle: Arc<SessionHandle>,
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let end = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(tls)) => return serve_parking(proxy, handle, tls, false, None, None).await,
        Ok(Err(e)) => {
            tracing::info!(client = handle.id, peer = %handle.peer, error = %e, "TLS handshake failed");
            End::Dropped(format!("TLS handshake failed: {e}"))
        }
        Err(_) => End::Dropped("TLS handshake timed out".into()),
    };
    finish(&proxy, &handle, end);
}

/// Once a second: release the buffers of idle clients and close clients idle past
/// `idle_timeout_ms`.
async fn janitor(proxy: Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut pending_release = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now_ms = proxy.uptime_ms(Instant::now());
        let idle_timeout = proxy.settings.load().config.limits.idle_timeout_ms;
        let mut trimmed = 0usize;
        for e in proxy.sessions.iter() {
            let h = e.value();
            let idle = now_ms.saturating_sub(h.last_active_ms.load(Ordering::Relaxed));
            // Subscribers, MONITOR and blocked clients are not idle, as in Redis.
            let exempt = matches!(h.state.lock().flags, b'P' | b'O' | b'b');
            if idle_timeout > 0 && idle > idle_timeout && !exempt {
                h.inbox.kill.store(true, Ordering::Relaxed);
                h.inbox.notify.notify();
            } else if idle >= 2000 && !h.inbox.trimmed.swap(true, Ordering::Relaxed) {
                h.inbox.trim.store(true, Ordering::Relaxed);
                h.inbox.notify.notify();
                trimmed += 1;
            }
        }
        // Buffers freed by trimmed sessions go back to the system on the next tick
        // (the allocator keeps freed memory otherwise).
        if pending_release {
            crate::alloc::release_free_memory();
        }
        pending_release = trimmed > 0;
    }
}

/// Learn the master's version, database count and module commands.
async fn probe_backends(proxy: Arc<Proxy>) {
    let mut delay = Duration::from_millis(50);
    loop {
        let view = proxy.view.load_full();
        let master = view.shard_views().find_map(|v| v.master.clone());
        if let Some(m) = master.as_ref() {
            let params: ConnParams = ConnParams {
                role: Role::Master,
                ..(**m.backend.pool.params()).clone()
            };
            if let Ok(mut c) = ControlConn::connect(&params).await {
                let t = Duration::from_secs(2);
                let mut info = ServerInfo::default();
                if let Ok(Decoded::Str(s)) = c.call(&[b"INFO", b"server"], t).await {
                    if let Some(v) = Info::parse(&reply::text(&s)).get("redis_version") {
                        info.redis_version = v.to_string();
                    }
                }
                if let Ok(d) = c.call(&[b"CONFIG", b"GET", b"databases"], t).await {
                    if let Some(n) = d
                        .into_items()
                        .and_then(|i| i.get(1).and_then(|v| v.as_int()))
                    {
                        info.databases = u32::try_from(n).unwrap_or(16);
                    }
                }
                if view.cluster.is_some() {
                    // A cluster node serves database 0 only (see `ServerInfo::databases`).
                    info.databases = 0;
                }
                proxy.info.store(Arc::new(info));
                if let Ok(list) = c.call(&[b"COMMAND", b"LIST"], t).await {
                    let unknown: Vec<Vec<u8>> = list
                        .into_items()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|n| n.as_str())
                        .filter(|n| !crate::commands::is_known_name(n))
                        .map(|n| n.into_bytes())
                        .collect();
                    if !unknown.is_empty() {
                        let mut args: Vec<&[u8]> = vec![b"COMMAND", b"INFO"];
                        args.extend(unknown.iter().map(|n| n.as_slice()));
                        if let Ok(raw) = c.call_raw(&args, t).await {
                            match redis_protocol::resp2::decode::decode(&raw) {
                                Ok(Some((frame, _))) => {
                                    match crate::commands::register_from_command_info(&frame) {
                                        Ok(n) => tracing::info!(
                                            commands = n,
                                            "registered module commands from the master"
                                        ),
                                        Err(e) => {
                                            tracing::warn!(error = %e, "could not register module commands")
                                        }
                                    }
                                }
                                _ => tracing::warn!("COMMAND INFO reply did not decode"),
                            }
                        }
                    }
                }
                return;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The runtime the proxy runs on, for `workers` threads.
///
/// `workers: 1` (the default) is one event loop on the calling thread, as in Redis
/// itself: clients whose requests become readable in some order are served in that
/// order, and each request is written to its backend connection before the next
/// client's is read, so requests of different clients reach Redis in the order they
/// reached the proxy. More workers (`0`: one per core) share the clients between
/// threads; two requests that arrive within microseconds of each other on different
/// threads can then reach Redis in either order.
///
/// A one-worker runtime runs only inside `block_on`: whoever starts the proxy on it
/// keeps a thread in `block_on` for as long as the proxy runs (as [`run`] does).
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut rt = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    rt.enable_all().build()
}

/// Run until SIGTERM (graceful, within `shutdown_grace_ms`) or SIGINT (fast).
pub async fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    // Handlers first: a signal that comes as soon as the listener is up is handled, not
    // the default action (which would end the process on the spot).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let handle = start(config, config_path).await?;
    let fast = tokio::select! {
        _ = term.recv() => {
            tracing::info!(grace_ms = grace.as_millis() as u64, "SIGTERM: draining");
            false
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: stopping");
            true
        }
    };
    handle
        .shutdown(if fast {
            Duration::from_millis(100)
        } else {
            grace
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: Fn(
            Arc<Proxy>,
            Arc<SessionHandle>,
            TcpStream,
            Option<Box<Parked>>,
            Arc<ParkingLot>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A new client costs its task, its handle and the runtime's registration until it
    /// idles into the parking lot, where it costs its handle and an entry; ours must stay
    /// within one small allocation size class each (the memory benchmark measures the
    /// whole).
    #[test]
    fn an_idle_client_is_small() {
        // A task is the future plus about 104 bytes of runtime header, in 128-byte steps.
        let task = future_size(serve_plain);
        assert!(
            task <= 152,
            "a waiting client's task future is {task} bytes"
        );
        // An `Arc` adds 16 bytes; 256 is a size class.
        let handle = std::mem::size_of::<SessionHandle>();
        assert!(handle <= 240, "a client's handle is {handle} bytes");
    }
}
