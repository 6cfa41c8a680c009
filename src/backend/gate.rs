//! [`Gate`]: keeps the requests sent to one backend in the order sessions sent them, across
//! that backend's connections, while one of them is still opening.
//!
//! Requests queued on a connection that is still connecting can only be written once its
//! handshake is done; without the gate, a request another client sends a moment later on
//! an open connection would reach Redis first (a `BLPOP` on a new dedicated connection
//! overtaken by another client's `RPUSH`). So a connection that queues requests while it
//! connects joins the gate's queue, and so does every connection of the same backend that
//! queues requests while the queue is not empty. Only the connection at the front may
//! write; when it has written it leaves, and the next one is woken. While the queue is
//! empty (every connection open, the usual case) the gate costs one atomic load per send.

use super::Conn;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Weak;

/// The write order of one backend's connections while one of them opens (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct Gate {
    /// Connections with requests behind the gate, oldest first, by connection id.
    queue: Mutex<VecDeque<(u64, Weak<Conn>)>>,
    /// The queue's length, for the lock-free check on the hot path.
    len: AtomicUsize,
}

impl Gate {
    /// Whether no connection waits for its turn: any connection may write at once.
    pub fn is_open(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Put connection `id` at the back of the queue (its requests come after everything
    /// queued).
    pub(super) fn join(&self, id: u64, conn: Weak<Conn>) {
        let mut q = self.queue.lock();
        q.push_back((id, conn));
        self.len.store(q.len(), Ordering::Release);
    }

    /// Whether connection `id` may write now: the queue is empty or it is at the front.
    pub(super) fn may_write(&self, id: u64) -> bool {
        if self.is_open() {
            return true;
        }
        self.queue
            .lock()
            .front()
            .is_none_or(|(front, _)| *front == id)
    }

    /// Take connection `id` out of the queue (it wrote, failed or went away). If it was
    /// at the front, the new front's writer is woken; connections that went away are
    /// skipped.
    pub(super) fn leave(&self, id: u64) {
        let next = {
            let mut q = self.queue.lock();
            let Some(pos) = q.iter().position(|(c, _)| *c == id) else {
                return;
            };
            q.remove(pos);
            let mut next = None;
            if pos == 0 {
                while let Some((_, w)) = q.front() {
                    match w.upgrade() {
                        Some(c) => {
                            next = Some(c);
                            break;
                        }
                        None => {
                            q.pop_front();
                        }
                    }
                }
            }
            self.len.store(q.len(), Ordering::Release);
            next
        };
        if let Some(c) = next {
            c.wake_writer();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_gate_lets_anyone_write() {
        let g = Gate::default();
        assert!(g.is_open());
        assert!(g.may_write(7));
        g.leave(7);
        assert!(g.is_open());
    }

    #[test]
    fn only_the_front_writes_and_leaving_passes_the_turn_on() {
        let g = Gate::default();
        g.join(1, Weak::new());
        g.join(2, Weak::new());
        g.join(3, Weak::new());
        assert!(!g.is_open());
        assert!(g.may_write(1));
        assert!(!g.may_write(2) && !g.may_write(3) && !g.may_write(9));
        // Leaving from the middle keeps the front.
        g.leave(2);
        assert!(g.may_write(1) && !g.may_write(3));
        // The front leaves: connections that went away are skipped, here the rest.
        g.leave(1);
        assert!(g.is_open());
        assert!(g.may_write(3));
    }
}
