//! The one record of a client connection's state as Redis defines it: what `CLIENT
//! LIST`/`CLIENT INFO` show, what a parked client keeps, and what `RESET` resets.
//!
//! The session owns it ([`Session`](super::Session)'s `client` field) and works on it
//! directly; after each turn of its loop it publishes a copy to its
//! [`SessionHandle`](crate::proxy::SessionHandle) when anything changed, which is what
//! other clients' `CLIENT LIST`/`KILL`, the janitor and a resumed parked session read.
//! The copy is always the whole record (its strings are shared, so a copy costs no
//! allocation), so no field can drift from the others.

use crate::auth::User;
use crate::backend::{Conn, ConnKey, Login};
use crate::commands::Command;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `CLIENT REPLY` mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplyMode {
    /// Every reply is sent.
    #[default]
    On,
    /// No reply is sent.
    Off,
    /// The next command's reply is not sent.
    Skip,
}

/// A client connection's state, as Redis keeps it per connection.
#[derive(Clone, Debug)]
pub struct ClientState {
    /// `CLIENT SETNAME` / `HELLO … SETNAME`; empty: none.
    pub name: Arc<str>,
    /// Selected database.
    pub db: u32,
    /// RESP3 (`HELLO 3`) rather than RESP2.
    pub resp3: bool,
    /// The authenticated proxy user; `None`: the default user.
    pub user: Option<Arc<User>>,
    /// Whether the client has authenticated (or needs not).
    pub authenticated: bool,
    /// `CLIENT REPLY`.
    pub reply: ReplyMode,
    /// The Redis-style flag (`x`, `b`, `P`, `O`, `t`); 0 means `N`. One byte: a handle
    /// is one of the few things an idle client costs.
    pub flags: u8,
    /// Channels, patterns and shard channels subscribed.
    pub sub: u32,
    /// Patterns subscribed.
    pub psub: u32,
    /// Shard channels subscribed.
    pub ssub: u32,
    /// Commands queued in `MULTI`, or -1 outside a transaction.
    pub multi: i32,
    /// The last command run (`CLIENT LIST` shows its name, `client|list`); `None`
    /// before the first.
    pub cmd: Option<&'static Command>,
    /// The session's dedicated master connection, if it has one: other clients' `CLIENT
    /// UNBLOCK` and `CLIENT TRACKING … REDIRECT` name this client by the backend's id
    /// of that connection.
    pub dedicated: Option<Arc<Conn>>,
}

impl ClientState {
    /// The state of a newly connected client; `authenticated` when no user is required.
    pub fn new(authenticated: bool) -> ClientState {
        ClientState {
            name: Arc::from(""),
            db: 0,
            resp3: false,
            user: None,
            authenticated,
            reply: ReplyMode::On,
            flags: 0,
            sub: 0,
            psub: 0,
            ssub: 0,
            multi: -1,
            cmd: None,
            dedicated: None,
        }
    }

    /// `RESET`: back to a new connection's state (Redis's `clearClientConnectionState`:
    /// database 0, RESP2, the default user, no name, replies on, no transaction, no
    /// subscriptions, no tracking, no `MONITOR`, so no dedicated connection). The last
    /// command stays (`reset`).
    pub fn reset(&mut self, authenticated: bool) {
        let cmd = self.cmd;
        *self = ClientState::new(authenticated);
        self.cmd = cmd;
    }

    /// The backend's client id for this client's dedicated connection, once known.
    pub fn backend_id(&self) -> Option<i64> {
        let id = self
            .dedicated
            .as_ref()?
            .backend_client_id
            .load(Ordering::Relaxed);
        (id >= 0).then_some(id)
    }

    /// Whether `other` says the same (shared strings and connections by identity), so a
    /// publish can be skipped without touching their reference counts.
    pub fn same_as(&self, other: &ClientState) -> bool {
        fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        Arc::ptr_eq(&self.name, &other.name)
            && self.db == other.db
            && self.resp3 == other.resp3
            && same(&self.user, &other.user)
            && self.authenticated == other.authenticated
            && self.reply == other.reply
            && self.flags == other.flags
            && (self.sub, self.psub, self.ssub, self.multi)
                == (other.sub, other.psub, other.ssub, other.multi)
            && self.cmd.map(std::ptr::from_ref) == other.cmd.map(std::ptr::from_ref)
            && same(&self.dedicated, &other.dedicated)
    }

