//! Outbound: requests gathered for shared connections, the sources and slots they use,
//! the in-flight counts the barriers read, and the per-shard counts read-your-writes
//! reads in front of a cluster.

use super::*;

impl Session {
    /// Hold the rest of the buffer until in-flight requests complete.
    pub(super) fn barrier(&mut self, b: &mut Batch<'_>) -> Stop {
        self.send_gathered(b);
        Stop::Wait
    }

    /// Hand the batch's gathered requests to their connections, one send each.
    pub(super) fn send_gathered(&mut self, b: &mut Batch<'_>) {
        let open = std::mem::take(&mut b.open);
        for g in self.gather.iter_mut().take(open) {
            if let Some(s) = self.sources.get(g.source) {
                if let Err(e) = s
                    .conn
                    .send_spans(b.rbuf, &g.spans, &self.sink, g.slot, g.count)
                {
                    self.handle.inbox.push_failed(g.slot, &e, g.count);
                }
            }
            g.spans.clear();
        }
    }

    /// Add the request at `start..start + len` of the batch's read buffer to what the
    /// batch gathers for `source` (waiting on `slot`).
    fn gather_request(
        &mut self,
        b: &mut Batch<'_>,
        source: usize,
        slot: u16,
        start: usize,
        len: usize,
    ) {
        let open = self
            .gather
            .iter()
            .take(b.open)
            .position(|g| g.source == source);
        let i = match open {
            Some(i) if self.gather.get(i).is_some_and(|g| g.slot == slot) => i,
            found => {
                if found.is_some() {
                    // The source's connection was replaced (new slots): what was gathered
                    // for the old one goes first.
                    self.send_gathered(b);
                }
                let i = b.open;
                if i == self.gather.len() {
                    self.gather.push(Gather::default());
                }
                if let Some(g) = self.gather.get_mut(i) {
                    g.source = source;
                    g.slot = slot;
                    g.count = 0;
                    g.spans.clear();
                }
                b.open += 1;
                i
            }
        };
        if let Some(g) = self.gather.get_mut(i) {
            g.count += 1;
            match g.spans.last_mut() {
                Some(last) if last.1 == start => last.1 += len,
                _ => g.spans.push((start, start + len)),
            }
        }
    }

    /// Queue `req` for `backend`'s shared connection (gathered with the batch's other
    /// requests for it).
    pub(super) fn send_shared(
        &mut self,
        backend: &Arc<Backend>,
        req: &Request,
        at: Option<usize>,
        b: &mut Batch<'_>,
        kind: Kind,
        read: bool,
    ) {
        let now = b.now;
        let source = match self.source_for(backend) {
            Ok(i) => i,
            Err(e) => {
                self.send_gathered(b);
                self.fail_request(kind, req.buf, &e, backend.id, now);
                return;
            }
        };
        let slot = match self.sources.get_mut(source) {
            Some(s) => {
                s.served += 1;
                s.slot
            }
            None => 0,
        };
        let silent = self.take_silent();
        let shard = self.write_shard(kind, b.view.shard);
        let kind = match kind {
            Kind::Write { .. } if b.top.cluster.is_some() => {
                // Kept to follow a redirection (reads keep theirs in `retry_buf`).
                self.redirect_buf.extend_from_slice(req.buf);
                Kind::Write {
                    keep: u32::try_from(req.buf.len()).unwrap_or(u32::MAX),
                }
            }
            k => k,
        };
        self.push_pending(Pending {
            slot,
            kind,
            path: PATH_SHARED,
            silent,
            read,
            sent: now,
            mark: Mark::None,
            fence: FENCE_NONE,
            shard,
        });
        if let Kind::MasterRead { .. } = kind {
            self.retry_buf.extend_from_slice(req.buf);
        }
        if let Kind::ReplicaRead { .. } = kind {
            self.retry_buf.extend_from_slice(req.buf);
            if self.hedge_at.is_none() {
                self.hedge_at = self.hedge_delay(b.settings).map(|d| now + d);
            }
        }
        let Some(offset) = at else {
            // Not in the read buffer as it came (an inline request, sent as RESP): alone.
            self.send_gathered(b);
            if let Some(s) = self.sources.get(source) {
                if let Err(e) = s.conn.send(req.buf, &self.sink, s.slot, 1) {
                    self.handle.inbox.push_failed(slot, &e, 1);
                }
            }
            return;
        };
        self.gather_request(b, source, slot, offset, req.buf.len());
    }

