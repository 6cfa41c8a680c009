//! Hedged replica reads: a plain replica read (`Kind::ReplicaRead`, on a shared
//! connection, not a SCAN-family reply) that its replica has not answered within the
//! hedge delay is sent again, to [`router::hedge_target`] (the master, or while it is
//! unavailable another healthy replica), through that source's hedge slot. The first
//! of the two replies to arrive answers the client, in request order as always; the
//! other is dropped when it arrives.
//!
//! Dropping keeps every slot's FIFO in step: the loser of a race is always older than
//! anything still expected in its slot (races are settled in request order, and hedges
//! are sent in request order), so per slot a count of arriving items to drop, in front
//! of everything else, says exactly which ones they are (`drops`). A dropped item keeps
//! its slot referenced until it has arrived, so the slot is not reused meanwhile, and a
//! session with drops outstanding does not park.
//!
//! The session sleeps until `hedge_at`, when its oldest unhedged replica read reaches
//! the delay; one timer per session, re-armed as reads are sent and hedged.

use super::*;
use crate::backend::InboxState;

/// What the front of one slot holds for a hedged read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Nothing yet.
    Waiting,
    /// A reply the client can have.
    Reply,
    /// A failure, or a reply that means "ask elsewhere" (`LOADING`, …).
    Failed,
}

fn outcome(q: Option<&mut SlotQueue>) -> Outcome {
    match q.and_then(|q| q.front()) {
        None => Outcome::Waiting,
        Some(Front::Reply(frame)) if !replies::retryable_reply(frame) => Outcome::Reply,
        Some(_) => Outcome::Failed,
    }
}

impl Session {
    /// The hedge delay under `settings`, with the replica read latency seen so far.
    pub(super) fn hedge_delay(&self, settings: &Settings) -> Option<Duration> {
        let b = &settings.config.backend;
        router::hedge_delay(
            b.hedge_after_ms,
            self.proxy.metrics.replica_read_latency.p99_us(),
            b.command_timeout_ms,
        )
    }

    /// Hedge every replica read that has waited the hedge delay, in request order, and
    /// set `hedge_at` to when the next one will have.
    pub(super) fn send_due_hedges(&mut self) {
        let Some(at) = self.hedge_at else { return };
        if self.replica_reads_in_flight == 0 {
            self.hedge_at = None;
            return;
        }
        let now = Instant::now();
        if now < at {
            return;
        }
        let settings = self.proxy.settings.load();
        let Some(delay) = self.hedge_delay(&settings) else {
            self.hedge_at = None;
            return;
        };
        // The reads to hedge: their place in `pending`, and their bytes' place in
        // `retry_buf` (which holds every pending replica and master read's bytes, in
        // order).
        let mut due: Vec<(usize, usize, usize)> = Vec::new();
        let mut next = None;
        let mut offset = 0usize;
        for (i, p) in self.pending.iter().enumerate() {
            let (retry, hedge) = match p.kind {
                Kind::ReplicaRead { retry, hedge } => (retry, hedge),
                Kind::MasterRead { retry } => {
                    offset += retry as usize;
                    continue;
                }
                _ => continue,
            };
            let len = retry as usize;
            if hedge == Hedge::No
                && !matches!(p.mark, Mark::Scan | Mark::KeyspaceScan)
                && p.path == PATH_SHARED
            {
                let deadline = p.sent + delay;
                if deadline > now {
                    next = Some(deadline);
                    break;
                }
                due.push((i, offset, len));
            }
            offset += len;
        }
        self.hedge_at = next;
        if due.is_empty() {
            return;
        }
        let view = self.proxy.view.load_full();
        for (i, offset, len) in due {
            self.send_hedge(i, offset..offset + len, &view);
        }
    }

    /// Send the replica read at `pending[i]` (its bytes are `retry_buf[bytes]`) to the
    /// hedge target, and mark it hedged (or not to be hedged, if it cannot be).
    fn send_hedge(&mut self, i: usize, bytes: std::ops::Range<usize>, view: &Arc<View>) {
        let Some(p) = self.pending.get(i).copied() else {
            return;
        };
        let Kind::ReplicaRead { retry, .. } = p.kind else {
            return;
        };
        let original = self
            .sources
            .iter()
            .find(|s| s.slot == p.slot)
            .map(|s| s.backend);
        let mut hedge = Hedge::Spent;
        let view = view.holding(original);
        if let Some(backend) = router::hedge_target(&view, original).cloned() {
            if let Ok(si) = self.source_for(&backend) {
                if let Some(s) = self.sources.get_mut(si) {
                    let slot = s.hedge_slot;
                    s.served += 1;
                    let data = self.retry_buf.get(bytes).unwrap_or_default();
                    if let Err(e) = s.conn.send(data, &self.sink, slot, 1) {
                        self.handle.inbox.push_failed(slot, &e, 1);
                    }
                    if let Some(r) = self.slot_refs.get_mut(slot as usize) {
                        *r += 1;
                    }
                    self.stats().hedges_sent += 1;
                    hedge = Hedge::Sent(slot);
                }
            }
        }
        if let Some(e) = self.pending.get_mut(i) {
            e.kind = Kind::ReplicaRead { retry, hedge };
        }
    }

