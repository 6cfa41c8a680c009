//! Requests in front of a Redis Cluster: the slot of a request's keys picks the shard
//! whose view routes it; a transaction stays on the shard of its first key.

use super::*;
use crate::cluster::map::{self, Slots};

/// Redis Cluster's error for keys in more than one slot.
pub(super) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Redis Cluster's error for a slot no shard serves.
const CLUSTERDOWN: &str = "CLUSTERDOWN Hash slot not served";

/// `MULTI`, sent to the shard's master once a transaction's shard is known.
pub(super) const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";

/// Keyless commands any node answers for the whole cluster (or about itself, as a
/// direct client of that node would be answered): they go to the first shard's master.
fn any_node(cmd: &Command) -> bool {
    cmd.class == Class::PubSub
        || matches!(
            cmd.name,
            "time"
                | "lolwut"
                | "readonly"
                | "readwrite"
                | "info"
                | "config|get"
                | "lastsave"
                | "memory|stats"
                | "slowlog|get"
                | "slowlog|len"
                | "script|exists"
                | "function|list"
                | "function|dump"
                | "function|stats"
        )
        || cmd.name.starts_with("command")
        || cmd.name.starts_with("cluster|")
        // Each node in turn, from the first shard's (`crate::cursor`).
        || cmd.name == "scan"
}

impl Session {
    /// In front of a cluster, point the batch at the view of the shard `req` belongs to.
    /// `Some(stop)`: the request was answered (an error: its keys span slots, its slot
    /// has no shard, or it names no key and is not one any node can answer).
    pub(super) fn cluster_route(
        &mut self,
        req: &Request,
        cmd: &'static Command,
        at: Option<usize>,
        b: &mut Batch<'_>,
    ) -> Option<Stop> {
        let top = b.top;
        let c = top.cluster.as_ref()?;
        // Sharded pub/sub channels count as keys here, as Redis Cluster hashes them.
        let slot = match map::request_slot(cmd, req) {
            Slots::One(s) => Some(s),
            Slots::Cross => return Some(self.cross_slot(req, cmd, b)),
            Slots::None => None,
        };
        let in_tx = matches!(self.mode, Mode::Multi | Mode::Watch);
        let slot = if in_tx {
            match (self.tx_slot, slot) {
                (Some(t), Some(s)) if t != s => return Some(self.refuse(CROSSSLOT, b)),
                (None, Some(s)) => {
                    self.tx_slot = Some(s);
                    Some(s)
                }
                (t, s) => t.or(s),
            }
        } else {
            slot
        };
        // The connection of a transaction under way (MULTI sent, or WATCH).
        let tx_conn = self
            .dedicated
            .as_ref()
            .filter(|_| in_tx && !self.multi_deferred)
            .map(|d| d.backend);
        let view = match slot {
            Some(s) => match top.for_slot(s) {
                Some(v)
                    if tx_conn
                        .is_some_and(|id| v.master.as_ref().is_none_or(|m| m.backend.id != id)) =>
                {
                    // Begun on another shard by a keyless command.
                    return Some(self.refuse(CROSSSLOT, b));
                }
                Some(v) => v,
                None => return Some(self.refuse(CLUSTERDOWN, b)),
            },
            None if !in_tx && fan_out_op(cmd).is_some() => {
                return Some(self.fan_out(req, cmd, b));
            }
            None => {
                // A script or function that declares no key runs on whichever node the
                // client is connected to, as on a cluster: here the first shard's master.
                let script = matches!(
                    cmd.name,
                    "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro"
                );
                let keyless_ok = in_tx
                    || matches!(cmd.class, Class::Connection | Class::Transaction)
                    || any_node(cmd)
                    || script
                    || cmd.name == "wait";
                if !keyless_ok {
                    let e = format!(
                        "ERR redsplit: '{}' names no key, and in front of a Redis Cluster the proxy does not send keyless commands to every shard",
                        cmd.name
                    );
                    return Some(self.refuse(&e, b));
                }
                // A transaction begun on a shard stays there, and `WAIT` waits for the
                // shard of the last write; otherwise the first shard.
                let of = |id: u32| c.shards.iter().find(|v| v.backend_ids().any(|i| i == id));
                let pinned = match tx_conn {
                    Some(id) => of(id),
                    None if cmd.name == "wait" => self.last_write_master.and_then(of),
                    None => None,
                };
                match pinned.or_else(|| c.shards.first()) {
                    Some(v) => v,
                    None => return Some(self.refuse(CLUSTERDOWN, b)),
                }
            }
        };
        b.view = view;
        if let Some(s) = slot {
            if c.is_migrating(s)
                && cmd.class == Class::Read
                && !in_tx
                && !commands::is_blocking(cmd, req)
            {
                // Its replicas may have lost keys the master moved (it answers ASK).
                self.stats().route(0, Reason::Rule);
                return Some(self.master_read(req, at, b));
            }
        }
        None
    }
}

