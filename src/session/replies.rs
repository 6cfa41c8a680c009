//! Replies: drained in request order from the inbox slots, retried, held or forwarded.

use super::*;

impl Session {
    // ---------------------------------------------------------------- replies

    /// Move every completed reply, in request order, to the output buffer.
    /// Whether the replies ready to write wait for the rest of their client batch: the
    /// next request to answer was read with the last one answered (one pipeline) and
    /// is an ordinary one out on a shared connection, whose reply is on its way. Redis
    /// writes a pipeline's replies together once it has run them all; a batch whose
    /// requests went to several backends (replica reads among writes, or several
    /// cluster shards) is written once too, not once per backend that answered.
    pub(super) fn holds_output(&self) -> bool {
        if self.wbuf.is_empty() || self.wbuf.len() >= OUTPUT_HOLD_MAX || self.closing {
            return false;
        }
        let Some(p) = self.pending.front() else {
            return false;
        };
        p.path == PATH_SHARED
            && self.done_sent == Some(p.sent)
            && matches!(
                p.kind,
                Kind::Forward
                    | Kind::ReplicaRead { .. }
                    | Kind::MasterRead { .. }
                    | Kind::Write { .. }
            )
    }

    pub(super) fn drain(&mut self) {
        let now = Instant::now();
        self.replies_at = now;
        let handle = self.handle.clone();
        let inbox = &handle.inbox;
        let mut st = inbox.state.lock();
        self.purge_drops(&mut st);
        if st.has_pushes() {
            self.write_pushes(&mut st);
        }
        loop {
            if self.retry_wait.is_some() {
                drop(st);
                if !self.resume_retry(now) {
                    return;
                }
                st = inbox.state.lock();
                self.purge_drops(&mut st);
                continue;
            }
            if let Some(h) = &self.held {
                // A durable write's reply waits for the ROLE after it, then for replicas.
                let probe_next = h.target == u64::MAX
                    && matches!(
                        self.pending.front(),
                        Some(Pending {
                            kind: Kind::RoleProbe { wait: None },
                            ..
                        })
                    );
                if !probe_next {
                    drop(st);
                    if !self.check_held(now) {
                        return;
                    }
                    st = inbox.state.lock();
                    self.purge_drops(&mut st);
                    continue;
                }
            }
            let Some(p) = self.pending.front().copied() else {
                break;
            };
            if self.wbuf.len() >= OUTPUT_SOFT_CAP {
                // The client is not reading as fast as replies come: the rest wait in
                // the inbox (in chunks, counted against the output limit) rather than
                // grow one output buffer, whose every doubling copies all of it.
                break;
            }
            if p.slot == LOCAL {
                let Some(Front::Reply(frame)) = self.local.front() else {
                    break;
                };
                if p.mark == Mark::Part {
                    let frame = frame.to_vec();
                    self.merge_part(&frame);
                } else if !p.silent {
                    self.wbuf.extend_from_slice(frame);
                    self.stats().replies += 1;
                }
                self.local.consume();
                self.pending.pop_front();
                continue;
            }
            if let Kind::ReplicaRead {
                retry,
                hedge: Hedge::Sent(h),
            } = p.kind
            {
                if self.race(&mut st, p, retry, h, now) {
                    continue;
                }
                break;
            }
            let Some(q) = st.queue(p.slot) else {
                break;
            };
            if p.kind == Kind::Tunnel {
                // Forward every frame that arrived.
                let mut ended = false;
                while let Some(front) = q.front() {
                    match front {
                        Front::Reply(frame) => {
                            ended = self.tunnel_frame(frame);
                            if !ended {
                                if let Some((kind, n)) = state::subscription(frame) {
                                    self.client.on_subscription(kind, n);
                                }
                                match self.tracking_reply(frame) {
                                    Some(f) => self.wbuf.extend_from_slice(&f),
                                    None => self.wbuf.extend_from_slice(frame),
                                }
                            }
                        }
                        // Leaving anyway: the connection's state is gone with it.
                        Front::Failed(_) if self.tunnel_exit.is_some() => ended = true,
                        Front::Failed(e) => {
                            Value::error(format!("ERR {}", e.message))
                                .encode(self.client.resp3, &mut self.wbuf);
                            self.closing = true;
                        }
                    }
                    q.consume();
                    if ended {
                        break;
                    }
                }
                if ended {
                    drop(st);
                    self.finish_tunnel();
                    st = inbox.state.lock();
                    self.purge_drops(&mut st);
                    continue;
                }
                if self.closing {
                    self.pending.pop_front();
                }
                break;
            }
            if self.wbuf.is_empty() && self.take_whole_slot(q, now) {
                continue;
            }
            let Some(front) = q.front() else { break };
            match front {
                Front::Reply(frame) => {
                    if let Some((bytes, to)) = self.redirection(&p, frame) {
                        q.consume();
                        self.complete(&p, now);
                        drop(st);
                        self.follow_redirect(p, bytes, to, now);
                        st = inbox.state.lock();
                        self.purge_drops(&mut st);
                        continue;
                    }
                    if let Kind::ReplicaRead { retry, .. } = p.kind {
                        if retryable_reply(frame) {
                            q.consume();
                            let bytes = BytesMut::from(
                                self.retry_buf.get(..retry as usize).unwrap_or_default(),
                            );
                            self.complete(&p, now);
                            drop(st);
                            self.retry_on_master(p, &bytes, now);
                            st = inbox.state.lock();
                            self.purge_drops(&mut st);
                            continue;
                        }
                    }
                    self.finish_reply(&p, frame, now);
                    q.consume();
                }
                Front::Failed(e) => {
                    let e = e.clone();
                    q.consume();
                    if let Kind::ReplicaRead { retry, .. } | Kind::MasterRead { retry } = p.kind {
                        let bytes = BytesMut::from(
                            self.retry_buf.get(..retry as usize).unwrap_or_default(),
                        );
                        self.complete(&p, now);
                        drop(st);
                        self.retry_on_master(p, &bytes, now);
                        st = inbox.state.lock();
                        self.purge_drops(&mut st);
                        continue;
                    }
                    self.stats().backend_failures += 1;
                    self.complete(&p, now);
                    self.pending.pop_front();
                    match p.kind {
                        Kind::RoleProbe { wait: Some(_) } | Kind::Dropped => {}
                        Kind::RoleProbe { wait: None } => {
                            // The durable write's reply is held; release it as an error.
                            if let Some(h) = self.held.as_mut() {
                                h.target = u64::MAX;
                                h.deadline = Some(now);
                            }
                        }
                        _ if p.mark == Mark::Part => {
                            let e = Value::error(format!("ERR {}", e.message))
                                .to_bytes(self.client.resp3);
                            self.merge_part(&e);
                        }
                        _ => {
                            if !p.silent {
                                self.stats().errors += 1;
                                self.stats().replies += 1;
                                Value::error(format!("ERR {}", e.message))
                                    .encode(self.client.resp3, &mut self.wbuf);
                            }
                        }
                    }
                    if p.kind == Kind::Blocking {
                        self.end_blocking();
                    }
                    if p.kind == Kind::Login {
                        self.login = None;
                    }
                    if p.kind == Kind::Exec {
                        self.tx_own = None;
                    }
                }
            }
        }
    }

