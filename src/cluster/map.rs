//! Redis Cluster routing data, pure (no I/O): the hash slot of a key ([`key_slot`]),
//! which shard — a master and its replicas — serves each of the [`SLOTS`] slots
//! ([`ClusterMap`], read from a `CLUSTER SHARDS` reply of Redis 7 or a `CLUSTER SLOTS`
//! reply of older servers), the `MOVED` and `ASK` redirections a node answers with
//! ([`parse_redirect`]), and the slot a request's keys fall in ([`request_slot`]).
//!
//! Addresses are `host:port` as elsewhere in the crate, an IPv6 address in brackets
//! (`[::1]:7000`); the host is the node's preferred endpoint as the cluster announces it
//! (its IP, or its hostname under `cluster-preferred-endpoint-type hostname`), which is
//! also the host its redirections name. A redirection writes an IPv6 address without
//! brackets (`MOVED 3999 ::1:7000`); [`split_addr`] and [`ClusterMap::shard_of_addr`]
//! read both forms. An empty host (`:7000`) is Redis's "unknown endpoint": the node
//! that answered, at that port; the caller puts in the host it asked.
//!
//! The functions that run per request ([`key_slot`], [`parse_redirect`],
//! [`request_slot`], [`ClusterMap::shard_of_slot`], [`ClusterMap::shard_of_addr`],
//! [`split_addr`]) neither allocate nor panic; building a map does both kinds of
//! checking once, off the hot path.
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::fmt;

use crate::commands::{self, BeginSearch, Command, FindKeys, Flags, KeyFlags};
use crate::protocol::{parse_int, Request};
use crate::reply::Decoded;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// What [`ClusterMap`]'s slot table holds for a slot no shard serves.
const UNASSIGNED: u16 = u16::MAX;

/// The hash slot of `key`, as Redis's `keyHashSlot` computes it: CRC16 (XMODEM) modulo
/// [`SLOTS`] of the key, or of its hash tag — the bytes between the first `{` and the
/// first `}` after it, when there is at least one byte between them.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

/// One shard: a master, its replicas and the slots it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// The master's address, `host:port`.
    pub master: String,
    /// The replicas' addresses, sorted (the order servers list them in varies).
    pub replicas: Vec<String>,
    /// The slots it serves, as inclusive ranges, sorted and with adjacent ranges merged.
    pub slots: Vec<(u16, u16)>,
}

/// Which shard serves each slot of a cluster.
///
/// Built by [`ClusterMap::new`], [`ClusterMap::from_shards`] or
/// [`ClusterMap::from_slots`], which order the shards by their first slot (shards
/// without slots last, by master address); the slot table is derived from `shards`
/// then, so change a map by building a new one.
#[derive(Clone)]
pub struct ClusterMap {
    /// The shards, ordered by their first slot.
    pub shards: Vec<ShardSpec>,
    /// For each slot, the index of its shard in `shards`, or [`UNASSIGNED`].
    slot_owner: Box<[u16; SLOTS]>,
}

impl fmt::Debug for ClusterMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The slot table follows from the shards; 16384 numbers would drown them.
        f.debug_struct("ClusterMap")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl ClusterMap {
    /// A map of these shards: their slot ranges are checked (within `0..SLOTS`, start
    /// not after end, no slot in two shards), sorted and merged, their replicas sorted
    /// and deduplicated, and the shards ordered by first slot. Two shards may not have
    /// the same master.
    pub fn new(mut shards: Vec<ShardSpec>) -> Result<ClusterMap, String> {
        if shards.len() >= usize::from(UNASSIGNED) {
            return Err(format!("{} shards are too many", shards.len()));
        }
        for s in &mut shards {
            s.slots = normalized(&s.slots).map_err(|e| format!("master {}: {e}", s.master))?;
            s.replicas.sort_unstable();
            s.replicas.dedup();
        }
        shards.sort_by(|a, b| {
            first_slot(a)
                .cmp(&first_slot(b))
                .then_with(|| a.master.cmp(&b.master))
        });
        for (i, s) in shards.iter().enumerate() {
            if shards.iter().take(i).any(|o| o.master == s.master) {
                return Err(format!("master {} heads two shards", s.master));
            }
        }
        let mut slot_owner = Box::new([UNASSIGNED; SLOTS]);
        for (i, s) in shards.iter().enumerate() {
            let idx = u16::try_from(i).map_err(|_| "too many shards".to_string())?;
            for &(start, end) in &s.slots {
                for slot in start..=end {
                    let cell = slot_owner
                        .get_mut(usize::from(slot))
                        .ok_or_else(|| format!("slot {slot} is out of range"))?;
                    if *cell != UNASSIGNED {
                        let other = shards
                            .get(usize::from(*cell))
                            .map_or("?", |o| o.master.as_str());
                        return Err(format!(
                            "slot {slot} is served by both {other} and {}",
                            s.master
                        ));
                    }
                    *cell = idx;
                }
            }
        }
        Ok(ClusterMap { shards, slot_owner })
    }

    /// The map a `CLUSTER SHARDS` reply (Redis 7 and later) describes, RESP2 (each shard
    /// and node a flat `[field, value, …]` array) or RESP3 (maps).
    ///
    /// A node's host is its `endpoint`, or its `ip` where the endpoint is unknown (`?`
    /// or empty); its port is `tls-port` when `tls`, else `port`. Replicas whose
    /// `health` is not `online` (`fail`, `loading`) are left out. A shard is included
    /// only when its master's health is `online` (a shard whose master failed or is
    /// loading is left out whole, replicas and all, so its slots read as unassigned
    /// until a later reply shows the shard's new master); masters are never made up
    /// from replicas. Shards without slots (a new master before resharding) are kept:
    /// an `ASK` during a migration may name one.
    pub fn from_shards(reply: &Decoded, tls: bool) -> Result<ClusterMap, String> {
        const WHAT: &str = "CLUSTER SHARDS";
        let list = elements(reply, WHAT)?;
        let mut shards = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            if let Some(s) =
                shard_entry(entry, tls).map_err(|e| format!("{WHAT}: shard {i}: {e}"))?
            {
                shards.push(s);
            }
        }
        ClusterMap::new(shards).map_err(|e| format!("{WHAT}: {e}"))
    }

    /// The map a `CLUSTER SLOTS` reply (the fallback for Redis 6 and older) describes:
    /// entries `[start, end, master, replica…]`, each node `[host, port, id?,
    /// metadata?]`, grouped into shards by master address.
    ///
    /// A node's host is the first element, or the `ip` of its metadata where the first
    /// is unknown (null, `?` or empty). The server reports the port of the connection
    /// it was asked on (its TLS port to a TLS client) and leaves failed replicas out
    /// itself; it reports no health, so loading replicas are included, and masters
    /// without slots are absent.
    pub fn from_slots(reply: &Decoded) -> Result<ClusterMap, String> {
        const WHAT: &str = "CLUSTER SLOTS";
        let list = elements(reply, WHAT)?;
        let mut shards: Vec<ShardSpec> = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let err = |e: String| format!("{WHAT}: entry {i}: {e}");
            let Decoded::Array(parts) = entry else {
                return Err(err("not an array".into()));
            };
            let [start, end, master, replicas @ ..] = parts.as_slice() else {
                return Err(err("fewer than three elements".into()));
            };
            let range = slot_range(start, end).map_err(err)?;
            let master = slots_node_addr(master).map_err(err)?;
            let pos = shards
                .iter()
                .position(|s| s.master == master)
                .unwrap_or_else(|| {
                    shards.push(ShardSpec {
                        master,
                        replicas: Vec::new(),
                        slots: Vec::new(),
                    });
                    shards.len() - 1
                });
            if let Some(shard) = shards.get_mut(pos) {
                shard.slots.push(range);
                for r in replicas {
                    shard.replicas.push(slots_node_addr(r).map_err(err)?);
                }
            }
        }
        ClusterMap::new(shards).map_err(|e| format!("{WHAT}: {e}"))
    }

    /// The index in [`ClusterMap::shards`] of the shard serving `slot`; `None` when no
    /// shard serves it (or `slot` is not below [`SLOTS`]).
    #[inline]
    pub fn shard_of_slot(&self, slot: u16) -> Option<usize> {
        self.slot_owner
            .get(usize::from(slot))
            .copied()
            .filter(|&o| o != UNASSIGNED)
            .map(usize::from)
    }

    /// The index of the shard that has `addr` as its master or one of its replicas.
    /// `addr` may write an IPv6 host with or without brackets (as a redirection does);
    /// hosts compare case-insensitively.
    pub fn shard_of_addr(&self, addr: &str) -> Option<usize> {
        let (host, port) = split_addr(addr)?;
        let is_it = |a: &String| {
            split_addr(a).is_some_and(|(h, p)| p == port && h.eq_ignore_ascii_case(host))
        };
        self.shards
            .iter()
            .position(|s| is_it(&s.master) || s.replicas.iter().any(is_it))
    }

    /// Whether `other` has the same shards: the same masters, replicas and slots.
    pub fn same_as(&self, other: &ClusterMap) -> bool {
        self.shards == other.shards
    }

    /// Whether every slot is served by some shard.
    pub fn covers_all(&self) -> bool {
        self.slot_owner.iter().all(|&o| o != UNASSIGNED)
    }
}