impl Session {
    /// A transaction whose `MULTI` is still deferred fails before its shard is known: it
    /// begins on the first shard, so that the master can fail it (`EXEC` then answers
    /// `EXECABORT`, as Redis does).
    pub(super) fn start_deferred_multi(&mut self, top: &View) {
        let Some(view) = top.shard_views().find(|v| v.master.is_some()) else {
            return;
        };
        if self.dedicated_conn(view).is_err() {
            return;
        }
        self.multi_deferred = false;
        if let Some(d) = &self.dedicated {
            let (conn, slot) = (d.conn.clone(), d.slot);
            self.send_dropped(&conn, slot, MULTI);
        }
    }
}

/// Whether `frame` is a cluster node's `MOVED` or `ASK` (cheap enough for every reply).
#[inline]
pub(super) fn is_redirection(frame: &[u8]) -> bool {
    frame.first() == Some(&b'-') && (frame.starts_with(b"-MOVED ") || frame.starts_with(b"-ASK "))
}

/// `ASKING`, sent before a request an `ASK` redirection sends to a slot's importing node.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// Where a node's `MOVED` or `ASK` sends a request.
#[derive(Debug)]
pub(super) struct Redirected {
    /// `ASK`: this request only, after `ASKING`; `MOVED`: the slot has moved.
    ask: bool,
    /// The node named.
    addr: String,
    /// The redirection as the node sent it (without `-` and CRLF), for the client if
    /// the node cannot be reached in time.
    error: String,
}

impl Session {
    /// The redirection in `frame`, the reply to the front request `p`, when the request
    /// can follow it (a read or a write on a shared connection, whose bytes are kept):
    /// the request's bytes and where to send them.
    pub(super) fn redirection(&self, p: &Pending, frame: &[u8]) -> Option<(BytesMut, Redirected)> {
        if !is_redirection(frame) || p.path != PATH_SHARED {
            return None;
        }
        let kept = match p.kind {
            Kind::ReplicaRead { retry, .. } | Kind::MasterRead { retry } => {
                self.retry_buf.get(..retry as usize)?
            }
            Kind::Write { keep } if keep > 0 => self.redirect_buf.get(..keep as usize)?,
            _ => return None,
        };
        let (ask, addr) = match map::parse_redirect(frame)? {
            map::Redirect::Moved { addr, .. } => (false, addr),
            map::Redirect::Ask { addr, .. } => (true, addr),
        };
        let error =
            String::from_utf8_lossy(frame.get(1..frame.len().saturating_sub(2))?).into_owned();
        Some((
            BytesMut::from(kept),
            Redirected {
                ask,
                addr: addr.to_string(),
                error,
            },
        ))
    }

