//! Dedicated modes: transactions, blocking commands, pub/sub and tracking, on the
//! session's own master connection.

use super::local::{self, Redirect};
use super::*;
use crate::error::ProxyError;

impl Session {
    // ---------------------------------------------------------------- dedicated

    /// The dedicated master connection, opened (or reopened) as needed.
    pub(super) fn dedicated_conn(&mut self, view: &View) -> Result<(), ProxyError> {
        let master = view.master.as_ref().ok_or(ProxyError::NoMaster)?;
        if let Some(d) = &self.dedicated {
            if d.backend == master.backend.id && !d.conn.is_failed() && self.client.uses(&d.key) {
                return Ok(());
            }
        }
        self.close_dedicated("replaced");
        let key = self.client.key();
        let reserved = self.proxy.reserved.remove(&self.id).map(|(_, r)| r);
        let conn = match reserved {
            // Opened for this client by a tracking redirect to it, which Redis knows by
            // that connection's id.
            Some(r)
                if r.backend == master.backend.id
                    && !r.conn.is_failed()
                    && self.client.uses(&r.conn.key) =>
            {
                r.conn
            }
            other => {
                if let Some(r) = other {
                    r.conn.close("replaced");
                }
                master.backend.pool.dedicated(&key)
            }
        };
        // Pushes that come outside any request (this client being a tracking redirect's
        // target) are written to the client as they come.
        conn.set_push_sink(&self.sink);
        let slot = self.alloc_slot();
        self.client.dedicated = Some(conn.clone());
        self.dedicated = Some(Dedicated {
            conn,
            slot,
            backend: master.backend.id,
            shard: view.shard,
            key,
        });
        Ok(())
    }

    /// Make the master fail the open transaction: a request it rejects as it queues it
    /// (`GET` without its key), whose reply is dropped. `EXEC` then answers `EXECABORT`.
    pub(super) fn fail_transaction(&mut self) {
        let Some(d) = &self.dedicated else { return };
        let (conn, slot) = (d.conn.clone(), d.slot);
        self.send_dropped(&conn, slot, b"*1\r\n$3\r\nGET\r\n");
    }