    /// When the replies in `q`'s first chunk (usually all it holds) answer the next
    /// requests, each forwarded as it came (the common case: a batch of plain reads or
    /// writes), settle them and hand the chunk over as the output buffer, which must be
    /// empty, instead of copying the bytes. False (and nothing done) otherwise.
    pub(super) fn take_whole_slot(&mut self, q: &mut SlotQueue, now: Instant) -> bool {
        let Some(slot) = self.pending.front().map(|p| p.slot) else {
            return false;
        };
        if self.exec_pending_own() {
            // The `EXEC` reply gets the proxy's answers spliced in.
            return false;
        }
        let n = q.first_chunk_len();
        let whole = n > 0
            && n <= self.pending.len()
            && q.frames()
                .take(n)
                .zip(self.pending.iter())
                .all(|(frame, p)| {
                    frame.is_some_and(|f| {
                        p.slot == slot
                            && !p.silent
                            && p.mark == Mark::None
                            && !matches!(
                                p.kind,
                                Kind::ReplicaRead {
                                    hedge: Hedge::Sent(_),
                                    ..
                                }
                            )
                            && forwarded_as_is(p.kind, f)
                            && !super::cluster::is_redirection(f)
                    })
                });
        if !whole {
            return false;
        }
        for frame in q.frames().take(n).flatten() {
            if let Some(p) = self.pending.front().copied() {
                self.account_reply(&p, frame, now);
            }
        }
        q.take_first_chunk(&mut self.wbuf);
        true
    }

