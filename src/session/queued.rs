//! The proxy's own commands inside a transaction (`CLIENT …`, `AUTH`, `HELLO` after
//! `MULTI`). Redis queues them and runs them at `EXEC`, in order with the rest. The proxy
//! answers them itself, so it queues a stand-in in the master's transaction in each one's
//! place ([`StandIn`]): `PING`, or the `HELLO protover` that switches the master's
//! connection to the protocol the client switches to at that point, or the command itself
//! where the master is the one to act (`CLIENT PAUSE`, a `CLIENT UNBLOCK` translated to
//! the target's connection, a login as a Redis ACL user, which the master checks in the
//! transaction). When the master's `EXEC` reply comes, the proxy runs its own commands in
//! order and puts each answer in its stand-in's place in the array; a login the master
//! accepted then makes the client that user. Until then the session reads no further
//! request, so what follows `EXEC` sees their effects (a name set, a user logged in), as
//! on Redis. `CLIENT TRACKING on` alone is refused: tracking moves the client to a
//! master connection of its own, which cannot happen inside a transaction.

use super::login::Then;
use super::own::{self, HelloArgs, LoginAs, Unblock};
use super::*;
use crate::protocol::ReplyScanner;

/// `PING`, the stand-in that leaves the master's connection as it is.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// `HELLO 2` and `HELLO 3`: stand-ins that switch the master's connection's protocol.
const HELLO_2: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n";
const HELLO_3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// What the master's transaction gets in place of a command of the proxy's own.
#[derive(Debug, PartialEq)]
enum StandIn {
    /// The command itself: the master acts on it and its reply stands (`CLIENT PAUSE`).
    Itself,
    /// This request instead, whose reply stands (`CLIENT UNBLOCK` naming the target's
    /// master connection).
    Translated(Vec<u8>),
    /// `PING`; the proxy's answer replaces its reply.
    Ping,
    /// `HELLO 3` (`true`) or `HELLO 2`: the master's connection switches protocol as the
    /// client does; the proxy's answer replaces its reply.
    Hello(bool),
    /// A login as a Redis ACL user (`AUTH`, or `HELLO protover AUTH user password`): the
    /// master checks it where Redis would, and its error stands; once accepted, the
    /// client becomes that user ([`Then::Adopt`](super::login::Then::Adopt)).
    Login(Vec<u8>, Option<bool>),
}

/// A command of the proxy's own queued in the open transaction.
#[derive(Debug)]
struct Queued {
    /// Its place among the transaction's commands (0 is the first after `MULTI`).
    index: i32,
    cmd: &'static Command,
    /// The request, encoded again from its arguments.
    bytes: Vec<u8>,
    /// For a `HELLO` stand-in: the protocol (RESP3 or not) the master's connection
    /// switches to.
    resp3: Option<bool>,
    /// A login the master checks ([`StandIn::Login`]).
    login: bool,
}

/// The proxy's own commands queued in the open transaction.
#[derive(Debug, Default)]
pub(super) struct TxOwn {
    queued: Vec<Queued>,
    /// The protocol the master's connection will be in once the stand-ins so far ran.
    resp3: Option<bool>,
    /// `EXEC` was sent: requests wait for its reply.
    exec_sent: bool,
    /// The last `CLIENT PAUSE` or `CLIENT UNPAUSE` queued ([`local::pause_change`]):
    /// noted by the proxy when `EXEC` is sent, as Redis applies it then.
    pause: Option<Option<(u64, bool)>>,
}

impl Session {
    /// Whether requests wait for an `EXEC` whose reply carries answers of the proxy's.
    #[inline]
    pub(super) fn exec_pending_own(&self) -> bool {
        self.tx_own.as_ref().is_some_and(|t| t.exec_sent)
    }

    /// `EXEC` is being sent: if the transaction holds commands of the proxy's own,
    /// requests wait for its reply.
    pub(super) fn exec_own(&mut self) {
        if let Some(change) = self.tx_own.as_mut().and_then(|t| t.pause.take()) {
            self.note_pause(change);
        }
        match self.tx_own.as_mut() {
            Some(t) if !t.queued.is_empty() => t.exec_sent = true,
            _ => self.tx_own = None,
        }
    }

