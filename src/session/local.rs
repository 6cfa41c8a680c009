//! The commands the proxy answers itself (`CLIENT`, `PROXY`, `PING`, `SELECT`, …): the
//! glue between the session and their decisions in [`own`](super::own). Here is what
//! needs more than the client's own state: other sessions (`CLIENT LIST`, `KILL`,
//! `UNBLOCK`, `TRACKING … REDIRECT`), the backends, the proxy's settings and view.

use super::own::{self, Answer, KillFilter, ListFilter, ProxySub, Unblock};
use super::*;

/// `CLIENT TRACKING ON` in front of a Redis Cluster: refused, saying why.
const TRACKING_IN_CLUSTER: &str = "ERR redsplit: CLIENT TRACKING is not supported in front of a Redis Cluster: each shard's node invalidates only its own keys, and one tracking connection follows one node";

impl Session {
    // ---------------------------------------------------------------- local commands

    /// Push an answer of [`own`]'s: an error counts as one, [`Answer::None`] pushes
    /// nothing.
    pub(super) fn push_answer(&mut self, a: Answer) {
        match a {
            Answer::Reply(Value::Error(e)) => self.push_local_error(&e),
            Answer::Reply(v) => self.push_local_value(&v),
            Answer::Raw(b) => self.push_local_raw(b),
            Answer::None => {}
        }
    }

    /// `SELECT index`'s database, checked against the master's `databases`.
    pub(super) fn check_select(&self, req: &Request) -> Result<u32, Value> {
        own::check_select(req, self.proxy.info.load().databases)
    }

    /// A command the proxy answers itself (`PING`, `SELECT`, `AUTH`, `HELLO`, `RESET`,
    /// `CLIENT …`, …): its arity checked first, then answered.
    pub(super) fn local_command(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        view: &View,
    ) -> Stop {
        if let Err(e) = own::check_arity(cmd, req.argc()) {
            self.push_answer(e.into());
            return Stop::More;
        }
        if matches!(cmd.name, "ping" | "echo") {
            if let Some(busy) = self.proxy.monitor.busy() {
                // As Redis answers them while it runs a busy script (the proxy answers
                // them itself, from what it last heard from the master).
                self.push_local_error(&busy);
                return Stop::More;
            }
        }
        match cmd.name {
            "ping" => self.push_answer(own::ping(req)),
            "echo" => self.push_answer(own::echo(req)),
            "quit" => {
                self.push_local_raw(reply::OK);
                self.closing = true;
            }
            "select" => {
                let dbs = self.proxy.info.load().databases;
                let a = own::select(&mut self.client, req, dbs);
                self.push_answer(a);
            }
            "auth" => self.auth(req, settings, view),
            "hello" => self.hello(req, settings, view),
            "reset" => {
                if !self.pending.is_empty() {
                    return Stop::Wait;
                }
                self.reset(settings);
            }
            _ if cmd.name.starts_with("client|") => {
                return self.client_command(req, cmd, settings, view)
            }
            _ => self.push_answer(own::unknown_subcommand(cmd.name)),
        }
        Stop::More
    }

    /// `RESET`: what Redis resets, and nothing else — the transaction and `WATCH`es,
    /// pub/sub, tracking and `MONITOR` (they live on the dedicated connection, which is
    /// closed), the database, the protocol, the reply mode, the user and the name.
    pub(super) fn reset(&mut self, settings: &Settings) {
        self.close_dedicated("client reset");
        self.set_mode(Mode::Normal);
        self.tx_own = None;
        self.multi_select = None;
        self.client.reset(!settings.users.required());
        self.push_local_raw(reply::RESET);
    }