    /// Queue bytes the proxy itself makes for the master's shared connection.
    pub(super) fn send_bytes_shared(
        &mut self,
        backend: &Arc<Backend>,
        bytes: &[u8],
        kind: Kind,
        now: Instant,
    ) {
        match self.source_for(backend) {
            Ok(i) => {
                let Some(s) = self.sources.get(i) else { return };
                let slot = s.slot;
                let res = s.conn.send(bytes, &self.sink, slot, 1);
                self.push_pending(Pending {
                    slot,
                    kind,
                    path: PATH_SHARED,
                    silent: false,
                    read: false,
                    sent: now,
                    mark: Mark::None,
                    fence: FENCE_NONE,
                    shard: NO_SHARD,
                });
                if let Err(e) = res {
                    self.handle.inbox.push_failed(slot, &e, 1);
                }
            }
            Err(e) => self.fail_request(kind, bytes, &e, backend.id, now),
        }
    }

    /// A request that could not be sent at all (to backend `failed`): answer it now, in
    /// order.
    pub(super) fn fail_request(
        &mut self,
        kind: Kind,
        bytes: &[u8],
        err: &BackendError,
        failed: u32,
        now: Instant,
    ) {
        if let Kind::ReplicaRead { .. } = kind {
            // Try the master (of the replica's shard) instead.
            let view = self.proxy.view.load_full().holding(Some(failed));
            if let Some(m) = view.master.as_ref() {
                let backend = m.backend.clone();
                self.stats().retries += 1;
                self.send_bytes_shared(&backend, bytes, Kind::Forward, now);
                return;
            }
        }
        self.stats().backend_failures += 1;
        if matches!(kind, Kind::RoleProbe { .. }) {
            return;
        }
        self.push_local_error(&format!("ERR {}", err.message));
    }

    /// The position in `sources` of the shared connection to `backend` that serves
    /// this client's database, protocol and user, opened (or replaced) as needed.
    ///
    /// A failed connection is replaced in place, with new slots: every position stays
    /// the same backend's, so an open [`Gather`] still names its backend, and its requests
    /// (queued under the old slot, which stays referenced until they are answered) go
    /// out on the new connection with their replies delivered where they wait.
    pub(super) fn source_for(&mut self, backend: &Arc<Backend>) -> Result<usize, BackendError> {
        let found = self
            .sources
            .iter()
            .position(|s| s.backend == backend.id && self.client.uses(&s.key));
        if let Some(i) = found {
            if !self.sources.get(i).is_some_and(|s| s.conn.is_failed()) {
                return Ok(i);
            }
        }
        let key = self.client.key();
        let conn = backend.pool.get(&key, self.id)?;
        let warming = !conn.is_ready();
        let slot = self.alloc_slot();
        let retry_slot = self.alloc_slot();
        let hedge_slot = self.alloc_slot();
        let fresh = Source {
            backend: backend.id,
            backend_ref: backend.clone(),
            served: 0,
            key,
            conn,
            slot,
            retry_slot,
            hedge_slot,
            latency_sum_us: 0,
            latency_n: 0,
            warming,
        };
        if let Some(i) = found {
            if let Some(place) = self.sources.get_mut(i) {
                let old = std::mem::replace(place, fresh);
                self.flush_source_latency(&old);
                self.release_slot(old.slot);
                self.release_slot(old.retry_slot);
                self.release_slot(old.hedge_slot);
                return Ok(i);
            }
        }
        self.sources.push(fresh);
        Ok(self.sources.len() - 1)
    }

