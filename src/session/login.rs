//! `AUTH` and `HELLO`: logging in as a user of `proxy.yaml` (checked here), or as one of
//! Redis's own ACL users (`redis_users`), which the master checks: the client's `AUTH`
//! goes, as it was sent, to a fresh connection to the master, and the master's reply is
//! the client's. Until it comes, the session reads no further request, so the commands
//! after a login run as the user it leaves the client logged in as. Once accepted, the
//! client's backend connections log in as that user ([`ConnKey::login`]), and Redis
//! applies its permissions; for the commands the proxy answers itself (`PING`, `SELECT`,
//! `CLIENT …`), the same connection asks Redis which of them the user may run.

use super::local::valid_name;
use super::*;
use crate::auth::{Refusals, User};
use crate::backend::Login;
use parking_lot::Mutex;

/// A login as a Redis ACL user, sent to the master and awaiting its answer.
#[derive(Debug)]
pub(super) struct LoginCheck {
    login: Arc<Login>,
    /// For `HELLO … AUTH`: the protocol and name to apply once the login is accepted.
    hello: Option<(i64, Option<Vec<u8>>)>,
    /// Filled by the check before its reply is delivered: the commands answered by the
    /// proxy that Redis refuses this user, with Redis's error line.
    refused: Arc<Mutex<Refusals>>,
}

/// The commands the proxy answers itself, each with a harmless form of it: sent as the
/// user being logged in, a `NOPERM` reply says Redis refuses that user the command.
const PROBES: &[(&str, &[&[u8]])] = &[
    ("ping", &[b"PING"]),
    ("echo", &[b"ECHO", b"redsplit"]),
    ("select", &[b"SELECT", b"0"]),
    ("client|id", &[b"CLIENT", b"ID"]),
    ("client|getname", &[b"CLIENT", b"GETNAME"]),
    ("client|setname", &[b"CLIENT", b"SETNAME", b"redsplit"]),
    ("client|info", &[b"CLIENT", b"INFO"]),
    ("client|list", &[b"CLIENT", b"LIST", b"ID", b"0"]),
    ("client|kill", &[b"CLIENT", b"KILL", b"ID", b"0"]),
    ("client|unblock", &[b"CLIENT", b"UNBLOCK", b"0"]),
    ("client|reply", &[b"CLIENT", b"REPLY", b"ON"]),
    ("client|no-evict", &[b"CLIENT", b"NO-EVICT", b"off"]),
    ("client|caching", &[b"CLIENT", b"CACHING", b"yes"]),
];

impl Session {
    /// `AUTH [user] password`.
    pub(super) fn auth(&mut self, req: &Request, settings: &Settings, view: &View) {
        let (user, pass) = match req.argc() {
            2 => (&b"default"[..], req.arg(1)),
            3 => (req.arg(1), req.arg(2)),
            _ => {
                self.push_local_error("ERR syntax error");
                return;
            }
        };
        if settings.users.required() {
            if let Some(u) = settings.users.check(user, pass) {
                self.client.user = Some(u);
                self.client.authenticated = true;
                self.push_local_raw(reply::OK);
                return;
            }
        }
        if settings.users.redis() {
            let args: Vec<Vec<u8>> = (0..req.argc()).map(|i| req.arg(i).to_vec()).collect();
            self.check_login(args, user, pass, None, settings, view);
            return;
        }
        if settings.users.required() {
            tracing::info!(client = self.id, user = %String::from_utf8_lossy(user), "authentication failed");
            self.push_local_raw(reply::WRONGPASS);
        } else if req.argc() == 2 {
            self.push_local_error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        } else if user == b"default" {
            self.push_local_raw(reply::OK);
        } else {
            self.push_local_raw(reply::WRONGPASS);
        }
    }