    /// The front request `p` is a replica read hedged through slot `h`: settle the race
    /// between its two replies. True when something changed (the front entry was
    /// rewritten for the usual path to finish, or an item consumed); false to wait.
    pub(super) fn race(
        &mut self,
        st: &mut InboxState,
        p: Pending,
        retry: u32,
        h: u16,
        now: Instant,
    ) -> bool {
        let original = outcome(st.queue(p.slot));
        if original == Outcome::Reply {
            // The replica answered (first, or both have): its reply is forwarded as
            // usual, and the hedge's is dropped.
            self.stats().hedges_lost += 1;
            self.drop_next(st, h);
            self.set_front_kind(Kind::ReplicaRead {
                retry,
                hedge: Hedge::Spent,
            });
            return true;
        }
        let hedged = outcome(st.queue(h));
        if hedged == Outcome::Reply || original == Outcome::Failed {
            // The hedge answers: it came first, or the replica failed (then it stands
            // for the retry on the master).
            self.stats().hedges_won += 1;
            if original == Outcome::Failed {
                if let Some(q) = st.queue(p.slot) {
                    q.consume();
                }
                if let Some(r) = self.slot_refs.get_mut(p.slot as usize) {
                    *r = r.saturating_sub(1);
                }
            } else {
                // The replica took at least this long: its smoothed latency learns so.
                let waited = now.saturating_duration_since(p.sent).as_micros() as u64;
                if let Some(s) = self.sources.iter_mut().find(|s| s.slot == p.slot) {
                    s.latency_sum_us += waited;
                    s.latency_n += 1;
                }
                self.drop_next(st, p.slot);
            }
            // The read is no longer a replica read: what `complete` does for one, done
            // here; the entry now waits on the hedge slot (whose reference it takes over).
            self.replica_reads_in_flight = self.replica_reads_in_flight.saturating_sub(1);
            self.retry_buf
                .advance((retry as usize).min(self.retry_buf.len()));
            if let Some(f) = self.pending.front_mut() {
                *f = Pending {
                    slot: h,
                    kind: Kind::Forward,
                    path: PATH_SHARED,
                    silent: p.silent,
                    read: true,
                    sent: p.sent,
                    // A split request's part stays one (a SCAN's cursor would be the
                    // original node's, which is not the one answering).
                    mark: if p.mark == Mark::Part {
                        Mark::Part
                    } else {
                        Mark::None
                    },
                    fence: p.fence,
                    shard: NO_SHARD,
                };
            }
            return true;
        }
        if hedged == Outcome::Failed {
            // The hedge failed: the read waits for its replica (and is retried as usual
            // if that fails too).
            if let Some(q) = st.queue(h) {
                q.consume();
            }
            if let Some(r) = self.slot_refs.get_mut(h as usize) {
                *r = r.saturating_sub(1);
            }
            self.set_front_kind(Kind::ReplicaRead {
                retry,
                hedge: Hedge::Spent,
            });
            return true;
        }
        false
    }

    fn set_front_kind(&mut self, kind: Kind) {
        if let Some(f) = self.pending.front_mut() {
            f.kind = kind;
        }
    }

    /// Drop the next item to arrive in `slot` (at once if it is there).
    fn drop_next(&mut self, st: &mut InboxState, slot: u16) {
        match self.drops.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, n)) => *n += 1,
            None => self.drops.push((slot, 1)),
        }
        self.purge_drops(st);
    }

    /// Drop the items owed to `drops` that have arrived, releasing their slots.
    pub(super) fn purge_drops(&mut self, st: &mut InboxState) {
        if self.drops.is_empty() {
            return;
        }
        let refs = &mut self.slot_refs;
        self.drops.retain_mut(|(slot, n)| {
            if let Some(q) = st.queue(*slot) {
                while *n > 0 && !q.is_empty() {
                    q.consume();
                    *n -= 1;
                    if let Some(r) = refs.get_mut(usize::from(*slot)) {
                        *r = r.saturating_sub(1);
                    }
                }
            }
            *n > 0
        });
    }

    /// Record the latency of a replica read its replica answered: for the hedge delay
    /// (locally until the batch's counters are flushed) and for the replica's smoothed
    /// latency (in its source until [`Session::flush_latencies`]); not while the
    /// source's connection is still being set up.
    pub(super) fn observe_replica_read(&mut self, p: &Pending, now: Instant) {
        let us = now.saturating_duration_since(p.sent).as_micros() as u64;
        let Some(s) = self.sources.iter_mut().find(|s| s.slot == p.slot) else {
            return;
        };
        if s.warming {
            return;
        }
        s.latency_sum_us += us;
        s.latency_n += 1;
        self.stats().replica_latency.observe(us);
    }

    /// Fold each source's latency samples into its backend's smoothed latency (and
    /// start counting those of a source whose connection has become ready).
    pub(super) fn flush_latencies(&mut self) {
        let now = Instant::now();
        for s in &mut self.sources {
            if s.warming && s.conn.is_ready() {
                s.warming = false;
            }
            if s.latency_n > 0 {
                let mean = s.latency_sum_us / u64::from(s.latency_n);
                s.backend_ref.latency.observe(mean, s.latency_n, now);
                s.latency_sum_us = 0;
                s.latency_n = 0;
            }
        }
    }

    /// The same for one source leaving the session.
    pub(super) fn flush_source_latency(&self, s: &Source) {
        if s.latency_n > 0 {
            let mean = s.latency_sum_us / u64::from(s.latency_n);
            s.backend_ref
                .latency
                .observe(mean, s.latency_n, Instant::now());
        }
    }

    /// Point the hedge timer at `hedge_at` (the serve loop polls it only while set).
    ///
    /// A timer still set for an earlier instant is left alone (resetting one takes the
    /// runtime's timer lock, which a per-batch reset would take per request): it fires
    /// early, finds nothing due, and is reset then.
    pub(super) fn arm_hedge_timer(&mut self) {
        let Some(at) = self.hedge_at else { return };
        let at = tokio::time::Instant::from_std(at);
        match self.hedge_sleep.as_mut() {
            Some(s) if s.deadline() == at || (s.deadline() < at && !s.is_elapsed()) => {}
            Some(s) => s.as_mut().reset(at),
            None => self.hedge_sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
}
