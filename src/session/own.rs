//! The decisions of the commands the proxy answers itself, as plain functions of the
//! client's [`ClientState`] and the request's arguments: each checks the arguments as
//! Redis 7.0 does (the same checks, in the same order, with Redis's error text) and
//! returns the reply ([`Answer`], or the error [`Value`]), or a parsed form (a filter,
//! the `HELLO` options) for the glue in `local` and `login` to act on. Nothing here
//! touches a socket, another session or a backend, so every branch is unit-tested.
//!
//! Functions that read an argument by position expect the command's arity to have been
//! checked, as the session does ([`check_arity`]) before it answers a command; a
//! missing argument reads as empty ([`Request::arg`]).

use crate::auth::{User, Users};
use crate::commands::{self, Command};
use crate::introspect;
use crate::protocol::{parse_int, Request};
use crate::reply::{self, Value};
use std::sync::Arc;

use super::state::{ClientState, ReplyMode};

/// What the proxy answers a command it handles itself.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Answer {
    /// A reply value, encoded in the client's protocol; an error counts as one in the
    /// session's error count.
    Reply(Value),
    /// A reply already encoded, the same in RESP2 and RESP3 (`+OK`, `+PONG`,
    /// `-WRONGPASS …`); never counted as an error.
    Raw(&'static [u8]),
    /// No reply at all (`CLIENT REPLY OFF|SKIP`).
    None,
}

impl Answer {
    /// `+OK`.
    pub(super) const OK: Answer = Answer::Raw(reply::OK);

    /// An error reply; `msg` starts with its code (`ERR`, `NOPERM`, …).
    pub(super) fn error(msg: impl Into<String>) -> Answer {
        Answer::Reply(Value::error(msg))
    }

    /// The bytes the client gets for this answer in RESP3 (`resp3`) or RESP2; empty for
    /// [`Answer::None`].
    pub(super) fn to_bytes(&self, resp3: bool) -> Vec<u8> {
        match self {
            Answer::Reply(v) => v.to_bytes(resp3).to_vec(),
            Answer::Raw(b) => b.to_vec(),
            Answer::None => Vec::new(),
        }
    }
}

impl From<Value> for Answer {
    fn from(v: Value) -> Answer {
        Answer::Reply(v)
    }
}

// ------------------------------------------------------------------ connection commands

/// The wrong-arity error for `cmd` when `argc` (the command name included) does not fit
/// its arity in the command table.
pub(super) fn check_arity(cmd: &Command, argc: usize) -> Result<(), Value> {
    if commands::arity_ok(cmd, argc) {
        Ok(())
    } else {
        Err(Value::error(format!(
            "ERR wrong number of arguments for '{}' command",
            cmd.name
        )))
    }
}

/// The error for a command of the proxy's own whose table entry it does not answer
/// (`name` is the table name, e.g. `client|foo`).
pub(super) fn unknown_subcommand(name: &str) -> Answer {
    Answer::error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{name}'"
    ))
}

/// `PING [message]`.
pub(super) fn ping(req: &Request) -> Answer {
    match req.argc() {
        1 => Answer::Raw(reply::PONG),
        2 => Value::bulk(req.arg(1)).into(),
        _ => Answer::error("ERR wrong number of arguments for 'ping' command"),
    }
}

/// `ECHO message`.
pub(super) fn echo(req: &Request) -> Answer {
    Value::bulk(req.arg(1)).into()
}

/// `SELECT index`'s database, checked against the master's `databases` (0: a cluster).
pub(super) fn check_select(req: &Request, databases: u32) -> Result<u32, Value> {
    if req.argc() != 2 {
        return Err(Value::error(
            "ERR wrong number of arguments for 'select' command",
        ));
    }
    let n = parse_int(req.arg(1))
        .ok_or_else(|| Value::error("ERR value is not an integer or out of range"))?;
    if databases == 0 {
        // A cluster node: database 0 only.
        return (n == 0)
            .then_some(0)
            .ok_or_else(|| Value::error("ERR SELECT is not allowed in cluster mode"));
    }
    u32::try_from(n)
        .ok()
        .filter(|db| *db < databases)
        .ok_or_else(|| Value::error("ERR DB index is out of range"))
}