    /// `PROXY STATUS | EXPLAIN cmd… | CONFIG | HELP`.
    pub(super) fn proxy_command(
        &mut self,
        req: &Request,
        settings: &Settings,
        view: &View,
        now: Instant,
    ) {
        let sub = match own::proxy_sub(req) {
            Ok(sub) => sub,
            Err(e) => return self.push_answer(e.into()),
        };
        let v = match sub {
            ProxySub::Status => introspect::status(view, settings, now),
            ProxySub::Explain => {
                let args: Vec<&[u8]> = (2..req.argc()).map(|i| req.arg(i)).collect();
                let sess = SessionReads {
                    writes_in_flight: self.writes_in_flight > 0,
                    last_write_ack: self.last_write_ack,
                    key_write_ack: None,
                    key_write_pending: false,
                    prefer: None,
                    turn: self.turn,
                };
                let fence = introspect::FenceInput {
                    fence: &self.proxy.key_fence,
                    db: self.client.db,
                };
                let own = |v: &View| self.own_writes(v);
                introspect::explain(&args, &sess, &own, fence, view, settings, now)
            }
            ProxySub::Config => {
                if let Err(e) = own::proxy_config_allowed(&self.client, settings.users.required()) {
                    return self.push_answer(e.into());
                }
                introspect::config(settings)
            }
            ProxySub::Help => own::proxy_help(),
        };
        self.push_local_value(&v);
    }

    /// `CLIENT <subcommand> …`: answered here, or (`TRACKING on`, `PAUSE`, …) sent to
    /// the master.
    pub(super) fn client_command(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        view: &View,
    ) -> Stop {
        let sub = cmd.name.trim_start_matches("client|");
        match sub {
            "id" => self.push_answer(own::client_id(self.id)),
            "getname" => self.push_answer(own::client_getname(&self.client)),
            "setname" => {
                let a = own::client_setname(&mut self.client, req);
                self.push_answer(a);
            }
            "info" => {
                let line = self.client_line(&self.handle.clone());
                self.push_local_value(&Value::Verbatim(line));
            }
            "list" => self.client_list(req),
            "kill" => self.client_kill(req, settings, view),
            "reply" => {
                let a = own::client_reply(&mut self.client, req);
                self.push_answer(a);
            }
            "no-evict" | "no-touch" => self.push_answer(own::client_flag(req)),
            "tracking" => {
                let on = req.arg(2).eq_ignore_ascii_case(b"on");
                if on && self.proxy.view.load().cluster.is_some() {
                    self.push_local_error(TRACKING_IN_CLUSTER);
                    return Stop::More;
                }
                if on {
                    self.tracking.redirect = None;
                    self.tracking.to_self = false;
                    let mut none = Batch::outside(settings, view, Instant::now());
                    let bytes = match self.translate_redirect(req, view) {
                        Redirect::None => return self.enter_tunnel(req, &mut none),
                        Redirect::Refused(e) => {
                            self.push_local_error(&e);
                            return Stop::More;
                        }
                        Redirect::Opening(conn) => {
                            if self.pending.is_empty() {
                                self.ping_through(&conn);
                            }
                            return Stop::Wait;
                        }
                        Redirect::To(bytes) => bytes,
                    };
                    // The translated request, parsed back so it is forwarded as it is.
                    return match spans(&bytes, settings) {
                        Some(args) => self.enter_tunnel(
                            &Request {
                                buf: &bytes,
                                args: &args,
                            },
                            &mut none,
                        ),
                        None => self.enter_tunnel(req, &mut none),
                    };
                }
                self.push_local_raw(reply::OK);
            }
            "unblock" => self.client_unblock(req, view),
            "caching" => self.push_answer(own::client_caching()),
            _ => {
                // PAUSE, UNPAUSE and anything newer: the master decides; the proxy notes
                // a pause, to send what it holds on connections of their own.
                if let Some(change) = pause_change(cmd, req) {
                    self.note_pause(change);
                }
                let mut none = Batch::outside(settings, view, Instant::now());
                return self.send_to_master(req, None, None, &mut none, Kind::Forward);
            }
        }
        Stop::More
    }

    /// One `CLIENT LIST` line: this client's own state, or what another published.
    pub(super) fn client_line(&self, h: &SessionHandle) -> String {
        let now = self.proxy.uptime_ms(Instant::now());
        let idle = now.saturating_sub(h.last_active_ms.load(Ordering::Relaxed)) / 1000;
        let conn = format!("id={} addr={} laddr={} fd=-1", h.id, h.peer, h.local);
        let times = format!(
            "age={} idle={idle}",
            now.saturating_sub(h.created_ms) / 1000
        );
        if h.id == self.id {
            self.client.line(&conn, &times, self.qbuf)
        } else {
            h.state.lock().line(&conn, &times, 0)
        }
    }

