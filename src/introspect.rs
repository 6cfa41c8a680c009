//! `PROXY STATUS`, `PROXY EXPLAIN` and `PROXY CONFIG`: the proxy answering questions
//! about itself, over RESP, from the same snapshot and the same routing function the data
//! path uses.

use crate::commands::{self, Class};
use crate::config::{Consistency, ReadYourWrites};
use crate::fence::{key_hash, Fenced, KeyFence};
use crate::policy::Level;
use crate::protocol::OwnedRequest;
use crate::proxy::Settings;
use crate::reply::Value;
use crate::router::{self, SessionReads, Target, Verdict};
use crate::topology::View;
use std::time::Instant;

/// The `PROXY HELP` text.
pub const HELP: &[&str] = &[
    "PROXY <subcommand> [<arg> [value] ...]. Subcommands are:",
    "STATUS",
    "    Every backend: role, address, health, offsets, lag bytes, staleness ms, pools.",
    "EXPLAIN <command> [<arg> ...]",
    "    Where that command would go now for this connection, and why.",
    "CONFIG",
    "    The running configuration (secrets masked), its version and fingerprint.",
    "HELP",
    "    Print this help.",
];

fn kv(k: &str, v: Value) -> (Value, Value) {
    (Value::bulk(k), v)
}

fn opt_int(v: Option<u64>) -> Value {
    v.map(|n| Value::Int(n as i64)).unwrap_or(Value::Null)
}

fn budget_name(ms: Option<u64>, bytes: Option<u64>) -> String {
    match (ms, bytes) {
        (Some(m), Some(b)) => format!("{m}ms+{b}b"),
        (Some(m), None) => format!("{m}ms"),
        (None, Some(b)) => format!("{b}b"),
        (None, None) => "unbounded".into(),
    }
}

/// `PROXY STATUS`: one map per backend (in a cluster, each with its shard's number).
pub fn status(view: &View, settings: &Settings, now: Instant) -> Value {
    let mut rows = Vec::new();
    let cluster = view.cluster.is_some();
    for (i, v) in view.shard_views().enumerate() {
        let from = rows.len();
        shard_status(v, settings, now, &mut rows);
        if cluster {
            for row in rows.iter_mut().skip(from) {
                if let Value::Map(m) = row {
                    m.insert(0, kv("shard", Value::Int(i as i64)));
                }
            }
        }
    }
    Value::Array(rows)
}

/// The rows of one master and its replicas.
fn shard_status(view: &View, settings: &Settings, now: Instant, rows: &mut Vec<Value>) {
    let policy = &settings.policy;
    let pools_known = view.policy_gen == policy.generation;
    if let Some(m) = &view.master {
        rows.push(Value::Map(vec![
            kv("role", Value::bulk("master")),
            kv("addr", Value::bulk(&m.backend.addr)),
            kv(
                "state",
                Value::bulk(if m.up {
                    "up"
                } else if m.down {
                    "down"
                } else {
                    "unknown"
                }),
            ),
            kv("offset", opt_int(m.offset)),
            kv("write_rate_bps", Value::Int(view.write_rate as i64)),
            kv(
                "served",
                Value::Int(m.backend.served.load(std::sync::atomic::Ordering::Relaxed) as i64),
            ),
            kv("outstanding", Value::Int(m.backend.outstanding() as i64)),
        ]));
    }
    for r in &view.replicas {
        let pools: Vec<(Value, Value)> = policy
            .budgets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let inp = pools_known && i < 64 && r.in_pool & (1 << i) != 0;
                kv(
                    &budget_name(b.max_lag_ms, b.max_lag_bytes),
                    Value::Int(i64::from(inp)),
                )
            })
            .collect();
        rows.push(Value::Map(vec![
            kv("role", Value::bulk("replica")),
            kv("addr", Value::bulk(&r.backend.addr)),
            kv("state", Value::bulk(r.health.as_str())),
            kv("offset", opt_int(r.offset)),
            kv("lag_bytes", opt_int(r.lag_bytes)),
            kv("staleness_ms", opt_int(r.staleness_ms(now))),
            kv("in_pool", Value::Map(pools)),
            kv(
                "served",
                Value::Int(r.backend.served.load(std::sync::atomic::Ordering::Relaxed) as i64),
            ),
            kv("outstanding", Value::Int(r.backend.outstanding() as i64)),
        ]));
    }
}

/// `PROXY CONFIG`: the running configuration with secrets masked.
pub fn config(settings: &Settings) -> Value {
    Value::Map(vec![
        kv("generation", Value::Int(settings.policy.generation as i64)),
        kv("fingerprint", Value::bulk(&settings.fingerprint)),
        kv("yaml", Value::Verbatim(settings.config.masked_yaml())),
    ])
}