    /// Bookkeeping when a remote request completes (before any retry).
    pub(super) fn complete(&mut self, p: &Pending, now: Instant) {
        self.done_sent = Some(p.sent);
        if let Some(r) = self.slot_refs.get_mut(p.slot as usize) {
            *r = r.saturating_sub(1);
        }
        if let Kind::Write { keep } = p.kind {
            self.redirect_buf
                .advance((keep as usize).min(self.redirect_buf.len()));
        }
        match p.path {
            PATH_SHARED => self.shared_in_flight = self.shared_in_flight.saturating_sub(1),
            PATH_DEDICATED => self.dedicated_in_flight = self.dedicated_in_flight.saturating_sub(1),
            _ => {}
        }
        self.fence_done(p, now);
        match p.kind {
            Kind::Write { .. } | Kind::Durable(_) | Kind::Exec => {
                self.writes_in_flight = self.writes_in_flight.saturating_sub(1);
                self.last_write_ack = Some(now);
                let w = self.shard_writes_mut(p.shard);
                w.in_flight = w.in_flight.saturating_sub(1);
                w.ack = Some(now);
            }
            Kind::ReplicaRead { retry, .. } => {
                self.replica_reads_in_flight = self.replica_reads_in_flight.saturating_sub(1);
                self.retry_buf
                    .advance((retry as usize).min(self.retry_buf.len()));
            }
            Kind::MasterRead { retry } => {
                self.retry_buf
                    .advance((retry as usize).min(self.retry_buf.len()));
            }
            // Blocking pops and moves write when they return, and so does a write held
            // by a client pause: the client's next reads must see it.
            Kind::Blocking => {
                self.last_write_ack = Some(now);
                self.shard_writes_mut(p.shard).ack = Some(now);
            }
            _ => {}
        }
        let us = match self.latency_memo {
            Some((sent, at, us)) if sent == p.sent && at == now => us,
            _ => {
                let us = now.saturating_duration_since(p.sent).as_micros() as u64;
                self.latency_memo = Some((p.sent, now, us));
                us
            }
        };
        if p.read {
            self.stats().read_latency.observe(us, &LATENCY_BOUNDS_US);
        } else if matches!(
            p.kind,
            Kind::Write { .. } | Kind::Durable(_) | Kind::Forward | Kind::Exec
        ) {
            self.stats().write_latency.observe(us, &LATENCY_BOUNDS_US);
        }
    }

    /// Send the front request (a failed replica read) again: to the master, or while
    /// none is known (a failover) to a replica that can answer
    /// ([`router::retry_target`]), through a slot of its own so that its reply cannot be
    /// confused with that backend's other replies to this session. A retry on a replica
    /// may be retried in turn. With nowhere to send it, or after a retry on a replica
    /// failed, the read waits for a new view or a short while (`retry_wait`), at most
    /// `command_timeout_ms` from when it was first sent.
    pub(super) fn retry_on_master(&mut self, p: Pending, bytes: &[u8], now: Instant) {
        self.pending.pop_front();
        let failed = self
            .sources
            .iter()
            .find(|s| s.slot == p.slot || s.retry_slot == p.slot || s.hedge_slot == p.slot)
            .map(|s| s.backend);
        if let Kind::MasterRead { .. } = p.kind {
            return self.retry_master_read(p, BytesMut::from(bytes), failed, now);
        }
        let view = self.proxy.view.load_full().holding(failed);
        let master_up = view.master.as_ref().is_some_and(|m| !m.down);
        // A read that was already retried on a replica (or could not be hedged) waits a
        // little before trying the replicas again, so two failing replicas are not
        // retried in a tight loop.
        let wait_first = !master_up
            && matches!(
                p.kind,
                Kind::ReplicaRead {
                    hedge: Hedge::Spent,
                    ..
                }
            );
        if wait_first {
            self.wait_to_retry(p, BytesMut::from(bytes), failed, true, now);
        } else {
            self.retry_read(p, BytesMut::from(bytes), failed, false, now);
        }
    }