/// A shard's first slot, for ordering (shards without slots sort last).
fn first_slot(s: &ShardSpec) -> u32 {
    s.slots
        .iter()
        .map(|&(start, _)| u32::from(start))
        .min()
        .unwrap_or(u32::MAX)
}

/// Slot ranges checked, sorted, and merged where they touch or overlap.
fn normalized(ranges: &[(u16, u16)]) -> Result<Vec<(u16, u16)>, String> {
    let mut sorted = ranges.to_vec();
    for &(start, end) in &sorted {
        check_range(i64::from(start), i64::from(end))?;
    }
    sorted.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match out.last_mut() {
            Some(last) if u32::from(start) <= u32::from(last.1) + 1 => {
                last.1 = last.1.max(end);
            }
            _ => out.push((start, end)),
        }
    }
    Ok(out)
}

/// A slot range `start..=end` if it is one: both within `0..SLOTS`, start not after end.
fn check_range(start: i64, end: i64) -> Result<(u16, u16), String> {
    let slot = |n: i64| {
        u16::try_from(n)
            .ok()
            .filter(|&s| usize::from(s) < SLOTS)
            .ok_or_else(|| format!("slot {n} is out of range 0-{}", SLOTS - 1))
    };
    let (s, e) = (slot(start)?, slot(end)?);
    if s > e {
        return Err(format!("slot range {s}-{e} ends before it starts"));
    }
    Ok((s, e))
}

/// A slot range from two reply elements.
fn slot_range(start: &Decoded, end: &Decoded) -> Result<(u16, u16), String> {
    let int = |d: &Decoded| {
        d.as_int()
            .ok_or_else(|| format!("slot {d:?} is not a number"))
    };
    check_range(int(start)?, int(end)?)
}

/// The elements of a top-level reply, or why there are none.
fn elements<'a>(reply: &'a Decoded, what: &str) -> Result<&'a [Decoded], String> {
    match reply {
        Decoded::Array(v) => Ok(v),
        Decoded::Error(e) => Err(format!("{what}: {e}")),
        other => Err(format!("{what}: the reply is not an array: {other:?}")),
    }
}

/// A string element as UTF-8 text.
fn text(d: &Decoded) -> Option<&str> {
    match d {
        Decoded::Str(b) => std::str::from_utf8(b).ok(),
        Decoded::Other(s) => Some(s),
        _ => None,
    }
}

/// The value of field `name` of a RESP3 map or a RESP2 flat `[field, value, …]` array.
fn field<'a>(d: &'a Decoded, name: &str) -> Option<&'a Decoded> {
    let is_name = |k: &Decoded| text(k) == Some(name);
    match d {
        Decoded::Map(kv) => kv.iter().find(|(k, _)| is_name(k)).map(|(_, v)| v),
        Decoded::Array(v) => v.chunks_exact(2).find_map(|pair| match pair {
            [k, value] if is_name(k) => Some(value),
            _ => None,
        }),
        _ => None,
    }
}

/// Whether a reported host names a host (Redis writes `?` or nothing when it does not
/// know one).
fn known_host(h: &str) -> bool {
    !h.is_empty() && h != "?"
}

/// `host:port`, with brackets around an IPv6 host.
fn join_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A port number from a reply element (1 to 65535).
fn port_of(d: &Decoded) -> Option<u16> {
    d.as_int()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
}

/// One entry of a `CLUSTER SHARDS` reply: its shard, or `None` when it has no master
/// that is online.
fn shard_entry(entry: &Decoded, tls: bool) -> Result<Option<ShardSpec>, String> {
    let slots = match field(entry, "slots") {
        Some(Decoded::Array(v)) => v,
        Some(other) => return Err(format!("\"slots\" is not an array: {other:?}")),
        None => return Err("no \"slots\" field".into()),
    };
    if slots.len() % 2 != 0 {
        return Err(format!("\"slots\" has an odd length, {}", slots.len()));
    }
    let mut ranges = Vec::with_capacity(slots.len() / 2);
    for pair in slots.chunks_exact(2) {
        if let [start, end] = pair {
            ranges.push(slot_range(start, end)?);
        }
    }
    let nodes = match field(entry, "nodes") {
        Some(Decoded::Array(v)) => v,
        Some(other) => return Err(format!("\"nodes\" is not an array: {other:?}")),
        None => return Err("no \"nodes\" field".into()),
    };
    let mut master: Option<String> = None;
    let mut replicas = Vec::new();
    for node in nodes {
        let id = field(node, "id").and_then(text).unwrap_or("?");
        let role = field(node, "role")
            .and_then(text)
            .ok_or_else(|| format!("node {id} has no role"))?;
        // Redis 7.0 and later report health; a node without it counts as online.
        let online = field(node, "health")
            .and_then(text)
            .is_none_or(|h| h == "online");
        if !online {
            continue;
        }
        match role {
            "master" => {
                let addr = shards_node_addr(node, id, tls)?;
                if let Some(m) = &master {
                    return Err(format!("two masters, {m} and {addr}"));
                }
                master = Some(addr);
            }
            "replica" | "slave" => replicas.push(shards_node_addr(node, id, tls)?),
            _ => {}
        }
    }
    Ok(master.map(|master| ShardSpec {
        master,
        replicas,
        slots: ranges,
    }))
}