fn level_value(level: &Level) -> Vec<(Value, Value)> {
    let c = match level.consistency {
        Consistency::Master => "master",
        Consistency::Replica => "replica",
        Consistency::Any => "any",
    };
    vec![
        kv("consistency", Value::bulk(c)),
        kv("max_lag_ms", opt_int(level.budget.max_lag_ms)),
        kv("max_lag_bytes", opt_int(level.budget.max_lag_bytes)),
        kv("read_your_writes", Value::bulk(level.ryw.as_str())),
    ]
}

/// The key fence as `PROXY EXPLAIN` sees it: the proxy's fence and the connection's
/// database (the keys of the explained command are looked up in it).
#[derive(Clone, Copy, Debug)]
pub struct FenceInput<'a> {
    /// The proxy's key fence.
    pub fence: &'a KeyFence,
    /// The connection's database.
    pub db: u32,
}

/// `PROXY EXPLAIN`'s `key_fence` entry for a `read_your_writes: key` read: whether its
/// keys are fenced, since when, and until when.
fn fence_value(f: &Fenced, view: &View, now: Instant) -> Value {
    let ago = f
        .ack
        .map(|t| Value::Int(now.saturating_duration_since(t).as_millis() as i64))
        .unwrap_or(Value::Null);
    let holders = f.ack.map_or(view.replicas.len(), |ack| {
        view.replicas
            .iter()
            .filter(|r| r.fresh_as_of.is_some_and(|t| t > ack))
            .count()
    });
    let until = if f.pending {
        "a write of these keys (or of the whole keyspace) is in flight: reads go to the master until it is answered".to_string()
    } else if f.ack.is_none() {
        "not fenced: no recent write of these keys".to_string()
    } else if holders == view.replicas.len() {
        "held by every replica: not fenced any more".to_string()
    } else {
        format!(
            "until a replica holds the write acknowledged then ({holders} of {} do)",
            view.replicas.len()
        )
    };
    Value::Map(vec![
        kv("pending", Value::Int(i64::from(f.pending))),
        kv(
            "fenced",
            Value::Int(i64::from(f.pending || holders < view.replicas.len())),
        ),
        kv("acked_ms_ago", ago),
        kv("until", Value::bulk(until)),
    ])
}

