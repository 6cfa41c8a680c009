//! The command table: what each Redis command is, how the proxy treats it, and where its
//! keys are.
//!
//! Everything here comes from Redis itself. The static table in `commands/table.rs` is
//! generated from the `COMMAND` reply of a real server by [`gen::render`] (run
//! `cargo run --example gen_commands -- HOST:PORT > src/commands/table.rs`), and a test
//! regenerates it from the server it starts, so it cannot drift. A command's [`Class`]
//! follows from its flags (`readonly`, `admin`, `pubsub`, …) plus the few names Redis
//! gives no flag for (transactions, connection state); nothing is a hand-kept read list.
//!
//! Key positions follow the key specs exactly as Redis's `getKeysFromCommandWithSpecs`
//! does: the specs decide when all of them apply, and otherwise the command's own
//! key-finding procedure does (`SORT … STORE`, `MIGRATE … KEYS`, a bad `numkeys`). Redis
//! does not report which procedure a command has, so the generator names it from
//! Redis's source ([`GetKeysProc`]); a test checks that every command whose specs can
//! fail has one.
//!
//! Module commands, unknown to the static table, can be added at start from a
//! `COMMAND INFO` reply ([`register_from_command_info`]).
//!
//! Lookup, key finding and blocking detection run per request on client input: they
//! neither allocate nor panic, and never yield an argument index at or past `argc`.
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::LazyLock;

use dashmap::DashMap;
use redis_protocol::resp2::types::OwnedFrame;

use crate::protocol::Request;

pub use info::CommandInfoError;
pub use keys::for_each_key;

pub mod gen;
mod info;
mod keys;
#[rustfmt::skip]
mod table;

