//! The parking lot: idle plain-TCP clients, kept without a task of their own.
//!
//! A client waiting on a task of its own costs the task and the runtime's registration
//! of its socket (256 bytes each) besides its handle. A new client waits here for its
//! first request, and one idle past the janitor's trim (2 s) comes back: its socket is
//! watched by an epoll set of the lot's own, which one task watches in turn, and it
//! costs its handle and one entry (measured: about 390 bytes per idle client in all).
//! When the client sends something or hangs up, it leaves the lot for a task of its
//! own again ([`crate::server`] serves it), its session rebuilt from
//! [`crate::session::Parked`] if it had one.
//!
//! Order between clients is kept: the woken client's future is polled once inside the
//! lot's task, so what it read is dispatched in the turn the lot saw it, before the
//! tasks woken after the lot; only then is it spawned (its next poll, with its own
//! task's waker, re-registers everything it waits on).
//!
//! A kill or a shutdown of a parked client (its inbox's kill or drain flag, then its
//! signal) wakes the lot through the waker every parked client's signal holds, and the
//! lot closes the clients so marked; a push delivered to a parked client (an
//! invalidation of a tracking redirect to it) wakes it the same way, and the lot serves
//! it again to write the push.

use crate::proxy::{Proxy, SessionHandle};
use crate::session::{End, Parked};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// One parked client.
struct Entry {
    stream: std::net::TcpStream,
    handle: Arc<SessionHandle>,
    parked: Option<Box<Parked>>,
}

/// Idle plain-TCP clients and the epoll set that watches their sockets.
pub struct ParkingLot {
    registry: mio::Registry,
    /// Whose clients these are: for its metrics, and to serve them again.
    proxy: Arc<Proxy>,
    entries: Mutex<HashMap<u64, Entry>>,
    /// Set when a parked client's signal fired: the lot looks for kills and drains.
    sweep: AtomicBool,
    /// The lot's task.
    task: atomic_waker::AtomicWaker,
    /// What every parked client's signal wakes: sets `sweep` and wakes the task.
    signal_waker: Waker,
}

impl std::fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkingLot")
            .field("parked", &self.len())
            .finish()
    }
}

/// The waker parked clients' signals hold.
struct SweepWake(Weak<ParkingLot>);

impl Wake for SweepWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(lot) = self.0.upgrade() {
            lot.sweep.store(true, Ordering::Release);
            lot.task.wake();
        }
    }
}

