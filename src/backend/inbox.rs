//! Where replies are delivered: each session owns an [`Inbox`] with one [`SlotQueue`]
//! per source (a backend connection, or a retry), which connections append to under a
//! short lock and the session drains in request order; a [`Signal`] wakes the session.

use super::BackendError;
use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// One delivered item in an inbox slot.
#[derive(Debug)]
enum Item {
    /// A complete reply of this many bytes, at the front of the slot's data.
    Reply(usize),
    /// The request failed without a reply.
    Failed(BackendError),
}

/// The front of a [`SlotQueue`], borrowed.
#[derive(Debug)]
pub enum Front<'a> {
    /// A complete reply: its bytes.
    Reply(&'a [u8]),
    /// The request failed without a reply.
    Failed(&'a BackendError),
}

/// The replies one session receives from one source, in order: items (one per reply
/// or failure) over the reply bytes, back to back, kept consistent by the methods below
/// (nothing else can reach either).
///
/// The bytes are held in chunks, each holding whole replies: the first chunk, and more
/// only once a delivery would grow it past [`CHUNK`]. A slot that holds many large
/// replies (a client that does not read) then never copies them into an ever larger
/// buffer, whose every doubling would briefly hold the old and the new one; in the
/// usual case everything is in the first chunk.
#[derive(Debug, Default)]
pub struct SlotQueue {
    /// The first chunk.
    data: BytesMut,
    /// The chunks after it, oldest first (usually none).
    more: VecDeque<BytesMut>,
    items: VecDeque<Item>,
    /// Bytes of replies queued, over every chunk.
    bytes: usize,
}

/// Size past which a delivery to a [`SlotQueue`] starts a new chunk.
pub const CHUNK: usize = 1 << 20;

impl SlotQueue {
    /// The `i`th chunk.
    fn chunk(&self, i: usize) -> Option<&BytesMut> {
        match i {
            0 => Some(&self.data),
            _ => self.more.get(i - 1),
        }
    }

    /// The front item, left in place until [`SlotQueue::consume`] drops it.
    pub fn front(&self) -> Option<Front<'_>> {
        match self.items.front()? {
            Item::Reply(len) => Some(Front::Reply(self.data.get(..*len).unwrap_or_default())),
            Item::Failed(e) => Some(Front::Failed(e)),
        }
    }

    /// Each queued item's reply bytes, in order (`None` for a failure).
    pub fn frames(&self) -> impl Iterator<Item = Option<&[u8]>> {
        let mut chunk = 0;
        let mut off = 0;
        self.items.iter().map(move |item| match item {
            Item::Reply(len) => {
                // A reply that does not fit in the rest of this chunk starts the next.
                if off + len > self.chunk(chunk)?.len() {
                    chunk += 1;
                    off = 0;
                }
                let frame = self.chunk(chunk)?.get(off..off + len);
                off += len;
                frame
            }
            Item::Failed(_) => None,
        })
    }

    /// How many items are queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of replies queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drop the front item (and its bytes).
    pub fn consume(&mut self) {
        if let Some(Item::Reply(len)) = self.items.pop_front() {
            self.data.advance(len);
            self.bytes -= len.min(self.bytes);
            if self.data.is_empty() {
                if let Some(next) = self.more.pop_front() {
                    self.data = next;
                }
            }
        }
        if self.items.is_empty() {
            self.data.clear();
            self.more.clear();
            self.bytes = 0;
        }
    }

    /// Append one complete reply.
    pub fn push_reply(&mut self, frame: &[u8]) {
        self.push_replies(frame, &[frame.len()]);
    }

    /// Append complete replies: `data` holds them back to back, `lens` gives each length.
    pub fn push_replies(&mut self, data: &[u8], lens: &[usize]) {
        let back = self.more.back_mut().unwrap_or(&mut self.data);
        if back.is_empty() || back.len() + data.len() <= CHUNK {
            back.extend_from_slice(data);
        } else {
            self.more.push_back(BytesMut::from(data));
        }
        self.bytes += data.len();
        self.items.extend(lens.iter().map(|l| Item::Reply(*l)));
    }

    /// Append complete replies whose bytes (`data`, back to back) are handed over as a
    /// chunk of their own, without a copy.
    pub fn push_owned(&mut self, data: BytesMut, lens: &[usize]) {
        self.bytes += data.len();
        if self.data.is_empty() && self.more.is_empty() {
            self.data = data;
        } else {
            self.more.push_back(data);
        }
        self.items.extend(lens.iter().map(|l| Item::Reply(*l)));
    }

    /// Put one complete reply in front of everything queued.
    pub fn push_front_reply(&mut self, frame: &[u8]) {
        let old = std::mem::replace(&mut self.data, BytesMut::from(frame));
        if !old.is_empty() {
            self.more.push_front(old);
        }
        self.bytes += frame.len();
        self.items.push_front(Item::Reply(frame.len()));
    }

    /// Append `count` failures.
    pub fn push_failed(&mut self, err: &BackendError, count: u32) {
        for _ in 0..count {
            self.items.push_back(Item::Failed(err.clone()));
        }
    }

    /// How many replies, from the front, the first chunk holds before anything else
    /// (a failure, or the next chunk), and their bytes.
    fn first_chunk_run(&self) -> (usize, usize) {
        let mut bytes = 0;
        let n = self
            .items
            .iter()
            .take_while(|item| match item {
                Item::Reply(len) if bytes + len <= self.data.len() => {
                    bytes += len;
                    true
                }
                _ => false,
            })
            .count();
        (n, bytes)
    }

    /// How many replies, from the front, the first chunk holds before anything else (a
    /// failure, or the next chunk).
    pub fn first_chunk_len(&self) -> usize {
        self.first_chunk_run().0
    }

    /// Hand those replies ([`SlotQueue::first_chunk_len`] of them) over at once, without
    /// a copy: `out`, which must be empty, becomes the first chunk when they are all of
    /// it (the next chunk then moves up), or the part of it they fill. Later chunks stay
    /// queued: handing them over too would copy them, all, into one buffer.
    pub fn take_first_chunk(&mut self, out: &mut BytesMut) {
        debug_assert!(out.is_empty());
        let (n, bytes) = self.first_chunk_run();
        self.items.drain(..n);
        self.bytes -= bytes.min(self.bytes);
        if bytes < self.data.len() {
            *out = self.data.split_to(bytes);
            return;
        }
        std::mem::swap(out, &mut self.data);
        self.data.clear();
        if let Some(next) = self.more.pop_front() {
            self.data = next;
        }
    }

    /// Drop everything queued.
    pub fn clear(&mut self) {
        self.items.clear();
        self.data.clear();
        self.more.clear();
        self.bytes = 0;
    }

    /// Release memory held by an empty queue.
    pub fn trim(&mut self) {
        if self.items.is_empty() {
            self.data = BytesMut::new();
            self.more = VecDeque::new();
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
    /// KiB of large replies on their way here, counted against the budget while they
    /// are read ([`Inbox::expect`]). Changed under the state's lock.
    incoming_kb: AtomicU32,
}

/// The lock-protected part of an [`Inbox`].
#[derive(Debug, Default)]
pub struct InboxState {
    /// Set when the session is gone: deliveries are dropped.
    closed: bool,
    /// Set when deliveries went over `budget_kb`: they were dropped and the inbox closed;
    /// the session closes the client as over its output buffer limit.
    over: bool,
    /// How many KiB of replies may wait here: the client's output buffer limit less what
    /// its session already holds to write (0: no limit). Kept up to date by the session
    /// each turn, so a client that does not read is cut within one reply of its limit,
    /// however many replies its pipeline asked for.
    budget_kb: u32,
    /// One queue per source, after the queue of [`PUSHES`] (slot `s` is at `s + 1`):
    /// RESP3 pushes from a connection that owes this client no reply, written to it as
    /// they come, between replies.
    slots: Vec<SlotQueue>,
}

/// Where `slot`'s queue is in [`InboxState::slots`].
fn index(slot: u16) -> usize {
    if slot == PUSHES {
        0
    } else {
        usize::from(slot) + 1
    }
}

/// The slot of the pushes a connection delivers outside any request (RESP3
/// invalidations for a client that is a tracking redirect's target): the session
/// writes them to its client as they come, as Redis does, not in request order.
pub const PUSHES: u16 = u16::MAX - 1;

impl InboxState {
    /// Close the inbox as over its budget if what is queued, and `incoming_kb` KiB on
    /// their way, exceed it; true when that happened now.
    fn check_budget(&mut self, incoming_kb: u32) -> bool {
        if self.budget_kb == 0 || self.closed {
            return false;
        }
        let queued: usize = self.slots.iter().map(SlotQueue::bytes).sum();
        if queued / 1024 + incoming_kb as usize <= self.budget_kb as usize {
            return false;
        }
        self.over = true;
        self.closed = true;
        self.slots = Vec::new();
        true
    }

    /// The queue of `slot`, if anything was ever delivered there.
    pub fn queue(&mut self, slot: u16) -> Option<&mut SlotQueue> {
        self.slots.get_mut(index(slot))
    }

    /// Whether pushes wait in [`PUSHES`].
    pub fn has_pushes(&self) -> bool {
        self.slots.first().is_some_and(|q| !q.is_empty())
    }

    /// Drop whatever is queued in `slot`.
    pub fn clear(&mut self, slot: u16) {
        if let Some(q) = self.queue(slot) {
            q.clear();
        }
    }

    /// Release the memory of every empty queue.
    pub fn trim(&mut self) {
        for q in &mut self.slots {
            q.trim();
        }
    }

    /// Free every queue (the session parks, with nothing in flight); pushes not yet
    /// written stay.
    pub fn release(&mut self) {
        if self.has_pushes() {
            self.slots.truncate(1);
        } else {
            self.slots = Vec::new();
        }
    }

    /// The queue of `slot`, made (with any below it) if it is new. `None` only if the
    /// slot cannot be stored at all, which the resize rules out.
    fn slot(&mut self, slot: u16) -> Option<&mut SlotQueue> {
        let i = index(slot);
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
        self.push_with(slot, |q| q.push_replies(data, lens));
    }

    /// As [`Inbox::push_replies`], the bytes handed over without a copy.
    pub fn push_owned(&self, slot: u16, data: BytesMut, lens: &[usize]) {
        self.push_with(slot, |q| q.push_owned(data, lens));
    }

    /// Append to `slot` with `push`, then check the budget and wake the session.
    fn push_with(&self, slot: u16, push: impl FnOnce(&mut SlotQueue)) {
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            let Some(q) = st.slot(slot) else { return };
            push(q);
            st.check_budget(self.incoming_kb.load(Ordering::Relaxed));
        }
        self.notify.notify();
    }

    /// A large reply is being read for this inbox: `kb` more KiB of it are on their way.
    /// They count against the budget from now until [`Inbox::expected_done`], so a
    /// client that does not read is cut when a reply would take it over its limit,
    /// before the reply is read, rather than once it is queued.
    pub fn expect(&self, kb: u32) {
        let over = {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            let incoming = self.incoming_kb.load(Ordering::Relaxed).saturating_add(kb);
            self.incoming_kb.store(incoming, Ordering::Relaxed);
            st.check_budget(incoming)
        };
        if over {
            self.notify.notify();
        }
    }

    /// `kb` KiB that [`Inbox::expect`] announced arrived (or never will).
    pub fn expected_done(&self, kb: u32) {
        let _st = self.state.lock();
        let left = self.incoming_kb.load(Ordering::Relaxed).saturating_sub(kb);
        self.incoming_kb.store(left, Ordering::Relaxed);
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
            q.push_failed(err, count);
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

/// A closed inbox: what is delivered to it is dropped.
pub fn nowhere() -> Arc<dyn Sink> {
    static NOWHERE: std::sync::LazyLock<Arc<Inbox>> = std::sync::LazyLock::new(|| {
        let inbox = Inbox::new();
        inbox.close();
        Arc::new(inbox)
    });
    NOWHERE.clone()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn front_text(q: &SlotQueue) -> Option<String> {
        match q.front()? {
            Front::Reply(f) => Some(String::from_utf8_lossy(f).into_owned()),
            Front::Failed(e) => Some(format!("failed: {}", e.message)),
        }
    }

    #[test]
    fn items_and_bytes_stay_in_step() {
        let mut q = SlotQueue::default();
        q.push_replies(b"+A\r\n:1\r\n", &[4, 4]);
        q.push_reply(b"$1\r\nx\r\n");
        q.push_front_reply(b"-ERR first\r\n");
        assert_eq!(q.len(), 4);
        let frames: Vec<_> = q.frames().map(|f| f.map(<[u8]>::to_vec)).collect();
        assert_eq!(
            frames,
            vec![
                Some(b"-ERR first\r\n".to_vec()),
                Some(b"+A\r\n".to_vec()),
                Some(b":1\r\n".to_vec()),
                Some(b"$1\r\nx\r\n".to_vec())
            ]
        );
        q.consume();
        assert_eq!(front_text(&q).as_deref(), Some("+A\r\n"));
        q.consume();
        q.consume();
        assert_eq!(front_text(&q).as_deref(), Some("$1\r\nx\r\n"));
        q.consume();
        assert!(q.is_empty() && q.bytes() == 0 && q.front().is_none());
    }

    #[test]
    fn failures_take_no_bytes_and_the_first_chunk_is_handed_over_whole() {
        let mut q = SlotQueue::default();
        q.push_reply(b"+OK\r\n");
        q.push_failed(&BackendError::new(crate::error::ProxyError::NoMaster), 2);
        assert_eq!((q.len(), q.bytes()), (3, 5));
        q.consume();
        assert!(front_text(&q).is_some_and(|t| t.starts_with("failed: ")));
        q.clear();
        assert!(q.is_empty());
        q.push_replies(b"+A\r\n+B\r\n", &[4, 4]);
        let mut out = BytesMut::new();
        q.take_first_chunk(&mut out);
        assert_eq!(&out[..], b"+A\r\n+B\r\n");
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn large_deliveries_take_chunks_of_their_own_and_keep_their_order() {
        let mut q = SlotQueue::default();
        let big = |c: u8| vec![c; CHUNK - 100];
        q.push_replies(&big(b'a'), &[CHUNK - 100]);
        q.push_reply(b"+small\r\n");
        q.push_replies(&big(b'b'), &[CHUNK - 100]);
        q.push_replies(b"+x\r\n+y\r\n", &[4, 4]);
        q.push_front_reply(b"-ERR first\r\n");
        assert_eq!(q.more.len(), 2, "a second large delivery starts a chunk");
        assert_eq!(q.bytes(), 2 * (CHUNK - 100) + 8 + 8 + 12);
        let frames: Vec<Vec<u8>> = q.frames().map(|f| f.unwrap().to_vec()).collect();
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[0], b"-ERR first\r\n");
        assert_eq!(frames[1], big(b'a'));
        assert_eq!(frames[2], b"+small\r\n");
        assert_eq!(frames[3], big(b'b'));
        assert_eq!(&frames[4..], [b"+x\r\n".to_vec(), b"+y\r\n".to_vec()]);
        let mut seen = Vec::new();
        while let Some(Front::Reply(f)) = q.front() {
            seen.push(f.to_vec());
            q.consume();
        }
        assert_eq!(seen, frames, "consumed in the order listed");
        assert!(q.is_empty() && q.bytes() == 0 && q.more.is_empty());
        // Handed over a chunk at a time, never copied into one buffer.
        q.push_replies(&big(b'c'), &[CHUNK - 100]);
        q.push_reply(b"+c\r\n");
        q.push_replies(&big(b'd'), &[CHUNK - 100]);
        q.push_failed(&BackendError::new(crate::error::ProxyError::NoMaster), 1);
        assert_eq!(q.first_chunk_len(), 2);
        let mut out = BytesMut::new();
        q.take_first_chunk(&mut out);
        assert_eq!(out.len(), CHUNK - 100 + 4);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(
            (q.len(), q.bytes(), q.first_chunk_len()),
            (2, CHUNK - 100, 1)
        );
        let mut out = BytesMut::new();
        q.take_first_chunk(&mut out);
        assert_eq!(out.last(), Some(&b'd'));
        assert_eq!((q.len(), q.bytes(), q.first_chunk_len()), (1, 0, 0));
        assert!(matches!(q.front(), Some(Front::Failed(_))));
        // A failure in the middle of a chunk: the replies before it go, the rest stays.
        q.clear();
        q.push_reply(b"+a\r\n");
        q.push_failed(&BackendError::new(crate::error::ProxyError::NoMaster), 1);
        q.push_reply(b"+b\r\n");
        let mut out = BytesMut::new();
        q.take_first_chunk(&mut out);
        assert_eq!(&out[..], b"+a\r\n");
        assert_eq!((q.len(), q.bytes()), (2, 4));
        q.consume();
        assert_eq!(front_text(&q).as_deref(), Some("+b\r\n"));
    }

    #[test]
    fn an_inbox_over_its_budget_closes_and_drops_deliveries() {
        let inbox = Inbox::new();
        assert!(!inbox.set_budget(Some(2048)));
        inbox.push_replies(0, &[b'x'; 1024], &[1024]);
        assert!(!inbox.set_budget(Some(2048)));
        inbox.push_replies(1, &[b'y'; 4096], &[4096]);
        assert!(inbox.set_budget(Some(2048)), "over the budget");
        inbox.push_replies(0, b"+late\r\n", &[7]);
        assert!(
            inbox.state.lock().queue(0).is_none(),
            "closed: nothing kept"
        );
    }

    #[test]
    fn replies_on_their_way_count_against_the_budget() {
        let inbox = Inbox::new();
        assert!(!inbox.set_budget(Some(8192)));
        inbox.push_replies(0, &[b'x'; 4096], &[4096]);
        inbox.expect(3);
        assert!(!inbox.set_budget(Some(8192)), "7 KiB of 8 KiB");
        inbox.expected_done(3);
        inbox.expect(2);
        inbox.expect(3);
        assert!(
            inbox.set_budget(Some(8192)),
            "4 KiB queued and 5 KiB on the way"
        );
        inbox.expected_done(5);
        assert!(
            inbox.state.lock().queue(0).is_none(),
            "closed: nothing kept"
        );
    }
}