    /// `cmd`, a command the proxy answers itself (`CLIENT …`, `AUTH`, `HELLO`), inside
    /// `MULTI`: checked as Redis checks it when it queues it, then queued with its
    /// stand-in.
    pub(super) fn queue_own(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
    ) -> Stop {
        if let Err(e) = own::check_arity(cmd, req.argc()) {
            self.fail_transaction();
            self.push_answer(e.into());
            return Stop::More;
        }
        if let Some(change) = local::pause_change(cmd, req) {
            self.tx_own.get_or_insert_with(Default::default).pause = Some(change);
        }
        let resp3 = self
            .tx_own
            .as_ref()
            .and_then(|t| t.resp3)
            .unwrap_or(self.client.resp3);
        let stand_in = match self.stand_in(req, cmd, settings, resp3) {
            Ok(s) => s,
            Err(e) => {
                self.fail_transaction();
                self.push_local_error(e);
                return Stop::More;
            }
        };
        let index = self.client.multi;
        self.client.multi += 1;
        let now = Instant::now();
        let bytes = match &stand_in {
            StandIn::Itself => {
                self.send_dedicated(req, Kind::Forward, now);
                return Stop::More;
            }
            StandIn::Translated(b) | StandIn::Login(b, _) => b.as_slice(),
            StandIn::Ping => PING,
            StandIn::Hello(true) => HELLO_3,
            StandIn::Hello(false) => HELLO_2,
        };
        if let Some(args) = local::spans(bytes, settings) {
            self.send_dedicated(
                &Request {
                    buf: bytes,
                    args: &args,
                },
                Kind::Forward,
                now,
            );
        }
        if matches!(stand_in, StandIn::Translated(_)) {
            return Stop::More;
        }
        let (switched, login) = match stand_in {
            StandIn::Hello(r) => (Some(r), false),
            StandIn::Login(_, r) => (r, true),
            _ => (None, false),
        };
        let mut own_args = Vec::new();
        crate::protocol::encode_command(&mut own_args, (0..req.argc()).map(|i| req.arg(i)));
        let tx = self.tx_own.get_or_insert_with(Default::default);
        if switched.is_some() {
            tx.resp3 = switched;
        }
        tx.queued.push(Queued {
            index,
            cmd,
            bytes: own_args,
            resp3: switched,
            login,
        });
        Stop::More
    }

    /// What stands in for `cmd` in the master's transaction (`resp3`: the protocol the
    /// master's connection is in at this point of it), or why it cannot be queued.
    fn stand_in(
        &self,
        req: &Request,
        cmd: &'static Command,
        settings: &Settings,
        resp3: bool,
    ) -> Result<StandIn, &'static str> {
        if let Some(sub) = cmd.name.strip_prefix("client|") {
            return Ok(match sub {
                "tracking" if req.arg(2).eq_ignore_ascii_case(b"on") => {
                    return Err(TRACKING_IN_MULTI)
                }
                "unblock" => match Unblock::parse(req) {
                    Ok(u) => match self.unblock_target(&u) {
                        Some(backend_id) => StandIn::Translated(unblock_request(backend_id, &u)),
                        None => StandIn::Ping,
                    },
                    // Its error comes at `EXEC`, as Redis's does.
                    Err(_) => StandIn::Ping,
                },
                _ if local::answered_here(sub) => StandIn::Ping,
                _ => StandIn::Itself,
            });
        }
        let (auth, proto) = match cmd.name {
            "auth" => (own::parse_auth(req).ok(), None),
            "hello" => match HelloArgs::parse(req, resp3) {
                Ok(h) => (h.auth, Some(h.proto == 3)),
                Err(_) => return Ok(StandIn::Ping),
            },
            _ => return Ok(StandIn::Ping),
        };
        if let Some((user, pass)) = auth {
            match own::login(&settings.users, user, pass) {
                LoginAs::Redis => {
                    let mut bytes = Vec::new();
                    let switched = proto.filter(|p| *p != resp3);
                    match proto {
                        None => crate::protocol::encode_command(
                            &mut bytes,
                            (0..req.argc()).map(|i| req.arg(i)),
                        ),
                        Some(p) => crate::protocol::encode_command(
                            &mut bytes,
                            [
                                &b"HELLO"[..],
                                if p { b"3" } else { b"2" },
                                b"AUTH",
                                user,
                                pass,
                            ]
                            .into_iter(),
                        ),
                    }
                    return Ok(StandIn::Login(bytes, switched));
                }
                LoginAs::User(_) => {}
                LoginAs::Unchecked if cmd.name == "auth" || user == b"default" => {}
                // The login fails at `EXEC`: the protocol stays.
                LoginAs::Wrong | LoginAs::Unchecked => return Ok(StandIn::Ping),
            }
        }
        Ok(match proto {
            Some(p) if p != resp3 => StandIn::Hello(p),
            _ => StandIn::Ping,
        })
    }

    /// The reply to an `EXEC` whose transaction holds commands of the proxy's own: the
    /// master's array, each stand-in's reply replaced by the proxy's answer, computed
    /// now, in order.
    pub(super) fn finish_exec_own(&mut self, p: &Pending, frame: &[u8], now: Instant) {
        let tx = self.tx_own.take();
        self.account_reply(p, frame, now);
        let mark = self.wbuf.len();
        let queued = tx.map(|t| t.queued).unwrap_or_default();
        match array_header(frame) {
            Some((n, start)) if !queued.is_empty() => self.splice_exec(frame, n, start, queued),
            _ => self.wbuf.extend_from_slice(frame),
        }
        if p.silent {
            self.wbuf.truncate(mark);
        }
    }

    /// Copy the `EXEC` array `frame` (`n` elements from `start`) to the output, with the
    /// answers of `queued` in their stand-ins' places.
    fn splice_exec(&mut self, frame: &[u8], n: usize, start: usize, queued: Vec<Queued>) {
        let settings = self.proxy.settings.load_full();
        let view = self.proxy.view.load_full();
        self.wbuf
            .extend_from_slice(frame.get(..start).unwrap_or_default());
        let mut pos = start;
        let mut queued = queued.into_iter().peekable();
        let mut adopt = None;
        for i in 0..n {
            let rest = frame.get(pos..).unwrap_or_default();
            let Ok(Some(len)) = ReplyScanner::new().scan(rest) else {
                break;
            };
            pos += len;
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let Some(q) = queued.next_if(|q| q.index == index) else {
                // Redis writes nothing more once `CLIENT REPLY OFF` has run.
                if self.client.reply != ReplyMode::Off {
                    self.wbuf
                        .extend_from_slice(rest.get(..len).unwrap_or_default());
                }
                continue;
            };
            let Some(args) = local::spans(&q.bytes, &settings) else {
                continue;
            };
            let req = Request {
                buf: &q.bytes,
                args: &args,
            };
            let element = rest.get(..len).unwrap_or_default();
            if q.login {
                if super::replies::is_error(element) {
                    // The master refused the login: Redis's error, and nothing changes.
                    if self.client.reply != ReplyMode::Off {
                        self.wbuf.extend_from_slice(element);
                    }
                    continue;
                }
                adopt = self.answer_login(&req, element);
                continue;
            }
            if q.cmd.name == "client|unblock" {
                // Its target had no master connection: nothing to unblock.
                match Unblock::parse(&req) {
                    Ok(_) => self.push_local_value(&Value::Int(0)),
                    Err(e) => self.push_answer(e.into()),
                }
            } else {
                let _ = self.local_command(&req, q.cmd, &settings, &view);
            }
            if let (Some(resp3), Some(d)) = (q.resp3, self.dedicated.as_mut()) {
                // The master's connection switched with the client (`HELLO` stand-in).
                d.key.resp3 = resp3;
            }
        }
        self.wbuf
            .extend_from_slice(frame.get(pos..).unwrap_or_default());
        if let Some((args, user, pass)) = adopt {
            // The master's connection is that user's now; the client becomes it once
            // the proxy has learnt its permissions (requests wait until then).
            self.close_dedicated("login in a transaction");
            self.check_login(args, &user, &pass, Then::Adopt, &settings, &view);
        }
    }

    /// The answer to a login the master accepted inside the transaction (`element`, its
    /// reply): `AUTH`'s `+OK`, or the proxy's `HELLO` reply. Returns the login for the
    /// client to become: the `AUTH` to send, the user and the password.
    fn answer_login(&mut self, req: &Request, element: &[u8]) -> Option<Login3> {
        let args = |u: &[u8], p: &[u8]| vec![b"AUTH".to_vec(), u.to_vec(), p.to_vec()];
        if req.arg(0).eq_ignore_ascii_case(b"auth") {
            if self.client.reply != ReplyMode::Off {
                self.wbuf.extend_from_slice(element);
            }
            let (u, p) = own::parse_auth(req).ok()?;
            return Some((args(u, p), u.to_vec(), p.to_vec()));
        }
        let h = HelloArgs::parse(req, self.client.resp3).ok()?;
        let (u, p) = h.auth?;
        self.hello_reply(h.proto, h.setname);
        Some((args(u, p), u.to_vec(), p.to_vec()))
    }
}