    /// `HELLO [protover [AUTH user password] [SETNAME name]]`.
    pub(super) fn hello(&mut self, req: &Request, settings: &Settings, view: &View) {
        let mut proto = if self.client.resp3 { 3 } else { 2 };
        let mut i = 1;
        if req.argc() >= 2 {
            match parse_int(req.arg(1)) {
                Some(v) if v == 2 || v == 3 => proto = v,
                Some(_) => {
                    self.push_local_error("NOPROTO unsupported protocol version");
                    return;
                }
                None => {
                    self.push_local_error("ERR Protocol version is not an integer or out of range");
                    return;
                }
            }
            i = 2;
        }
        let mut auth: Option<(&[u8], &[u8])> = None;
        let mut setname: Option<&[u8]> = None;
        while i < req.argc() {
            let opt = req.arg(i);
            let more = req.argc() - i - 1;
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                auth = Some((req.arg(i + 1), req.arg(i + 2)));
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                setname = Some(req.arg(i + 1));
                i += 2;
            } else {
                self.push_local_error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                ));
                return;
            }
        }
        if let Some((u, p)) = auth {
            let proxy_user = if settings.users.required() {
                settings.users.check(u, p)
            } else {
                None
            };
            if let Some(user) = proxy_user {
                self.client.user = Some(user);
                self.client.authenticated = true;
            } else if settings.users.redis() {
                let args = vec![b"AUTH".to_vec(), u.to_vec(), p.to_vec()];
                let hello = Some((proto, setname.map(<[u8]>::to_vec)));
                self.check_login(args, u, p, hello, settings, view);
                return;
            } else if settings.users.required() || u != b"default" {
                self.push_local_raw(reply::WRONGPASS);
                return;
            }
        }
        self.hello_reply(proto, setname);
    }

    /// The rest of `HELLO` once any login in it succeeded: the authentication check,
    /// the name, the protocol and the reply.
    fn hello_reply(&mut self, proto: i64, setname: Option<&[u8]>) {
        if !self.client.authenticated {
            self.push_local_error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }
        if let Some(n) = setname {
            if let Err(e) = valid_name(n) {
                self.push_local_error(e);
                return;
            }
            self.client.name = String::from_utf8_lossy(n).into();
        }
        self.client.resp3 = proto == 3;
        let version = self.proxy.info.load().redis_version.clone();
        let v = Value::Map(vec![
            (Value::bulk("server"), Value::bulk("redis")),
            (Value::bulk("version"), Value::bulk(version)),
            (Value::bulk("proto"), Value::Int(proto)),
            (Value::bulk("id"), Value::Int(self.id as i64)),
            (Value::bulk("mode"), Value::bulk("standalone")),
            (Value::bulk("role"), Value::bulk("master")),
            (Value::bulk("modules"), Value::Array(vec![])),
        ]);
        self.push_local_value(&v);
    }

    /// Send the client's `AUTH` (`args`, as it was sent) to a fresh connection to the
    /// master, then the permission probes; the session reads no further request until
    /// the reply is in ([`Session::finish_login`]).
    fn check_login(
        &mut self,
        args: Vec<Vec<u8>>,
        user: &[u8],
        pass: &[u8],
        hello: Option<(i64, Option<Vec<u8>>)>,
        settings: &Settings,
        view: &View,
    ) {
        let Some(m) = view.master.as_ref() else {
            self.push_local_error(crate::error::NO_MASTER);
            return;
        };
        let params = m.backend.pool.params().clone();
        let login = Arc::new(Login {
            user: String::from_utf8_lossy(user).into_owned(),
            password: crate::config::Secret::new(String::from_utf8_lossy(pass).into_owned()),
        });
        let refused = Arc::new(Mutex::new(Vec::new()));
        self.login = Some(Box::new(LoginCheck {
            login,
            hello,
            refused: refused.clone(),
        }));
        // Freed for reuse once its one reply is read (the pending entry holds it).
        let slot = self.alloc_slot();
        self.release_slot(slot);
        let silent = self.take_silent();
        self.push_pending(Pending {
            slot,
            kind: Kind::Login,
            path: PATH_SHARED,
            silent,
            read: false,
            sent: Instant::now(),
            scan: false,
        });
        let sink = self.sink.clone();
        let timeout = settings.command_timeout();
        tokio::spawn(async move {
            let res = async {
                let mut c = ControlConn::connect_bare(&params).await?;
                let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let frame = c.call_raw(&args, timeout).await?;
                if frame.starts_with(b"+") {
                    let probes: Vec<&[&[u8]]> = PROBES.iter().map(|(_, p)| *p).collect();
                    let replies = c.call_many(&probes, timeout).await?;
                    let mut list = refused.lock();
                    for ((name, _), r) in PROBES.iter().zip(replies) {
                        if r.starts_with(b"-NOPERM") {
                            let line = r.get(1..r.len().saturating_sub(2)).unwrap_or_default();
                            list.push((*name, String::from_utf8_lossy(line).into()));
                        }
                    }
                }
                Ok::<_, BackendError>(frame)
            }
            .await;
            match res {
                Ok(frame) => sink.inbox().push_replies(slot, &frame, &[frame.len()]),
                Err(e) => sink.inbox().push_failed(slot, &e, 1),
            }
        });
    }

    /// The master's answer to a login (the front request, already taken off the
    /// queue): on success the client is that user (and `HELLO` goes on); otherwise
    /// Redis's error is the reply. Either way, requests flow again.
    pub(super) fn finish_login(&mut self, frame: &[u8], silent: bool) {
        let Some(check) = self.login.take() else {
            return;
        };
        let LoginCheck {
            login,
            hello,
            refused,
        } = *check;
        if !frame.starts_with(b"+") {
            tracing::info!(client = self.id, user = %login.user, "authentication failed");
            if !silent {
                self.wbuf.extend_from_slice(frame);
            }
            return;
        }
        let refused = std::mem::take(&mut *refused.lock());
        let user = if is_backend_login(&self.proxy, &login) {
            // The backend's own credentials: the shared connections already log in so.
            None
        } else {
            Some(Arc::new(User::redis(login, refused)))
        };
        self.client.user = user;
        self.client.authenticated = true;
        match hello {
            None if silent => {}
            None => self.wbuf.extend_from_slice(reply::OK),
            Some((proto, setname)) => {
                // Nothing is queued after it: the reply goes straight out, in order.
                let mode = self.client.reply;
                if silent {
                    self.client.reply = ReplyMode::Off;
                }
                self.hello_reply(proto, setname.as_deref());
                if silent {
                    self.client.reply = mode;
                }
            }
        }
    }
}

/// Whether `login` is what the master's connections already log in with (the
/// backend's `username`/`password`).
fn is_backend_login(proxy: &Proxy, login: &Login) -> bool {
    let view = proxy.view.load();
    let Some(m) = view.master.as_ref() else {
        return false;
    };
    let params = m.backend.pool.params();
    let user = if params.username.is_empty() {
        "default"
    } else {
        params.username.as_str()
    };
    user == login.user && params.password == login.password
}
