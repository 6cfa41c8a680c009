//! [`Relay`]: a TCP relay between a replica and its master that holds, delays or cuts the
//! replication stream.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{wait_until, POLL_INTERVAL, START_TIMEOUT};

/// What the relay's connections obey; changed through a `watch` channel so every
/// connection task sees a change at once.
#[derive(Clone, Debug, Default)]
struct RelayState {
    /// Hold master→replica bytes.
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
pub struct Relay {
    addr: SocketAddr,

    control: watch::Sender<RelayState>,
    /// Open relayed connections: id → the cut generation they were accepted under.
    open: Arc<Mutex<HashMap<usize, u64>>>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay to `target` on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> Relay {
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
                    runtime.block_on(relay_main(target, state, open, accepted, addr_tx));
                })
                .expect("start the relay thread")
        };
        let addr = addr_rx.recv().expect("relay bound its port");
        Relay {
            addr,

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
        wait_until("relayed connections are closed", START_TIMEOUT, || {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.values().all(|&g| g >= generation)
        });
    }

    /// Relayed connections currently open.
    pub fn connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
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
    state: watch::Receiver<RelayState>,
    open: Arc<Mutex<HashMap<usize, u64>>>,
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
                open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, generation);
                let guard = OpenGuard { id, open: open.clone() };
                tokio::spawn(relay_connection(replica, target, generation, state.clone(), guard));
            }
        }
    }
}

/// Removes a connection from the open set when its task ends or is dropped.
struct OpenGuard {
    id: usize,
    open: Arc<Mutex<HashMap<usize, u64>>>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Relays one replica connection to `target` until either side closes or a cut.
async fn relay_connection(
    replica: tokio::net::TcpStream,
    target: SocketAddr,
    generation: u64,
    state: watch::Receiver<RelayState>,
    _guard: OpenGuard,
) {
    let Ok(master) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let _ = replica.set_nodelay(true);
    let _ = master.set_nodelay(true);
    let (mut replica_rd, mut replica_wr) = replica.into_split();
    let (mut master_rd, mut master_wr) = master.into_split();

    let upstream = tokio::io::copy(&mut replica_rd, &mut master_wr);

    // Master→replica: the reader stamps each chunk with its release time as it arrives;
    // the writer releases chunks in order, each at its time and only while not paused.
    let (queue_tx, mut queue_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader_state = state.clone();
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            match master_rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let release = Instant::now() + reader_state.borrow().delay;
                    if queue_tx.send((release, buf.freeze())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut writer_state = state.clone();
    let writer = async move {
        while let Some((release, chunk)) = queue_rx.recv().await {
            tokio::time::sleep_until(release.into()).await;
            if writer_state.wait_for(|s| !s.paused).await.is_err()
                || replica_wr.write_all(&chunk).await.is_err()
            {
                return;
            }
        }
        let _ = replica_wr.shutdown().await;
    };
    let downstream = async { tokio::join!(reader, writer) };

    let mut cut_state = state;
    let cut = cut_state.wait_for(|s| s.cut_generation != generation || s.shutdown);

    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut => {}
    }
}