/// Command flags as Redis reports them (a bitset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags(pub u32);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// `write`: may modify the keyspace.
    pub const WRITE: Flags = Flags(1 << 0);
    /// `readonly`: only reads keys.
    pub const READONLY: Flags = Flags(1 << 1);
    /// `denyoom`: may grow memory; refused when over `maxmemory`.
    pub const DENYOOM: Flags = Flags(1 << 2);
    /// `module`: implemented by a module.
    pub const MODULE: Flags = Flags(1 << 3);
    /// `admin`: an administrative command.
    pub const ADMIN: Flags = Flags(1 << 4);
    /// `pubsub`: a publish/subscribe command.
    pub const PUBSUB: Flags = Flags(1 << 5);
    /// `noscript`: not allowed in scripts.
    pub const NOSCRIPT: Flags = Flags(1 << 6);
    /// `blocking`: may block the client.
    pub const BLOCKING: Flags = Flags(1 << 7);
    /// `loading`: allowed while the dataset loads.
    pub const LOADING: Flags = Flags(1 << 8);
    /// `stale`: allowed on a replica with stale data.
    pub const STALE: Flags = Flags(1 << 9);
    /// `skip_monitor`: not shown to `MONITOR`.
    pub const SKIP_MONITOR: Flags = Flags(1 << 10);
    /// `skip_slowlog`: not logged by the slow log.
    pub const SKIP_SLOWLOG: Flags = Flags(1 << 11);
    /// `asking`: cluster-related, accepted on an importing slot after `ASKING`.
    pub const ASKING: Flags = Flags(1 << 12);
    /// `fast`: O(1) or O(log N).
    pub const FAST: Flags = Flags(1 << 13);
    /// `no_auth`: allowed before authentication.
    pub const NO_AUTH: Flags = Flags(1 << 14);
    /// `may_replicate`: may propagate to replicas. Redis hides it from `COMMAND`, so the
    /// table never carries it.
    pub const MAY_REPLICATE: Flags = Flags(1 << 15);
    /// `sentinel`: available in Sentinel mode. Hidden from `COMMAND`, as above.
    pub const SENTINEL: Flags = Flags(1 << 16);
    /// `only_sentinel`: available only in Sentinel mode. Hidden from `COMMAND`, as above.
    pub const ONLY_SENTINEL: Flags = Flags(1 << 17);
    /// `no_mandatory_keys`: may run with no key at all (e.g. `EVAL` with zero keys).
    pub const NO_MANDATORY_KEYS: Flags = Flags(1 << 18);
    /// `protected`: refused unless enabled by configuration. Hidden from `COMMAND`.
    pub const PROTECTED: Flags = Flags(1 << 19);
    /// `no_async_loading`: refused during asynchronous loading.
    pub const NO_ASYNC_LOADING: Flags = Flags(1 << 20);
    /// `no_multi`: not allowed inside `MULTI`.
    pub const NO_MULTI: Flags = Flags(1 << 21);
    /// `movablekeys`: key positions depend on the arguments.
    pub const MOVABLE_KEYS: Flags = Flags(1 << 22);
    /// `allow_busy`: allowed while a script or function is busy.
    pub const ALLOW_BUSY: Flags = Flags(1 << 23);

    /// Whether every flag of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags of both.
    #[inline]
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// Each flag's name in a `COMMAND` reply and the constant's name.
const FLAG_NAMES: &[(&str, &str, Flags)] = &[
    ("write", "WRITE", Flags::WRITE),
    ("readonly", "READONLY", Flags::READONLY),
    ("denyoom", "DENYOOM", Flags::DENYOOM),
    ("module", "MODULE", Flags::MODULE),
    ("admin", "ADMIN", Flags::ADMIN),
    ("pubsub", "PUBSUB", Flags::PUBSUB),
    ("noscript", "NOSCRIPT", Flags::NOSCRIPT),
    ("blocking", "BLOCKING", Flags::BLOCKING),
    ("loading", "LOADING", Flags::LOADING),
    ("stale", "STALE", Flags::STALE),
    ("skip_monitor", "SKIP_MONITOR", Flags::SKIP_MONITOR),
    ("skip_slowlog", "SKIP_SLOWLOG", Flags::SKIP_SLOWLOG),
    ("asking", "ASKING", Flags::ASKING),
    ("fast", "FAST", Flags::FAST),
    ("no_auth", "NO_AUTH", Flags::NO_AUTH),
    ("may_replicate", "MAY_REPLICATE", Flags::MAY_REPLICATE),
    ("sentinel", "SENTINEL", Flags::SENTINEL),
    ("only_sentinel", "ONLY_SENTINEL", Flags::ONLY_SENTINEL),
    (
        "no_mandatory_keys",
        "NO_MANDATORY_KEYS",
        Flags::NO_MANDATORY_KEYS,
    ),
    ("protected", "PROTECTED", Flags::PROTECTED),
    (
        "no_async_loading",
        "NO_ASYNC_LOADING",
        Flags::NO_ASYNC_LOADING,
    ),
    ("no_multi", "NO_MULTI", Flags::NO_MULTI),
    ("movablekeys", "MOVABLE_KEYS", Flags::MOVABLE_KEYS),
    ("allow_busy", "ALLOW_BUSY", Flags::ALLOW_BUSY),
];

/// Key-spec flags: how a command uses the keys one spec finds (a bitset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyFlags(pub u16);

impl KeyFlags {
    /// No flag set.
    pub const NONE: KeyFlags = KeyFlags(0);
    /// `RO`: reads the key's value.
    pub const RO: KeyFlags = KeyFlags(1 << 0);
    /// `RW`: reads and modifies the value.
    pub const RW: KeyFlags = KeyFlags(1 << 1);
    /// `OW`: overwrites the value without reading it.
    pub const OW: KeyFlags = KeyFlags(1 << 2);
    /// `RM`: deletes the key.
    pub const RM: KeyFlags = KeyFlags(1 << 3);
    /// `access`: returns, copies or uses user data of the key.
    pub const ACCESS: KeyFlags = KeyFlags(1 << 4);
    /// `update`: updates data of the value.
    pub const UPDATE: KeyFlags = KeyFlags(1 << 5);
    /// `insert`: adds data to the value.
    pub const INSERT: KeyFlags = KeyFlags(1 << 6);
    /// `delete`: removes data from the value.
    pub const DELETE: KeyFlags = KeyFlags(1 << 7);
    /// `not_key`: the argument is not a key (a shard channel) and is not returned.
    pub const NOT_KEY: KeyFlags = KeyFlags(1 << 8);
    /// `incomplete`: the spec may miss keys; Redis then asks the command's procedure.
    pub const INCOMPLETE: KeyFlags = KeyFlags(1 << 9);
    /// `variable_flags`: the flags depend on the arguments; Redis then asks the
    /// command's procedure.
    pub const VARIABLE_FLAGS: KeyFlags = KeyFlags(1 << 10);