    /// Send `bytes` (one request) through `conn` into `slot`, its reply dropped.
    pub(super) fn send_dropped(&mut self, conn: &Conn, slot: u16, bytes: &[u8]) {
        let res = conn.send(bytes, &self.sink, slot, 1);
        self.push_pending(Pending {
            slot,
            kind: Kind::Dropped,
            path: PATH_DEDICATED,
            silent: true,
            read: false,
            sent: Instant::now(),
            mark: Mark::None,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
        if let Err(e) = res {
            self.handle.inbox.push_failed(slot, &e, 1);
        }
    }

    pub(super) fn send_dedicated(&mut self, req: &Request, kind: Kind, now: Instant) {
        let Some(d) = &self.dedicated else { return };
        let (slot, shard) = (d.slot, d.shard);
        let count = if kind == Kind::Tunnel { 0 } else { 1 };
        let res = d.conn.send(req.buf, &self.sink, slot, count);
        if kind == Kind::Tunnel {
            if let Err(e) = res {
                self.push_local_error(&format!("ERR {}", e.message));
                self.closing = true;
            }
            return;
        }
        let silent = self.take_silent();
        let shard = self.write_shard(kind, shard);
        self.push_pending(Pending {
            slot,
            kind,
            path: PATH_DEDICATED,
            silent,
            read: false,
            sent: now,
            mark: Mark::None,
            fence: FENCE_NONE,
            shard,
        });
        if let Err(e) = res {
            self.handle.inbox.push_failed(slot, &e, 1);
        }
    }

    pub(super) fn dispatch_dedicated_mode(
        &mut self,
        req: &Request,
        cmd: Option<&'static Command>,
        b: &mut Batch<'_>,
    ) -> Stop {
        let settings = b.settings;
        let view = b.view;
        self.send_gathered(b);
        let now = Instant::now();
        let name = cmd.map(|c| c.name).unwrap_or("");
        match (name, cmd) {
            ("quit", _) => {
                self.push_local_raw(reply::OK);
                self.closing = true;
                return Stop::More;
            }
            ("reset", Some(cmd)) => {
                if !self.pending.is_empty() {
                    return Stop::Wait;
                }
                return self.local_command(req, cmd, settings, view);
            }
            (n, Some(cmd)) if n == "auth" || n == "hello" || n.starts_with("client|") => {
                if self.mode == Mode::Multi {
                    if self.shared_in_flight > 0 {
                        return Stop::Wait;
                    }
                    return self.queue_own(req, cmd, settings);
                }
                return self.local_command(req, cmd, settings, view);
            }
            _ => {}
        }
        if self.shared_in_flight > 0 {
            return Stop::Wait;
        }
        if let Err(e) = self.dedicated_conn(view) {
            self.push_local_error(&e.to_string());
            return Stop::More;
        }
        if std::mem::take(&mut self.multi_deferred) {
            // In front of a cluster, the transaction's shard is known now.
            if let Some(d) = &self.dedicated {
                let (conn, slot) = (d.conn.clone(), d.slot);
                self.send_dropped(&conn, slot, super::cluster::MULTI);
            }
        }
        let mut kind = Kind::Forward;
        let key_fence = settings.policy.key_fence;
        // Whether the request may change keys (anything not a read, transaction or
        // connection command; unknown commands included).
        let writes = cmd.is_none_or(|c| matches!(c.class, Class::Write | Class::Admin));
        let mut fenced = false;
        match (self.mode, name) {
            (Mode::Multi, "exec") => {
                kind = Kind::Exec;
                self.exec_own();
                self.set_mode(Mode::Normal);
                if key_fence {
                    self.fence_exec();
                    fenced = true;
                }
            }
            (Mode::Multi, "discard") => {
                self.set_mode(Mode::Normal);
                self.tx_own = None;
                self.multi_select = None;
                self.fence_tx_clear();
            }
            (Mode::Multi, "select") => {
                self.client.multi += 1;
                if let Some(db) = parse_int(req.arg(1)).and_then(|d| u32::try_from(d).ok()) {
                    self.multi_select = Some(db);
                }
            }
            (Mode::Multi, _) => {
                self.client.multi += 1;
                if key_fence && writes {
                    let db = self.multi_select.unwrap_or(self.client.db);
                    self.fence_queue(cmd, req, db);
                }
            }
            (Mode::Watch, "unwatch") => self.set_mode(Mode::Normal),
            (Mode::Watch, "multi") => {
                self.set_mode(Mode::Multi);
                self.fence_tx_clear();
            }
            (Mode::Watch, "exec") => {
                self.push_local_error("ERR EXEC without MULTI");
                return Stop::More;
            }
            (Mode::Watch, "discard") => {
                self.push_local_error("ERR DISCARD without MULTI");
                return Stop::More;
            }
            (Mode::Watch, "select") => match self.check_select(req) {
                // The connection itself switches: it stays, with its WATCHes.
                Ok(db) => self.set_dedicated_db(db),
                Err(e) => {
                    self.push_answer(e.into());
                    return Stop::More;
                }
            },
            _ => {}
        }
        if self.mode != Mode::Multi && cmd.is_some_and(|c| commands::is_blocking(c, req)) {
            kind = Kind::Blocking;
            self.blocking_in_flight = true;
            self.set_flags(b'b');
            if let Some(d) = &self.dedicated {
                d.conn.blocking.store(true, Ordering::Relaxed);
            }
        } else if self.mode == Mode::Watch && writes && kind == Kind::Forward {
            // A write under WATCH, outside MULTI: a write like any other.
            kind = Kind::Write { keep: 0 };
        }
        if self.mode == Mode::Watch && writes && key_fence {
            self.fence_write(cmd, req, self.client.db);
            fenced = true;
        }
        self.send_dedicated(req, kind, now);
        if fenced {
            self.fence_unsent(now);
        }
        Stop::More
    }

    /// Before a request that switches to the dedicated connection: the open run is
    /// handed over, everything in flight must be answered first, and the connection is
    /// opened. `Some(stop)` when the request cannot go now (it waits, or an error was
    /// answered).
    fn enter_dedicated(&mut self, b: &mut Batch<'_>) -> Option<Stop> {
        self.send_gathered(b);
        if !self.pending.is_empty() {
            return Some(Stop::Wait);
        }
        if let Err(e) = self.dedicated_conn(b.view) {
            self.push_local_error(&e.to_string());
            return Some(Stop::More);
        }
        None
    }

    pub(super) fn blocking(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        b: &mut Batch<'_>,
    ) -> Stop {
        if let Some(stop) = self.enter_dedicated(b) {
            return stop;
        }
        if let Some(conn) = self.dedicated.as_ref().map(|d| d.conn.clone()) {
            conn.blocking.store(true, Ordering::Relaxed);
            self.watch_hangup(&conn);
        }
        self.blocking_in_flight = true;
        self.set_flags(b'b');
        // A blocking pop or move writes its keys when it returns.
        let fenced = cmd.class != Class::Read && b.settings.policy.key_fence;
        if fenced {
            self.fence_write(Some(cmd), req, self.client.db);
        }
        let now = Instant::now();
        self.send_dedicated(req, Kind::Blocking, now);
        if fenced {
            self.fence_unsent(now);
        }
        Stop::More
    }

    pub(super) fn transaction(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        b: &mut Batch<'_>,
    ) -> Stop {
        self.send_gathered(b);
        match cmd.name {
            "multi" if b.top.cluster.is_some() => {
                // In front of a cluster, MULTI goes to the shard of the first command
                // queued, just before it; answered here as that node would answer it.
                if !self.pending.is_empty() {
                    return Stop::Wait;
                }
                self.set_mode(Mode::Multi);
                self.multi_deferred = true;
                self.multi_select = None;
                self.fence_tx_clear();
                self.push_local_raw(reply::OK);
            }
            "multi" | "watch" => {
                if let Some(stop) = self.enter_dedicated(b) {
                    return stop;
                }
                self.set_mode(if cmd.name == "multi" {
                    Mode::Multi
                } else {
                    Mode::Watch
                });
                self.multi_select = None;
                self.fence_tx_clear();
                self.send_dedicated(req, Kind::Forward, Instant::now());
            }
            "exec" => self.push_local_error("ERR EXEC without MULTI"),
            "discard" => self.push_local_error("ERR DISCARD without MULTI"),
            _ => self.push_local_raw(reply::OK), // UNWATCH with nothing watched
        }
        Stop::More
    }

    // ---------------------------------------------------------------- pub/sub

    pub(super) fn pubsub(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        at: Option<usize>,
        b: &mut Batch<'_>,
    ) -> Stop {
        match cmd.name {
            "subscribe" | "psubscribe" | "ssubscribe" => self.enter_tunnel(req, b),
            "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
                // Not subscribed: Redis answers one frame per channel, with count 0.
                self.send_gathered(b);
                let kind = Value::bulk(cmd.name);
                let frames: Vec<Value> = if req.argc() <= 1 {
                    vec![Value::Null]
                } else {
                    (1..req.argc()).map(|i| Value::bulk(req.arg(i))).collect()
                };
                let mut out = BytesMut::new();
                for ch in frames {
                    let v = vec![kind.clone(), ch, Value::Int(0)];
                    let v = if self.client.resp3 {
                        Value::Push(v)
                    } else {
                        Value::Array(v)
                    };
                    v.encode(self.client.resp3, &mut out);
                }
                self.push_local_bytes(&out);
                Stop::More
            }
            _ => self.send_to_master(req, None, at, b, Kind::Forward),
        }
    }

    pub(super) fn enter_tunnel(&mut self, req: &Request, b: &mut Batch<'_>) -> Stop {
        if let Some(stop) = self.enter_dedicated(b) {
            return stop;
        }
        let Some(d) = &self.dedicated else {
            return Stop::More;
        };
        d.conn.set_stream(&self.sink, d.slot);
        let slot = d.slot;
        // A new tunnel: its first request is this one; the redirect target (set just
        // before, for `CLIENT TRACKING … REDIRECT`) stays.
        self.tracking = Tracking {
            redirect: self.tracking.redirect.take(),
            to_self: self.tracking.to_self,
            sent: 1,
            ..Tracking::default()
        };
        self.set_mode(Mode::Tunnel);
        let name = req.arg(0);
        self.set_flags(if name.eq_ignore_ascii_case(b"monitor") {
            b'O'
        } else if name.eq_ignore_ascii_case(b"client") {
            b't'
        } else {
            b'P'
        });
        self.push_pending(Pending {
            slot,
            kind: Kind::Tunnel,
            path: PATH_DEDICATED,
            silent: false,
            read: false,
            sent: Instant::now(),
            mark: Mark::None,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
        self.send_dedicated(req, Kind::Tunnel, Instant::now());
        Stop::More
    }

    pub(super) fn dispatch_tunnel(
        &mut self,
        req: &Request,
        cmd: Option<&'static Command>,
        b: &mut Batch<'_>,
    ) -> Stop {
        let settings = b.settings;
        self.send_gathered(b);
        if self.tunnel_exit.is_some() {
            // Leaving: the rest waits until the connection confirmed its RESET.
            return Stop::Wait;
        }
        match cmd.map(|c| c.name) {
            // Both leave through a RESET on the dedicated connection: its `+RESET` comes
            // after every frame the connection owes the client, so none is lost.
            Some("quit") => self.leave_tunnel(TunnelExit::Quit),
            Some("reset") => self.leave_tunnel(TunnelExit::Reset),
            name => {
                if self.client.flags == b't' {
                    // A tracking tunnel answers one frame per request (invalidations go
                    // elsewhere or come as pushes): note which replies name the
                    // redirect target, to give its proxy id back.
                    if matches!(name, Some("client|getredir" | "client|trackinginfo")) {
                        self.tracking.rewrites.push_back(self.tracking.sent);
                    }
                    if name == Some("client|id") {
                        self.tracking.own_ids.push_back(self.tracking.sent);
                    }
                    self.tracking.sent += 1;
                }
                if name == Some("client|tracking") && req.arg(2).eq_ignore_ascii_case(b"on") {
                    // Turned on again, maybe with another target: the redirect is
                    // translated as the first time. Replies here come from the master
                    // in order, so a refusal is the master's own (an id it knows none of).
                    let bytes = match self.translate_redirect(req, b.view) {
                        Redirect::None => None,
                        Redirect::To(bytes) => Some(bytes),
                        Redirect::Refused(_) | Redirect::Opening(_) => (4..req.argc())
                            .find(|i| req.arg(*i - 1).eq_ignore_ascii_case(b"redirect"))
                            .map(|pos| local::with_arg(req, pos, b"0")),
                    };
                    if let Some(bytes) = bytes {
                        if let Some(args) = local::spans(&bytes, settings) {
                            let translated = Request {
                                buf: &bytes,
                                args: &args,
                            };
                            self.send_dedicated(&translated, Kind::Tunnel, Instant::now());
                            return Stop::More;
                        }
                    }
                }
                self.send_dedicated(req, Kind::Tunnel, Instant::now())
            }
        }
        Stop::More
    }

    /// Ask the dedicated connection to leave its streaming state; the tunnel ends when
    /// its `+RESET` arrives ([`Session::tunnel_frame`]).
    fn leave_tunnel(&mut self, exit: TunnelExit) {
        self.tunnel_exit = Some(exit);
        let Some(d) = &self.dedicated else {
            self.finish_tunnel();
            return;
        };
        if let Err(e) = d.conn.send(RESET, &self.sink, d.slot, 0) {
            let _ = e;
            self.finish_tunnel();
        }
    }

    /// A frame streamed by the dedicated connection: `true` when it ends the tunnel (the
    /// `+RESET` the session asked for) and must not be forwarded.
    pub(super) fn tunnel_frame(&self, frame: &[u8]) -> bool {
        self.tunnel_exit.is_some() && frame == RESET_REPLY
    }

    /// The tunnel is over (its `+RESET` arrived, or the connection failed while leaving):
    /// close it and answer the `RESET` or `QUIT` that ended it.
    pub(super) fn finish_tunnel(&mut self) {
        let Some(exit) = self.tunnel_exit.take() else {
            return;
        };
        self.end_tunnel();
        match exit {
            TunnelExit::Quit => {
                self.push_local_raw(reply::OK);
                self.closing = true;
            }
            TunnelExit::Reset => {
                let settings = self.proxy.settings.load_full();
                self.reset(&settings);
            }
        }
    }

    /// Leave tunnel mode: the dedicated connection is closed (its server-side state goes
    /// with it) after the frames already received are forwarded.
    pub(super) fn end_tunnel(&mut self) {
        self.drain();
        if let Some(p) = self.pending.front() {
            if p.kind == Kind::Tunnel {
                let slot = p.slot;
                self.pending.pop_front();
                if let Some(r) = self.slot_refs.get_mut(slot as usize) {
                    *r = r.saturating_sub(1);
                }
                self.dedicated_in_flight = self.dedicated_in_flight.saturating_sub(1);
                self.handle.inbox.state.lock().clear(slot);
            }
        }
        self.close_dedicated("client left pub/sub");
        self.set_mode(Mode::Normal);
    }

    /// Enter or leave a dedicated mode; `CLIENT LIST`'s `flags` and `multi` follow it.
    pub(super) fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        match mode {
            Mode::Multi => {
                self.client.flags = b'x';
                self.client.multi = 0;
                self.tx_own = None;
            }
            // Tunnel flags say what streams (set by `enter_tunnel`).
            Mode::Tunnel => self.client.multi = -1,
            Mode::Normal | Mode::Watch => {
                self.client.flags = 0;
                self.client.multi = -1;
            }
        }
        if mode == Mode::Normal {
            self.tx_slot = None;
            self.multi_deferred = false;
        }
    }

    /// The dedicated connection selected `db` itself (`SELECT` under `WATCH`, or in an
    /// `EXEC`): the client follows, and the connection is kept.
    pub(super) fn set_dedicated_db(&mut self, db: u32) {
        self.client.db = db;
        if let Some(d) = self.dedicated.as_mut() {
            d.key.db = db;
        }
    }
}
