//! Where replies are delivered: each session owns an [`Inbox`] with one [`SlotQueue`]
//! per source (a backend connection, or a retry), which connections append to under a
//! short lock and the session drains in request order; a [`Signal`] wakes the session.

use super::BackendError;
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// The front item, left in place; for a reply, its bytes are at `data[..len]` until
    /// [`SlotQueue::consume`] drops it.
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
    /// Set when deliveries went over `budget_kb`: they were dropped and the inbox closed;
    /// the session closes the client as over its output buffer limit.
    pub over: bool,
    /// How many KiB of replies may wait here: the client's output buffer limit less what
    /// its session already holds to write (0: no limit). Kept up to date by the session
    /// each turn, so a client that does not read is cut within one reply of its limit,
    /// however many replies its pipeline asked for.
    pub budget_kb: u32,
    /// One queue per source.
    pub slots: Vec<SlotQueue>,
}

impl InboxState {
    /// The queue of `slot`, made (with any below it) if it is new. `None` only if the
    /// slot cannot be stored at all, which the resize rules out.
    fn slot(&mut self, slot: u16) -> Option<&mut SlotQueue> {
        let i = usize::from(slot);
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, SlotQueue::default);
        }
        self.slots.get_mut(i)
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
            let Some(q) = st.slot(slot) else { return };
            q.data.extend_from_slice(data);
            q.items.extend(lens.iter().map(|l| Item::Reply(*l)));
            if st.budget_kb > 0 {
                let queued: usize = st.slots.iter().map(|q| q.data.len()).sum();
                if queued / 1024 > st.budget_kb as usize {
                    st.over = true;
                    st.closed = true;
                    st.slots = Vec::new();
                }
            }
        }
        self.notify.notify();
    }

    /// Set how many bytes of replies may wait (`None`: no limit); `true` once the inbox
    /// went over it.
    pub fn set_budget(&self, bytes: Option<u64>) -> bool {
        let kb = bytes.map_or(0, |b| u32::try_from(b / 1024).unwrap_or(u32::MAX).max(1));
        let mut st = self.state.lock();
        st.budget_kb = kb;
        st.over
    }

    /// Record `count` failed requests.
    pub fn push_failed(&self, slot: u16, err: &BackendError, count: u32) {
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            let Some(q) = st.slot(slot) else { return };
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
pub(super) fn same_sink(a: &Arc<dyn Sink>, b: &Arc<dyn Sink>) -> bool {
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
