//! The commands the proxy answers itself: connection state, `CLIENT`, `PROXY`.

use super::*;

impl Session {
    // ---------------------------------------------------------------- local commands

    pub(super) fn check_select(&self, req: &Request) -> Result<u32, String> {
        if req.argc() != 2 {
            return Err("ERR wrong number of arguments for 'select' command".into());
        }
        let n = parse_int(req.arg(1))
            .ok_or_else(|| "ERR value is not an integer or out of range".to_string())?;
        let dbs = i64::from(self.proxy.info.load().databases);
        if n < 0 || n >= dbs {
            return Err("ERR DB index is out of range".into());
        }
        Ok(n as u32)
    }

    pub(super) fn local_command(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        view: &View,
    ) -> Stop {
        if !commands::arity_ok(cmd, req.argc()) {
            self.push_local_error(&format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.name
            ));
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
            "ping" => match req.argc() {
                1 => self.push_local_raw(reply::PONG),
                2 => self.push_local_value(&Value::bulk(req.arg(1))),
                _ => self.push_local_error("ERR wrong number of arguments for 'ping' command"),
            },
            "echo" => self.push_local_value(&Value::bulk(req.arg(1))),
            "quit" => {
                self.push_local_raw(reply::OK);
                self.closing = true;
            }
            "select" => match self.check_select(req) {
                Ok(db) => {
                    self.client.db = db;
                    self.push_local_raw(reply::OK);
                }
                Err(e) => self.push_local_error(&e),
            },
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
            _ => self.push_local_error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'",
                cmd.name
            )),
        }
        Stop::More
    }

    /// `RESET`: what Redis resets, and nothing else — the transaction and `WATCH`es,
    /// pub/sub, tracking and `MONITOR` (they live on the dedicated connection, which is
    /// closed), the database, the protocol, the reply mode, the user and the name.
    pub(super) fn reset(&mut self, settings: &Settings) {
        self.close_dedicated("client reset");
        self.set_mode(Mode::Normal);
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
        let sub = req.arg(1).to_ascii_lowercase();
        match sub.as_slice() {
            b"status" if req.argc() == 2 => {
                let v = introspect::status(view, settings, now);
                self.push_local_value(&v);
            }
            b"explain" if req.argc() >= 3 => {
                let args: Vec<&[u8]> = (2..req.argc()).map(|i| req.arg(i)).collect();
                let sess = SessionReads {
                    writes_in_flight: self.writes_in_flight > 0,
                    last_write_ack: self.last_write_ack,
                    prefer: None,
                    turn: self.turn,
                };
                let v = introspect::explain(&args, &sess, view, settings, now);
                self.push_local_value(&v);
            }
            b"config" if req.argc() == 2 => {
                let refused = match &self.client.user {
                    // A Redis ACL user is no admin of the proxy's where users are set.
                    Some(u) if u.login.is_some() => settings.users.required(),
                    Some(u) => !u.is_admin(),
                    None => false,
                };
                if refused {
                    self.push_local_error(
                        "NOPERM this user has no permissions to run the 'proxy|config' command",
                    );
                    return;
                }
                let v = introspect::config(settings);
                self.push_local_value(&v);
            }
            b"help" => {
                let v = Value::Array(introspect::HELP.iter().map(|l| Value::simple(*l)).collect());
                self.push_local_value(&v);
            }
            _ => self.push_local_error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try PROXY HELP.",
                String::from_utf8_lossy(req.arg(1))
            )),
        }
    }

    pub(super) fn client_command(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        view: &View,
    ) -> Stop {
        let sub = cmd.name.trim_start_matches("client|");
        match sub {
            "id" => self.push_local_value(&Value::Int(self.id as i64)),
            "getname" => {
                if self.client.name.is_empty() {
                    self.push_local_value(&Value::Null)
                } else {
                    let n = self.client.name.clone();
                    self.push_local_value(&Value::bulk(&*n))
                }
            }
            "setname" => match valid_name(req.arg(2)) {
                Ok(()) => {
                    self.client.name = String::from_utf8_lossy(req.arg(2)).into();
                    self.push_local_raw(reply::OK);
                }
                Err(e) => self.push_local_error(e),
            },
            "info" => {
                let line = self.client_line(&self.handle.clone());
                self.push_local_value(&Value::Verbatim(line));
            }
            "list" => self.client_list(req),
            "kill" => self.client_kill(req, settings),
            "reply" => {
                let arg = req.arg(2);
                if arg.eq_ignore_ascii_case(b"on") {
                    self.client.reply = ReplyMode::On;
                    self.push_local_raw(reply::OK);
                } else if arg.eq_ignore_ascii_case(b"off") {
                    self.client.reply = ReplyMode::Off;
                } else if arg.eq_ignore_ascii_case(b"skip") {
                    self.client.reply = ReplyMode::Skip;
                } else {
                    self.push_local_error("ERR syntax error");
                }
            }
            "no-evict" | "no-touch" => {
                // Per-connection server flags: they cannot follow a client across the
                // shared connections (README: compatibility). Checked as Redis checks them.
                let a = req.arg(2);
                if a.eq_ignore_ascii_case(b"on") || a.eq_ignore_ascii_case(b"off") {
                    self.push_local_raw(reply::OK);
                } else {
                    self.push_local_error("ERR syntax error");
                }
            }
            "tracking" => {
                let on = req.arg(2).eq_ignore_ascii_case(b"on");
                if on {
                    self.tracking.redirect = None;
                    let mut none = Batch::outside(settings, view, Instant::now());
                    let bytes = match self.translate_redirect(req) {
                        Redirect::None => return self.enter_tunnel(req, &mut none),
                        Redirect::Refused(e) => {
                            self.push_local_error(&e);
                            return Stop::More;
                        }
                        Redirect::To(bytes) => bytes,
                    };
                    // The translated request, parsed back so it is forwarded as it is.
                    let mut parser = RequestParser::new();
                    if let Ok(Some(Parsed::Multibulk { .. })) = parser.parse(&bytes, &settings.limits) {
                        let args = std::mem::take(&mut parser.args);
                        let translated = Request {
                            buf: &bytes,
                            args: &args,
                        };
                        return self.enter_tunnel(&translated, &mut none);
                    }
                    return self.enter_tunnel(req, &mut none);
                }
                self.push_local_raw(reply::OK);
            }
            "unblock" => self.client_unblock(req, view),
            "caching" => self.push_local_error("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"),
            _ => {
                // PAUSE, UNPAUSE and anything newer: the master decides.
                let _ = settings;
                let mut none = Batch::outside(settings, view, Instant::now());
                return self.send_to_master(req, None, &mut none, Kind::Forward);
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
            self.client.line(&conn, &times)
        } else {
            h.state.lock().line(&conn, &times)
        }
    }

    /// `CLIENT LIST [TYPE type] [ID id …]`, as Redis parses it.
    fn client_list(&mut self, req: &Request) {
        let mut ty = None;
        let mut ids = None;
        if req.argc() == 4 && req.arg(2).eq_ignore_ascii_case(b"type") {
            let t = req.arg(3).to_ascii_lowercase();
            match t.as_slice() {
                b"normal" | b"pubsub" => {
                    ty = Some(if t == b"normal" { "normal" } else { "pubsub" })
                }
                // The proxy's clients are never replicas or masters.
                b"master" | b"slave" | b"replica" => ty = Some("replica"),
                _ => {
                    self.push_local_error(&format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(req.arg(3))
                    ));
                    return;
                }
            }
        } else if req.argc() > 3 && req.arg(2).eq_ignore_ascii_case(b"id") {
            let mut v = Vec::with_capacity(req.argc() - 3);
            for i in 3..req.argc() {
                match parse_int(req.arg(i)) {
                    Some(n) => v.push(n),
                    None => {
                        self.push_local_error("ERR Invalid client ID");
                        return;
                    }
                }
            }
            ids = Some(v);
        } else if req.argc() != 2 {
            self.push_local_error("ERR syntax error");
            return;
        }
        let mut out = String::new();
        // Redis lists by id (its client list is in connection order); with ID, in the
        // order asked, once per mention.
        let order: Vec<u64> = match &ids {
            Some(v) => v.iter().filter_map(|i| u64::try_from(*i).ok()).collect(),
            None => {
                let mut all: Vec<u64> = self.proxy.sessions.iter().map(|e| *e.key()).collect();
                all.sort_unstable();
                all
            }
        };
        for id in order {
            let Some(h) = self.proxy.sessions.get(&id).map(|e| e.value().clone()) else {
                continue;
            };
            if h.killed() {
                // Gone for Redis once killed: the kill's reply came after it was freed.
                continue;
            }
            if let Some(t) = ty {
                let theirs = if h.id == self.id {
                    self.client.type_name()
                } else {
                    h.state.lock().type_name()
                };
                if theirs != t {
                    continue;
                }
            }
            out.push_str(&self.client_line(&h));
        }
        self.push_local_value(&Value::Verbatim(out));
    }

    /// `CLIENT KILL addr:port` and `CLIENT KILL <filter value> …`, filters parsed and
    /// checked in order as Redis 7.0 does (`ID`, `TYPE`, `ADDR`, `LADDR`, `USER`,
    /// `SKIPME`); a killed client is gone for others at once.
    pub(super) fn client_kill(&mut self, req: &Request, settings: &Settings) {
        let mut id = None;
        let mut ty = None;
        let mut addr = None;
        let mut laddr = None;
        let mut user = None;
        let mut skipme = true;
        let old_form = req.argc() == 3;
        if old_form {
            addr = Some(String::from_utf8_lossy(req.arg(2)).into_owned());
        } else {
            let mut i = 2;
            while i < req.argc() {
                if i + 1 >= req.argc() {
                    self.push_local_error("ERR syntax error");
                    return;
                }
                let k = req.arg(i).to_ascii_lowercase();
                let raw = req.arg(i + 1);
                let v = String::from_utf8_lossy(raw).into_owned();
                match k.as_slice() {
                    b"id" => match parse_int(raw).filter(|n| *n > 0) {
                        Some(n) => id = Some(n as u64),
                        None => {
                            self.push_local_error("ERR client-id should be greater than 0");
                            return;
                        }
                    },
                    b"type" => match v.to_ascii_lowercase().as_str() {
                        "normal" => ty = Some("normal"),
                        "pubsub" => ty = Some("pubsub"),
                        // The proxy's clients are never replicas or masters.
                        "master" | "slave" | "replica" => ty = Some("replica"),
                        _ => {
                            self.push_local_error(&format!("ERR Unknown client type '{v}'"));
                            return;
                        }
                    },
                    b"addr" => addr = Some(v),
                    b"laddr" => laddr = Some(v),
                    b"user" => {
                        if !self.user_known(&v, settings) {
                            self.push_local_error(&format!("ERR No such user '{v}'"));
                            return;
                        }
                        user = Some(v);
                    }
                    b"skipme" if v.eq_ignore_ascii_case("yes") => skipme = true,
                    b"skipme" if v.eq_ignore_ascii_case("no") => skipme = false,
                    _ => {
                        self.push_local_error("ERR syntax error");
                        return;
                    }
                }
                i += 2;
            }
        }
        let mut killed = 0;
        for e in self.proxy.sessions.iter() {
            let h = e.value();
            if (skipme && h.id == self.id && !old_form) || h.killed() {
                continue;
            }
            let state = if h.id == self.id {
                self.client.clone()
            } else {
                h.state.lock().clone()
            };
            if id.is_some_and(|i| i != h.id)
                || ty.is_some_and(|t| t != state.type_name())
                || addr.as_ref().is_some_and(|a| *a != h.peer.to_string())
                || laddr.as_ref().is_some_and(|a| *a != h.local.to_string())
                || user.as_ref().is_some_and(|u| u != state.user_name())
            {
                continue;
            }
            h.inbox.kill.store(true, Ordering::Relaxed);
            h.inbox.notify.notify();
            killed += 1;
        }
        if old_form {
            if killed == 0 {
                self.push_local_error("ERR No such client");
            } else {
                self.push_local_raw(reply::OK);
            }
        } else {
            self.push_local_value(&Value::Int(killed));
        }
    }

    /// Whether `name` is a user Redis would know: `default`, a `proxy.yaml` user, or a
    /// Redis ACL user some client is logged in as. With `redis_users` on, any name may
    /// be one of Redis's users the proxy has not seen, so every name counts as known.
    fn user_known(&self, name: &str, settings: &Settings) -> bool {
        name == "default" || settings.users.redis() || settings.users.by_name(name).is_some()
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: the client `id` names waits on its dedicated
    /// connection; the master is asked to unblock that connection (over a shared
    /// connection, which no blocked command holds up) and answers 1 or 0 as for a
    /// direct client.
    pub(super) fn client_unblock(&mut self, req: &Request, view: &View) {
        let Some(id) = parse_int(req.arg(2)) else {
            self.push_local_error("ERR value is not an integer or out of range");
            return;
        };
        let mode = req.arg(3);
        if req.argc() == 4
            && !mode.eq_ignore_ascii_case(b"timeout")
            && !mode.eq_ignore_ascii_case(b"error")
        {
            self.push_local_error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            return;
        }
        let target = u64::try_from(id)
            .ok()
            .filter(|i| *i != self.id)
            .and_then(|i| self.proxy.sessions.get(&i).map(|e| e.value().clone()))
            .and_then(|h| h.state.lock().backend_id());
        let (Some(backend_id), Some(m)) = (target, view.master.as_ref()) else {
            self.push_local_value(&Value::Int(0));
            return;
        };
        let id = backend_id.to_string();
        let mut args: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK", id.as_bytes()];
        if req.argc() == 4 {
            args.push(mode);
        }
        let mut bytes = Vec::new();
        crate::protocol::encode_command(&mut bytes, args.into_iter());
        let backend = m.backend.clone();
        self.send_bytes_shared(&backend, &bytes, Kind::Forward, Instant::now());
    }

    /// `CLIENT TRACKING on … REDIRECT id`, with `id` (a proxy client id) replaced by the
    /// backend id of that client's dedicated connection, where the invalidations must
    /// go ([`Redirect`]).
    pub(super) fn translate_redirect(&mut self, req: &Request) -> Redirect {
        let Some(pos) = (3..req.argc()).find(|i| req.arg(*i).eq_ignore_ascii_case(b"redirect"))
        else {
            return Redirect::None;
        };
        let Some(id) = parse_int(req.arg(pos + 1)) else {
            return Redirect::None;
        };
        let target = u64::try_from(id)
            .ok()
            .and_then(|i| self.proxy.sessions.get(&i).map(|e| e.value().clone()))
            .filter(|h| !h.killed());
        let Some(target) = target else {
            return Redirect::Refused(
                "ERR The client ID you want redirect to does not exist".into(),
            );
        };
        let Some(backend_id) = target.state.lock().backend_id() else {
            return Redirect::Refused(format!(
                "ERR redsplit: client {id} has no master connection of its own to receive invalidations (its commands share the proxy's connections); subscribe it to __redis__:invalidate first, then redirect to it"
            ));
        };
        self.tracking.redirect = u64::try_from(id).ok();
        Redirect::To(with_arg(req, pos + 1, backend_id.to_string().as_bytes()))
    }
}

/// What a `CLIENT TRACKING on` request's `REDIRECT` becomes.
pub(super) enum Redirect {
    /// It names none (or none the proxy can read: the master answers).
    None,
    /// The request to send, naming the target's backend id.
    To(Vec<u8>),
    /// The redirect cannot be made: the error to answer.
    Refused(String),
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

pub(super) fn valid_name(n: &[u8]) -> Result<(), &'static str> {
    if n.iter().any(|c| *c < b'!' || *c > b'~') {
        Err("ERR Client names cannot contain spaces, newlines or special characters.")
    } else {
        Ok(())
    }
}