    /// `CLIENT LIST [TYPE type] [ID id …]` ([`ListFilter`]).
    fn client_list(&mut self, req: &Request) {
        let filter = match ListFilter::parse(req) {
            Ok(f) => f,
            Err(e) => return self.push_answer(e.into()),
        };
        let mut out = String::new();
        // Redis lists by id (its client list is in connection order); with ID, in the
        // order asked, once per mention.
        let order = filter.order().unwrap_or_else(|| {
            let mut all: Vec<u64> = self.proxy.sessions.iter().map(|e| *e.key()).collect();
            all.sort_unstable();
            all
        });
        for id in order {
            let Some(h) = self.proxy.sessions.get(&id).map(|e| e.value().clone()) else {
                continue;
            };
            if h.killed() {
                // Gone for Redis once killed: the kill's reply came after it was freed.
                continue;
            }
            if filter.ty.is_some() {
                let listed = if h.id == self.id {
                    filter.matches(&self.client)
                } else {
                    filter.matches(&h.state.lock())
                };
                if !listed {
                    continue;
                }
            }
            out.push_str(&self.client_line(&h));
        }
        self.push_local_value(&Value::Verbatim(out));
    }

    /// `CLIENT KILL addr:port` and `CLIENT KILL <filter value> …` ([`KillFilter`]); a
    /// killed client is gone for others at once.
    pub(super) fn client_kill(&mut self, req: &Request, settings: &Settings, view: &View) {
        let filter = match KillFilter::parse(req, |u| self.user_known(u, settings)) {
            Ok(f) => f,
            Err(e) => return self.push_answer(e.into()),
        };
        let killed = kill_matching(&self.proxy, self.id, &filter, &self.client);
        let Some(user) = filter
            .user
            .as_deref()
            .filter(|u| !self.user_seen(u, settings))
        else {
            return self.push_answer(filter.reply(killed));
        };
        // Maybe one of Redis's users that no client is logged in as (so none was killed):
        // Redis says whether it is one, and the reply waits for that.
        let args = vec![
            b"ACL".to_vec(),
            b"GETUSER".to_vec(),
            user.as_bytes().to_vec(),
        ];
        let resp3 = self.client.resp3;
        self.ask_master(args, settings, view, Instant::now(), move |frame| {
            let answer = if matches!(frame.as_slice(), b"$-1\r\n" | b"*-1\r\n" | b"_\r\n") {
                let name = filter.user.as_deref().unwrap_or_default();
                Answer::error(format!("ERR No such user '{name}'"))
            } else {
                filter.reply(killed)
            };
            answer.to_bytes(resp3)
        });
    }

    /// Whether `name` is a user Redis would know: `default`, a `proxy.yaml` user, or a
    /// Redis ACL user some client is logged in as. With `redis_users` on, any name may
    /// be one of Redis's users the proxy has not seen, so every name counts as known
    /// ([`Session::client_kill`] asks Redis about those not [seen](Session::user_seen)).
    fn user_known(&self, name: &str, settings: &Settings) -> bool {
        name == "default" || settings.users.redis() || settings.users.by_name(name).is_some()
    }

