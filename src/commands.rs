//! Placeholder command table (replaced by the generated one).
#![allow(missing_docs)]
use crate::protocol::Request;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags(pub u32);
impl Flags {
    pub const WRITE: Flags = Flags(1);
    pub const READONLY: Flags = Flags(2);
    pub const BLOCKING: Flags = Flags(4);
    pub const ADMIN: Flags = Flags(8);
    pub const PUBSUB: Flags = Flags(16);
    pub const fn contains(self, o: Flags) -> bool {
        self.0 & o.0 == o.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
    Admin,
    PubSub,
    Transaction,
    Connection,
}

pub struct Command {
    pub name: &'static str,
    pub arity: i32,
    pub flags: Flags,
    pub class: Class,
    first: i32,
    last: i32,
    step: i32,
}

macro_rules! c {
    ($n:expr, $a:expr, $f:expr, $c:ident, $fk:expr, $lk:expr, $st:expr) => {
        Command { name: $n, arity: $a, flags: Flags($f), class: Class::$c, first: $fk, last: $lk, step: $st }
    };
}

static TABLE: &[Command] = &[
    c!("get", 2, 2, Read, 1, 1, 1),
    c!("mget", -2, 2, Read, 1, -1, 1),
    c!("exists", -2, 2, Read, 1, -1, 1),
    c!("strlen", 2, 2, Read, 1, 1, 1),
    c!("lrange", 4, 2, Read, 1, 1, 1),
    c!("hgetall", 2, 2, Read, 1, 1, 1),
    c!("scan", -2, 2, Read, 0, 0, 0),
    c!("keys", 2, 2, Read, 0, 0, 0),
    c!("dbsize", 1, 2, Read, 0, 0, 0),
    c!("eval_ro", -3, 2, Read, 0, 0, 0),
    c!("evalsha_ro", -3, 2, Read, 0, 0, 0),
    c!("set", -3, 1, Write, 1, 1, 1),
    c!("incr", 2, 1, Write, 1, 1, 1),
    c!("del", -2, 1, Write, 1, -1, 1),
    c!("mset", -3, 1, Write, 1, -1, 2),
    c!("lpush", -3, 1, Write, 1, 1, 1),
    c!("rpush", -3, 1, Write, 1, 1, 1),
    c!("flushall", -1, 1, Write, 0, 0, 0),
    c!("blpop", -3, 5, Write, 1, -2, 1),
    c!("brpop", -3, 5, Write, 1, -2, 1),
    c!("wait", 3, 4, Write, 0, 0, 0),
    c!("subscribe", -2, 16, PubSub, 0, 0, 0),
    c!("psubscribe", -2, 16, PubSub, 0, 0, 0),
    c!("ssubscribe", -2, 16, PubSub, 0, 0, 0),
    c!("unsubscribe", -1, 16, PubSub, 0, 0, 0),
    c!("punsubscribe", -1, 16, PubSub, 0, 0, 0),
    c!("sunsubscribe", -1, 16, PubSub, 0, 0, 0),
    c!("publish", 3, 16, PubSub, 0, 0, 0),
    c!("multi", 1, 0, Transaction, 0, 0, 0),
    c!("exec", 1, 0, Transaction, 0, 0, 0),
    c!("discard", 1, 0, Transaction, 0, 0, 0),
    c!("watch", -2, 0, Transaction, 1, -1, 1),
    c!("unwatch", 1, 0, Transaction, 0, 0, 0),
    c!("auth", -2, 0, Connection, 0, 0, 0),
    c!("hello", -1, 0, Connection, 0, 0, 0),
    c!("select", 2, 0, Connection, 0, 0, 0),
    c!("ping", -1, 0, Connection, 0, 0, 0),
    c!("echo", 2, 0, Connection, 0, 0, 0),
    c!("quit", -1, 0, Connection, 0, 0, 0),
    c!("reset", 1, 0, Connection, 0, 0, 0),
    c!("client", -2, 0, Connection, 0, 0, 0),
    c!("config", -2, 8, Admin, 0, 0, 0),
    c!("monitor", 1, 8, Admin, 0, 0, 0),
    c!("shutdown", -1, 8, Admin, 0, 0, 0),
    c!("info", -1, 0, Write, 0, 0, 0),
];

pub fn lookup(req: &Request) -> Option<&'static Command> {
    lookup_name(req.arg(0))
}

pub fn lookup_name(name: &[u8]) -> Option<&'static Command> {
    TABLE.iter().find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

pub fn for_each_key(cmd: &Command, req: &Request, mut f: impl FnMut(usize)) {
    if cmd.first <= 0 {
        return;
    }
    let argc = req.argc() as i32;
    let last = if cmd.last < 0 { argc + cmd.last } else { cmd.last };
    let mut i = cmd.first;
    while i <= last && i < argc {
        f(i as usize);
        i += cmd.step.max(1);
    }
}

pub fn is_blocking(cmd: &Command, _req: &Request) -> bool {
    cmd.flags.contains(Flags::BLOCKING)
}

pub fn arity_ok(cmd: &Command, argc: usize) -> bool {
    if cmd.arity >= 0 {
        argc == cmd.arity as usize
    } else {
        argc >= (-cmd.arity) as usize
    }
}

pub fn is_known_name(name: &str) -> bool {
    lookup_name(name.as_bytes()).is_some()
}