/// `PROXY EXPLAIN command args…` for a session whose read state is `sess`, with its
/// own writes as `own_writes` gives them for the view that routes the request (in a
/// cluster, its shard's); the key fence of a `read_your_writes: key` read is looked up
/// in `fence`.
pub fn explain(
    args: &[&[u8]],
    sess: &SessionReads,
    own_writes: &dyn Fn(&View) -> (bool, Option<Instant>),
    fence: FenceInput<'_>,
    view: &View,
    settings: &Settings,
    now: Instant,
) -> Value {
    let owned = OwnedRequest::new(args);
    let req = owned.request();
    let name = String::from_utf8_lossy(req.arg(0)).to_lowercase();
    let top = view;
    let mut shard = Vec::new();
    let mut migrating = false;
    let view = match (&top.cluster, commands::lookup(&req)) {
        (Some(c), Some(cmd)) => match crate::cluster::map::request_slot(cmd, &req) {
            crate::cluster::map::Slots::One(slot) => {
                shard.push(kv("slot", Value::Int(i64::from(slot))));
                migrating = c.is_migrating(slot);
                if migrating {
                    shard.push(kv("migrating", Value::Int(1)));
                }
                match c
                    .map
                    .shard_of_slot(slot)
                    .and_then(|i| Some((i, c.shards.get(i)?)))
                {
                    Some((i, v)) => {
                        shard.push(kv("shard", Value::Int(i as i64)));
                        v
                    }
                    None => {
                        shard.push(kv("shard", Value::bulk("none (the slot is not served)")));
                        top
                    }
                }
            }
            crate::cluster::map::Slots::Cross => {
                shard.push(kv("slot", Value::bulk("cross-slot (refused: CROSSSLOT)")));
                top
            }
            crate::cluster::map::Slots::None => top.shard_views().next().unwrap_or(top),
        },
        _ => top,
    };
    let Some(cmd) = commands::lookup(&req) else {
        return Value::Map(vec![
            kv("command", Value::bulk(&name)),
            kv("class", Value::bulk("unknown")),
            kv("target", Value::bulk(master_name(view))),
            kv("reason", Value::bulk("unknown commands go to the master")),
        ]);
    };
    let class = match cmd.class {
        Class::Read => "read",
        Class::Write => "write",
        Class::Admin => "admin",
        Class::PubSub => "pubsub",
        Class::Transaction => "transaction",
        Class::Connection => "connection",
    };
    let mut keys = Vec::new();
    commands::for_each_key(cmd, &req, |i| keys.push(Value::bulk(req.arg(i))));
    let policy = &settings.policy;
    let resolved = policy.resolve(cmd, |f| {
        commands::for_each_key(cmd, &req, |i| f(req.arg(i)))
    });
    let mut out = vec![
        kv("command", Value::bulk(cmd.name)),
        kv("class", Value::bulk(class)),
        kv("keys", Value::Array(keys)),
    ];
    out.extend(shard);
    out.push(kv("rule", Value::bulk(policy.rule_name(resolved.rule))));
    match cmd.class {
        Class::Connection | Class::Transaction => {
            out.push(kv("target", Value::bulk("proxy")));
            out.push(kv(
                "reason",
                Value::bulk(
                    "answered by the proxy, or sent on the connection's own master connection",
                ),
            ));
            return Value::Map(out);
        }
        Class::Read if !commands::is_blocking(cmd, &req) => {}
        _ => {
            let blocking = commands::is_blocking(cmd, &req);
            out.push(kv("target", Value::bulk(master_name(view))));
            out.push(kv(
                "reason",
                Value::bulk(if blocking {
                    "blocking commands run on a dedicated master connection"
                } else if cmd.class == Class::PubSub {
                    "pub/sub goes to the master"
                } else {
                    "writes (and anything not known to be read-only) go to the master"
                }),
            ));
            if let Some(w) = resolved.wait {
                out.push(kv(
                    "wait",
                    Value::Map(vec![
                        kv("replicas", Value::Int(i64::from(w.replicas))),
                        kv("timeout_ms", Value::Int(w.timeout_ms as i64)),
                    ]),
                ));
            }
            return Value::Map(out);
        }
    }
    out.extend(level_value(&resolved.level));
    if migrating {
        out.push(kv("target", Value::bulk(master_name(view))));
        out.push(kv(
            "reason",
            Value::bulk("the slot is migrating (or its migration just ended): its replicas may lack keys that moved"),
        ));
        return Value::Map(out);
    }
    let mut sess = *sess;
    (sess.writes_in_flight, sess.last_write_ack) = own_writes(view);
    if resolved.level.ryw == ReadYourWrites::Key {
        let mut f = Fenced::default();
        commands::for_each_key(cmd, &req, |i| {
            fence.fence.add_key(key_hash(fence.db, req.arg(i)), &mut f)
        });
        let f = fence.fence.with_global(f);
        sess.key_write_ack = f.ack;
        sess.key_write_pending = f.pending;
        out.push(kv("key_fence", fence_value(&f, view, now)));
    }
    let sess = &sess;
    let d = router::route_read(&resolved.level, sess, policy, view, now);
    let target = match d.target {
        Target::Master => master_name(view),
        Target::Replica(i) => view
            .replicas
            .get(i)
            .map(|r| format!("replica {}", r.backend.addr))
            .unwrap_or_default(),
        Target::Reject => "error".into(),
    };
    out.push(kv("target", Value::bulk(target)));
    out.push(kv("reason", Value::bulk(d.reason.as_str())));
    let pool_known = view.policy_gen == policy.generation;
    let replicas = view
        .replicas
        .iter()
        .map(|r| {
            let v = router::verdict(&resolved.level, sess, r, pool_known, now);
            let verdict = match v {
                Verdict::Eligible => "eligible".to_string(),
                Verdict::Unhealthy(h) => format!("unhealthy: {}", h.as_str()),
                Verdict::OverBudget => "over budget".into(),
                Verdict::Dwelling => "within budget, waiting out the dwell time".into(),
                Verdict::BehindOwnWrite => "has not reached this connection's last write".into(),
                Verdict::BehindKeyWrite => {
                    "has not reached the last acknowledged write of these keys".into()
                }
            };
            Value::Map(vec![
                kv("addr", Value::bulk(&r.backend.addr)),
                kv("verdict", Value::bulk(verdict)),
                kv("staleness_ms", opt_int(r.staleness_ms(now))),
                kv("lag_bytes", opt_int(r.lag_bytes)),
            ])
        })
        .collect();
    out.push(kv("replicas", Value::Array(replicas)));
    Value::Map(out)
}

fn master_name(view: &View) -> String {
    view.master
        .as_ref()
        .map(|m| format!("master {}", m.backend.addr))
        .unwrap_or_else(|| "error (no master known)".into())
}