    /// Whether every flag of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: KeyFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags of both.
    #[inline]
    pub const fn union(self, other: KeyFlags) -> KeyFlags {
        KeyFlags(self.0 | other.0)
    }
}

/// Each key-spec flag's name in a `COMMAND` reply and the constant's name.
const KEY_FLAG_NAMES: &[(&str, &str, KeyFlags)] = &[
    ("RO", "RO", KeyFlags::RO),
    ("RW", "RW", KeyFlags::RW),
    ("OW", "OW", KeyFlags::OW),
    ("RM", "RM", KeyFlags::RM),
    ("access", "ACCESS", KeyFlags::ACCESS),
    ("update", "UPDATE", KeyFlags::UPDATE),
    ("insert", "INSERT", KeyFlags::INSERT),
    ("delete", "DELETE", KeyFlags::DELETE),
    ("not_key", "NOT_KEY", KeyFlags::NOT_KEY),
    ("incomplete", "INCOMPLETE", KeyFlags::INCOMPLETE),
    ("variable_flags", "VARIABLE_FLAGS", KeyFlags::VARIABLE_FLAGS),
];

/// Where a key spec starts looking for keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(i32),
    /// After the first argument equal (case-insensitively) to `keyword`, searching from
    /// index `startfrom` forwards, or from `argc + startfrom` backwards when negative.
    Keyword {
        /// The keyword that precedes the keys.
        keyword: &'static str,
        /// Where the search starts.
        startfrom: i32,
    },
    /// Only the command's own procedure knows.
    Unknown,
}

/// Which keys a key spec takes, from where its search began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindKeys {
    /// A range of arguments.
    Range {
        /// Last key, relative to the first when `>= 0`; when negative, relative to the
        /// end of the arguments (`limit` 0) or to the part of them `limit` divides.
        lastkey: i32,
        /// Distance between keys.
        keystep: i32,
        /// When `lastkey` is -1: take the first `1/limit` of the remaining arguments.
        limit: i32,
    },
    /// A count argument followed by that many keys.
    Keynum {
        /// Index of the count argument, relative to the first.
        keynumidx: i32,
        /// Index of the first key, relative to the first.
        firstkey: i32,
        /// Distance between keys.
        keystep: i32,
    },
    /// Only the command's own procedure knows.
    Unknown,
}

/// One key spec of a command: a rule that finds some of its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// How the command uses these keys.
    pub flags: KeyFlags,
    /// Where the search starts.
    pub begin_search: BeginSearch,
    /// Which arguments from there are keys.
    pub find_keys: FindKeys,
}

/// Redis's own key-finding procedure for a command (its `getkeys_proc`), used when the
/// key specs do not apply. `COMMAND` does not report it; the generator names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetKeysProc {
    /// No procedure: the key specs are all there is.
    None,
    /// `genericGetKeys`: a count at `count`, that many keys from `first`, then a
    /// destination key at `store` when it is not 0 (`EVAL`, `ZUNIONSTORE`, `LMPOP`, …).
    Numkeys {
        /// Index of the destination key, or 0.
        store: u8,
        /// Index of the count.
        count: u8,
        /// Index of the first counted key.
        first: u8,
    },
    /// `SORT`: the sorted key and the last `STORE` destination.
    Sort,
    /// `SORT_RO`: the sorted key.
    SortRo,
    /// `MIGRATE`: the key argument, or the keys after `KEYS`.
    Migrate,
    /// `GEORADIUS[BYMEMBER]`: the key and the last `STORE`/`STOREDIST` destination.
    Georadius,
    /// `XREAD[GROUP]`: the first half of the arguments after `STREAMS`.
    Xread,
    /// The key at index 1 (`SET`, `BITFIELD`: their flags vary, the position does not).
    FirstArg,
}