/// The address of a node of a `CLUSTER SHARDS` reply.
fn shards_node_addr(node: &Decoded, id: &str, tls: bool) -> Result<String, String> {
    let port_field = if tls { "tls-port" } else { "port" };
    let port = field(node, port_field)
        .and_then(port_of)
        .ok_or_else(|| format!("node {id} has no {port_field}"))?;
    let host = [field(node, "endpoint"), field(node, "ip")]
        .into_iter()
        .flatten()
        .filter_map(text)
        .find(|h| known_host(h))
        .unwrap_or_default();
    Ok(join_addr(host, port))
}

/// The address of a node of a `CLUSTER SLOTS` entry: `[host, port, id?, metadata?]`.
fn slots_node_addr(node: &Decoded) -> Result<String, String> {
    let Decoded::Array(parts) = node else {
        return Err(format!("a node is not an array: {node:?}"));
    };
    let [host, port, rest @ ..] = parts.as_slice() else {
        return Err("a node has no port".into());
    };
    let port = port_of(port).ok_or_else(|| format!("port {port:?} is not a port"))?;
    let host = text(host)
        .filter(|h| known_host(h))
        .or_else(|| {
            rest.get(1)
                .and_then(|meta| field(meta, "ip"))
                .and_then(text)
                .filter(|h| known_host(h))
        })
        .unwrap_or_default();
    Ok(join_addr(host, port))
}

/// The host (without the brackets of an IPv6 address) and port of `host:port`, split
/// at the last colon, so that an IPv6 host may be written with or without brackets
/// (`[::1]:7000`, `::1:7000`). `None` when there is no colon or the port is not a
/// number from 0 to 65535. The host may be empty.
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port))
}

/// A cluster redirection: where the node that answered says a slot is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect<'a> {
    /// `MOVED slot addr`: the slot is served by `addr` from now on (refresh the map).
    Moved {
        /// The slot of the request's keys.
        slot: u16,
        /// The node that serves it, as Redis wrote it (`host:port`; an IPv6 host
        /// without brackets; an empty host for the node that answered).
        addr: &'a str,
    },
    /// `ASK slot addr`: the slot is migrating; send this one request to `addr`, after
    /// `ASKING`.
    Ask {
        /// The slot of the request's keys.
        slot: u16,
        /// The node to ask, written as for [`Redirect::Moved`].
        addr: &'a str,
    },
}

impl<'a> Redirect<'a> {
    /// The slot the redirection is for.
    #[inline]
    pub fn slot(&self) -> u16 {
        match *self {
            Redirect::Moved { slot, .. } | Redirect::Ask { slot, .. } => slot,
        }
    }

    /// The address it redirects to, as Redis wrote it.
    #[inline]
    pub fn addr(&self) -> &'a str {
        match *self {
            Redirect::Moved { addr, .. } | Redirect::Ask { addr, .. } => addr,
        }
    }
}

/// The redirection an error reply carries, if it is one: `-MOVED 3999 127.0.0.1:6381`
/// or `-ASK 3999 127.0.0.1:6381`, with or without the leading `-` and the trailing
/// CRLF. The slot must be below [`SLOTS`] and the address end in `:port`
/// ([`split_addr`]); anything else (another error, extra words) is `None`.
pub fn parse_redirect(error_line: &[u8]) -> Option<Redirect<'_>> {
    let line = error_line.strip_prefix(b"-").unwrap_or(error_line);
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    let (ask, rest) = if let Some(rest) = line.strip_prefix(b"MOVED ") {
        (false, rest)
    } else if let Some(rest) = line.strip_prefix(b"ASK ") {
        (true, rest)
    } else {
        return None;
    };
    let space = memchr::memchr(b' ', rest)?;
    let slot = parse_int(rest.get(..space)?)?;
    let slot = u16::try_from(slot)
        .ok()
        .filter(|&s| usize::from(s) < SLOTS)?;
    let addr = std::str::from_utf8(rest.get(space + 1..)?).ok()?;
    if addr.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    split_addr(addr)?;
    Some(if ask {
        Redirect::Ask { slot, addr }
    } else {
        Redirect::Moved { slot, addr }
    })
}

/// The slots a request's keys fall in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slots {
    /// It has no keys: any node may serve it.
    None,
    /// All its keys are in this slot.
    One(u16),
    /// Its keys are in more than one slot (Redis answers `CROSSSLOT`).
    Cross,
}

impl Slots {
    /// These slots and one more.
    #[inline]
    fn with(self, slot: u16) -> Slots {
        match self {
            Slots::None => Slots::One(slot),
            Slots::One(s) if s == slot => self,
            Slots::One(_) | Slots::Cross => Slots::Cross,
        }
    }
}

/// The slots of `req`'s keys, found as [`commands::for_each_key`] finds them, plus the
/// channels of the sharded pub/sub commands (`SPUBLISH`, `SSUBSCRIBE`,
/// `SUNSUBSCRIBE`): their key specs mark them as not keys, but Redis Cluster routes
/// them by slot as it routes keys. No allocation.
pub fn request_slot(cmd: &Command, req: &Request) -> Slots {
    let mut slots = Slots::None;
    commands::for_each_key(cmd, req, |i| slots = slots.with(key_slot(req.arg(i))));
    for_each_shard_channel(cmd, req, |i| slots = slots.with(key_slot(req.arg(i))));
    slots
}