/// The lot's epoll set, as a file descriptor the runtime can watch. It owns the
/// descriptor for as long as the runtime watches it.
struct EpollFd(mio::Poll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl ParkingLot {
    /// A new lot, and its task started on the current runtime (which then serves the
    /// clients leaving the lot).
    pub fn start(
        proxy: Arc<Proxy>,
    ) -> std::io::Result<(Arc<ParkingLot>, tokio::task::JoinHandle<()>)> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        // The safe constructor: `EpollFd` owns its descriptor, never changes it and
        // closes it only when dropped with the `AsyncFd`, which is what the unsafe one
        // would have this code promise.
        #[allow(deprecated)]
        let epoll = AsyncFd::with_interest(EpollFd(poll), tokio::io::Interest::READABLE)?;
        let lot = Arc::new_cyclic(|me| ParkingLot {
            registry,
            proxy,
            entries: Mutex::new(HashMap::new()),
            sweep: AtomicBool::new(false),
            task: atomic_waker::AtomicWaker::new(),
            signal_waker: Waker::from(Arc::new(SweepWake(me.clone()))),
        });
        let task = tokio::spawn(run(lot.clone(), epoll));
        Ok((lot, task))
    }

    /// How many clients are parked.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no client is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Park a client: from now on the lot waits for its next byte. The socket (and
    /// state) back if the lot cannot watch it; the caller then keeps it on its task.
    pub fn park(
        &self,
        stream: std::net::TcpStream,
        handle: Arc<SessionHandle>,
        parked: Option<Box<Parked>>,
    ) -> Result<(), (std::net::TcpStream, Option<Box<Parked>>)> {
        let id = handle.id;
        let fd = stream.as_raw_fd();
        self.entries.lock().insert(
            id,
            Entry {
                stream,
                handle: handle.clone(),
                parked,
            },
        );
        if self
            .registry
            .register(&mut SourceFd(&fd), token(id), Interest::READABLE)
            .is_err()
        {
            return match self.entries.lock().remove(&id) {
                Some(e) => Err((e.stream, e.parked)),
                None => Ok(()),
            };
        }
        self.proxy
            .metrics
            .clients_parked
            .fetch_add(1, Ordering::Relaxed);
        // From now on a kill or drain wakes the lot (one that came before is seen now).
        self.watch(&handle);
        Ok(())
    }

    /// Make `handle`'s signal wake the lot; if it had fired meanwhile, sweep.
    fn watch(&self, handle: &SessionHandle) {
        let mut cx = Context::from_waker(&self.signal_waker);
        let mut fired = false;
        while handle.inbox.notify.poll(&mut cx).is_ready() {
            fired = true;
        }
        if fired {
            self.sweep.store(true, Ordering::Release);
            self.task.wake();
        }
    }

    /// The parked client `id` sent something or hung up: back to a task of its own,
    /// after a first poll here (see the module's notes on order).
    fn unpark(lot: &Arc<ParkingLot>, id: u64) {
        let proxy = &lot.proxy;
        let Some(e) = lot.entries.lock().remove(&id) else {
            return;
        };
        lot.proxy
            .metrics
            .clients_parked
            .fetch_sub(1, Ordering::Relaxed);
        let _ = lot
            .registry
            .deregister(&mut SourceFd(&e.stream.as_raw_fd()));
        let stream = match tokio::net::TcpStream::from_std(e.stream) {
            Ok(s) => s,
            Err(err) => {
                crate::server::finish(proxy, &e.handle, End::Dropped(err.to_string()));
                return;
            }
        };
        let mut client = Box::pin(crate::server::serve_plain(
            proxy.clone(),
            e.handle,
            stream,
            e.parked,
            lot.clone(),
        ));
        let mut cx = Context::from_waker(Waker::noop());
        if client.as_mut().poll(&mut cx).is_pending() {
            tokio::spawn(client);
        }
    }

    /// Close every parked client that was killed or is asked to finish (shutdown), serve
    /// again those with pushes to write (a tracking redirect's invalidations), and
    /// watch the others' signals again.
    fn sweep(lot: &Arc<ParkingLot>) {
        let mut gone = Vec::new();
        let mut pushed = Vec::new();
        {
            let mut entries = lot.entries.lock();
            entries.retain(|id, e| {
                lot.watch(&e.handle);
                let inbox = &e.handle.inbox;
                let end = if inbox.kill.load(Ordering::Relaxed) {
                    End::Dropped("killed".into())
                } else if inbox.drain.load(Ordering::Relaxed) {
                    End::Closed
                } else {
                    if inbox.state.lock().has_pushes() {
                        pushed.push(*id);
                    }
                    return true;
                };
                let _ = lot
                    .registry
                    .deregister(&mut SourceFd(&e.stream.as_raw_fd()));
                gone.push((e.handle.clone(), end));
                false
            });
        }
        lot.proxy
            .metrics
            .clients_parked
            .fetch_sub(gone.len() as i64, Ordering::Relaxed);
        for (handle, end) in gone {
            crate::server::finish(&lot.proxy, &handle, end);
        }
        for id in pushed {
            ParkingLot::unpark(lot, id);
        }
    }
}

fn token(id: u64) -> Token {
    Token(usize::try_from(id).unwrap_or(usize::MAX))
}

/// The lot's task: clients whose sockets became readable leave the lot; fired signals
/// are swept for kills and drains.
async fn run(lot: Arc<ParkingLot>, mut epoll: AsyncFd<EpollFd>) {
    let mut events = mio::Events::with_capacity(256);
    let mut ready = Vec::new();
    loop {
        let sweep = std::future::poll_fn(|cx| {
            lot.task.register(cx.waker());
            if lot.sweep.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        tokio::select! {
            guard = epoll.readable_mut() => {
                let Ok(mut guard) = guard else {
                    tracing::error!("the parking lot's epoll set failed");
                    return;
                };
                loop {
                    events.clear();
                    let polled = guard
                        .get_inner_mut()
                        .0
                        .poll(&mut events, Some(Duration::ZERO));
                    if polled.is_err() || events.is_empty() {
                        break;
                    }
                    ready.clear();
                    ready.extend(events.iter().map(|e| e.token().0 as u64));
                    for id in ready.drain(..) {
                        ParkingLot::unpark(&lot, id);
                    }
                }
                guard.clear_ready();
            }
            () = sweep => ParkingLot::sweep(&lot),
        }
    }
}
