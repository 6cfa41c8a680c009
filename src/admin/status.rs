//! The `/status` document: one JSON snapshot of what the status page shows.
//!
//! It is built from the same snapshots the router reads (settings, view, metric atomics)
//! plus the replication monitor's staleness chart, and carries no secrets: backend
//! addresses, offsets, rule definitions and counters only.

use super::exposition::{budget_label, consistency_str};
use crate::metrics::TARGETS;
use crate::policy::{Budget, Level};
use crate::proxy::Proxy;
use crate::replication::ChartPoint;
use crate::router::Reason;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The proxy's version.
    pub version: &'static str,
    /// The configuration in force.
    pub config: ConfigStatus,
    /// Seconds since the proxy started.
    pub uptime_secs: u64,
    /// The server's clock (Unix ms), the time axis of `chart`.
    pub now_ms: u64,
    /// The master, if one is known.
    pub master: Option<MasterStatus>,
    /// Every backend, the master first.
    pub backends: Vec<BackendStatus>,
    /// The distinct budgets of the policy; a replica's `in_pool` lists them in this order.
    pub budgets: Vec<BudgetStatus>,
    /// The level of reads no rule matches.
    pub default: DefaultStatus,
    /// The routing rules, in file order.
    pub rules: Vec<RuleStatus>,
    /// Where routed reads went.
    pub reads: ReadsStatus,
    /// Client connections open now.
    pub clients: i64,
    /// Each replica's staleness over the last minutes (one point a second).
    pub chart: Vec<ChartSeries>,
}

/// The configuration in force.
#[derive(Debug, Serialize)]
pub struct ConfigStatus {
    /// Increases with every applied reload.
    pub generation: u64,
    /// Short hash of the configuration (secrets masked before hashing).
    pub fingerprint: String,
}

/// The master.
#[derive(Debug, Serialize)]
pub struct MasterStatus {
    /// `host:port`.
    pub address: String,
    /// Whether its last poll succeeded and it says it is the master.
    pub up: bool,
    /// Its replication offset at the last poll.
    pub offset: Option<u64>,
    /// Replication bytes per second written on it, recently.
    pub write_rate_bytes_per_sec: f64,
}

/// One backend.
#[derive(Debug, Serialize)]
pub struct BackendStatus {
    /// In a cluster: the number of its shard (in slot order); left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<usize>,
    /// `master` or `replica`.
    pub role: &'static str,
    /// `host:port`.
    pub address: String,
    /// Master: up. Replica: answers polls.
    pub up: bool,
    /// `ok`, `down` or `unknown` for the master; a replica's health state (`ok`,
    /// `link_down`, `syncing`, …).
    pub health: &'static str,
    /// Its replication offset (a replica's own processed offset).
    pub offset: Option<u64>,
    /// Replica: master offset minus its offset.
    pub lag_bytes: Option<u64>,
    /// Replica: staleness bound now (ms).
    pub staleness_ms: Option<u64>,
    /// Replica: membership of each budget's read pool, in `budgets` order; `null` for
    /// the master, and right after a reload until the monitor has caught up with it.
    pub in_pool: Option<Vec<PoolStatus>>,
    /// Requests routed to it.
    pub served: u64,
    /// Requests in flight on its shared connections.
    pub outstanding: u64,
}

/// A replica's membership of one read pool.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    /// The budget's label (`1000ms`).
    pub budget: String,
    /// Whether the replica is in the pool.
    #[serde(rename = "in")]
    pub member: bool,
}

/// A staleness budget.
#[derive(Debug, Serialize)]
pub struct BudgetStatus {
    /// Short name (`1000ms`, `4096B`, `1000ms+4096B`, `unbounded`).
    pub label: String,
    /// Largest staleness (ms), if bounded.
    pub max_lag_ms: Option<u64>,
    /// Largest offset gap (bytes), if bounded.
    pub max_lag_bytes: Option<u64>,
}

impl From<&Budget> for BudgetStatus {
    fn from(b: &Budget) -> Self {
        BudgetStatus {
            label: budget_label(b),
            max_lag_ms: b.max_lag_ms,
            max_lag_bytes: b.max_lag_bytes,
        }
    }
}

/// The default level.
#[derive(Debug, Serialize)]
pub struct DefaultStatus {
    /// `master`, `replica` or `any`.
    pub consistency: &'static str,
    /// The budget (for `replica`).
    pub budget: Option<BudgetStatus>,
    /// Read-your-writes: `connection`, `key` or `off`.
    pub read_your_writes: &'static str,
    /// Reads no rule matched.
    pub hits: u64,
}

/// One routing rule.
#[derive(Debug, Serialize)]
pub struct RuleStatus {
    /// Its name.
    pub name: String,
    /// Key patterns (empty: by command only).
    pub keys: Vec<String>,
    /// Commands (empty: any).
    pub commands: Vec<String>,
    /// `master`, `replica` or `any`.
    pub consistency: &'static str,
    /// The budget (for `replica`).
    pub budget: Option<BudgetStatus>,
    /// Read-your-writes: `connection`, `key` or `off`.
    pub read_your_writes: &'static str,
    /// Durable writes.
    pub wait: Option<WaitStatus>,
    /// Reads whose level it decided.
    pub hits: u64,
}

/// Durable-write requirement of a rule.
#[derive(Debug, Serialize)]
pub struct WaitStatus {
    /// Replicas that must hold the write.
    pub replicas: u32,
    /// How long to wait (ms).
    pub timeout_ms: u64,
}