    pub(super) fn alloc_slot(&mut self) -> u16 {
        self.reclaim_slots();
        if let Some(i) = (0..self.slot_used.len()).find(|i| {
            !self.slot_used.get(*i).copied().unwrap_or(true)
                && self.slot_refs.get(*i).copied().unwrap_or(1) == 0
        }) {
            if let Some(u) = self.slot_used.get_mut(i) {
                *u = true;
            }
            return i as u16;
        }
        self.slot_used.push(true);
        self.slot_refs.push(0);
        (self.slot_used.len() - 1) as u16
    }

    /// Send `req` to the master on a connection of its own, made for it (`SCRIPT KILL`
    /// and the like: the shared connections may be stuck behind what it interrupts). Its
    /// reply arrives in a slot of its own, in request order like any other.
    pub(super) fn interrupt(
        &mut self,
        req: &Request,
        settings: &Settings,
        view: &View,
        now: Instant,
    ) {
        let args: Vec<Vec<u8>> = (0..req.argc()).map(|i| req.arg(i).to_vec()).collect();
        let proxy = self.proxy.clone();
        self.ask_master(args, settings, view, now, move |frame| {
            if frame.starts_with(b"+OK") {
                // The script is stopped: the master answers normally again.
                proxy.monitor.not_busy();
            }
            frame
        });
    }