/// How the proxy treats a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Reads only (`readonly` flag): may go to a replica.
    Read,
    /// Anything not known to be read-only: goes to the master.
    Write,
    /// `admin` flag.
    Admin,
    /// `pubsub` flag.
    PubSub,
    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
    Transaction,
    /// Connection state: `AUTH`, `HELLO`, `SELECT`, `PING`, `ECHO`, `QUIT`, `RESET`, and
    /// every `CLIENT` subcommand.
    Connection,
}

/// One command or subcommand.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    /// Lowercase name; a subcommand is `container|sub` (`client|setname`).
    pub name: &'static str,
    /// Argument count, the name included: exactly `arity` when positive, at least
    /// `-arity` when negative (a subcommand counts the container's name too).
    pub arity: i32,
    /// Flags as Redis reports them.
    pub flags: Flags,
    /// How the proxy treats it, from [`classify`].
    pub class: Class,
    /// Legacy first key index (0: no keys).
    pub first_key: i32,
    /// Legacy last key index (negative: from the end).
    pub last_key: i32,
    /// Legacy step between keys.
    pub key_step: i32,
    /// Key specs, in Redis's order (the order keys are reported in).
    pub key_specs: &'static [KeySpec],
    /// The procedure Redis falls back on when the specs do not apply.
    pub getkeys_proc: GetKeysProc,
    /// Subcommands, sorted by name (empty unless this is a container).
    pub subcommands: &'static [Command],
}

/// The class of a command from its name and flags, by the rules in [`Class`]; the
/// generator writes it into the table.
pub fn classify(name: &str, flags: Flags) -> Class {
    match name {
        "multi" | "exec" | "discard" | "watch" | "unwatch" => return Class::Transaction,
        "auth" | "hello" | "select" | "ping" | "echo" | "quit" | "reset" | "client" => {
            return Class::Connection
        }
        _ => {}
    }
    if name.starts_with("client|") {
        Class::Connection
    } else if flags.contains(Flags::PUBSUB) {
        Class::PubSub
    } else if flags.contains(Flags::ADMIN) {
        Class::Admin
    } else if flags.contains(Flags::READONLY) {
        Class::Read
    } else {
        Class::Write
    }
}

/// Read-only commands whose point is the master's own per-key access metadata: `TOUCH`
/// (it updates a key's last access, which only the master's copy should record), and
/// `OBJECT IDLETIME` / `OBJECT FREQ` (a replica answers with its own, which reads routed
/// to it have reset). They are reads by Redis's flags but are served by the master.
pub fn master_only(cmd: &Command) -> bool {
    matches!(cmd.name, "touch" | "object|idletime" | "object|freq")
}

/// Commands Redis flags `may_replicate` (the flag `COMMAND` does not show, so
/// [`Flags::MAY_REPLICATE`] is never set from it): they may propagate to replicas, and a
/// client pause of writes holds them as it holds writes. Redis 7.0's list.
pub fn may_replicate(cmd: &Command) -> bool {
    cmd.flags.contains(Flags::MAY_REPLICATE)
        || matches!(
            cmd.name,
            "eval" | "evalsha" | "fcall" | "pfcount" | "publish" | "spublish"
        )
}

/// Commands that interrupt what the server is busy with (`SCRIPT KILL`, `FUNCTION
/// KILL`): they must reach it on a connection of their own, not queued behind the
/// script they are meant to stop.
pub fn is_interrupt(cmd: &Command) -> bool {
    matches!(cmd.name, "script|kill" | "function|kill")
}