    /// Send the front request `p` (its `bytes`) where its node redirected it: after
    /// `ASKING` for `ASK`; for `MOVED` the slot map is read again at once. It goes back
    /// to the front of the queue, through the node's retry slot, its bytes kept for a
    /// redirection of its own. A node not in the map yet is waited for, at most
    /// `command_timeout_ms` from when the request was first sent; then the client gets
    /// the redirection.
    pub(super) fn follow_redirect(
        &mut self,
        p: Pending,
        bytes: BytesMut,
        to: Redirected,
        now: Instant,
    ) {
        self.pending.pop_front();
        if !to.ask {
            self.proxy.recheck.notify_one();
        }
        let timeout = self.proxy.settings.load().config.backend.command_timeout_ms;
        if now >= p.sent + Duration::from_millis(timeout) {
            return self.answer_front(p, &to.error, now);
        }
        let top = self.proxy.view.load_full();
        let backend = top
            .shard_views()
            .flat_map(|v| {
                v.master
                    .iter()
                    .map(|m| &m.backend)
                    .chain(v.replicas.iter().map(|r| &r.backend))
            })
            // An empty host (Redis's "unknown endpoint") is the answering node's: a
            // backend at that port.
            .find(|b| b.addr == to.addr || (to.addr.starts_with(':') && b.addr.ends_with(&to.addr)))
            .cloned();
        let Some(backend) = backend else {
            return self.wait_for_node(p, bytes, to, now);
        };
        let Ok(i) = self.source_for(&backend) else {
            return self.wait_for_node(p, bytes, to, now);
        };
        let Some(s) = self.sources.get(i) else { return };
        let slot = s.retry_slot;
        let count = if to.ask { 2 } else { 1 };
        let res = if to.ask {
            let mut out = BytesMut::with_capacity(ASKING.len() + bytes.len());
            out.extend_from_slice(ASKING);
            out.extend_from_slice(&bytes);
            s.conn.send(&out, &self.sink, slot, count)
        } else {
            s.conn.send(&bytes, &self.sink, slot, count)
        };
        self.stats().retries += 1;
        if let Some(r) = self.slot_refs.get_mut(slot as usize) {
            *r += count;
        }
        self.shared_in_flight += count;
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        // A read goes to the node named, a master: it is a master read now.
        let kind = match p.kind {
            Kind::Write { .. } => Kind::Write { keep: len },
            _ => Kind::MasterRead { retry: len },
        };
        let buf = if matches!(kind, Kind::Write { .. }) {
            &mut self.redirect_buf
        } else {
            &mut self.retry_buf
        };
        let mut kept = BytesMut::with_capacity(bytes.len() + buf.len());
        kept.extend_from_slice(&bytes);
        kept.extend_from_slice(buf);
        *buf = kept;
        if matches!(kind, Kind::Write { .. }) {
            // Counted for every shard: the node named may be another shard's.
            self.writes_in_flight += 1;
            self.loose_writes.in_flight += 1;
        }
        self.pending.push_front(Pending {
            slot,
            kind,
            path: PATH_SHARED,
            silent: p.silent,
            read: p.read,
            sent: p.sent,
            mark: p.mark,
            fence: FENCE_NONE,
            shard: NO_SHARD,
        });
        if to.ask {
            self.pending.push_front(Pending {
                slot,
                kind: Kind::Dropped,
                path: PATH_SHARED,
                silent: true,
                read: false,
                sent: now,
                mark: Mark::None,
                fence: FENCE_NONE,
                shard: NO_SHARD,
            });
        }
        if let Err(e) = res {
            self.handle.inbox.push_failed(slot, &e, count);
        }
    }

    /// The node a redirection names is not in the slot map yet: wait for a new view (or a
    /// short while), then follow the redirection again.
    fn wait_for_node(&mut self, p: Pending, bytes: BytesMut, to: Redirected, now: Instant) {
        let timeout = self.proxy.settings.load().config.backend.command_timeout_ms;
        let until = p.sent + Duration::from_millis(timeout);
        if self.view_rx.is_none() {
            self.view_rx = Some(self.proxy.view_version.subscribe());
        }
        if let Some(rx) = self.view_rx.as_mut() {
            rx.mark_unchanged();
        }
        self.proxy.recheck.notify_one();
        // Counted as a read in flight: a write after it waits, as it would for the
        // request's first attempt.
        self.replica_reads_in_flight += 1;
        let at = (now + Duration::from_millis(20)).min(until);
        self.retry_wait = Some(Box::new(RetryWait {
            p,
            bytes,
            failed: None,
            redirect: Some(Box::new(to)),
            until,
            sleep: Box::pin(tokio::time::sleep_until(at.into())),
        }));
    }
}