    /// Send `args` to the master on a connection of its own (with the backend's
    /// credentials); the client's reply, in request order, is what `answer` makes of the
    /// master's.
    pub(super) fn ask_master(
        &mut self,
        args: Vec<Vec<u8>>,
        settings: &Settings,
        view: &View,
        now: Instant,
        answer: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static,
    ) {
        let Some(m) = view.master.as_ref() else {
            self.push_local_error(crate::error::NO_MASTER);
            return;
        };
        let params = m.backend.pool.params().clone();
        // Freed for reuse once its one reply is read (the pending entry holds it).
        let slot = self.alloc_slot();
        self.release_slot(slot);
        let silent = self.take_silent();
        self.push_pending(Pending {
            slot,
            kind: Kind::Forward,
            path: PATH_SHARED,
            silent,
            read: false,
            sent: now,
            mark: Mark::None,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
        let sink = self.sink.clone();
        let timeout = settings.command_timeout();
        tokio::spawn(async move {
            let res = async {
                let mut c = ControlConn::connect(&params).await?;
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                c.call_raw(&args, timeout).await
            }
            .await;
            match res {
                Ok(frame) => {
                    let frame = answer(frame.to_vec());
                    sink.inbox().push_replies(slot, &frame, &[frame.len()]);
                }
                Err(e) => sink.inbox().push_failed(slot, &e, 1),
            }
        });
    }

    /// Close the dedicated connection, if any. Its slot is retired rather than freed: a
    /// closed connection may still deliver (its failure, a last pushed frame) until its
    /// tasks have ended, and whatever it delivers must never be read as the reply of a
    /// later request that reuses the slot.
    pub(super) fn close_dedicated(&mut self, reason: &str) {
        self.client.dedicated = None;
        if let Some(d) = self.dedicated.take() {
            d.conn.close(reason);
            self.retired.push((d.slot, Arc::downgrade(&d.conn)));
        }
    }

    /// Free the retired slots whose connection is gone, dropping what it left in them.
    fn reclaim_slots(&mut self) {
        if self.retired.iter().all(|(_, c)| c.strong_count() > 0) {
            return;
        }
        let mut st = self.handle.inbox.state.lock();
        let used = &mut self.slot_used;
        self.retired.retain(|(slot, conn)| {
            if conn.strong_count() > 0 {
                return true;
            }
            st.clear(*slot);
            if let Some(u) = used.get_mut(*slot as usize) {
                *u = false;
            }
            false
        });
    }

    pub(super) fn release_slot(&mut self, slot: u16) {
        if let Some(u) = self.slot_used.get_mut(slot as usize) {
            *u = false;
        }
    }

    pub(super) fn push_pending(&mut self, mut p: Pending) {
        let mark = std::mem::replace(&mut self.mark_next, Mark::None);
        if p.slot != LOCAL || mark == Mark::Part {
            p.mark = mark;
        }
        if p.slot != LOCAL {
            p.fence = std::mem::take(&mut self.next_fence);
        }
        if p.slot != LOCAL {
            if let Some(r) = self.slot_refs.get_mut(p.slot as usize) {
                *r += 1;
            }
            match p.path {
                PATH_SHARED => self.shared_in_flight += 1,
                PATH_DEDICATED => self.dedicated_in_flight += 1,
                _ => {}
            }
            match p.kind {
                Kind::Write { .. } | Kind::Durable(_) | Kind::Exec => {
                    self.writes_in_flight += 1;
                    self.shard_writes_mut(p.shard).in_flight += 1;
                }
                Kind::ReplicaRead { .. } => self.replica_reads_in_flight += 1,
                _ => {}
            }
        }
        self.pending.push_back(p);
    }

    /// Where a request of `kind` for `shard`'s master counts for read-your-writes: its
    /// place in `shard_writes` for a write (or blocking command) to a cluster shard
    /// (taken, or an idle place reused), else [`NO_SHARD`].
    pub(super) fn write_shard(&mut self, kind: Kind, shard: u64) -> u8 {
        let counted = matches!(
            kind,
            Kind::Write { .. } | Kind::Durable(_) | Kind::Exec | Kind::Blocking
        );
        if shard == 0 || !counted {
            return NO_SHARD;
        }
        let w = &mut self.shard_writes;
        let at = match w.iter().position(|e| e.shard == shard) {
            Some(i) => i,
            None => match w.iter().position(|e| e.in_flight == 0) {
                Some(i) => {
                    if let Some(e) = w.get_mut(i) {
                        // The idle place's acknowledgement now counts for every shard.
                        self.loose_writes.ack = self.loose_writes.ack.max(e.ack);
                        *e = ShardWrites {
                            shard,
                            ..ShardWrites::default()
                        };
                    }
                    i
                }
                None if w.len() < usize::from(NO_SHARD) => {
                    w.push(ShardWrites {
                        shard,
                        ..ShardWrites::default()
                    });
                    w.len() - 1
                }
                None => return NO_SHARD,
            },
        };
        u8::try_from(at).unwrap_or(NO_SHARD)
    }

    /// The count a write at place `shard` ([`Pending::shard`]) is in.
    pub(super) fn shard_writes_mut(&mut self, shard: u8) -> &mut ShardWrites {
        match self.shard_writes.get_mut(usize::from(shard)) {
            Some(w) => w,
            None => &mut self.loose_writes,
        }
    }

    /// Whether this client has writes in flight, and when its last write was answered,
    /// as read-your-writes sees them for a read routed by `view`: every write outside a
    /// cluster, and in one those to the view's shard and those counted for every shard.
    pub(super) fn own_writes(&self, view: &View) -> (bool, Option<Instant>) {
        if view.shard == 0 {
            return (self.writes_in_flight > 0, self.last_write_ack);
        }
        let loose = &self.loose_writes;
        match self.shard_writes.iter().find(|e| e.shard == view.shard) {
            Some(e) => (e.in_flight > 0 || loose.in_flight > 0, e.ack.max(loose.ack)),
            None => (loose.in_flight > 0, loose.ack),
        }
    }

    pub(super) fn take_silent(&mut self) -> bool {
        match self.client.reply {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.client.reply = ReplyMode::On;
                true
            }
        }
    }
}