/// Where routed reads went (writes are not counted here).
#[derive(Debug, Serialize)]
pub struct ReadsStatus {
    /// Reads served by replicas.
    pub replica: u64,
    /// Reads sent to the master (by rule, read-your-writes or fallback).
    pub master: u64,
    /// Requests refused for want of a master (reads and writes alike).
    pub rejected: u64,
    /// `replica / (replica + master)`; `null` before the first read.
    pub replica_share: Option<f64>,
    /// Counts by reason, then target (`{"fresh": {"replica": 10}, "over_budget":
    /// {"master": 2}}`); zero counts are left out.
    pub by_reason: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

/// One replica's chart.
#[derive(Debug, Serialize)]
pub struct ChartSeries {
    /// The replica's `host:port`.
    pub address: String,
    /// Oldest first.
    pub points: Vec<ChartPoint>,
}

fn level_budget(l: &Level) -> Option<BudgetStatus> {
    (l.consistency == crate::config::Consistency::Replica).then(|| BudgetStatus::from(&l.budget))
}

/// Build the status document now.
pub fn snapshot(proxy: &Proxy) -> Status {
    let settings = proxy.settings.load();
    let policy = &settings.policy;
    let view = proxy.view.load();
    let now = Instant::now();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let m = &proxy.metrics;

    let master = view.master.as_ref().map(|mv| MasterStatus {
        address: mv.backend.addr.clone(),
        up: mv.up,
        offset: mv.offset,
        write_rate_bytes_per_sec: view.write_rate,
    });
    let labels: Vec<String> = policy.budgets.iter().map(budget_label).collect();
    let mut backends = Vec::with_capacity(view.replicas.len() + 1);
    let cluster = view.cluster.is_some();
    for (shard, view) in view.shard_views().enumerate() {
        let shard = cluster.then_some(shard);
        let pools_current = view.policy_gen == policy.generation;
        if let Some(mv) = &view.master {
            backends.push(BackendStatus {
                shard,
                role: mv.backend.role.as_str(),
                address: mv.backend.addr.clone(),
                up: mv.up,
                health: if mv.up {
                    "ok"
                } else if mv.down {
                    "down"
                } else {
                    "unknown"
                },
                offset: mv.offset,
                lag_bytes: None,
                staleness_ms: None,
                in_pool: None,
                served: mv.backend.served.load(Ordering::Relaxed),
                outstanding: mv.backend.outstanding(),
            });
        }
        for r in &view.replicas {
            let in_pool = pools_current.then(|| {
                labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| PoolStatus {
                        budget: l.clone(),
                        member: i < 64 && r.in_pool & (1u64 << i) != 0,
                    })
                    .collect()
            });
            backends.push(BackendStatus {
                shard,
                role: r.backend.role.as_str(),
                address: r.backend.addr.clone(),
                up: r.reachable,
                health: r.health.as_str(),
                offset: r.offset,
                lag_bytes: r.lag_bytes,
                staleness_ms: r.staleness_ms(now),
                in_pool,
                served: r.backend.served.load(Ordering::Relaxed),
                outstanding: r.backend.outstanding(),
            });
        }
    }

    let rules = policy
        .rules
        .iter()
        .map(|r| RuleStatus {
            name: r.name.clone(),
            keys: r.keys.iter().map(|g| g.as_str()).collect(),
            commands: r.commands.clone(),
            consistency: consistency_str(r.level.consistency),
            budget: level_budget(&r.level),
            read_your_writes: r.level.ryw.as_str(),
            wait: r.wait.map(|w| WaitStatus {
                replicas: w.replicas,
                timeout_ms: u64::from(w.timeout_ms),
            }),
            hits: r.hits.load(Ordering::Relaxed),
        })
        .collect();
    let default = DefaultStatus {
        consistency: consistency_str(policy.default.consistency),
        budget: level_budget(&policy.default),
        read_your_writes: policy.default.ryw.as_str(),
        hits: policy.default_hits.load(Ordering::Relaxed),
    };

    let mut reads = ReadsStatus {
        replica: 0,
        master: 0,
        rejected: 0,
        replica_share: None,
        by_reason: BTreeMap::new(),
    };
    for (target, row) in TARGETS.iter().zip(m.routed.iter()) {
        for (reason, count) in Reason::ALL.iter().zip(row.iter()) {
            let n = count.load(Ordering::Relaxed);
            if *reason == Reason::Write || n == 0 {
                continue;
            }
            match *target {
                "replica" => reads.replica += n,
                "master" => reads.master += n,
                _ => reads.rejected += n,
            }
            reads
                .by_reason
                .entry(reason.as_str())
                .or_default()
                .insert(target, n);
        }
    }
    let served = reads.replica + reads.master;
    reads.replica_share = (served > 0).then(|| reads.replica as f64 / served as f64);

    // Every monitor's replicas: the one master's, or each cluster shard's.
    let chart = std::iter::once(proxy.monitor.clone())
        .chain(proxy.cluster.monitors())
        .flat_map(|m| m.chart())
        .map(|(address, points)| ChartSeries { address, points })
        .collect();

    Status {
        version: env!("CARGO_PKG_VERSION"),
        config: ConfigStatus {
            generation: policy.generation,
            fingerprint: settings.fingerprint.clone(),
        },
        uptime_secs: proxy.started.elapsed().as_secs(),
        now_ms,
        master,
        backends,
        budgets: policy.budgets.iter().map(BudgetStatus::from).collect(),
        default,
        rules,
        reads,
        clients: m.clients_connected.load(Ordering::Relaxed),
        chart,
    }
}
