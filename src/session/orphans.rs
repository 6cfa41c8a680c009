//! Blocked clients that hung up, noticed before anyone else's next request goes out.
//!
//! A client blocked in `BLPOP` (or any blocking command) is a waiter on the master
//! through its dedicated connection. When it disconnects, Redis must stop counting it
//! as a waiter before another client's push that came after the disconnect reaches the
//! master, or the pushed element is handed to a connection nobody reads. Redis itself
//! gets this order from one event loop; the proxy's sessions run on several threads, and
//! a session sees its client's hang-up only when it is next scheduled. So the client
//! socket of every blocked session is also registered in one extra epoll set (read
//! hang-ups only), and every session, before it dispatches what it read, collects the
//! hang-ups that set has seen and closes those clients' dedicated connections at once
//! (their sockets are shut down from the calling task). A hang-up that arrived before a
//! request was read is in the set by then: the kernel queues the event when the FIN
//! arrives.
//!
//! Cost: nothing while no client is blocked; one non-blocking `epoll_wait` per batch of
//! requests while some are.

use crate::backend::Conn;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

/// The epoll set and who each registration stands for.
struct Watch {
    /// `None` if the epoll set could not be made (then nothing is watched).
    poll: Mutex<Option<(Poll, Events)>>,
    /// Token → the client's socket and its dedicated connection.
    entries: Mutex<HashMap<usize, (RawFd, Weak<Conn>)>>,
    /// Registrations now (the fast "nobody is blocked" check).
    count: AtomicUsize,
}

static WATCH: LazyLock<Watch> = LazyLock::new(|| Watch {
    poll: Mutex::new(Poll::new().ok().map(|p| (p, Events::with_capacity(64)))),
    entries: Mutex::new(HashMap::new()),
    count: AtomicUsize::new(0),
});

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// One blocked client's registration; [`unwatch`] ends it.
#[derive(Debug)]
pub(super) struct Watched(usize);

/// Watch client socket `fd` for a hang-up while `conn` (its dedicated connection) holds
/// a blocking command. `None` if it could not be registered.
pub(super) fn watch(fd: RawFd, conn: &Arc<Conn>) -> Option<Watched> {
    let token = usize::try_from(NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)).ok()?;
    let w = &*WATCH;
    let guard = w.poll.lock();
    let (poll, _) = guard.as_ref()?;
    // Edge-triggered: data the client pipelines behind its blocking command is an event
    // too, ignored below; its hang-up is a new event after it.
    poll.registry()
        .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        .ok()?;
    w.entries.lock().insert(token, (fd, Arc::downgrade(conn)));
    w.count.fetch_add(1, Ordering::Release);
    Some(Watched(token))
}

/// End a registration (the blocking command returned, or the session ends).
pub(super) fn unwatch(watched: Watched) {
    let w = &*WATCH;
    let guard = w.poll.lock();
    if let Some((fd, _)) = w.entries.lock().remove(&watched.0) {
        w.count.fetch_sub(1, Ordering::Release);
        if let Some((poll, _)) = guard.as_ref() {
            // The socket is still open here (the session owns it): deregistering cannot
            // hit another socket that reused the number.
            let _ = poll.registry().deregister(&mut SourceFd(&fd));
        }
    }
}

/// Close the dedicated connections of blocked clients that have hung up.
pub(super) fn reap() {
    let w = &*WATCH;
    if w.count.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut gone = Vec::new();
    {
        let mut guard = w.poll.lock();
        let Some((poll, events)) = guard.as_mut() else {
            return;
        };
        // Until a poll comes back short of the buffer's capacity: every hang-up queued.
        loop {
            if poll.poll(events, Some(Duration::ZERO)).is_err() {
                break;
            }
            let entries = w.entries.lock();
            let mut n = 0;
            for e in events.iter() {
                n += 1;
                if e.is_read_closed() || e.is_error() {
                    if let Some((_, conn)) = entries.get(&e.token().0) {
                        gone.push(conn.clone());
                    }
                }
            }
            if n < events.capacity() {
                break;
            }
        }
    }
    for conn in gone.iter().filter_map(Weak::upgrade) {
        conn.close("client disconnected");
    }
}