/// A login to check: the `AUTH` request's arguments, the user and the password.
type Login3 = (Vec<Vec<u8>>, Vec<u8>, Vec<u8>);

/// Why `CLIENT TRACKING on` cannot be queued in a transaction.
const TRACKING_IN_MULTI: &str = "ERR redsplit: CLIENT TRACKING on inside MULTI is not supported: the proxy turns tracking on by giving the client a master connection of its own, which it cannot do inside a transaction";

/// The element count of an array reply and where its first element starts; `None` for
/// anything else (an error such as `EXECABORT`, or the null array of a failed `WATCH`).
fn array_header(frame: &[u8]) -> Option<(usize, usize)> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    let cr = frame.iter().position(|&c| c == b'\r')?;
    let n = crate::protocol::parse_int(frame.get(1..cr)?)?;
    Some((usize::try_from(n).ok()?, cr + 2))
}

/// `CLIENT UNBLOCK <backend id> [reason]`.
pub(super) fn unblock_request(backend_id: i64, u: &Unblock) -> Vec<u8> {
    let id = backend_id.to_string();
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK", id.as_bytes()];
    args.extend(u.reason);
    let mut bytes = Vec::new();
    crate::protocol::encode_command(&mut bytes, args.into_iter());
    bytes
}

#[cfg(test)]
mod tests {
    use super::array_header;

    #[test]
    fn array_headers() {
        assert_eq!(array_header(b"*2\r\n+OK\r\n:1\r\n"), Some((2, 4)));
        assert_eq!(array_header(b"*0\r\n"), Some((0, 4)));
        assert_eq!(array_header(b"*-1\r\n"), None);
        assert_eq!(array_header(b"-EXECABORT x\r\n"), None);
        assert_eq!(array_header(b"_\r\n"), None);
    }
}