/// `SELECT index` outside a transaction: the client's database becomes `index`.
pub(super) fn select(client: &mut ClientState, req: &Request, databases: u32) -> Answer {
    match check_select(req, databases) {
        Ok(db) => {
            client.db = db;
            Answer::OK
        }
        Err(e) => e.into(),
    }
}

/// Whether `n` may be a client's name (`CLIENT SETNAME`, `HELLO … SETNAME`): printable
/// ASCII without spaces.
pub(super) fn valid_name(n: &[u8]) -> Result<(), Value> {
    if n.iter().any(|c| *c < b'!' || *c > b'~') {
        Err(Value::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------ AUTH and HELLO

/// `AUTH [user] password`'s user (`default` when only a password is given) and
/// password.
pub(super) fn parse_auth<'a>(req: &Request<'a>) -> Result<(&'a [u8], &'a [u8]), Value> {
    match req.argc() {
        2 => Ok((b"default", req.arg(1))),
        3 => Ok((req.arg(1), req.arg(2))),
        _ => Err(Value::error("ERR syntax error")),
    }
}

/// Who a login (`AUTH`, `HELLO … AUTH`) names, by the proxy's users.
#[derive(Debug)]
pub(super) enum LoginAs {
    /// A `proxy.yaml` user whose password matched.
    User(Arc<User>),
    /// None of those, and clients may log in as Redis's own users (`redis_users`): the
    /// master checks it.
    Redis,
    /// Users are required and none matched (`WRONGPASS`).
    Wrong,
    /// No user is required and Redis's users are off: only `default` exists, and its
    /// password is not checked.
    Unchecked,
}

/// Check a login against `users`.
pub(super) fn login(users: &Users, user: &[u8], pass: &[u8]) -> LoginAs {
    if users.required() {
        if let Some(u) = users.check(user, pass) {
            return LoginAs::User(u);
        }
    }
    if users.redis() {
        LoginAs::Redis
    } else if users.required() {
        LoginAs::Wrong
    } else {
        LoginAs::Unchecked
    }
}

/// `AUTH`'s reply for a [`LoginAs::Unchecked`] login, as a Redis without passwords
/// answers: the one-argument form is an error, `default` is accepted, any other user
/// does not exist.
pub(super) fn auth_unchecked(req: &Request, user: &[u8]) -> Answer {
    if req.argc() == 2 {
        Answer::error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    } else if user == b"default" {
        Answer::OK
    } else {
        Answer::Raw(reply::WRONGPASS)
    }
}

/// `HELLO [protover [AUTH user password] [SETNAME name]]`'s options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HelloArgs<'a> {
    /// The protocol asked for (2 or 3), or the current one when none is given.
    pub(super) proto: i64,
    /// `AUTH user password`.
    pub(super) auth: Option<(&'a [u8], &'a [u8])>,
    /// `SETNAME name` (not yet checked: [`hello_reply`] does, after the login).
    pub(super) setname: Option<&'a [u8]>,
}

impl<'a> HelloArgs<'a> {
    /// Parse `HELLO`'s arguments; `resp3` is the client's protocol now.
    pub(super) fn parse(req: &Request<'a>, resp3: bool) -> Result<HelloArgs<'a>, Value> {
        let mut proto = if resp3 { 3 } else { 2 };
        let mut i = 1;
        if req.argc() >= 2 {
            match parse_int(req.arg(1)) {
                Some(v) if v == 2 || v == 3 => proto = v,
                Some(_) => return Err(Value::error("NOPROTO unsupported protocol version")),
                None => {
                    return Err(Value::error(
                        "ERR Protocol version is not an integer or out of range",
                    ))
                }
            }
            i = 2;
        }
        let mut auth = None;
        let mut setname = None;
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
                return Err(Value::error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
        Ok(HelloArgs {
            proto,
            auth,
            setname,
        })
    }
}

/// The rest of `HELLO` once any login in it succeeded: the authentication check, the
/// name, the protocol and the reply (for client `id`, with the master's `version`). On
/// success the client's name and protocol are set; the reply is for the new protocol.
pub(super) fn hello_reply(
    client: &mut ClientState,
    id: u64,
    version: &str,
    proto: i64,
    setname: Option<&[u8]>,
) -> Answer {
    if !client.authenticated {
        return Answer::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(n) = setname {
        if let Err(e) = valid_name(n) {
            return e.into();
        }
        client.name = String::from_utf8_lossy(n).into();
    }
    client.resp3 = proto == 3;
    Value::Map(vec![
        (Value::bulk("server"), Value::bulk("redis")),
        (Value::bulk("version"), Value::bulk(version)),
        (Value::bulk("proto"), Value::Int(proto)),
        (Value::bulk("id"), Value::Int(id as i64)),
        (Value::bulk("mode"), Value::bulk("standalone")),
        (Value::bulk("role"), Value::bulk("master")),
        (Value::bulk("modules"), Value::Array(vec![])),
    ])
    .into()
}

// ------------------------------------------------------------------ PROXY

/// A `PROXY` subcommand, its argument count checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProxySub {
    /// `PROXY STATUS`.
    Status,
    /// `PROXY EXPLAIN command [arg …]`.
    Explain,
    /// `PROXY CONFIG`.
    Config,
    /// `PROXY HELP`.
    Help,
}

/// Which `PROXY` subcommand `req` is, or the error for an unknown one or a wrong count.
pub(super) fn proxy_sub(req: &Request) -> Result<ProxySub, Value> {
    let sub = req.arg(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"status" if req.argc() == 2 => Ok(ProxySub::Status),
        b"explain" if req.argc() >= 3 => Ok(ProxySub::Explain),
        b"config" if req.argc() == 2 => Ok(ProxySub::Config),
        b"help" => Ok(ProxySub::Help),
        _ => Err(Value::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try PROXY HELP.",
            String::from_utf8_lossy(req.arg(1))
        ))),
    }
}

/// Whether the client may run `PROXY CONFIG` (`users_required`: `proxy.yaml` has
/// users): the default user may, a proxy user if it is an admin, a Redis ACL user only
/// where no proxy users are set.
pub(super) fn proxy_config_allowed(
    client: &ClientState,
    users_required: bool,
) -> Result<(), Value> {
    let refused = match &client.user {
        // A Redis ACL user is no admin of the proxy's where users are set.
        Some(u) if u.login.is_some() => users_required,
        Some(u) => !u.is_admin(),
        None => false,
    };
    if refused {
        Err(Value::error(
            "NOPERM this user has no permissions to run the 'proxy|config' command",
        ))
    } else {
        Ok(())
    }
}

/// `PROXY HELP`.
pub(super) fn proxy_help() -> Value {
    Value::Array(introspect::HELP.iter().map(|l| Value::simple(*l)).collect())
}

// ------------------------------------------------------------------ CLIENT

/// `CLIENT ID` for client `id`.
pub(super) fn client_id(id: u64) -> Answer {
    Value::Int(id as i64).into()
}

/// `CLIENT GETNAME`: the name, or a null when none is set.
pub(super) fn client_getname(client: &ClientState) -> Answer {
    if client.name.is_empty() {
        Value::Null.into()
    } else {
        Value::bulk(&*client.name).into()
    }
}

/// `CLIENT SETNAME name`: the client's name becomes `name` if it is valid.
pub(super) fn client_setname(client: &mut ClientState, req: &Request) -> Answer {
    match valid_name(req.arg(2)) {
        Ok(()) => {
            client.name = String::from_utf8_lossy(req.arg(2)).into();
            Answer::OK
        }
        Err(e) => e.into(),
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`: the client's reply mode; only `ON` is answered.
pub(super) fn client_reply(client: &mut ClientState, req: &Request) -> Answer {
    let arg = req.arg(2);
    if arg.eq_ignore_ascii_case(b"on") {
        client.reply = ReplyMode::On;
        Answer::OK
    } else if arg.eq_ignore_ascii_case(b"off") {
        client.reply = ReplyMode::Off;
        Answer::None
    } else if arg.eq_ignore_ascii_case(b"skip") {
        client.reply = ReplyMode::Skip;
        Answer::None
    } else {
        Answer::error("ERR syntax error")
    }
}

/// `CLIENT NO-EVICT|NO-TOUCH ON|OFF`: per-connection server flags, which cannot follow
/// a client across the shared connections (README: compatibility); checked as Redis
/// checks them and otherwise ignored.
pub(super) fn client_flag(req: &Request) -> Answer {
    let a = req.arg(2);
    if a.eq_ignore_ascii_case(b"on") || a.eq_ignore_ascii_case(b"off") {
        Answer::OK
    } else {
        Answer::error("ERR syntax error")
    }
}

/// `CLIENT CACHING`: outside a tracking tunnel, tracking is off.
pub(super) fn client_caching() -> Answer {
    Answer::error("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
}

/// A `TYPE` filter's class (`CLIENT LIST`, `CLIENT KILL`), as [`ClientState::type_name`]
/// names it. The proxy's clients are never replicas or masters, so those classes map to
/// a name no client has.
fn client_type(raw: &[u8]) -> Result<&'static str, Value> {
    match raw.to_ascii_lowercase().as_slice() {
        b"normal" => Ok("normal"),
        b"pubsub" => Ok("pubsub"),
        b"master" | b"slave" | b"replica" => Ok("replica"),
        _ => Err(Value::error(format!(
            "ERR Unknown client type '{}'",
            String::from_utf8_lossy(raw)
        ))),
    }
}

/// `CLIENT LIST [TYPE type] [ID id …]`'s filter, as Redis parses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ListFilter {
    /// `TYPE`: the class listed.
    pub(super) ty: Option<&'static str>,
    /// `ID`: the ids listed, in the order asked, once per mention.
    pub(super) ids: Option<Vec<i64>>,
}

impl ListFilter {
    /// Parse `CLIENT LIST`'s arguments.
    pub(super) fn parse(req: &Request) -> Result<ListFilter, Value> {
        let mut f = ListFilter::default();
        if req.argc() == 4 && req.arg(2).eq_ignore_ascii_case(b"type") {
            f.ty = Some(client_type(req.arg(3))?);
        } else if req.argc() > 3 && req.arg(2).eq_ignore_ascii_case(b"id") {
            let ids = (3..req.argc())
                .map(|i| parse_int(req.arg(i)))
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| Value::error("ERR Invalid client ID"))?;
            f.ids = Some(ids);
        } else if req.argc() != 2 {
            return Err(Value::error("ERR syntax error"));
        }
        Ok(f)
    }

    /// With `ID`, the ids that can name a client, in the order asked; `None`: all.
    pub(super) fn order(&self) -> Option<Vec<u64>> {
        self.ids
            .as_ref()
            .map(|v| v.iter().filter_map(|i| u64::try_from(*i).ok()).collect())
    }

    /// Whether a client in `state` passes the `TYPE` filter.
    pub(super) fn matches(&self, state: &ClientState) -> bool {
        self.ty.is_none_or(|t| t == state.type_name())
    }
}

/// `CLIENT KILL addr:port` or `CLIENT KILL <filter value> …`'s filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KillFilter {
    /// `ID`.
    pub(super) id: Option<u64>,
    /// `TYPE`.
    pub(super) ty: Option<&'static str>,
    /// `ADDR`, or the old form's one argument.
    pub(super) addr: Option<String>,
    /// `LADDR`.
    pub(super) laddr: Option<String>,
    /// `USER`.
    pub(super) user: Option<String>,
    /// `SKIPME` (default yes): the client itself is spared. The old form never spares it.
    pub(super) skipme: bool,
    /// `CLIENT KILL addr:port`, answered `+OK` or an error rather than a count.
    pub(super) old_form: bool,
}

impl KillFilter {
    /// Parse `CLIENT KILL`'s arguments, filters checked in order as Redis 7.0 does
    /// (the first wrong one is the error); `user_known` says whether a `USER` names a
    /// user Redis would know.
    pub(super) fn parse(
        req: &Request,
        user_known: impl Fn(&str) -> bool,
    ) -> Result<KillFilter, Value> {
        let mut f = KillFilter {
            id: None,
            ty: None,
            addr: None,
            laddr: None,
            user: None,
            skipme: true,
            old_form: req.argc() == 3,
        };
        if f.old_form {
            f.addr = Some(String::from_utf8_lossy(req.arg(2)).into_owned());
            return Ok(f);
        }
        let mut i = 2;
        while i < req.argc() {
            if i + 1 >= req.argc() {
                return Err(Value::error("ERR syntax error"));
            }
            let k = req.arg(i).to_ascii_lowercase();
            let raw = req.arg(i + 1);
            let v = String::from_utf8_lossy(raw).into_owned();
            match k.as_slice() {
                b"id" => match parse_int(raw).filter(|n| *n > 0) {
                    Some(n) => f.id = Some(n as u64),
                    None => return Err(Value::error("ERR client-id should be greater than 0")),
                },
                b"type" => f.ty = Some(client_type(raw)?),
                b"addr" => f.addr = Some(v),
                b"laddr" => f.laddr = Some(v),
                b"user" => {
                    if !user_known(&v) {
                        return Err(Value::error(format!("ERR No such user '{v}'")));
                    }
                    f.user = Some(v);
                }
                b"skipme" if v.eq_ignore_ascii_case("yes") => f.skipme = true,
                b"skipme" if v.eq_ignore_ascii_case("no") => f.skipme = false,
                _ => return Err(Value::error("ERR syntax error")),
            }
            i += 2;
        }
        Ok(f)
    }

    /// Whether client `id` (address `peer`, local address `local`, in `state`) is to be
    /// killed by client `me`.
    pub(super) fn matches(
        &self,
        me: u64,
        id: u64,
        peer: &impl ToString,
        local: &impl ToString,
        state: &ClientState,
    ) -> bool {
        !(self.skipme && id == me && !self.old_form)
            && self.id.is_none_or(|i| i == id)
            && self.ty.is_none_or(|t| t == state.type_name())
            && self.addr.as_ref().is_none_or(|a| *a == peer.to_string())
            && self.laddr.as_ref().is_none_or(|a| *a == local.to_string())
            && self.user.as_ref().is_none_or(|u| u == state.user_name())
    }

    /// The reply once `killed` clients were killed.
    pub(super) fn reply(&self, killed: i64) -> Answer {
        if !self.old_form {
            Value::Int(killed).into()
        } else if killed == 0 {
            Answer::error("ERR No such client")
        } else {
            Answer::OK
        }
    }
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`'s arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unblock<'a> {
    /// The client to unblock.
    pub(super) id: i64,
    /// `TIMEOUT` or `ERROR`, as sent.
    pub(super) reason: Option<&'a [u8]>,
}

impl<'a> Unblock<'a> {
    /// Parse `CLIENT UNBLOCK`'s arguments.
    pub(super) fn parse(req: &Request<'a>) -> Result<Unblock<'a>, Value> {
        let id = parse_int(req.arg(2))
            .ok_or_else(|| Value::error("ERR value is not an integer or out of range"))?;
        let mode = req.arg(3);
        if req.argc() == 4
            && !mode.eq_ignore_ascii_case(b"timeout")
            && !mode.eq_ignore_ascii_case(b"error")
        {
            return Err(Value::error(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ));
        }
        Ok(Unblock {
            id,
            reason: (req.argc() == 4).then_some(mode),
        })
    }

    /// The client it names, if it can name one other than client `me` (Redis answers 0
    /// for the client itself, which is not blocked while it sends this).
    pub(super) fn target(&self, me: u64) -> Option<u64> {
        u64::try_from(self.id).ok().filter(|i| *i != me)
    }
}

/// `CLIENT TRACKING on … REDIRECT id`: the position of the id argument and the id, or
/// `None` when there is no `REDIRECT` or its id is no integer (the master answers then).
pub(super) fn redirect_arg(req: &Request) -> Option<(usize, i64)> {
    let pos = (3..req.argc()).find(|i| req.arg(*i).eq_ignore_ascii_case(b"redirect"))? + 1;
    Some((pos, parse_int(req.arg(pos))?))
}

/// The error for a `REDIRECT` to a client that does not exist.
pub(super) const NO_REDIRECT_TARGET: &str = "ERR The client ID you want redirect to does not exist";

/// The error for a `REDIRECT` to client `id` when no master connection could be opened
/// for it to receive the invalidations on.
pub(super) fn redirect_unreachable(id: i64) -> String {
    format!(
        "ERR redsplit: no master connection could be opened for client {id} to receive invalidations (the master is down or refused it)"
    )
}

#[cfg(test)]
mod tests;