/// How the replies of a request split across slots make its one reply.
#[derive(Debug)]
enum MergeOp {
    /// `MGET`: each part's array elements go back to their keys' places.
    Array {
        /// Per part, the place in the reply of each of its elements.
        places: Vec<Vec<usize>>,
        /// Elements in the whole reply.
        total: usize,
    },
    /// `DEL`, `UNLINK`, `EXISTS`, `TOUCH`: the parts' integers added up.
    Sum,
    /// `MSET`, `FLUSHALL`: `+OK` once every part said it.
    Ok,
    /// `KEYS`: every part's array elements, one after another.
    Concat,
    /// `RANDOMKEY`: the first part's key that is not null.
    AnyNotNull,
    /// `SCRIPT LOAD`: every node answers the same; the first part's answer.
    Same,
}

/// How a keyless command is sent to every shard's master and its replies merged
/// (`None`: it is not).
fn fan_out_op(cmd: &Command) -> Option<MergeOp> {
    Some(match cmd.name {
        "dbsize" => MergeOp::Sum,
        "keys" => MergeOp::Concat,
        "randomkey" => MergeOp::AnyNotNull,
        "flushall" | "flushdb" | "script|flush" | "function|flush" | "client|pause"
        | "client|unpause" => MergeOp::Ok,
        "script|load" | "function|load" | "function|delete" | "function|restore" => MergeOp::Same,
        _ => return None,
    })
}

/// A request split across slots whose parts' replies are being collected (they come in
/// request order, each part marked [`Mark::Part`]).
#[derive(Debug)]
pub(super) struct Merge {
    op: MergeOp,
    parts: usize,
    frames: Vec<Vec<u8>>,
    silent: bool,
}

/// Whether `cmd` is split across slots (and merged) rather than refused with `CROSSSLOT`.
fn splits(cmd: &Command) -> bool {
    matches!(
        cmd.name,
        "mget" | "mset" | "del" | "unlink" | "exists" | "touch"
    )
}

/// The RESP encoding of `args`, and each argument's span in it.
fn encode_parts(args: &[&[u8]]) -> (Vec<u8>, Vec<crate::protocol::Span>) {
    let mut buf = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    let mut spans = Vec::with_capacity(args.len());
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        let start = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(a);
        spans.push(crate::protocol::Span {
            start,
            end: u32::try_from(buf.len()).unwrap_or(u32::MAX),
        });
        buf.extend_from_slice(b"\r\n");
    }
    (buf, spans)
}