/// Why `req` would cut the proxy off its own backends, if it would: `CONFIG SET
/// requirepass`, or `ACL SETUSER` / `ACL DELUSER` of `backend_user` (the user the proxy
/// authenticates as). Applied on the master, its new connections (transactions, blocking
/// commands, pub/sub, reconnects) would fail their handshake for every client.
pub fn cuts_off_backends(cmd: &Command, req: &Request, backend_user: &str) -> Option<&'static str> {
    let user = if backend_user.is_empty() {
        "default"
    } else {
        backend_user
    };
    match cmd.name {
        "config|set" if (2..req.argc()).step_by(2).any(|i| req.arg(i).eq_ignore_ascii_case(b"requirepass")) => {
            Some("ERR redsplit: CONFIG SET requirepass would lock the proxy out of its backends; set the password in the servers' configuration and in backend.password in proxy.yaml (a reload applies it)")
        }
        "acl|setuser" | "acl|deluser"
            if (2..req.argc())
                .take(if cmd.name == "acl|setuser" { 1 } else { usize::MAX })
                .any(|i| req.arg(i) == user.as_bytes()) =>
        {
            Some("ERR redsplit: this would change or remove the ACL user the proxy connects to its backends as (backend.username in proxy.yaml); change it in the servers' configuration and in proxy.yaml instead")
        }
        _ => None,
    }
}

/// Whether `req` may touch keys it does not name as key arguments, so a key pattern
/// cannot be checked on its arguments: scripts and functions (`EVAL`, `FCALL` and their
/// `_RO` and `SHA` forms read and write whatever they like), and `SORT`/`SORT_RO` with
/// `BY` or `GET` patterns (Redis 7 likewise requires access to all keys for those).
pub fn touches_undeclared_keys(cmd: &Command, req: &Request) -> bool {
    match cmd.name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => true,
        "sort" | "sort_ro" => (2..req.argc()).any(|i| {
            let a = req.arg(i);
            a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get")
        }),
        _ => false,
    }
}

/// The static table generated from Redis's `COMMAND` reply, sorted by name.
pub fn table() -> &'static [Command] {
    table::COMMANDS
}

/// Commands registered at run time, by lowercase name.
static DYNAMIC: LazyLock<DashMap<Box<[u8]>, &'static Command>> = LazyLock::new(DashMap::new);
/// Set once anything is in [`DYNAMIC`], so lookups of unknown names skip the map until then.
static HAS_DYNAMIC: AtomicBool = AtomicBool::new(false);
/// Longest name a registered command may have (lookups lowercase into a buffer this big).
const MAX_DYNAMIC_NAME: usize = 64;

/// Compare a lowercase table name with a name in any case.
#[inline]
fn cmp_ci(table_name: &[u8], name: &[u8]) -> Ordering {
    for (a, b) in table_name.iter().zip(name) {
        match a.cmp(&b.to_ascii_lowercase()) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    table_name.len().cmp(&name.len())
}

/// A top-level command by name, any case.
/// Longest command name in the static table (checked when the index is built).
const MAX_STATIC_NAME: usize = 32;

/// The static table's top-level commands by lowercase name: one hash and one compare per
/// lookup instead of a binary search with case-folding compares.
static INDEX: std::sync::LazyLock<rustc_hash::FxHashMap<&'static [u8], &'static Command>> =
    std::sync::LazyLock::new(|| {
        table::COMMANDS
            .iter()
            .filter(|c| c.name.len() <= MAX_STATIC_NAME)
            .map(|c| (c.name.as_bytes(), c))
            .collect()
    });

fn lookup_top(name: &[u8]) -> Option<&'static Command> {
    if name.len() <= MAX_STATIC_NAME {
        let mut buf = [0u8; MAX_STATIC_NAME];
        if let Some(lower) = buf.get_mut(..name.len()) {
            for (d, s) in lower.iter_mut().zip(name) {
                *d = s.to_ascii_lowercase();
            }
            if let Some(c) = INDEX.get(&*lower) {
                return Some(c);
            }
        }
    }
    if !HAS_DYNAMIC.load(AtomicOrdering::Acquire) || name.len() > MAX_DYNAMIC_NAME {
        return None;
    }
    let mut buf = [0u8; MAX_DYNAMIC_NAME];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    DYNAMIC.get(&*lower).map(|r| *r)
}

