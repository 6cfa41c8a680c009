//! Requests: parse what the client sent and route each one (gates, reads, writes).

use super::*;
use crate::config::ReadYourWrites;
use crate::fence::Fenced;

impl Session {
    // ---------------------------------------------------------------- requests

    /// Parse and dispatch as many buffered requests as the barriers allow.
    pub(super) fn process(&mut self) -> Result<(), ProtocolError> {
        if self.rbuf.is_empty()
            || self.closing
            || self.held.is_some()
            || self.login.is_some()
            || self.exec_pending_own()
        {
            return Ok(());
        }
        // Blocked clients that hung up before this client's requests were read stop
        // being waiters on the master before these requests reach it.
        orphans::reap();
        let settings = self.proxy.settings.load();
        let view = self.proxy.view.load();
        if view.epoch != self.view_epoch {
            self.on_new_epoch(&view);
        }
        if settings.policy.generation != self.settings_gen {
            self.on_new_settings(&settings);
        }
        if self.master_wait.is_some() && !view.switching {
            // The failover is over (or abandoned): writes go (or fail) now.
            self.master_wait = None;
            if self.held.is_none() && self.read_wait.is_none() && self.retry_wait.is_none() {
                self.view_rx = None;
            }
        }
        let now = Instant::now();
        self.replies_at = now;
        self.handle
            .last_active_ms
            .store(self.proxy.uptime_ms(now), Ordering::Relaxed);
        if self.handle.inbox.trimmed.load(Ordering::Relaxed) {
            // Active again: the janitor may trim this client's buffers next time it idles.
            self.handle.inbox.trimmed.store(false, Ordering::Relaxed);
        }
        self.prefer = None;
        let max_pipeline = settings.config.limits.max_pipeline;
        self.window_budget = settings.config.limits.client_output_buffer_limit.0;
        self.window_max = u32::try_from(max_pipeline).unwrap_or(u32::MAX).max(1);
        let rbuf = std::mem::take(&mut self.rbuf);
        let mut consumed = 0usize;
        let mut batch = Batch {
            rbuf: &rbuf,
            settings: &settings,
            view: &view,
            top: &view,
            now,
            open: 0,
        };
        let mut result = Ok(());
        self.parser.unauthenticated = !self.client.authenticated;
        while consumed < rbuf.len() && !self.closing {
            if self.pending.len() >= max_pipeline
                || self.shared_in_flight >= self.window
                || self.blocking_in_flight
                || self.held.is_some()
                || self.login.is_some()
                || self.exec_pending_own()
            {
                break;
            }
            let parsed = match self
                .parser
                .parse(rbuf.get(consumed..).unwrap_or_default(), &settings.limits)
            {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let (len, inline) = match parsed {
                Parsed::Empty { len } => {
                    consumed += len;
                    continue;
                }
                Parsed::Multibulk { len } => (len, false),
                Parsed::Inline { len } => (len, true),
            };
            let args = std::mem::take(&mut self.parser.args);
            let inline_buf = std::mem::take(&mut self.parser.inline_buf);
            let buf: &[u8] = if inline {
                &inline_buf
            } else {
                rbuf.get(consumed..consumed + len).unwrap_or_default()
            };
            let req = Request { buf, args: &args };
            self.qbuf = rbuf.len();
            let stop = self.dispatch(&req, (!inline).then_some(consumed), &mut batch);
            self.parser.args = args;
            self.parser.inline_buf = inline_buf;
            if stop == Stop::Wait {
                break;
            }
            consumed += len;
        }
        self.send_gathered(&mut batch);
        self.flush_counters(&settings);
        self.rbuf = rbuf;
        self.rbuf.advance(consumed);
        if consumed > 0 {
            self.parser.reset();
        }
        result
    }

    /// Route one request. `at` is where it starts in the batch's read buffer (`None`: an
    /// inline request, rewritten as RESP elsewhere, which cannot join a run). Returns
    /// `Stop::Wait` when a barrier holds it back (it stays in the buffer and is
    /// dispatched later).
    pub(super) fn dispatch(&mut self, req: &Request, at: Option<usize>, b: &mut Batch<'_>) -> Stop {
        let settings = b.settings;
        let view = b.view;
        let now = b.now;
        let cmd = commands::lookup(req);
        let name = req.arg(0);
        if cmd.is_some() {
            self.client.cmd = cmd;
        }
        // Authentication gate.
        if !self.client.authenticated {
            let allowed = matches!(
                cmd.map(|c| c.name),
                Some("auth" | "hello" | "quit" | "reset")
            );
            if !allowed {
                self.stats().request(class_index(cmd.map(|c| c.class)));
                self.send_gathered(b);
                self.push_local_raw(reply::NOAUTH);
                return Stop::More;
            }
        }
        // Tunnel mode: everything goes to the dedicated connection, but QUIT and RESET.
        if self.mode == Mode::Tunnel {
            return self.dispatch_tunnel(req, cmd, b);
        }
        if cmd.is_none() && name.eq_ignore_ascii_case(b"proxy") && self.mode != Mode::Multi {
            self.stats().request(class_index(Some(Class::Connection)));
            self.send_gathered(b);
            self.proxy_command(req, settings, view, now);
            return Stop::More;
        }
        let Some(cmd) = cmd else {
            // Unknown to the table: the master answers (module command or an error).
            self.stats().request(class_index(None));
            if matches!(self.mode, Mode::Multi | Mode::Watch) {
                return self.dispatch_dedicated_mode(req, None, b);
            }
            return self.send_to_master(req, None, at, b, Kind::Write { keep: 0 });
        };
        self.stats().request(class_index(Some(cmd.class)));
        if settings.deny.denies(cmd) {
            let e = format!(
                "NOPERM the '{}' command is disabled by the proxy (deny_commands)",
                String::from_utf8_lossy(name).to_lowercase()
            );
            return self.refuse(&e, b);
        }
        if let Some(user) = &self.client.user {
            if let Some(e) = user.refusal(cmd) {
                let e = e.to_string();
                return self.refuse(&e, b);
            }
            if !user.may_run(cmd) {
                let e = format!(
                    "NOPERM this user has no permissions to run the '{}' command",
                    cmd.name
                );
                return self.refuse(&e, b);
            }
            if !user.all_keys() && commands::touches_undeclared_keys(cmd, req) {
                let e = format!(
                    "NOPERM this user may access only some keys, and '{}' can reach keys it does not name (scripts, functions, SORT BY/GET); it is refused to key-restricted users",
                    cmd.name
                );
                return self.refuse(&e, b);
            }
            if !user.all_keys() {
                let mut ok = true;
                commands::for_each_key(cmd, req, |i| ok &= user.may_touch(req.arg(i)));
                if !ok {
                    return self.refuse(
                        "NOPERM this user has no permissions to access one of the keys used as arguments",
                        b,
                    );
                }
            }
        }
        if matches!(cmd.class, Class::Write | Class::Admin) {
            if let Some(e) =
                commands::cuts_off_backends(cmd, req, &settings.config.backend.username)
            {
                return self.refuse(e, b);
            }
        }
        b.view = b.top;
        if let Some(stop) = self.cluster_route(req, cmd, at, b) {
            return stop;
        }
        let view = b.view;
        if matches!(self.mode, Mode::Multi | Mode::Watch) {
            return self.dispatch_dedicated_mode(req, Some(cmd), b);
        }
        if self.proxy.pause.maybe() && self.paused(cmd, req, now) {
            // Held by the master's pause: on a connection of its own, as Redis holds
            // its client (and the client's later commands behind it).
            self.send_gathered(b);
            return self.blocking(req, cmd, b);
        }
        match cmd.class {
            Class::Connection => {
                self.send_gathered(b);
                self.local_command(req, cmd, settings, view)
            }
            Class::Transaction => self.transaction(req, cmd, b),
            Class::PubSub => self.pubsub(req, cmd, at, b),
            _ if commands::is_blocking(cmd, req) => {
                if name.eq_ignore_ascii_case(b"wait") {
                    self.send_gathered(b);
                    return self.wait_command(req, settings, view, now);
                }
                self.blocking(req, cmd, b)
            }
            Class::Read if commands::master_only(cmd) => {
                self.stats().route(0, Reason::Rule);
                self.master_read(req, at, b)
            }
            Class::Read => self.read(req, cmd, at, b),
            Class::Write | Class::Admin => {
                if name.eq_ignore_ascii_case(b"monitor") {
                    return self.enter_tunnel(req, b);
                }
                if commands::is_interrupt(cmd) {
                    self.send_gathered(b);
                    self.interrupt(req, settings, view, now);
                    return Stop::More;
                }
                let kind = write_kind(settings, cmd, req);
                if matches!(cmd.name, "eval" | "evalsha" | "fcall") {
                    self.mark_next = Mark::Script;
                }
                let stop = self.send_to_master(req, Some(cmd), at, b, kind);
                self.mark_next = Mark::None;
                stop
            }
        }
    }

    /// Whether the master's client pause ([`crate::proxy::ClientPause`]) holds `cmd`: a
    /// write or a command that may replicate, or, in a pause of all commands, any that
    /// goes to the master (not a read a replica may serve, nor one the proxy answers).
    fn paused(&self, cmd: &'static Command, req: &Request, now: Instant) -> bool {
        if matches!(cmd.class, Class::Connection | Class::Transaction)
            || commands::is_blocking(cmd, req)
            || commands::is_interrupt(cmd)
            || cmd.name == "monitor"
            || (cmd.class == Class::PubSub && !commands::may_replicate(cmd))
        {
            return false;
        }
        let write = cmd.flags.contains(Flags::WRITE) || commands::may_replicate(cmd);
        let master = write || cmd.class != Class::Read || commands::master_only(cmd);
        master && self.proxy.pause.holds(self.proxy.uptime_ms(now), write)
    }

    /// Refuse the request with the error `e`. In a transaction, the master is made to
    /// fail it too (a request it rejects as it queues it), so `EXEC` aborts with
    /// `EXECABORT` as Redis's own refusals make it.
    pub(super) fn refuse(&mut self, e: &str, b: &mut Batch<'_>) -> Stop {
        self.send_gathered(b);
        if self.mode == Mode::Multi {
            if self.multi_deferred {
                self.start_deferred_multi(b.top);
            }
            self.fail_transaction();
        }
        self.push_local_error(e);
        Stop::More
    }

    pub(super) fn read(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        at: Option<usize>,
        b: &mut Batch<'_>,
    ) -> Stop {
        if let Some(pos) = cursor::cursor_arg(cmd.name) {
            if req.arg(pos) != b"0" {
                return self.scan_continue(req, pos, b);
            }
            self.mark_next = scan_mark(cmd.name);
            let stop = self.route_read(req, cmd, at, b);
            self.mark_next = Mark::None;
            return stop;
        }
        self.route_read(req, cmd, at, b)
    }

    /// Continue a SCAN-family iteration on the node that issued its cursor.
    fn scan_continue(&mut self, req: &Request, pos: usize, b: &mut Batch<'_>) -> Stop {
        let now = b.now;
        self.send_gathered(b);
        let view = self.proxy.view.load_full();
        let Some((c, tag)) = cursor::decode(req.arg(pos)) else {
            if crate::protocol::parse_int(req.arg(pos)).is_none() {
                self.push_local_error("ERR invalid cursor");
            } else {
                self.push_local_error(
                    "ERR redsplit: this cursor was not issued by this proxy (a SCAN starts at 0)",
                );
            }
            return Stop::More;
        };
        let Some((backend, is_master)) = cursor::node(&view, tag) else {
            self.push_local_error(
                "ERR redsplit: the node that issued this cursor has left; start the SCAN again from 0",
            );
            return Stop::More;
        };
        // Ordering: as for any read of this session to that node.
        if self.dedicated_in_flight > 0 {
            return Stop::Wait;
        }
        self.stats()
            .route(if is_master { 0 } else { 1 }, Reason::Cursor);
        let bytes = cursor::with_cursor(req, pos, c);
        self.mark_next = if pos == 1 {
            Mark::KeyspaceScan
        } else {
            Mark::Scan
        };
        self.send_bytes_shared(&backend, &bytes, Kind::Forward, now);
        self.mark_next = Mark::None;
        Stop::More
    }

    pub(super) fn route_read(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        at: Option<usize>,
        b: &mut Batch<'_>,
    ) -> Stop {
        let settings = b.settings;
        let view = b.view;
        let now = b.now;
        let policy = &settings.policy;
        let resolved = policy.resolve(cmd, |f| commands::for_each_key(cmd, req, |i| f(req.arg(i))));
        self.count_hit(resolved.rule);
        let key = if resolved.level.ryw == ReadYourWrites::Key {
            self.read_fence(cmd, req)
        } else {
            Fenced::default()
        };
        let (writes_in_flight, last_write_ack) = self.own_writes(view);
        let sess = SessionReads {
            writes_in_flight,
            last_write_ack,
            key_write_ack: key.ack,
            key_write_pending: key.pending,
            prefer: self.prefer,
            turn: self.turn,
        };
        let d = router::route_read(&resolved.level, &sess, policy, view, now);
        self.turn = self.turn.wrapping_add(1);
        match d.target {
            Target::Replica(i) => {
                let Some(r) = view.replicas.get(i) else {
                    return Stop::More;
                };
                if self.dedicated_in_flight > 0 {
                    return self.barrier(b);
                }
                self.stats().route(1, d.reason);
                if self.read_wait.is_some() {
                    self.read_wait = None;
                }
                if let Some(s) = r.staleness_ms(now) {
                    self.stats()
                        .staleness
                        .observe(s.saturating_mul(1000), &STALENESS_BOUNDS_US);
                }
                self.prefer = Some(i);
                let backend = r.backend.clone();
                self.send_shared(
                    &backend,
                    req,
                    at,
                    b,
                    Kind::ReplicaRead {
                        retry: req.buf.len() as u32,
                        hedge: Hedge::No,
                    },
                    true,
                );
                Stop::More
            }
            Target::Master => {
                self.stats().route(0, d.reason);
                if self.read_wait.is_some() {
                    self.read_wait = None;
                }
                self.master_read(req, at, b)
            }
            Target::Reject if self.hold_read(d, view, settings, now) => self.barrier(b),
            Target::Reject => {
                self.stats().route(2, d.reason);
                self.send_gathered(b);
                self.push_local_error(&reject_message(d, &resolved.level, view, policy));
                Stop::More
            }
        }
    }

    /// A read that found neither a master nor a replica that can answer while the master
    /// is down (`on_master_down: serve_replicas`; a failover, a replica's connections
    /// closed as Sentinel reconfigures it): it waits, with everything after it, for a
    /// view where one can, at most `command_timeout_ms` from when it first met this.
    /// `false`: it fails now.
    fn hold_read(&mut self, d: Decision, view: &View, settings: &Settings, now: Instant) -> bool {
        let can_wait = d.reason == Reason::NoMaster
            && settings.policy.on_master_down == crate::config::OnMasterDown::ServeReplicas
            && match view.master.as_ref() {
                // Sentinel is failing over (the replicas may be between masters too).
                None => true,
                Some(m) => m.down && !view.replicas.is_empty(),
            };
        let timeout = Duration::from_millis(settings.config.backend.command_timeout_ms);
        let until = self.read_wait.as_ref().map_or(now + timeout, |w| w.0);
        if !can_wait || now >= until {
            self.read_wait = None;
            return false;
        }
        if self.read_wait.is_none() {
            self.read_wait = Some((until, Box::pin(tokio::time::sleep_until(until.into()))));
            // A fresh view at once (only as the wait starts: asking on every new view
            // would keep the monitor polling back to back).
            self.proxy.monitor.poll_now();
        }
        if self.view_rx.is_none() {
            self.view_rx = Some(self.proxy.view_version.subscribe());
        }
        true
    }

    pub(super) fn master_read(
        &mut self,
        req: &Request,
        at: Option<usize>,
        b: &mut Batch<'_>,
    ) -> Stop {
        let view = b.view;
        let Some(m) = view.master.as_ref() else {
            self.send_gathered(b);
            self.push_local_error(crate::error::NO_MASTER);
            return Stop::More;
        };
        if self.dedicated_in_flight > 0 {
            return self.barrier(b);
        }
        let backend = m.backend.clone();
        let kind = Kind::MasterRead {
            retry: u32::try_from(req.buf.len()).unwrap_or(u32::MAX),
        };
        self.send_shared(&backend, req, at, b, kind, true);
        Stop::More
    }

    /// Send `req` to the master's shared connection. A write (`kind` `Write` or
    /// `Durable`; `cmd` is its table entry, `None` for an unknown command) fences its
    /// keys first when a rule has `read_your_writes: key`.
    pub(super) fn send_to_master(
        &mut self,
        req: &Request,
        cmd: Option<&'static Command>,
        at: Option<usize>,
        b: &mut Batch<'_>,
        kind: Kind,
    ) -> Stop {
        let view = b.view;
        let now = b.now;
        let d = router::route_write(view);
        let hold = b
            .settings
            .config
            .backend
            .sentinel
            .as_ref()
            .map_or(0, |s| s.hold_writes_ms);
        if let router::WriteHold::Hold { until } =
            router::write_hold(view, Duration::from_millis(hold), self.master_wait, now)
        {
            // A planned failover: the write (and what follows it) waits for the new master.
            self.master_wait = Some(until);
            if self.view_rx.is_none() {
                self.view_rx = Some(self.proxy.view_version.subscribe());
            }
            return self.barrier(b);
        }
        let Some(m) = view.master.as_ref().filter(|_| d.target == Target::Master) else {
            self.stats().route(2, Reason::NoMaster);
            self.send_gathered(b);
            self.push_local_error(&router::write_rejection(view).line());
            return Stop::More;
        };
        // A write waits for this session's replica reads (they may need a retry on the
        // master first) and for its dedicated connection to be idle.
        if self.replica_reads_in_flight > 0 || self.dedicated_in_flight > 0 {
            return self.barrier(b);
        }
        self.stats().route(0, Reason::Write);
        let backend = m.backend.clone();
        self.last_write_master = Some(backend.id);
        let fenced =
            matches!(kind, Kind::Write { .. } | Kind::Durable(_)) && b.settings.policy.key_fence;
        if fenced {
            self.fence_write(cmd, req, self.client.db);
        }
        if let Kind::Durable(_) = kind {
            self.send_gathered(b);
            self.send_shared(&backend, req, at, b, kind, false);
            self.send_gathered(b);
            self.send_bytes_shared(&backend, ROLE, Kind::RoleProbe { wait: None }, now);
            self.proxy.monitor.poll_now();
        } else {
            self.send_shared(&backend, req, at, b, kind, false);
        }
        if fenced {
            self.fence_unsent(now);
        }
        Stop::More
    }
}

/// How a write of `req` is sent: durable when the rule for its keys has `wait:`.
pub(super) fn write_kind(settings: &Settings, cmd: &'static Command, req: &Request) -> Kind {
    if !settings.policy.rules.iter().any(|r| r.wait.is_some()) {
        return Kind::Write { keep: 0 };
    }
    settings
        .policy
        .resolve(cmd, |f| commands::for_each_key(cmd, req, |i| f(req.arg(i))))
        .wait
        .map_or(Kind::Write { keep: 0 }, Kind::Durable)
}

/// The mark of a SCAN-family request: a keyspace `SCAN` goes on to the next shard in a
/// cluster; the others stay on their key's node.
fn scan_mark(name: &str) -> Mark {
    if name == "scan" {
        Mark::KeyspaceScan
    } else {
        Mark::Scan
    }
}

/// The error for a read that could not be routed.
pub(super) fn reject_message(
    d: Decision,
    level: &crate::policy::Level,
    view: &View,
    policy: &crate::policy::Policy,
) -> String {
    match d.reason {
        Reason::NoMaster
            if policy.on_master_down == crate::config::OnMasterDown::Error
                && view.master.as_ref().is_some_and(|m| m.down) =>
        {
            format!(
                "ERR redsplit: the master {} is down and reads are refused (routing.on_master_down: error)",
                view.master.as_ref().map(|m| m.backend.addr.as_str()).unwrap_or("?")
            )
        }
        Reason::NoMaster => "ERR redsplit: the master is down and no replica can serve this read".into(),
        Reason::OwnWrite => "ERR redsplit: no replica has this client's last write (or the last write of these keys) yet (fallback: error)".into(),
        Reason::OverBudget => format!(
            "ERR redsplit: no replica is within the staleness budget ({}) for this read (fallback: error)",
            budget_text(level)
        ),
        _ => format!("ERR redsplit: no healthy replica for this read ({} known; fallback: error)", view.replicas.len()),
    }
}

pub(super) fn budget_text(level: &crate::policy::Level) -> String {
    match (level.budget.max_lag_ms, level.budget.max_lag_bytes) {
        (Some(ms), Some(b)) => format!("{ms} ms, {b} bytes"),
        (Some(ms), None) => format!("{ms} ms"),
        (None, Some(b)) => format!("{b} bytes"),
        (None, None) => "unbounded".into(),
    }
}