    /// Which backend connections serve this client: its database, protocol and, when
    /// it logged in as a Redis ACL user, that user.
    pub fn key(&self) -> ConnKey {
        ConnKey {
            db: self.db,
            resp3: self.resp3,
            login: self.login().cloned(),
        }
    }

    /// Whether connections set up for `key` serve this client (what [`key`](Self::key)
    /// would say, without building one).
    #[inline]
    pub fn uses(&self, key: &ConnKey) -> bool {
        key.db == self.db
            && key.resp3 == self.resp3
            && match (&key.login, self.login()) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
    }

    /// The Redis ACL user the client logged in as, if any.
    #[inline]
    pub fn login(&self) -> Option<&Arc<Login>> {
        self.user.as_ref().and_then(|u| u.login.as_ref())
    }

    /// The user name as Redis shows it.
    pub fn user_name(&self) -> &str {
        self.user.as_ref().map_or("default", |u| u.name.as_str())
    }

    /// `CLIENT LIST`'s `flags=`.
    pub fn flags_text(&self) -> &'static str {
        match self.flags {
            b'x' => "x",
            b'b' => "b",
            b'P' => "P",
            b'O' => "O",
            b't' => "t",
            _ => "N",
        }
    }

    /// `CLIENT LIST … TYPE`'s class of this client: `normal`, `pubsub` or `master`/
    /// `replica` (never, through the proxy).
    pub fn type_name(&self) -> &'static str {
        if self.flags == b'P' {
            "pubsub"
        } else {
            "normal"
        }
    }

    /// Update the subscription counts from a subscribe-family confirmation frame's
    /// kind and count (the count of the subscriptions of that family: channels plus
    /// patterns for `subscribe`/`psubscribe`, shard channels for `ssubscribe`).
    pub fn on_subscription(&mut self, kind: &[u8], count: u32) {
        let k = kind.to_ascii_lowercase();
        match k.as_slice() {
            b"subscribe" | b"unsubscribe" => self.sub = count.saturating_sub(self.psub),
            b"psubscribe" | b"punsubscribe" => self.psub = count.saturating_sub(self.sub),
            b"ssubscribe" | b"sunsubscribe" => self.ssub = count,
            _ => {}
        }
    }

    /// One `CLIENT LIST` line for this client (without the fields of the connection
    /// itself, which the caller passes in as `conn`: `id=… addr=… laddr=… fd=…`, and
    /// `age=… idle=…` in `times`), with `qbuf` bytes in its query buffer.
    pub fn line(&self, conn: &str, times: &str, qbuf: usize) -> String {
        let mut out = String::with_capacity(320);
        let _ = writeln!(
            out,
            "{conn} name={} {times} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={qbuf} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={}",
            self.name,
            self.flags_text(),
            self.db,
            self.sub,
            self.psub,
            self.ssub,
            self.multi,
            self.cmd.map_or("NULL", |c| c.name),
            self.user_name(),
            if self.resp3 { 3 } else { 2 },
        );
        out
    }
}

/// The kind and count of a subscribe-family confirmation frame (`*3` or `>3`:
/// `subscribe`, the channel or a null, `:count`), or `None` for any other frame.
pub fn subscription(frame: &[u8]) -> Option<(&[u8], u32)> {
    let rest = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))?;
    let (kind, rest) = bulk(rest)?;
    const KINDS: [&[u8]; 6] = [
        b"subscribe",
        b"unsubscribe",
        b"psubscribe",
        b"punsubscribe",
        b"ssubscribe",
        b"sunsubscribe",
    ];
    if !KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
        return None;
    }
    let rest = match rest.strip_prefix(b"_\r\n") {
        Some(r) => r,
        None if rest.starts_with(b"$-1\r\n") => rest.get(5..)?,
        None => bulk(rest)?.1,
    };
    let count = rest.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    let count = std::str::from_utf8(count).ok()?.parse().ok()?;
    Some((kind, count))
}

/// A `CLIENT GETREDIR` reply (`:id`) or `CLIENT TRACKINGINFO` reply (its `redirect`
/// field) naming a redirect target (id > 0, or 0 too with `zero`: tracking with no
/// redirect, which is how a redirect to the client itself is sent), with that id
/// replaced by `id`.
pub fn with_redirect(frame: &[u8], id: u64, zero: bool) -> Option<Vec<u8>> {
    let (start, rest) = if frame.first() == Some(&b':') {
        (1, frame.get(1..)?)
    } else {
        let at = memchr::memmem::find(frame, b"redirect\r\n:")? + 10;
        (at + 1, frame.get(at + 1..)?)
    };
    let end = memchr::memchr(b'\r', rest)?;
    let old: i64 = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
    if old < 0 || (old == 0 && !zero) {
        return None;
    }
    let mut out = Vec::with_capacity(frame.len() + 8);
    out.extend_from_slice(frame.get(..start)?);
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(frame.get(start + end..)?);
    Some(out)
}