/// A subcommand of `container` by its own name (`setname`), any case.
fn lookup_sub(container: &'static Command, sub: &[u8]) -> Option<&'static Command> {
    let skip = container.name.len() + 1;
    let subs = container.subcommands;
    let i = subs
        .binary_search_by(|c| cmp_ci(c.name.as_bytes().get(skip..).unwrap_or_default(), sub))
        .ok()?;
    subs.get(i)
}

/// Resolve a request's command (and its subcommand from arg 1 for container commands such
/// as CLIENT, CONFIG, OBJECT, XINFO, MEMORY, …), case-insensitively. None: unknown.
///
/// As in Redis, a container named alone resolves to the container itself (whose arity
/// then rejects it), and an unknown subcommand is an unknown command.
pub fn lookup(req: &Request) -> Option<&'static Command> {
    let top = lookup_top(req.arg(0))?;
    if top.subcommands.is_empty() || req.argc() < 2 {
        return Some(top);
    }
    lookup_sub(top, req.arg(1))
}

/// Look up by name only ("get", "GET", "client|setname").
pub fn lookup_name(name: &[u8]) -> Option<&'static Command> {
    match memchr::memchr(b'|', name) {
        None => lookup_top(name),
        Some(bar) => {
            let top = lookup_top(name.get(..bar)?)?;
            lookup_sub(top, name.get(bar + 1..)?)
        }
    }
}

/// Names (lowercase) of every command known, for config validation: whether `name`, in
/// any case, is one of them (`"client|kill"` names a subcommand).
pub fn is_known_name(name: &str) -> bool {
    lookup_name(name.as_bytes()).is_some()
}

/// Whether argc fits the command's arity (Redis: arity > 0 exact, < 0 at least -arity).
#[inline]
pub fn arity_ok(cmd: &Command, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(cmd.arity);
    !((arity > 0 && arity != argc) || argc < -arity)
}

/// Whether this request blocks on the server: commands with the BLOCKING flag (BLPOP,
/// BRPOP, BLMOVE, BLMPOP, BZPOPMIN/MAX, BZMPOP, …), WAIT and WAITAOF (which block the
/// connection though Redis gives them no flag), and XREAD/XREADGROUP only when they carry
/// BLOCK.
pub fn is_blocking(cmd: &Command, req: &Request) -> bool {
    if cmd.flags.contains(Flags::BLOCKING) {
        match cmd.name {
            "xread" | "xreadgroup" => xread_has_block(req),
            _ => true,
        }
    } else {
        matches!(cmd.name, "wait" | "waitaof")
    }
}

/// Whether an XREAD/XREADGROUP carries a BLOCK option, read the way `xreadCommand` reads
/// its options (up to `STREAMS`).
fn xread_has_block(req: &Request) -> bool {
    let argc = req.argc();
    let mut i = 1;
    while i < argc {
        let more = argc - i - 1;
        let a = req.arg(i);
        if a.eq_ignore_ascii_case(b"block") && more > 0 {
            return true;
        } else if a.eq_ignore_ascii_case(b"count") && more > 0 {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"group") && more >= 2 {
            i += 2;
        } else if !a.eq_ignore_ascii_case(b"noack") {
            // STREAMS, or a syntax error: no BLOCK before it.
            return false;
        }
        i += 1;
    }
    false
}

/// Register commands the static table does not know (module commands) from a `COMMAND
/// INFO` reply, at runtime (stored in a `dashmap::DashMap`; entries are leaked to
/// `&'static` — this runs once at start). Returns how many were added.
///
/// Entries the table already knows, and nil entries (names the server does not know), are
/// skipped; flags this version does not know are ignored.
pub fn register_from_command_info(reply: &OwnedFrame) -> Result<usize, CommandInfoError> {
    let infos = info::parse_reply(reply)?;
    let mut added = 0;
    for ci in infos {
        if lookup_name(ci.name.as_bytes()).is_some() {
            continue;
        }
        if ci.name.len() > MAX_DYNAMIC_NAME {
            tracing::warn!(command = %ci.name, "command name too long to register; treated as unknown");
            continue;
        }
        let key: Box<[u8]> = ci.name.as_bytes().into();
        let cmd: &'static Command = Box::leak(Box::new(ci.leak()));
        DYNAMIC.insert(key, cmd);
        HAS_DYNAMIC.store(true, AtomicOrdering::Release);
        added += 1;
    }
    Ok(added)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests;