/// Call `f` with the argument index of each shard channel of a pub/sub command: the
/// arguments its `not_key` key specs select (an index and a range, the form Redis's
/// sharded pub/sub commands have; other forms are skipped).
fn for_each_shard_channel(cmd: &Command, req: &Request, mut f: impl FnMut(usize)) {
    if !cmd.flags.contains(Flags::PUBSUB) {
        return;
    }
    let argc = i64::try_from(req.argc()).unwrap_or(i64::MAX);
    for spec in cmd.key_specs {
        if !spec.flags.contains(KeyFlags::NOT_KEY) {
            continue;
        }
        let (
            BeginSearch::Index(first),
            FindKeys::Range {
                lastkey,
                keystep,
                limit: 0,
            },
        ) = (spec.begin_search, spec.find_keys)
        else {
            continue;
        };
        let first = i64::from(first);
        let last = if lastkey >= 0 {
            first + i64::from(lastkey)
        } else {
            argc + i64::from(lastkey)
        };
        let step = i64::from(keystep);
        if first < 1 || step < 1 || last < first || last >= argc {
            continue;
        }
        let mut i = first;
        while i <= last {
            if let Ok(i) = usize::try_from(i) {
                f(i);
            }
            i += step;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::protocol::OwnedRequest;
    use proptest::prelude::*;

    // Replies of a real cluster (Redis 7.0.15; ports replaced by 70xx, node ids kept):
    // three masters with a replica each (BASIC); then, after moving 100 slots from the
    // third master to the first and stopping the second master's replica, which the
    // cluster marked as failed (MOVED); with `cluster-preferred-endpoint-type`
    // `hostname` after the second master announced the hostname `node2.example`
    // (HOSTNAME), and `unknown-endpoint` (UNKNOWN); two IPv6 masters, one without slots
    // (V6); and a lone TLS node (`tls-cluster yes`, plain port 7021, TLS port 7022) that
    // knows no IP of its own, asked over TLS (TLS).
    const SHARDS_BASIC_RESP2: &[u8] = b"\
        *3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\n\
        id\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n$4\r\nport\r\n:7001\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n\
        $6\r\nmaster\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n*14\r\n$2\r\nid\r\n$40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n\
        $4\r\nport\r\n:7005\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:350\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\n\
        nodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n\
        5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n$4\r\nport\r\n:7002\r\n$2\r\nip\r\n\
        $9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\n\
        master\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
        *14\r\n$2\r\nid\r\n$40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n$4\r\nport\r\n\
        :7006\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\n\
        role\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n\
        *14\r\n$2\r\nid\r\n$40\r\naa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n$4\r\nport\r\n\
        :7003\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\n\
        role\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n*14\r\n$2\r\nid\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n\
        $4\r\nport\r\n:7004\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:350\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n";

    const SHARDS_BASIC_RESP3: &[u8] = b"\
        *3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\n\
        id\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n$4\r\nport\r\n:7001\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n\
        $6\r\nmaster\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n%7\r\n$2\r\nid\r\n$40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n\
        $4\r\nport\r\n:7005\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:350\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\n\
        nodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n\
        $4\r\nport\r\n:7002\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:350\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n\
        f67166ded1bd30d23bdab381e519c85276494784\r\n$4\r\nport\r\n:7006\r\n$2\r\nip\r\n\
        $9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
        %2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\n\
        id\r\n$40\r\naa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n$4\r\nport\r\n:7003\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n\
        $6\r\nmaster\r\n$18\r\nreplication-offset\r\n:350\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n%7\r\n$2\r\nid\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n\
        $4\r\nport\r\n:7004\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:350\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n";

    const SLOTS_BASIC_RESP2: &[u8] = b"\
        *3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7005\r\n\
        $40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7002\r\n$40\r\n\
        5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7006\r\n\
        $40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n*0\r\n*4\r\n:10923\r\n:16383\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7004\r\n\
        $40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n*0\r\n";

    const SLOTS_BASIC_RESP3: &[u8] = b"\
        *3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7005\r\n\
        $40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n%0\r\n*4\r\n:5461\r\n:10922\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7002\r\n$40\r\n\
        5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7006\r\n\
        $40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n%0\r\n*4\r\n:10923\r\n:16383\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7004\r\n\
        $40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n%0\r\n";

    const SHARDS_MOVED_RESP2: &[u8] = b"\
        *3\r\n*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:5460\r\n:10923\r\n:11022\r\n$5\r\nnodes\r\n\
        *2\r\n*14\r\n$2\r\nid\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n$4\r\n\
        port\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:434\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n\
        6bec2cb637f8ea28772d974ece227ba955472d83\r\n$4\r\nport\r\n:7005\r\n$2\r\nip\r\n\
        $9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:434\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
        *4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\n\
        id\r\n$40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n$4\r\nport\r\n:7002\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$8\r\n\
        hostname\r\n$13\r\nnode2.example\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n\
        replication-offset\r\n:364\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n\
        $40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n$4\r\nport\r\n:7006\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:364\r\n$6\r\nhealth\r\n$4\r\nfail\r\n*4\r\n\
        $5\r\nslots\r\n*2\r\n:11023\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n\
        $40\r\naa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n$4\r\nport\r\n:7003\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\n\
        master\r\n$18\r\nreplication-offset\r\n:434\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
        *14\r\n$2\r\nid\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n$4\r\nport\r\n\
        :7004\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\n\
        role\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:420\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n";

    const SHARDS_MOVED_RESP3: &[u8] = b"\
        *3\r\n%2\r\n$5\r\nslots\r\n*4\r\n:0\r\n:5460\r\n:10923\r\n:11022\r\n$5\r\nnodes\r\n\
        *2\r\n%7\r\n$2\r\nid\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n$4\r\n\
        port\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n\
        127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:434\r\n\
        $6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n\
        6bec2cb637f8ea28772d974ece227ba955472d83\r\n$4\r\nport\r\n:7005\r\n$2\r\nip\r\n\
        $9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:434\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
        %2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\n\
        id\r\n$40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n$4\r\nport\r\n:7002\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$8\r\n\
        hostname\r\n$13\r\nnode2.example\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n\
        replication-offset\r\n:364\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n\
        $40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n$4\r\nport\r\n:7006\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:364\r\n$6\r\nhealth\r\n$4\r\nfail\r\n%2\r\n\
        $5\r\nslots\r\n*2\r\n:11023\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n\
        $40\r\naa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n$4\r\nport\r\n:7003\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\n\
        master\r\n$18\r\nreplication-offset\r\n:434\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
        %7\r\n$2\r\nid\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n$4\r\nport\r\n\
        :7004\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\n\
        role\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:420\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n";

    const SLOTS_MOVED_RESP2: &[u8] = b"\
        *4\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7005\r\n\
        $40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n*0\r\n*3\r\n:5461\r\n:10922\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7002\r\n$40\r\n\
        5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n*2\r\n$8\r\nhostname\r\n$13\r\n\
        node2.example\r\n*4\r\n:10923\r\n:11022\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7005\r\n\
        $40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n*0\r\n*4\r\n:11023\r\n:16383\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7004\r\n\
        $40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n*0\r\n";

    const SLOTS_MOVED_RESP3: &[u8] = b"\
        *4\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7005\r\n\
        $40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n%0\r\n*3\r\n:5461\r\n:10922\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7002\r\n$40\r\n\
        5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n%1\r\n$8\r\nhostname\r\n$13\r\n\
        node2.example\r\n*4\r\n:10923\r\n:11022\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7005\r\n\
        $40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n%0\r\n*4\r\n:11023\r\n:16383\r\n\
        *4\r\n$9\r\n127.0.0.1\r\n:7003\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7004\r\n\
        $40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n%0\r\n";

    const SHARDS_HOSTNAME_RESP2: &[u8] = b"\
        *3\r\n*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:5460\r\n:10923\r\n:11022\r\n$5\r\nnodes\r\n\
        *2\r\n*14\r\n$2\r\nid\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n$4\r\n\
        port\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\n\
        role\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n*14\r\n$2\r\nid\r\n$40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n\
        $4\r\nport\r\n:7005\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n\
        $4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n\
        $6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n\
        *16\r\n$2\r\nid\r\n$40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n$4\r\nport\r\n\
        :7002\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$13\r\nnode2.example\r\n\
        $8\r\nhostname\r\n$13\r\nnode2.example\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n\
        replication-offset\r\n:364\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n\
        $40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n$4\r\nport\r\n:7006\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:364\r\n$6\r\nhealth\r\n$4\r\nfail\r\n*4\r\n\
        $5\r\nslots\r\n*2\r\n:11023\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n\
        $40\r\naa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n$4\r\nport\r\n:7003\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
        $18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\n\
        id\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n$4\r\nport\r\n:7004\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$7\r\n\
        replica\r\n$18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

    const SLOTS_HOSTNAME_RESP2: &[u8] = b"\
        *4\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$1\r\n?\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n\
        *4\r\n$1\r\n?\r\n:7005\r\n$40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n*2\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n*3\r\n:5461\r\n:10922\r\n*4\r\n$13\r\n\
        node2.example\r\n:7002\r\n$40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n*2\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n*4\r\n:10923\r\n:11022\r\n*4\r\n$1\r\n?\r\n:7001\r\n\
        $40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n*2\r\n$2\r\nip\r\n$9\r\n\
        127.0.0.1\r\n*4\r\n$1\r\n?\r\n:7005\r\n$40\r\n\
        6bec2cb637f8ea28772d974ece227ba955472d83\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n\
        *4\r\n:11023\r\n:16383\r\n*4\r\n$1\r\n?\r\n:7003\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n\
        *4\r\n$1\r\n?\r\n:7004\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n*2\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n";

    const SHARDS_UNKNOWN_RESP2: &[u8] = b"\
        *3\r\n*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:5460\r\n:10923\r\n:11022\r\n$5\r\nnodes\r\n\
        *2\r\n*14\r\n$2\r\nid\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n$4\r\n\
        port\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\n\
        role\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n*14\r\n$2\r\nid\r\n$40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n\
        $4\r\nport\r\n:7005\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n\
        $4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n\
        $6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n\
        *16\r\n$2\r\nid\r\n$40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n$4\r\nport\r\n\
        :7002\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\n\
        hostname\r\n$13\r\nnode2.example\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n\
        replication-offset\r\n:364\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n\
        $40\r\nf67166ded1bd30d23bdab381e519c85276494784\r\n$4\r\nport\r\n:7006\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n\
        $18\r\nreplication-offset\r\n:364\r\n$6\r\nhealth\r\n$4\r\nfail\r\n*4\r\n$5\r\n\
        slots\r\n*2\r\n:11023\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n$4\r\nport\r\n:7003\r\n$2\r\nip\r\n\
        $9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n\
        replication-offset\r\n:504\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n\
        $40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n$4\r\nport\r\n:7004\r\n$2\r\n\
        ip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n\
        $18\r\nreplication-offset\r\n:504\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

    const SLOTS_UNKNOWN_RESP2: &[u8] = b"\
        *4\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$-1\r\n:7001\r\n$40\r\n\
        64c7f2f177e6115784f6e034555caa3974dc1561\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n\
        *4\r\n$-1\r\n:7005\r\n$40\r\n6bec2cb637f8ea28772d974ece227ba955472d83\r\n*2\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n*3\r\n:5461\r\n:10922\r\n*4\r\n$-1\r\n:7002\r\n\
        $40\r\n5bd02dd83c2dd16342bd35964bf25f8684d1020f\r\n*4\r\n$2\r\nip\r\n$9\r\n\
        127.0.0.1\r\n$8\r\nhostname\r\n$13\r\nnode2.example\r\n*4\r\n:10923\r\n:11022\r\n\
        *4\r\n$-1\r\n:7001\r\n$40\r\n64c7f2f177e6115784f6e034555caa3974dc1561\r\n*2\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n*4\r\n$-1\r\n:7005\r\n$40\r\n\
        6bec2cb637f8ea28772d974ece227ba955472d83\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n\
        *4\r\n:11023\r\n:16383\r\n*4\r\n$-1\r\n:7003\r\n$40\r\n\
        aa73242e6563461d242bba2f2f6e73fd68c0fb96\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n\
        *4\r\n$-1\r\n:7004\r\n$40\r\n5624c5701937e46530d41b479adcf986f50ea931\r\n*2\r\n\
        $2\r\nip\r\n$9\r\n127.0.0.1\r\n";

    const SHARDS_V6_RESP2: &[u8] = b"\
        *2\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\n\
        id\r\n$40\r\nfac1793905d56223c69ac04f58b9a205ee839e62\r\n$4\r\nport\r\n:7011\r\n\
        $2\r\nip\r\n$3\r\n::1\r\n$8\r\nendpoint\r\n$3\r\n::1\r\n$4\r\nrole\r\n$6\r\n\
        master\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n\
        $5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n$40\r\n\
        eac3ea7c2d4158db7047c159f3ae1de5b46fc61d\r\n$4\r\nport\r\n:7012\r\n$2\r\nip\r\n\
        $3\r\n::1\r\n$8\r\nendpoint\r\n$3\r\n::1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\n\
        replication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

    const SLOTS_V6_RESP2: &[u8] = b"\
        *1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$3\r\n::1\r\n:7011\r\n$40\r\n\
        fac1793905d56223c69ac04f58b9a205ee839e62\r\n*0\r\n";

    const SHARDS_TLS_RESP2: &[u8] = b"\
        *1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*16\r\n$2\r\n\
        id\r\n$40\r\n8fafb5a2f40234b0bbec6a81d873aabd43886822\r\n$4\r\nport\r\n:7021\r\n\
        $8\r\ntls-port\r\n:7022\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\n\
        role\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\n\
        online\r\n";

    const SLOTS_TLS_RESP2: &[u8] = b"\
        *1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:7022\r\n$40\r\n\
        8fafb5a2f40234b0bbec6a81d873aabd43886822\r\n*0\r\n";

    fn parse2(raw: &[u8]) -> Decoded {
        Decoded::parse(raw, false).unwrap()
    }

    fn parse3(raw: &[u8]) -> Decoded {
        Decoded::parse(raw, true).unwrap()
    }

    fn spec(master: &str, replicas: &[&str], slots: &[(u16, u16)]) -> ShardSpec {
        ShardSpec {
            master: master.into(),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            slots: slots.to_vec(),
        }
    }

    fn basic() -> Vec<ShardSpec> {
        vec![
            spec("127.0.0.1:7001", &["127.0.0.1:7005"], &[(0, 5460)]),
            spec("127.0.0.1:7002", &["127.0.0.1:7006"], &[(5461, 10922)]),
            spec("127.0.0.1:7003", &["127.0.0.1:7004"], &[(10923, 16383)]),
        ]
    }

    fn moved() -> Vec<ShardSpec> {
        vec![
            spec(
                "127.0.0.1:7001",
                &["127.0.0.1:7005"],
                &[(0, 5460), (10923, 11022)],
            ),
            spec("127.0.0.1:7002", &[], &[(5461, 10922)]),
            spec("127.0.0.1:7003", &["127.0.0.1:7004"], &[(11023, 16383)]),
        ]
    }

    /// Redis's `crc16` and `keyHashSlot`, written out.
    fn reference_slot(key: &[u8]) -> u16 {
        fn crc16(data: &[u8]) -> u16 {
            let mut crc: u16 = 0;
            for &b in data {
                crc ^= u16::from(b) << 8;
                for _ in 0..8 {
                    crc = if crc & 0x8000 != 0 {
                        (crc << 1) ^ 0x1021
                    } else {
                        crc << 1
                    };
                }
            }
            crc
        }
        let whole = crc16(key) & 0x3fff;
        let Some(s) = key.iter().position(|&c| c == b'{') else {
            return whole;
        };
        match key[s + 1..].iter().position(|&c| c == b'}') {
            None | Some(0) => whole,
            Some(e) => crc16(&key[s + 1..s + 1 + e]) & 0x3fff,
        }
    }

    #[test]
    fn key_slots_are_redis_s() {
        // `CLUSTER KEYSLOT` of each key, asked of the server.
        let cases: &[(&[u8], u16)] = &[
            (b"foo", 12182),
            (b"bar", 5061),
            (b"", 0),
            (b"{", 4092),
            (b"}", 12090),
            (b"{}", 15257),
            (b"}{", 12793),
            (b"{{}}", 4092),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"user1000", 3443),
            (b"{bar", 4015),
            (b"a{b", 13340),
            (b"a}b{c}", 7365),
            (b"{a}", 15495),
            (b"a", 15495),
            (b"\xff\x00\x01{\x80}", 4488),
            (b"123456789", 12739),
            (b"8xjx7vWrfPq54mKfFD3Y1CcjjofpnAcQ", 5458),
            (b"{}foo", 9500),
            (b"foo{", 7673),
            (b"foo}", 15679),
            (b"{{bar}", 4015),
        ];
        for &(key, slot) in cases {
            assert_eq!(key_slot(key), slot, "{:?}", String::from_utf8_lossy(key));
            assert_eq!(reference_slot(key), slot);
        }
        // "foo{}{bar}" hashes the whole key; "foo{{bar}}zap" hashes "{bar".
        assert_eq!(key_slot(b"foo{}{bar}"), reference_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(SLOTS, 16384);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        #[test]
        fn key_slot_is_keyhashslot(key in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), any::<u8>()], 0..24)) {
            prop_assert_eq!(key_slot(&key), reference_slot(&key));
        }
    }

    #[test]
    fn shards_and_slots_replies_of_a_cluster() {
        for (raw, resp3) in [(SHARDS_BASIC_RESP2, false), (SHARDS_BASIC_RESP3, true)] {
            let d = Decoded::parse(raw, resp3).unwrap();
            let m = ClusterMap::from_shards(&d, false).unwrap();
            assert_eq!(m.shards, basic(), "resp3: {resp3}");
            assert!(m.covers_all());
        }
        for (raw, resp3) in [(SLOTS_BASIC_RESP2, false), (SLOTS_BASIC_RESP3, true)] {
            let d = Decoded::parse(raw, resp3).unwrap();
            let m = ClusterMap::from_slots(&d).unwrap();
            assert_eq!(m.shards, basic(), "resp3: {resp3}");
        }
        let m = ClusterMap::from_shards(&parse3(SHARDS_BASIC_RESP3), false).unwrap();
        assert!(m.same_as(&ClusterMap::from_slots(&parse2(SLOTS_BASIC_RESP2)).unwrap()));
        // The server answered `MOVED 12182 127.0.0.1:7003` for foo.
        assert_eq!(m.shard_of_slot(key_slot(b"foo")), Some(2));
        assert_eq!(m.shard_of_slot(0), Some(0));
        assert_eq!(m.shard_of_slot(5460), Some(0));
        assert_eq!(m.shard_of_slot(5461), Some(1));
        assert_eq!(m.shard_of_slot(16383), Some(2));
        assert_eq!(m.shard_of_slot(16384), None);
        assert_eq!(m.shard_of_slot(u16::MAX), None);
        assert_eq!(m.shard_of_addr("127.0.0.1:7003"), Some(2));
        assert_eq!(m.shard_of_addr("127.0.0.1:7004"), Some(2));
        assert_eq!(m.shard_of_addr("127.0.0.1:7006"), Some(1));
        assert_eq!(m.shard_of_addr("127.0.0.1:7007"), None);
        assert_eq!(m.shard_of_addr("127.0.0.2:7001"), None);
        assert_eq!(m.shard_of_addr("nonsense"), None);
    }

    #[test]
    fn resharded_cluster_with_a_failed_replica() {
        let maps = [
            ClusterMap::from_shards(&parse2(SHARDS_MOVED_RESP2), false).unwrap(),
            ClusterMap::from_shards(&parse3(SHARDS_MOVED_RESP3), false).unwrap(),
            // CLUSTER SLOTS leaves the failed replica out itself.
            ClusterMap::from_slots(&parse2(SLOTS_MOVED_RESP2)).unwrap(),
            ClusterMap::from_slots(&parse3(SLOTS_MOVED_RESP3)).unwrap(),
        ];
        for m in &maps {
            assert_eq!(m.shards, moved());
            assert!(m.covers_all());
            assert!(m.same_as(&maps[0]));
            assert_eq!(m.shard_of_slot(10923), Some(0));
            assert_eq!(m.shard_of_slot(11022), Some(0));
            assert_eq!(m.shard_of_slot(11023), Some(2));
            // The failed replica is no longer part of the map.
            assert_eq!(m.shard_of_addr("127.0.0.1:7006"), None);
        }
        let before = ClusterMap::from_shards(&parse2(SHARDS_BASIC_RESP2), false).unwrap();
        assert!(!before.same_as(&maps[0]));
    }

    #[test]
    fn endpoint_types() {
        // `hostname`: the endpoint is the announced hostname, or `?` (then the IP).
        let m = ClusterMap::from_shards(&parse2(SHARDS_HOSTNAME_RESP2), false).unwrap();
        let mut want = moved();
        want[1].master = "node2.example:7002".into();
        assert_eq!(m.shards, want);
        let s = ClusterMap::from_slots(&parse2(SLOTS_HOSTNAME_RESP2)).unwrap();
        assert!(m.same_as(&s));
        assert_eq!(m.shard_of_addr("NODE2.example:7002"), Some(1));
        // `unknown-endpoint`: an empty endpoint, a null host in CLUSTER SLOTS.
        let m = ClusterMap::from_shards(&parse2(SHARDS_UNKNOWN_RESP2), false).unwrap();
        assert_eq!(m.shards, moved());
        let s = ClusterMap::from_slots(&parse2(SLOTS_UNKNOWN_RESP2)).unwrap();
        assert_eq!(s.shards, moved());
    }

    #[test]
    fn ipv6_and_a_master_without_slots() {
        let m = ClusterMap::from_shards(&parse2(SHARDS_V6_RESP2), false).unwrap();
        assert_eq!(
            m.shards,
            vec![
                spec("[::1]:7011", &[], &[(0, 16383)]),
                spec("[::1]:7012", &[], &[]),
            ]
        );
        assert!(m.covers_all());
        // A redirection writes the IPv6 address without brackets.
        assert_eq!(m.shard_of_addr("::1:7011"), Some(0));
        assert_eq!(m.shard_of_addr("[::1]:7012"), Some(1));
        assert_eq!(m.shard_of_addr("::1:7012"), Some(1));
        // CLUSTER SLOTS names only masters with slots.
        let s = ClusterMap::from_slots(&parse2(SLOTS_V6_RESP2)).unwrap();
        assert_eq!(s.shards, vec![spec("[::1]:7011", &[], &[(0, 16383)])]);
        assert!(!m.same_as(&s));
    }

    #[test]
    fn tls_ports() {
        let d = parse2(SHARDS_TLS_RESP2);
        // The lone node knows no IP of its own: the host is left for the caller.
        let plain = ClusterMap::from_shards(&d, false).unwrap();
        assert_eq!(plain.shards, vec![spec(":7021", &[], &[(0, 16383)])]);
        let tls = ClusterMap::from_shards(&d, true).unwrap();
        assert_eq!(tls.shards, vec![spec(":7022", &[], &[(0, 16383)])]);
        // CLUSTER SLOTS asked over TLS reports the TLS port.
        let s = ClusterMap::from_slots(&parse2(SLOTS_TLS_RESP2)).unwrap();
        assert!(s.same_as(&tls));
        // A node without a TLS port cannot be reached over TLS.
        let e = ClusterMap::from_shards(&parse2(SHARDS_BASIC_RESP2), true).unwrap_err();
        assert!(e.contains("has no tls-port"), "{e}");
    }

    /// The nodes of shard `shard` of a RESP3 CLUSTER SHARDS reply.
    fn nodes_mut(d: &mut Decoded, shard: usize) -> &mut Vec<Decoded> {
        let Decoded::Array(shards) = d else { panic!() };
        let Decoded::Map(kv) = &mut shards[shard] else {
            panic!()
        };
        let (_, Decoded::Array(nodes)) = kv
            .iter_mut()
            .find(|(k, _)| text(k) == Some("nodes"))
            .unwrap()
        else {
            panic!()
        };
        nodes
    }

    fn set(node: &mut Decoded, name: &str, value: &str) {
        let Decoded::Map(kv) = node else { panic!() };
        let v = Decoded::Str(bytes::Bytes::copy_from_slice(value.as_bytes()));
        match kv.iter_mut().find(|(k, _)| text(k) == Some(name)) {
            Some((_, old)) => *old = v,
            None => kv.push((Decoded::Str(name.to_string().into()), v)),
        }
    }

    #[test]
    fn health_decides_which_nodes_count() {
        let base = parse3(SHARDS_BASIC_RESP3);
        // Loading and failed replicas are left out.
        for health in ["loading", "fail"] {
            let mut d = base.clone();
            set(&mut nodes_mut(&mut d, 0)[1], "health", health);
            let m = ClusterMap::from_shards(&d, false).unwrap();
            let mut want = basic();
            want[0].replicas.clear();
            assert_eq!(m.shards, want, "{health}");
        }
        // A shard whose master is not online is left out whole.
        for health in ["loading", "fail"] {
            let mut d = base.clone();
            set(&mut nodes_mut(&mut d, 1)[0], "health", health);
            let m = ClusterMap::from_shards(&d, false).unwrap();
            let mut want = basic();
            want.remove(1);
            assert_eq!(m.shards, want, "{health}");
            assert!(!m.covers_all());
            assert_eq!(m.shard_of_slot(5461), None);
            assert_eq!(m.shard_of_slot(10923), Some(1));
            assert_eq!(m.shard_of_addr("127.0.0.1:7006"), None);
        }
        // Without a health field (before Redis 7.0) a node counts as online; the old
        // role name is understood.
        let mut d = base.clone();
        for n in nodes_mut(&mut d, 2) {
            let Decoded::Map(kv) = n else { panic!() };
            kv.retain(|(k, _)| text(k) != Some("health"));
        }
        set(&mut nodes_mut(&mut d, 2)[1], "role", "slave");
        assert_eq!(ClusterMap::from_shards(&d, false).unwrap().shards, basic());
        // The endpoint falls back on the IP.
        let mut d = base.clone();
        set(&mut nodes_mut(&mut d, 0)[0], "endpoint", "?");
        set(&mut nodes_mut(&mut d, 0)[0], "ip", "10.0.0.1");
        let m = ClusterMap::from_shards(&d, false).unwrap();
        assert_eq!(m.shards[0].master, "10.0.0.1:7001");
        // Two online masters in one shard.
        let mut d = base.clone();
        set(&mut nodes_mut(&mut d, 0)[1], "role", "master");
        let e = ClusterMap::from_shards(&d, false).unwrap_err();
        assert!(e.contains("shard 0: two masters"), "{e}");
    }

    #[test]
    fn bad_replies_are_errors() {
        let e = |d: Decoded| {
            (
                ClusterMap::from_shards(&d, false).unwrap_err(),
                ClusterMap::from_slots(&d).unwrap_err(),
            )
        };
        let (a, b) = e(parse2(
            b"-ERR This instance has cluster support disabled\r\n",
        ));
        assert_eq!(
            a,
            "CLUSTER SHARDS: ERR This instance has cluster support disabled"
        );
        assert_eq!(
            b,
            "CLUSTER SLOTS: ERR This instance has cluster support disabled"
        );
        assert!(e(parse2(b"+OK\r\n")).0.contains("not an array"));
        // An empty reply is an empty map.
        let m = ClusterMap::from_slots(&parse2(b"*0\r\n")).unwrap();
        assert!(m.shards.is_empty() && !m.covers_all());
        let slots = |raw: &[u8]| ClusterMap::from_slots(&parse2(raw)).unwrap_err();
        assert!(slots(b"*1\r\n*2\r\n:0\r\n:1\r\n").contains("fewer than three"));
        assert!(
            slots(b"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n")
                .contains("slot 16384 is out of range")
        );
        assert!(slots(b"*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\na\r\n:1\r\n")
            .contains("ends before it starts"));
        assert!(slots(b"*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n$1\r\na\r\n:0\r\n").contains("is not a port"));
        assert!(slots(b"*1\r\n*3\r\n:0\r\n:4\r\n*1\r\n$1\r\na\r\n").contains("no port"));
        // Two masters claiming one slot.
        let e = slots(
            b"*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:1\r\n*3\r\n:10\r\n:20\r\n*2\r\n$1\r\nb\r\n:1\r\n",
        );
        assert_eq!(e, "CLUSTER SLOTS: slot 10 is served by both a:1 and b:1");
        let shards = |raw: &[u8]| ClusterMap::from_shards(&parse2(raw), false).unwrap_err();
        assert!(shards(b"*1\r\n*2\r\n$5\r\nnodes\r\n*0\r\n").contains("no \"slots\""));
        assert!(shards(b"*1\r\n*2\r\n$5\r\nslots\r\n*1\r\n:0\r\n").contains("odd length"));
        assert!(shards(b"*1\r\n*2\r\n$5\r\nslots\r\n*0\r\n").contains("no \"nodes\""));
    }

    #[test]
    fn new_normalizes_and_orders() {
        let m = ClusterMap::new(vec![
            spec("c:1", &[], &[]),
            spec(
                "b:1",
                &["z:1", "y:1", "z:1"],
                &[(200, 300), (10, 20), (21, 30), (25, 40)],
            ),
            spec("a:1", &[], &[(100, 150)]),
        ])
        .unwrap();
        assert_eq!(
            m.shards,
            vec![
                spec("b:1", &["y:1", "z:1"], &[(10, 40), (200, 300)]),
                spec("a:1", &[], &[(100, 150)]),
                spec("c:1", &[], &[]),
            ]
        );
        assert_eq!(m.shard_of_slot(9), None);
        assert_eq!(m.shard_of_slot(10), Some(0));
        assert_eq!(m.shard_of_slot(40), Some(0));
        assert_eq!(m.shard_of_slot(41), None);
        assert_eq!(m.shard_of_slot(120), Some(1));
        assert_eq!(m.shard_of_addr("y:1"), Some(0));
        assert_eq!(m.shard_of_addr("c:1"), Some(2));
        // Listed in another order, the same map.
        let again = ClusterMap::new(vec![
            spec("a:1", &[], &[(100, 150)]),
            spec("c:1", &[], &[]),
            spec("b:1", &["y:1", "z:1"], &[(10, 40), (200, 300)]),
        ])
        .unwrap();
        assert!(m.same_as(&again));
        let moved_replica = ClusterMap::new(vec![
            spec("a:1", &[], &[(100, 150)]),
            spec("c:1", &["z:1"], &[]),
            spec("b:1", &["y:1"], &[(10, 40), (200, 300)]),
        ])
        .unwrap();
        assert!(!m.same_as(&moved_replica));
        let full = ClusterMap::new(vec![spec("a:1", &[], &[(0, 16383)])]).unwrap();
        assert!(full.covers_all());
        assert!(
            ClusterMap::new(vec![spec("a:1", &[], &[(0, 5)]), spec("a:1", &[], &[])])
                .unwrap_err()
                .contains("heads two shards")
        );
        assert!(ClusterMap::new(vec![spec("a:1", &[], &[(0, 16384)])]).is_err());
        // The Debug form shows the shards, not the slot table.
        assert!(format!("{full:?}").len() < 200);
    }

    #[test]
    fn redirections() {
        let moved = |slot, addr| Some(Redirect::Moved { slot, addr });
        let ask = |slot, addr| Some(Redirect::Ask { slot, addr });
        // As the servers above sent them.
        assert_eq!(
            parse_redirect(b"-MOVED 12182 127.0.0.1:31003\r\n"),
            moved(12182, "127.0.0.1:31003")
        );
        assert_eq!(
            parse_redirect(b"-ASK 12182 127.0.0.1:31001\r\n"),
            ask(12182, "127.0.0.1:31001")
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 ::1:31011\r\n"),
            moved(12182, "::1:31011")
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 ?:31003\r\n"),
            moved(12182, "?:31003")
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 :31003\r\n"),
            moved(12182, ":31003")
        );
        // Without the `-` or the CRLF.
        assert_eq!(
            parse_redirect(b"MOVED 3999 127.0.0.1:6381"),
            moved(3999, "127.0.0.1:6381")
        );
        assert_eq!(
            parse_redirect(b"-ASK 3999 redis-2.example:6381"),
            ask(3999, "redis-2.example:6381")
        );
        assert_eq!(
            parse_redirect(b"ASK 0 [::1]:6381\r\n"),
            ask(0, "[::1]:6381")
        );
        assert_eq!(parse_redirect(b"-MOVED 16383 h:1"), moved(16383, "h:1"));
        let r = parse_redirect(b"-ASK 7 h:1").unwrap();
        assert_eq!((r.slot(), r.addr()), (7, "h:1"));
        for bad in [
            &b"-ERR unknown command"[..],
            b"-MOVED",
            b"-MOVED 1",
            b"-MOVED 16384 h:1",
            b"-MOVED -1 h:1",
            b"-MOVED 01 h:1",
            b"-MOVED x h:1",
            b"-MOVED  1 h:1",
            b"-MOVED 1 h",
            b"-MOVED 1 h:",
            b"-MOVED 1 h:x",
            b"-MOVED 1 h:65536",
            b"-MOVED 1 h:1 extra",
            b"-MOVED 1 h:1\r\n\r\n",
            b"-MOVED 1 \xff:1",
            b"-moved 1 h:1",
            b"-ASKING 1 h:1",
            b"-TRYAGAIN Multiple keys request during rehashing of slot",
            b"-CLUSTERDOWN The cluster is down",
            b"",
        ] {
            assert_eq!(
                parse_redirect(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(split_addr("127.0.0.1:6379"), Some(("127.0.0.1", 6379)));
        assert_eq!(split_addr("[::1]:6379"), Some(("::1", 6379)));
        assert_eq!(split_addr("::1:6379"), Some(("::1", 6379)));
        assert_eq!(split_addr("fe80::1:2:7000"), Some(("fe80::1:2", 7000)));
        assert_eq!(split_addr("redis-1:6379"), Some(("redis-1", 6379)));
        assert_eq!(split_addr(":6379"), Some(("", 6379)));
        assert_eq!(split_addr("h:0"), Some(("h", 0)));
        assert_eq!(split_addr("h"), None);
        assert_eq!(split_addr("h:"), None);
        assert_eq!(split_addr("h:+1"), None);
        assert_eq!(split_addr("h:70000"), None);
        assert_eq!(split_addr("[::1]"), None);
    }

    fn slots_of(args: &[&str]) -> Slots {
        let owned = OwnedRequest::new(args);
        let req = owned.request();
        let cmd = commands::lookup(&req).unwrap();
        request_slot(cmd, &req)
    }

    #[test]
    fn request_slots() {
        let foo = key_slot(b"foo");
        assert_eq!(slots_of(&["GET", "foo"]), Slots::One(foo));
        assert_eq!(slots_of(&["get", "{foo}bar"]), Slots::One(foo));
        assert_eq!(slots_of(&["SET", "foo", "x", "EX", "10"]), Slots::One(foo));
        assert_eq!(
            slots_of(&["MSET", "{u}a", "1", "{u}b", "2"]),
            Slots::One(key_slot(b"u"))
        );
        assert_eq!(slots_of(&["MSET", "a", "1", "b", "2"]), Slots::Cross);
        assert_eq!(slots_of(&["MGET", "a", "a", "b"]), Slots::Cross);
        assert_eq!(slots_of(&["PING"]), Slots::None);
        assert_eq!(slots_of(&["DBSIZE"]), Slots::None);
        assert_eq!(slots_of(&["EVAL", "return 1", "0", "a", "b"]), Slots::None);
        assert_eq!(
            slots_of(&["EVAL", "return 1", "1", "foo", "bar"]),
            Slots::One(foo)
        );
        assert_eq!(
            slots_of(&["XREAD", "COUNT", "1", "STREAMS", "a", "b", "0", "0"]),
            Slots::Cross
        );
        assert_eq!(
            slots_of(&["ZUNIONSTORE", "{z}d", "2", "{z}a", "{z}b"]),
            Slots::One(key_slot(b"z"))
        );
        // Sharded pub/sub channels are routed by slot; plain pub/sub is not.
        assert_eq!(slots_of(&["SPUBLISH", "foo", "hi"]), Slots::One(foo));
        assert_eq!(slots_of(&["SSUBSCRIBE", "foo", "bar"]), Slots::Cross);
        assert_eq!(
            slots_of(&["SSUBSCRIBE", "{t}a", "{t}b"]),
            Slots::One(key_slot(b"t"))
        );
        assert_eq!(slots_of(&["SUNSUBSCRIBE", "foo"]), Slots::One(foo));
        assert_eq!(slots_of(&["SUNSUBSCRIBE"]), Slots::None);
        assert_eq!(slots_of(&["PUBLISH", "foo", "hi"]), Slots::None);
        assert_eq!(slots_of(&["SUBSCRIBE", "foo", "bar"]), Slots::None);
    }
}
