//! `AUTH` and `HELLO`: logging in as a user of `proxy.yaml` (checked by the proxy), or
//! as one of Redis's own ACL users (`redis_users`), which the master checks: the
//! client's `AUTH` goes, as it was sent, to a fresh connection to the master, and the
//! master's reply is the client's. Until it comes, the session reads no further request,
//! so the commands after a login run as the user it leaves the client logged in as. Once
//! accepted, the client's backend connections log in as that user ([`ConnKey::login`]),
//! and Redis applies its permissions; for the commands the proxy answers itself (`PING`,
//! `SELECT`, `CLIENT …`), the same connection asks Redis which of them the user may run.
//! The argument checks and replies are [`own`]'s; here is what acts on the session.

use super::own::{self, HelloArgs, LoginAs};
use super::*;
use crate::auth::{Refusals, User};
use crate::backend::Login;
use parking_lot::Mutex;

/// A login as a Redis ACL user, sent to the master and awaiting its answer.
#[derive(Debug)]
pub(super) struct LoginCheck {
    login: Arc<Login>,
    /// What follows once the login is accepted.
    then: Then,
    /// Filled by the check before its reply is delivered: the commands answered by the
    /// proxy that Redis refuses this user, with Redis's error line.
    refused: Arc<Mutex<Refusals>>,
}

/// What a login accepted by the master leads to.
#[derive(Debug)]
pub(super) enum Then {
    /// `AUTH`: `+OK`.
    Ok,
    /// `HELLO … AUTH`: the protocol and name to apply, and `HELLO`'s reply.
    Hello(i64, Option<Vec<u8>>),
    /// Nothing written either way: the master already answered the login, inside a
    /// transaction ([`queued`](super::queued)); the client only becomes the user.
    Adopt,
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
        let (user, pass) = match own::parse_auth(req) {
            Ok(a) => a,
            Err(e) => return self.push_answer(e.into()),
        };
        match own::login(&settings.users, user, pass) {
            LoginAs::User(u) => {
                self.client.user = Some(u);
                self.client.authenticated = true;
                self.push_local_raw(reply::OK);
            }
            LoginAs::Redis => {
                let args: Vec<Vec<u8>> = (0..req.argc()).map(|i| req.arg(i).to_vec()).collect();
                self.check_login(args, user, pass, Then::Ok, settings, view);
            }
            LoginAs::Wrong => {
                tracing::info!(client = self.id, user = %String::from_utf8_lossy(user), "authentication failed");
                self.push_local_raw(reply::WRONGPASS);
            }
            LoginAs::Unchecked => self.push_answer(own::auth_unchecked(req, user)),
        }
    }

    /// `HELLO [protover [AUTH user password] [SETNAME name]]`.
    pub(super) fn hello(&mut self, req: &Request, settings: &Settings, view: &View) {
        let HelloArgs {
            proto,
            auth,
            setname,
        } = match HelloArgs::parse(req, self.client.resp3) {
            Ok(h) => h,
            Err(e) => return self.push_answer(e.into()),
        };
        if let Some((u, p)) = auth {
            match own::login(&settings.users, u, p) {
                LoginAs::User(user) => {
                    self.client.user = Some(user);
                    self.client.authenticated = true;
                }
                LoginAs::Redis => {
                    let args = vec![b"AUTH".to_vec(), u.to_vec(), p.to_vec()];
                    let then = Then::Hello(proto, setname.map(<[u8]>::to_vec));
                    self.check_login(args, u, p, then, settings, view);
                    return;
                }
                LoginAs::Unchecked if u == b"default" => {}
                LoginAs::Wrong | LoginAs::Unchecked => {
                    self.push_local_raw(reply::WRONGPASS);
                    return;
                }
            }
        }
        self.hello_reply(proto, setname);
    }

    /// The rest of `HELLO` once any login in it succeeded ([`own::hello_reply`]).
    pub(super) fn hello_reply(&mut self, proto: i64, setname: Option<&[u8]>) {
        let info = self.proxy.info.load();
        let a = own::hello_reply(
            &mut self.client,
            self.id,
            &info.redis_version,
            proto,
            setname,
        );
        self.push_answer(a);
    }

    /// Send the client's `AUTH` (`args`, as it was sent) to a fresh connection to the
    /// master, then the permission probes; the session reads no further request until
    /// the reply is in ([`Session::finish_login`]).
    pub(super) fn check_login(
        &mut self,
        args: Vec<Vec<u8>>,
        user: &[u8],
        pass: &[u8],
        then: Then,
        settings: &Settings,
        view: &View,
    ) {
        let Some(m) = view.any_master() else {
            if !matches!(then, Then::Adopt) {
                self.push_local_error(crate::error::NO_MASTER);
            }
            return;
        };
        let params = m.backend.pool.params().clone();
        let login = Arc::new(Login {
            user: String::from_utf8_lossy(user).into_owned(),
            password: crate::config::Secret::new(String::from_utf8_lossy(pass).into_owned()),
        });
        let refused = Arc::new(Mutex::new(Vec::new()));
        let silent = matches!(then, Then::Adopt) || self.take_silent();
        self.login = Some(Box::new(LoginCheck {
            login,
            then,
            refused: refused.clone(),
        }));
        // Freed for reuse once its one reply is read (the pending entry holds it).
        let slot = self.alloc_slot();
        self.release_slot(slot);
        self.push_pending(Pending {
            slot,
            kind: Kind::Login,
            path: PATH_SHARED,
            silent,
            read: false,
            sent: Instant::now(),
            mark: Mark::None,
            fence: FENCE_NONE,
            shard: NO_SHARD,
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
            then,
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
        match then {
            Then::Adopt => {}
            Then::Ok if silent => {}
            Then::Ok => self.wbuf.extend_from_slice(reply::OK),
            Then::Hello(proto, setname) => {
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
    let Some(m) = view.any_master() else {
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