/// One bulk string at the front of `b`, and what follows it.
fn bulk(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let b = b.strip_prefix(b"$")?;
    let end = memchr::memchr(b'\r', b)?;
    let len: usize = std::str::from_utf8(b.get(..end)?).ok()?.parse().ok()?;
    let data = b.get(end + 2..end + 2 + len)?;
    let rest = b.get(end + 2 + len..)?.strip_prefix(b"\r\n")?;
    Some((data, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_the_same_until_a_field_changes() {
        let a = ClientState::new(true);
        let mut b = a.clone();
        assert!(a.same_as(&b));
        b.db = 1;
        assert!(!a.same_as(&b));
        let mut c = a.clone();
        c.name = Arc::from("");
        assert!(
            !a.same_as(&c),
            "a new name is a change even when equal text"
        );
    }

    #[test]
    fn redirect_ids_are_replaced_in_both_replies() {
        assert_eq!(
            with_redirect(b":345\r\n", 7, false).as_deref(),
            Some(&b":7\r\n"[..])
        );
        assert_eq!(with_redirect(b":0\r\n", 7, false), None);
        assert_eq!(
            with_redirect(b":0\r\n", 7, true).as_deref(),
            Some(&b":7\r\n"[..])
        );
        assert_eq!(with_redirect(b":-1\r\n", 7, true), None);
        let info = b"*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:345\r\n$8\r\nprefixes\r\n*0\r\n";
        let want = b"*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:12\r\n$8\r\nprefixes\r\n*0\r\n";
        assert_eq!(with_redirect(info, 12, false).as_deref(), Some(&want[..]));
    }

    #[test]
    fn confirmations_are_recognised_and_messages_are_not() {
        assert_eq!(
            subscription(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            Some((&b"subscribe"[..], 1))
        );
        assert_eq!(
            subscription(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"),
            Some((&b"unsubscribe"[..], 0))
        );
        assert_eq!(
            subscription(b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"),
            Some((&b"punsubscribe"[..], 0))
        );
        assert_eq!(
            subscription(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"),
            None
        );
        assert_eq!(subscription(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch"), None);
    }

    #[test]
    fn reset_clears_everything_redis_clears_but_the_last_command() {
        let mut s = ClientState::new(true);
        s.name = Arc::from("worker");
        s.db = 3;
        s.resp3 = true;
        s.reply = ReplyMode::Off;
        s.flags = b'P';
        s.sub = 2;
        s.multi = 4;
        s.cmd = crate::commands::lookup_name(b"reset");
        s.reset(false);
        assert_eq!(&*s.name, "");
        assert_eq!(
            (s.db, s.resp3, s.reply, s.flags),
            (0, false, ReplyMode::On, 0)
        );
        assert_eq!((s.sub, s.psub, s.ssub, s.multi), (0, 0, 0, -1));
        assert!(!s.authenticated);
        assert_eq!(s.cmd.map(|c| c.name), Some("reset"));
    }

    #[test]
    fn subscription_counts_follow_confirmations() {
        let mut s = ClientState::new(true);
        s.on_subscription(b"subscribe", 1);
        s.on_subscription(b"subscribe", 2);
        s.on_subscription(b"psubscribe", 3);
        assert_eq!((s.sub, s.psub), (2, 1));
        s.on_subscription(b"unsubscribe", 2);
        assert_eq!((s.sub, s.psub), (1, 1));
        s.on_subscription(b"SSUBSCRIBE", 1);
        assert_eq!(s.ssub, 1);
    }

    #[test]
    fn a_line_is_in_redis_field_order() {
        let mut s = ClientState::new(true);
        s.name = Arc::from("n1");
        s.flags = b'P';
        s.sub = 1;
        s.cmd = crate::commands::lookup_name(b"subscribe");
        let l = s.line("id=7 addr=a:1 laddr=b:2 fd=-1", "age=0 idle=0", 0);
        assert!(l.starts_with("id=7 addr=a:1 laddr=b:2 fd=-1 name=n1 age=0 idle=0 flags=P db=0 sub=1 psub=0 ssub=0 multi=-1 "));
        assert!(l.ends_with(" cmd=subscribe user=default redir=-1 resp=2\n"));
    }
}