impl Session {
    /// A request whose keys span slots: refused with `CROSSSLOT` as a cluster refuses
    /// it, unless it is one the proxy splits (one part per slot, each routed as a request
    /// of its own, their replies merged as a single Redis would answer).
    fn cross_slot(&mut self, req: &Request, cmd: &'static Command, b: &mut Batch<'_>) -> Stop {
        if !splits(cmd) || matches!(self.mode, Mode::Multi | Mode::Watch) {
            let e = if cmd.name == "msetnx" {
                format!("{CROSSSLOT} (redsplit splits MGET, MSET, DEL, UNLINK, EXISTS and TOUCH across slots, but not MSETNX, which must set all of its keys or none)")
            } else {
                CROSSSLOT.to_string()
            };
            return self.refuse(&e, b);
        }
        let top = b.top;
        let step = if cmd.name == "mset" { 2 } else { 1 };
        if (req.argc() - 1) % step != 0 {
            return self.refuse(
                &format!("ERR wrong number of arguments for '{}' command", cmd.name),
                b,
            );
        }
        // Key positions (argument indices) per slot, slots in order of first appearance.
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for i in (1..req.argc()).step_by(step) {
            let slot = map::key_slot(req.arg(i));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, g)) => g.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        let write = cmd.class != Class::Read;
        let settings = b.settings;
        // A durable write (`wait:`, resolved over all of its keys as for one node) is
        // durable in every part: each part's reply waits for its own shard's replicas.
        let kind = if write {
            super::dispatch::write_kind(settings, cmd, req)
        } else {
            Kind::Forward
        };
        // Everything that could stop a part is checked before any part is sent.
        let mut views = Vec::with_capacity(groups.len());
        for (slot, keys) in &groups {
            let Some(view) = top.for_slot(*slot) else {
                return self.refuse(CLUSTERDOWN, b);
            };
            if view.master.is_none()
                || (write && router::route_write(view).target != Target::Master)
            {
                return self.refuse(&router::write_rejection(view).line(), b);
            }
            if !write {
                let policy = &settings.policy;
                let resolved = policy.resolve(cmd, |f| keys.iter().for_each(|i| f(req.arg(*i))));
                let (writes_in_flight, last_write_ack) = self.own_writes(view);
                let sess = SessionReads {
                    writes_in_flight,
                    last_write_ack,
                    key_write_ack: None,
                    key_write_pending: false,
                    prefer: self.prefer,
                    turn: self.turn,
                };
                let d = router::route_read(&resolved.level, &sess, policy, view, b.now);
                if d.target == Target::Reject {
                    self.send_gathered(b);
                    let e = super::dispatch::reject_message(d, &resolved.level, view, policy);
                    self.push_local_error(&e);
                    return Stop::More;
                }
            }
            views.push(view);
        }
        if self.dedicated_in_flight > 0 || (write && self.replica_reads_in_flight > 0) {
            return self.barrier(b);
        }
        self.send_gathered(b);
        let silent = self.take_silent();
        let op = match cmd.name {
            "mget" => {
                let mut total = 0;
                let places = groups
                    .iter()
                    .map(|(_, keys)| keys.iter().map(|i| i - 1).inspect(|_| total += 1).collect())
                    .collect();
                MergeOp::Array { places, total }
            }
            "mset" => MergeOp::Ok,
            _ => MergeOp::Sum,
        };
        self.merges.push_back(Merge {
            op,
            parts: groups.len(),
            frames: Vec::with_capacity(groups.len()),
            silent,
        });
        let saved = self.client.reply;
        self.client.reply = crate::session::ReplyMode::On;
        for ((_, keys), view) in groups.iter().zip(views) {
            let mut args: Vec<&[u8]> = Vec::with_capacity(1 + keys.len() * step);
            args.push(req.arg(0));
            for i in keys {
                args.push(req.arg(*i));
                if step == 2 {
                    args.push(req.arg(i + 1));
                }
            }
            let (buf, spans) = encode_parts(&args);
            let part = Request {
                buf: &buf,
                args: &spans,
            };
            b.view = view;
            self.mark_next = Mark::Part;
            if write {
                self.send_to_master(&part, Some(cmd), None, b, kind);
            } else {
                self.route_read(&part, cmd, None, b);
            }
            self.mark_next = Mark::None;
        }
        self.client.reply = saved;
        Stop::More
    }

    /// A keyless command sent to every shard's master, its replies merged as one node
    /// holding the whole keyspace would answer.
    fn fan_out(&mut self, req: &Request, cmd: &'static Command, b: &mut Batch<'_>) -> Stop {
        let Some(op) = fan_out_op(cmd) else {
            return Stop::More;
        };
        let top = b.top;
        let Some(c) = top.cluster.as_ref() else {
            return Stop::More;
        };
        let write = cmd.class != Class::Read;
        if let Some(change) = super::local::pause_change(cmd, req) {
            // Every master pauses; the proxy holds what they would hold.
            self.note_pause(change);
        }
        for v in &c.shards {
            if v.master.is_none() {
                return self.refuse(&router::write_rejection(v).line(), b);
            }
        }
        if c.shards.is_empty() {
            return self.refuse(CLUSTERDOWN, b);
        }
        if self.dedicated_in_flight > 0 || (write && self.replica_reads_in_flight > 0) {
            return self.barrier(b);
        }
        self.send_gathered(b);
        let silent = self.take_silent();
        self.merges.push_back(Merge {
            op,
            parts: c.shards.len(),
            frames: Vec::with_capacity(c.shards.len()),
            silent,
        });
        let saved = self.client.reply;
        self.client.reply = crate::session::ReplyMode::On;
        for v in &c.shards {
            b.view = v;
            self.mark_next = Mark::Part;
            if write {
                self.send_to_master(req, Some(cmd), None, b, Kind::Write { keep: 0 });
            } else {
                self.master_read(req, None, b);
            }
            self.mark_next = Mark::None;
        }
        self.client.reply = saved;
        Stop::More
    }

    /// A reply (or error) of a part of a split request: kept until the last part's, then
    /// the merged reply goes to the client.
    pub(super) fn merge_part(&mut self, frame: &[u8]) {
        let Some(m) = self.merges.front_mut() else {
            return;
        };
        m.frames.push(frame.to_vec());
        if m.frames.len() < m.parts {
            return;
        }
        let Some(m) = self.merges.pop_front() else {
            return;
        };
        if m.silent {
            return;
        }
        self.stats().replies += 1;
        if let Some(e) = m.frames.iter().find(|f| super::replies::is_error(f)) {
            self.wbuf.extend_from_slice(e);
            return;
        }
        match m.op {
            MergeOp::Ok => self.wbuf.extend_from_slice(reply::OK),
            MergeOp::Same => {
                if let Some(f) = m.frames.first() {
                    self.wbuf.extend_from_slice(f);
                }
            }
            MergeOp::AnyNotNull => {
                let null = |f: &&Vec<u8>| f.starts_with(b"$-1") || f.starts_with(b"_");
                if let Some(f) = m.frames.iter().find(|f| !null(f)).or(m.frames.first()) {
                    self.wbuf.extend_from_slice(f);
                }
            }
            MergeOp::Concat => {
                let mut n = 0usize;
                let mut body = Vec::new();
                for f in &m.frames {
                    let Some(nl) = f.iter().position(|c| *c == b'\n') else {
                        continue;
                    };
                    let count = f
                        .get(1..nl.saturating_sub(1))
                        .and_then(|d| std::str::from_utf8(d).ok())
                        .and_then(|d| d.parse::<usize>().ok())
                        .unwrap_or(0);
                    n += count;
                    body.extend_from_slice(f.get(nl + 1..).unwrap_or_default());
                }
                self.wbuf.extend_from_slice(format!("*{n}\r\n").as_bytes());
                self.wbuf.extend_from_slice(&body);
            }
            MergeOp::Sum => {
                let n: i64 = m
                    .frames
                    .iter()
                    .filter_map(|f| {
                        let text = f.get(1..f.len().saturating_sub(2))?;
                        std::str::from_utf8(text).ok()?.parse::<i64>().ok()
                    })
                    .sum();
                self.wbuf.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            MergeOp::Array { places, total } => {
                let null: &[u8] = if self.client.resp3 {
                    b"_\r\n"
                } else {
                    b"$-1\r\n"
                };
                let mut out: Vec<&[u8]> = vec![null; total];
                for (frame, places) in m.frames.iter().zip(places.iter()) {
                    // `*n\r\n`, then the elements.
                    let Some(nl) = frame.iter().position(|c| *c == b'\n') else {
                        continue;
                    };
                    let mut rest = frame.get(nl + 1..).unwrap_or_default();
                    for place in places {
                        let Ok(Some(len)) = crate::protocol::ReplyScanner::new().scan(rest) else {
                            break;
                        };
                        if let Some(slot) = out.get_mut(*place) {
                            *slot = rest.get(..len).unwrap_or_default();
                        }
                        rest = rest.get(len..).unwrap_or_default();
                    }
                }
                self.wbuf
                    .extend_from_slice(format!("*{total}\r\n").as_bytes());
                for e in out {
                    self.wbuf.extend_from_slice(e);
                }
            }
        }
    }
}