    /// Send a master read whose connection failed again: to the master the view names
    /// while it is not known to be down (over a new connection; the old master, or the
    /// new one after a failover), never to a replica (its rule sent it to the master).
    /// Without one, or while the master's connections are in reconnect backoff, it
    /// waits for a new view or a short while, at most `command_timeout_ms` from when it
    /// was first sent. Reads are retried; writes never are (they may have been applied).
    fn retry_master_read(
        &mut self,
        p: Pending,
        bytes: BytesMut,
        failed: Option<u32>,
        now: Instant,
    ) {
        let view = self.proxy.view.load_full().holding(failed);
        let Some(backend) = view
            .master
            .as_ref()
            .filter(|m| !m.down)
            .map(|m| m.backend.clone())
        else {
            return self.wait_to_retry(p, bytes, failed, true, now);
        };
        let timeout = self.proxy.settings.load().config.backend.command_timeout_ms;
        if now >= p.sent + Duration::from_millis(timeout) {
            return self.answer_front(p, crate::error::MASTER_FAILED, now);
        }
        let i = match self.source_for(&backend) {
            Ok(i) => i,
            Err(_) => return self.wait_to_retry(p, bytes, Some(backend.id), true, now),
        };
        self.resend(i, &p, &bytes, true);
    }

    /// Retry a failed replica read where [`router::retry_target`] says, or wait.
    fn retry_read(
        &mut self,
        p: Pending,
        bytes: BytesMut,
        failed: Option<u32>,
        again: bool,
        now: Instant,
    ) {
        if let Kind::MasterRead { .. } = p.kind {
            return self.retry_master_read(p, bytes, failed, now);
        }
        let view = self.proxy.view.load_full().holding(failed);
        let Some(backend) = router::retry_target(&view, failed, again).cloned() else {
            return self.wait_to_retry(p, bytes, failed, !again, now);
        };
        let to_master = view
            .master
            .as_ref()
            .is_some_and(|m| m.backend.id == backend.id);
        let i = match self.source_for(&backend) {
            Ok(i) => i,
            Err(_) => return self.wait_to_retry(p, bytes, Some(backend.id), !again, now),
        };
        self.resend(i, &p, &bytes, to_master);
    }