    /// Whether `name` is `default`, a `proxy.yaml` user or the Redis user a client is
    /// logged in as (with `redis_users` off, every name the proxy knows of).
    fn user_seen(&self, name: &str, settings: &Settings) -> bool {
        name == "default"
            || !settings.users.redis()
            || settings.users.by_name(name).is_some()
            || self
                .proxy
                .sessions
                .iter()
                .any(|e| e.value().state.lock().user_name() == name)
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: the client `id` names waits on its dedicated
    /// connection; the master is asked to unblock that connection (over a shared
    /// connection, which no blocked command holds up) and answers 1 or 0 as for a
    /// direct client.
    pub(super) fn client_unblock(&mut self, req: &Request, view: &View) {
        let unblock = match Unblock::parse(req) {
            Ok(u) => u,
            Err(e) => return self.push_answer(e.into()),
        };
        // The master the target's connection is on (in a cluster, its shard's).
        let top = self.proxy.view.load();
        let on = unblock
            .target(self.id)
            .and_then(|i| self.proxy.sessions.get(&i).map(|e| e.value().clone()))
            .and_then(|h| {
                let label = h.state.lock().dedicated.as_ref()?.label.clone();
                top.shard_views()
                    .filter_map(|v| v.master.as_ref())
                    .find(|m| label.ends_with(&format!(" {}", m.backend.addr)))
                    .map(|m| m.backend.clone())
            });
        let (Some(backend_id), Some(backend)) = (
            self.unblock_target(&unblock),
            on.or_else(|| view.any_master().map(|m| m.backend.clone())),
        ) else {
            self.push_local_value(&Value::Int(0));
            return;
        };
        let bytes = super::queued::unblock_request(backend_id, &unblock);
        self.send_bytes_shared(&backend, &bytes, Kind::Forward, Instant::now());
    }

    /// A `PING` through `conn` (another client's connection), its reply dropped: this
    /// session is woken once `conn` is set up.
    fn ping_through(&mut self, conn: &Conn) {
        // Freed for reuse once its one reply is read (the pending entry holds it).
        let slot = self.alloc_slot();
        self.release_slot(slot);
        self.send_dropped(conn, slot, b"*1\r\n$4\r\nPING\r\n");
    }

    /// The backend id of the master connection of the client `u` names (not this one),
    /// if it has one.
    pub(super) fn unblock_target(&self, u: &Unblock) -> Option<i64> {
        u.target(self.id)
            .and_then(|i| self.proxy.sessions.get(&i).map(|e| e.value().clone()))
            .and_then(|h| h.state.lock().backend_id())
    }

    /// `CLIENT TRACKING on … REDIRECT id`, with `id` (a proxy client id) replaced by the
    /// backend id of that client's dedicated connection, where the invalidations must
    /// go ([`Redirect`]).
    pub(super) fn translate_redirect(&mut self, req: &Request, view: &View) -> Redirect {
        let Some((pos, id)) = own::redirect_arg(req) else {
            return Redirect::None;
        };
        let target = u64::try_from(id)
            .ok()
            .and_then(|i| self.proxy.sessions.get(&i).map(|e| e.value().clone()))
            .filter(|h| !h.killed());
        let Some(target) = target else {
            return Redirect::Refused(own::NO_REDIRECT_TARGET.into());
        };
        if target.id == self.id {
            // To itself: the connection tracking is the one invalidations go to, whose
            // id is the master's to give; tracking with no redirect delivers the same.
            self.tracking.redirect = Some(self.id);
            self.tracking.to_self = true;
            let mut out = Vec::new();
            crate::protocol::encode_command(
                &mut out,
                (0..req.argc())
                    .filter(|i| *i + 1 != pos && *i != pos)
                    .map(|i| req.arg(i))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            return Redirect::To(out);
        }
        self.tracking.to_self = false;
        let own_id = target.state.lock().backend_id();
        let backend_id = match own_id {
            Some(b) => b,
            None => match reserve_for(&self.proxy, &target, view) {
                Reserve::Known(b) => b,
                Reserve::Opening(conn) => return Redirect::Opening(conn),
                Reserve::Failed => return Redirect::Refused(own::redirect_unreachable(id)),
            },
        };
        self.tracking.redirect = u64::try_from(id).ok();
        Redirect::To(with_arg(req, pos, backend_id.to_string().as_bytes()))
    }
}

/// Whether [`Session::client_command`] answers `CLIENT <sub>` itself (the rest go to
/// the master).
pub(super) fn answered_here(sub: &str) -> bool {
    matches!(
        sub,
        "id" | "getname"
            | "setname"
            | "info"
            | "list"
            | "kill"
            | "reply"
            | "no-evict"
            | "no-touch"
            | "tracking"
            | "unblock"
            | "caching"
    )
}

/// What a `CLIENT TRACKING on` request's `REDIRECT` becomes.
pub(super) enum Redirect {
    /// It names none (or none the proxy can read: the master answers).
    None,
    /// The request to send, naming the target's backend id.
    To(Vec<u8>),
    /// The redirect cannot be made: the error to answer.
    Refused(String),
    /// The target's connection is still being opened: ask again once a request sent
    /// through it is answered (Redis answers it once the connection is set up).
    Opening(Arc<Conn>),
}

/// Where a redirect target without a master connection of its own stands.
enum Reserve {
    /// Its reserved connection is set up, with this backend id.
    Known(i64),
    /// Its reserved connection is being opened.
    Opening(Arc<Conn>),
    /// No master, or its connection failed.
    Failed,
}

/// The master connection reserved for `target` ([`Proxy::reserved`]), opened now (from
/// the pool's spare, usually already set up) if it has none.
fn reserve_for(proxy: &Proxy, target: &Arc<SessionHandle>, view: &View) -> Reserve {
    let Some(master) = view.master.as_ref() else {
        return Reserve::Failed;
    };
    // A RESP3 target gets its invalidations at once, subscribed or not, as from Redis.
    let open = || {
        let conn = master.backend.pool.dedicated(&target.state.lock().key());
        let sink: Arc<dyn Sink> = target.clone();
        conn.set_push_sink(&sink);
        crate::proxy::Reserved {
            conn,
            backend: master.backend.id,
        }
    };
    let mut r = proxy.reserved.entry(target.id).or_insert_with(open);
    if r.backend != master.backend.id || r.conn.is_failed() {
        r.conn.close("replaced");
        *r = open();
    }
    let conn = r.conn.clone();
    drop(r);
    if !proxy.sessions.contains_key(&target.id) {
        // It left meanwhile ([`crate::server::finish`] may not have seen this entry).
        if let Some((_, r)) = proxy.reserved.remove(&target.id) {
            r.conn.close("client left");
        }
        return Reserve::Failed;
    }
    match conn
        .backend_client_id
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        id if id >= 0 => Reserve::Known(id),
        _ if conn.is_failed() => Reserve::Failed,
        _ => Reserve::Opening(conn),
    }
}

/// Kill every client `filter` matches, as `caller` (whose live state is `own`) sends it:
/// killed clients are gone for others at once. Returns how many.
fn kill_matching(
    proxy: &Proxy,
    caller: u64,
    filter: &KillFilter,
    own: &crate::session::ClientState,
) -> i64 {
    let mut killed = 0;
    for e in proxy.sessions.iter() {
        let h = e.value();
        if h.killed() {
            continue;
        }
        let hit = if h.id == caller {
            filter.matches(caller, h.id, &h.peer, &h.local, own)
        } else {
            filter.matches(caller, h.id, &h.peer, &h.local, &h.state.lock())
        };
        if !hit {
            continue;
        }
        h.inbox.kill.store(true, Ordering::Relaxed);
        h.inbox.notify.notify();
        killed += 1;
    }
    killed
}

/// What `req` (`cmd`) changes in the master's client pause: `Some(Some((timeout ms,
/// all)))` for a `CLIENT PAUSE timeout [WRITE|ALL]` Redis accepts, `Some(None)` for
/// `CLIENT UNPAUSE`, `None` for anything else.
pub(super) fn pause_change(cmd: &Command, req: &Request) -> Option<Option<(u64, bool)>> {
    match cmd.name {
        "client|unpause" => Some(None),
        "client|pause" => {
            let ms = u64::try_from(crate::protocol::parse_int(req.arg(2))?).ok()?;
            let all = match req.argc() {
                3 => true,
                4 if req.arg(3).eq_ignore_ascii_case(b"all") => true,
                4 if req.arg(3).eq_ignore_ascii_case(b"write") => false,
                _ => return None,
            };
            Some(Some((ms, all)))
        }
        _ => None,
    }
}

impl Session {
    /// Note a change of the master's client pause ([`pause_change`]) sent now.
    pub(super) fn note_pause(&self, change: Option<(u64, bool)>) {
        match change {
            Some((ms, all)) => {
                let now = self.proxy.uptime_ms(Instant::now());
                self.proxy.pause.pause(now.saturating_add(ms), all);
            }
            None => self.proxy.pause.unpause(),
        }
    }
}

/// The argument spans of `bytes`, one request the proxy encoded (`None` if it does not
/// parse as one, which cannot happen for what [`with_arg`] makes).
pub(super) fn spans(bytes: &[u8], settings: &Settings) -> Option<Vec<crate::protocol::Span>> {
    let mut parser = RequestParser::new();
    match parser.parse(bytes, &settings.limits) {
        Ok(Some(Parsed::Multibulk { .. })) => Some(std::mem::take(&mut parser.args)),
        _ => None,
    }
}

/// `req` encoded again with argument `pos` replaced by `value`.
pub(super) fn with_arg(req: &Request, pos: usize, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::protocol::encode_command(
        &mut out,
        (0..req.argc()).map(|i| if i == pos { value } else { req.arg(i) }),
    );
    out
}