    /// Send the read `p` (its request `bytes`) again on source `i`, through the source's
    /// retry slot so that its reply cannot be confused with that backend's other replies
    /// to this session, and put it back at the front of the queue. Its bytes are kept for
    /// a retry of its own, in front of the other reads' bytes: on the next master if
    /// `to_master`, else on a replica (or the master) if it fails too.
    fn resend(&mut self, i: usize, p: &Pending, bytes: &[u8], to_master: bool) {
        self.stats().retries += 1;
        let Some(s) = self.sources.get(i) else { return };
        let slot = s.retry_slot;
        let res = s.conn.send(bytes, &self.sink, slot, 1);
        if let Some(r) = self.slot_refs.get_mut(slot as usize) {
            *r += 1;
        }
        self.shared_in_flight += 1;
        let mut kept = BytesMut::with_capacity(bytes.len() + self.retry_buf.len());
        kept.extend_from_slice(bytes);
        kept.extend_from_slice(&self.retry_buf);
        self.retry_buf = kept;
        let retry = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let kind = if to_master {
            Kind::MasterRead { retry }
        } else {
            self.replica_reads_in_flight += 1;
            Kind::ReplicaRead {
                retry,
                hedge: Hedge::Spent,
            }
        };
        self.pending.push_front(Pending {
            slot,
            kind,
            path: PATH_SHARED,
            silent: p.silent,
            read: true,
            sent: p.sent,
            mark: p.mark,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
        if let Err(e) = res {
            self.handle.inbox.push_failed(slot, &e, 1);
        }
    }

    /// Nowhere to retry a failed read for now: wait for a new view (a master, or for a
    /// replica read a replica that can answer) or a short while, unless its time is up. `poke`: ask
    /// the monitor for a fresh view at once (when the wait starts; not on each new view,
    /// which would keep it polling back to back).
    fn wait_to_retry(
        &mut self,
        p: Pending,
        bytes: BytesMut,
        failed: Option<u32>,
        poke: bool,
        now: Instant,
    ) {
        let timeout = self.proxy.settings.load().config.backend.command_timeout_ms;
        let until = p.sent + Duration::from_millis(timeout);
        if now >= until {
            let msg = match p.kind {
                Kind::MasterRead { .. } => crate::error::MASTER_FAILED,
                _ => crate::error::REPLICA_FAILED_NO_MASTER,
            };
            self.answer_front(p, msg, now);
            return;
        }
        if self.view_rx.is_none() {
            self.view_rx = Some(self.proxy.view_version.subscribe());
        }
        if let Some(rx) = self.view_rx.as_mut() {
            rx.mark_unchanged();
        }
        if poke {
            self.proxy.monitor.poll_now();
        }
        // Counted as a replica read in flight: a write after it waits, as it would for
        // the read's first attempt.
        self.replica_reads_in_flight += 1;
        let at = (now + RETRY_RECHECK).min(until);
        self.retry_wait = Some(Box::new(RetryWait {
            p,
            bytes,
            failed,
            redirect: None,
            until,
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
        }));
    }

    /// The waiting retry, if any: sent now if somewhere can take it, failed if its time
    /// is up; `false` while it still waits (nothing after it may be answered).
    pub(super) fn resume_retry(&mut self, now: Instant) -> bool {
        let Some(w) = self.retry_wait.take() else {
            return true;
        };
        let woke = w.sleep.is_elapsed()
            || self
                .view_rx
                .as_mut()
                .is_some_and(|rx| rx.has_changed().unwrap_or(true));
        if !woke && now < w.until {
            self.retry_wait = Some(w);
            return false;
        }
        let w = *w;
        self.replica_reads_in_flight = self.replica_reads_in_flight.saturating_sub(1);
        if self.held.is_none() && self.master_wait.is_none() && self.read_wait.is_none() {
            self.view_rx = None;
        }
        match w.redirect {
            Some(to) => {
                // `follow_redirect` takes the request from the front, where it waited.
                self.pending.push_front(w.p);
                self.follow_redirect(w.p, w.bytes, *to, now);
            }
            None => self.retry_read(w.p, w.bytes, w.failed, true, now),
        }
        self.retry_wait.is_none()
    }

    /// Write the pushes waiting in [`PUSHES`] (invalidations for a client that a
    /// tracking redirect names) to the client as they came, as Redis writes them
    /// between replies whatever the client's reply mode; dropped for a client that
    /// speaks RESP2 now, to which Redis sends none.
    fn write_pushes(&mut self, st: &mut InboxState) {
        let Some(q) = st.queue(PUSHES) else { return };
        while self.wbuf.len() < OUTPUT_SOFT_CAP {
            match q.front() {
                Some(Front::Reply(frame)) => {
                    if self.client.resp3 {
                        self.wbuf.extend_from_slice(frame);
                    }
                }
                Some(Front::Failed(_)) => {}
                None => break,
            }
            q.consume();
        }
    }

    /// A frame of a tracking tunnel, with the redirect target's backend id replaced by
    /// its proxy id when it is a reply that names it, and a `CLIENT ID` reply made the
    /// client's proxy id; `None` to forward it as it is.
    fn tracking_reply(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        if self.client.flags != b't' || frame.first() == Some(&b'>') {
            return None;
        }
        let n = self.tracking.seen;
        self.tracking.seen += 1;
        if self.tracking.own_ids.front() == Some(&n) {
            self.tracking.own_ids.pop_front();
            // The client's id is the proxy's, as outside the tunnel (an error stays).
            return (frame.first() == Some(&b':'))
                .then(|| format!(":{}\r\n", self.id).into_bytes());
        }
        if self.tracking.rewrites.front() != Some(&n) {
            return None;
        }
        self.tracking.rewrites.pop_front();
        let id = self.tracking.redirect?;
        state::with_redirect(frame, id, self.tracking.to_self)
    }

    /// A SCAN-family reply with its cursor tagged by the node that answered (the source
    /// behind the request's slot); `None` for other replies.
    fn scan_reply(&self, p: &Pending, frame: &[u8]) -> Option<Vec<u8>> {
        if !matches!(p.mark, Mark::Scan | Mark::KeyspaceScan) {
            return None;
        }
        let backend = self
            .sources
            .iter()
            .find(|s| s.slot == p.slot || s.retry_slot == p.slot || s.hedge_slot == p.slot)?
            .backend;
        // In a cluster, a keyspace SCAN goes on to the next shard's master.
        let next = if p.mark == Mark::KeyspaceScan {
            cursor::next_node(&self.proxy.view.load(), backend)
        } else {
            None
        };
        cursor::tag_reply_then(frame, cursor::tag(backend), next)
    }

    /// Answer the request that was at the front with an error made here.
    pub(super) fn answer_front(&mut self, p: Pending, msg: &str, now: Instant) {
        let frame = Value::error(msg).to_bytes(self.client.resp3);
        self.local.push_front_reply(&frame);
        self.pending.push_front(Pending {
            slot: LOCAL,
            kind: Kind::Forward,
            path: PATH_LOCAL,
            silent: p.silent,
            read: true,
            sent: now,
            mark: Mark::None,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
    }

    /// A reply for the front request arrived: forward it (or act on it).
    pub(super) fn finish_reply(&mut self, p: &Pending, frame: &[u8], now: Instant) {
        if p.kind == Kind::Exec && self.exec_pending_own() {
            return self.finish_exec_own(p, frame, now);
        }
        if p.mark == Mark::Script && !frame.starts_with(b"-BUSY") {
            // The script is over: answer PING as Redis does now, not as the monitor's
            // last poll found the master.
            if self.proxy.monitor.busy().is_some() {
                self.proxy.monitor.not_busy();
            }
        }
        if forwarded_as_is(p.kind, frame) {
            self.account_reply(p, frame, now);
            if p.mark == Mark::Part {
                return self.merge_part(frame);
            }
            if !p.silent {
                match self.scan_reply(p, frame) {
                    Some(tagged) => self.wbuf.extend_from_slice(&tagged),
                    None => self.wbuf.extend_from_slice(frame),
                }
            }
            return;
        }
        self.settle(p, frame.len(), now);
        match p.kind {
            Kind::RoleProbe { wait } => {
                let offset = Decoded::parse(frame, self.client.resp3)
                    .and_then(|d| d.into_items())
                    .and_then(|items| items.get(1).and_then(|o| o.as_int()))
                    .and_then(|o| u64::try_from(o).ok());
                match wait {
                    Some((n, timeout_ms)) => {
                        let target = offset.unwrap_or(u64::MAX);
                        self.hold(Held {
                            target,
                            replicas: n,
                            deadline: (timeout_ms > 0)
                                .then(|| now + Duration::from_millis(u64::from(timeout_ms))),
                            started: now,
                            reply: None,
                            silent: p.silent,
                            master: self.slot_backend(p.slot),
                            part: false,
                        });
                    }
                    None => {
                        if let Some(h) = self.held.as_mut() {
                            h.target = offset.unwrap_or(u64::MAX);
                        }
                    }
                }
            }
            Kind::Login => self.finish_login(frame, p.silent),
            Kind::Durable(w) => {
                // Hold the reply until `w.replicas` replicas reach the offset the
                // following ROLE reports.
                self.hold(Held {
                    target: u64::MAX,
                    replicas: w.replicas,
                    deadline: Some(now + Duration::from_millis(u64::from(w.timeout_ms))),
                    started: now,
                    reply: Some(BytesMut::from(frame)),
                    silent: p.silent,
                    master: self.slot_backend(p.slot),
                    part: p.mark == Mark::Part,
                });
            }
            _ => {}
        }
    }

    /// Bookkeeping for a reply passed on unchanged: everything `finish_reply` does for
    /// it but the copy to the output buffer.
    pub(super) fn account_reply(&mut self, p: &Pending, frame: &[u8], now: Instant) {
        self.settle(p, frame.len(), now);
        match p.kind {
            Kind::Exec => {
                if let Some(db) = self.multi_select.take() {
                    if matches!(frame.first(), Some(b'*')) && !frame.starts_with(b"*-1") {
                        self.set_dedicated_db(db);
                    }
                }
            }
            Kind::Blocking => self.end_blocking(),
            Kind::Write { .. } if frame.starts_with(b"-READONLY") => {
                // The master we write to is not a master any more.
                self.proxy.monitor.poll_now();
                self.proxy.recheck.notify_one();
            }
            _ => {}
        }
        if is_error(frame) {
            self.stats().errors += 1;
        }
        if !p.silent {
            self.stats().replies += 1;
        }
    }

    /// The front request `p` is answered by a reply of `len` bytes: adjust the window,
    /// complete it and take it off the queue.
    pub(super) fn settle(&mut self, p: &Pending, len: usize, now: Instant) {
        if p.path == PATH_SHARED {
            self.on_shared_reply(len);
        }
        if let Kind::ReplicaRead { .. } = p.kind {
            self.observe_replica_read(p, now);
        }
        self.complete(p, now);
        self.pending.pop_front();
    }

    /// Adjust the in-flight window (the `window` field) to a reply of `len` bytes.
    pub(super) fn on_shared_reply(&mut self, len: usize) {
        let len = len as u64;
        self.reply_est = len.max(self.reply_est - self.reply_est / 16);
        let cap = if self.window_budget == 0 {
            self.window_max
        } else {
            u32::try_from(self.window_budget / self.reply_est.max(1))
                .unwrap_or(u32::MAX)
                .clamp(1, self.window_max)
        };
        self.window = self.window.saturating_add(1).min(cap);
    }

    /// The backend whose shared connection answers into `slot`.
    fn slot_backend(&self, slot: u16) -> Option<u32> {
        self.sources
            .iter()
            .find(|s| s.slot == slot || s.retry_slot == slot || s.hedge_slot == slot)
            .map(|s| s.backend)
    }

    pub(super) fn hold(&mut self, mut h: Held) {
        if h.master.is_none() {
            h.master = self.proxy.view.load().master.as_ref().map(|m| m.backend.id);
        }
        self.held_sleep = h
            .deadline
            .map(|d| Box::pin(tokio::time::sleep_until(d.into())));
        self.held = Some(Box::new(h));
    }

    pub(super) fn end_blocking(&mut self) {
        self.blocking_in_flight = false;
        self.unwatch_hangup();
        self.set_flags(0);
        if let Some(d) = &self.dedicated {
            d.conn.blocking.store(false, Ordering::Relaxed);
        }
    }

    /// Watch the client's socket for a hang-up while its blocking command is out on
    /// `conn` ([`orphans`]).
    pub(super) fn watch_hangup(&mut self, conn: &Arc<crate::backend::Conn>) {
        self.unwatch_hangup();
        if let Some(fd) = self.client_fd {
            self.orphan = orphans::watch(fd, conn);
        }
    }

    pub(super) fn unwatch_hangup(&mut self) {
        if let Some(w) = self.orphan.take() {
            orphans::unwatch(w);
        }
    }

    /// Publish the client's `CLIENT LIST` flags for others to see; the janitor's idle
    /// timeout spares `P` (pub/sub), `O` (MONITOR) and `b` (blocked), as Redis does.
    pub(super) fn set_flags(&mut self, flags: u8) {
        self.client.flags = flags;
    }

    // ---------------------------------------------------------------- local replies

    pub(super) fn push_local_raw(&mut self, bytes: &[u8]) {
        self.push_local_bytes(bytes);
    }

    pub(super) fn push_local_bytes(&mut self, bytes: &[u8]) {
        let silent = self.take_silent();
        if self.pending.is_empty() && self.mark_next != Mark::Part {
            if !silent {
                self.wbuf.extend_from_slice(bytes);
                self.stats().replies += 1;
            }
            return;
        }
        self.local.push_reply(bytes);
        // A part of a split request answered here is merged with the other parts.
        let mark = if self.mark_next == Mark::Part {
            std::mem::replace(&mut self.mark_next, Mark::None)
        } else {
            Mark::None
        };
        self.pending.push_back(Pending {
            slot: LOCAL,
            kind: Kind::Forward,
            path: PATH_LOCAL,
            silent,
            read: false,
            sent: Instant::now(),
            mark,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
    }

    pub(super) fn push_local_value(&mut self, v: &Value) {
        let b = v.to_bytes(self.client.resp3);
        self.push_local_bytes(&b);
    }

    pub(super) fn push_local_error(&mut self, msg: &str) {
        self.stats().errors += 1;
        self.stats().touch();
        self.push_local_value(&Value::error(msg));
    }
}

/// Whether the reply `frame` to a request of `kind` goes to the client as it is, after
/// `account_reply`'s bookkeeping (rather than being retried, consumed, held or streamed).
pub(super) fn forwarded_as_is(kind: Kind, frame: &[u8]) -> bool {
    match kind {
        Kind::RoleProbe { .. } | Kind::Tunnel | Kind::Login | Kind::Dropped => false,
        // A durable write's success is held until replicas have it; its error is not.
        Kind::Durable(_) => is_error(frame),
        Kind::ReplicaRead { .. } => !retryable_reply(frame),
        Kind::Forward
        | Kind::MasterRead { .. }
        | Kind::Write { .. }
        | Kind::Exec
        | Kind::Blocking => true,
    }
}

pub(super) fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-') | Some(b'!'))
}

/// Replies from a replica that mean "ask the master instead".
pub(super) fn retryable_reply(frame: &[u8]) -> bool {
    frame.starts_with(b"-LOADING")
        || frame.starts_with(b"-NOSCRIPT")
        || frame.starts_with(b"-MASTERDOWN")
}
