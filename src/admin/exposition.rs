//! The Prometheus (OpenMetrics text) exposition of [`Metrics`](crate::metrics::Metrics)
//! and of the topology view.
//!
//! The proxy keeps its counters as plain atomics (see [`crate::metrics`]); this module
//! reads them at scrape time through a `prometheus-client` [`Collector`], which does the
//! formatting. Per-replica gauges come from the current [`View`]: staleness is computed
//! at scrape time from the replica's `fresh_as_of`, and a sample whose value is unknown
//! is left out rather than reported as zero.

use crate::config::Consistency;
use crate::metrics::{Histogram, CLASSES, LATENCY_BUCKETS, STALENESS_BUCKETS, TARGETS};
use crate::policy::Budget;
use crate::proxy::Proxy;
use crate::router::{self, Reason};
use crate::topology::{Health, View};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelValue, LabelValueEncoder, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Every health state a replica can be in, for the `redsplit_replica_health` state set.
pub const HEALTH_STATES: [Health; 9] = [
    Health::Ok,
    Health::Unknown,
    Health::Unreachable,
    Health::Stalled,
    Health::LinkDown,
    Health::Syncing,
    Health::Loading,
    Health::OtherHistory,
    Health::NotReplica,
];

/// Renders the proxy's metrics on each scrape.
#[derive(Debug)]
pub struct ProxyCollector {
    proxy: Arc<Proxy>,
}

impl ProxyCollector {
    /// A collector reading `proxy`'s metrics, settings and view.
    pub fn new(proxy: Arc<Proxy>) -> ProxyCollector {
        ProxyCollector { proxy }
    }
}

/// A label value escaped as the text format requires (`\`, `"` and newlines).
#[derive(Debug, Clone, Copy)]
struct Esc<'a>(&'a str);

impl EncodeLabelValue for Esc<'_> {
    fn encode(&self, enc: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => enc.write_str("\\\\")?,
                '"' => enc.write_str("\\\"")?,
                '\n' => enc.write_str("\\n")?,
                c => enc.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Labels of one sample: `(name, value)` pairs.
type Labels<'a> = Vec<(&'static str, Esc<'a>)>;

/// A short name for a budget: `1000ms`, `4096B`, `1000ms+4096B`, or `unbounded`.
pub fn budget_label(b: &Budget) -> String {
    match (b.max_lag_ms, b.max_lag_bytes) {
        (Some(ms), Some(bytes)) => format!("{ms}ms+{bytes}B"),
        (Some(ms), None) => format!("{ms}ms"),
        (None, Some(bytes)) => format!("{bytes}B"),
        (None, None) => "unbounded".to_string(),
    }
}

/// `master`, `replica` or `any`.
pub fn consistency_str(c: Consistency) -> &'static str {
    match c {
        Consistency::Master => "master",
        Consistency::Replica => "replica",
        Consistency::Any => "any",
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A gauge value that the encoder accepts (it refuses `u64::MAX`).
fn gauge_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The descriptor of one metric family.
struct Family<'h> {
    name: &'static str,
    help: &'h str,
    unit: Option<Unit>,
    kind: MetricType,
}

impl<'h> Family<'h> {
    fn new(name: &'static str, help: &'h str, kind: MetricType) -> Self {
        Family {
            name,
            help,
            unit: None,
            kind,
        }
    }

    fn unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Write the descriptor and let `samples` write the family's samples.
    fn encode(
        &self,
        enc: &mut DescriptorEncoder,
        samples: impl FnOnce(&mut MetricEncoder) -> fmt::Result,
    ) -> fmt::Result {
        let mut m = enc.encode_descriptor(self.name, self.help, self.unit.as_ref(), self.kind)?;
        samples(&mut m)
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &'static str, help: &str, v: u64) -> fmt::Result {
    Family::new(name, help, MetricType::Counter)
        .encode(enc, |m| m.encode_counter::<NoLabelSet, _, u64>(&v, None))
}

fn counters<'a>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> fmt::Result {
    Family::new(name, help, MetricType::Counter).encode(enc, |m| {
        for (labels, v) in samples {
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    })
}

fn gauges<'a, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    family: Family,
    samples: impl IntoIterator<Item = (Labels<'a>, V)>,
) -> fmt::Result {
    family.encode(enc, |m| {
        for (labels, v) in samples {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    })
}

fn gauge<V: EncodeGaugeValue>(enc: &mut DescriptorEncoder, family: Family, v: V) -> fmt::Result {
    family.encode(enc, |m| m.encode_gauge(&v))
}

/// A histogram from fixed bounds; `sum_scale` converts `sum_micros` to the unit.
fn histogram<const N: usize>(
    enc: &mut DescriptorEncoder,
    family: Family,
    h: &Histogram<N>,
    bounds: &[f64; N],
    sum_scale: f64,
) -> fmt::Result {
    let (cumulative, total) = h.cumulative();
    // The encoder wants per-bucket counts (it accumulates them itself).
    let mut buckets = Vec::with_capacity(N + 1);
    let mut prev = 0;
    for (bound, c) in bounds.iter().zip(cumulative.iter()) {
        buckets.push((*bound, c - prev));
        prev = *c;
    }
    buckets.push((f64::MAX, total - prev));
    let sum = load(&h.sum_micros) as f64 / sum_scale;
    family.encode(enc, |m| {
        m.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    })
}

impl Collector for ProxyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let p = &*self.proxy;
        let m = &p.metrics;
        let settings = p.settings.load();
        let view = p.view.load();
        let now = Instant::now();
        let enc = &mut enc;

        // Traffic.
        counters(
            enc,
            "requests",
            "Requests received from clients, by command class.",
            CLASSES
                .iter()
                .zip(m.requests.iter())
                .map(|(c, v)| (vec![("class", Esc(c))], load(v))),
        )?;
        counters(
            enc,
            "routed",
            "Requests routed, by target (master, replica, rejected) and the reason the router gave.",
            TARGETS.iter().zip(m.routed.iter()).flat_map(|(t, row)| {
                Reason::ALL
                    .iter()
                    .zip(row.iter())
                    .map(move |(r, v)| (vec![("target", Esc(t)), ("reason", Esc(r.as_str()))], load(v)))
            }),
        )?;
        counter(
            enc,
            "replies",
            "Replies sent to clients (error replies included).",
            load(&m.replies),
        )?;
        counter(
            enc,
            "error_replies",
            "Error replies sent to clients.",
            load(&m.errors),
        )?;
        counter(
            enc,
            "read_retries",
            "Reads sent again after their backend failed: replica reads on the master or another replica, master reads on the next master.",
            load(&m.retries),
        )?;
        counter(
            enc,
            "hedged_reads",
            "Replica reads also sent to the master (or another replica) because their replica had not answered within the hedge delay.",
            load(&m.hedges_sent),
        )?;
        counters(
            enc,
            "hedged_read_wins",
            "Hedged reads by which copy answered: the hedge (first, or after the replica failed) or the original replica (the hedge's reply was discarded).",
            [("hedge", load(&m.hedges_won)), ("replica", load(&m.hedges_lost))]
                .into_iter()
                .map(|(w, v)| (vec![("winner", Esc(w))], v)),
        )?;
        gauge(
            enc,
            Family::new(
                "hedge_delay",
                "How long a replica read waits before it is hedged, now (0: hedging is off).",
                MetricType::Gauge,
            )
            .unit(Unit::Seconds),
            router::hedge_delay(
                settings.config.backend.hedge_after_ms,
                m.replica_read_latency.p99_us(),
                settings.config.backend.command_timeout_ms,
            )
            .map_or(0.0, |d| d.as_secs_f64()),
        )?;
        counter(
            enc,
            "backend_failures",
            "Requests that failed because their backend failed.",
            load(&m.backend_failures),
        )?;
        histogram(
            enc,
            Family::new(
                "read_latency",
                "Time from sending a read to a backend to its reply.",
                MetricType::Histogram,
            )
            .unit(Unit::Seconds),
            &m.read_latency,
            &LATENCY_BUCKETS,
            1e6,
        )?;
        histogram(
            enc,
            Family::new(
                "write_latency",
                "Time from sending a write to the master to its reply.",
                MetricType::Histogram,
            )
            .unit(Unit::Seconds),
            &m.write_latency,
            &LATENCY_BUCKETS,
            1e6,
        )?;
        histogram(
            enc,
            Family::new(
                "served_staleness",
                "Staleness bound of the replica at the time it was chosen for a read.",
                MetricType::Histogram,
            )
            .unit(Unit::Other("milliseconds".into())),
            &m.served_staleness,
            &STALENESS_BUCKETS,
            1e3,
        )?;

        // Clients.
        gauge(
            enc,
            Family::new("clients", "Client connections open now.", MetricType::Gauge),
            m.clients_connected.load(Ordering::Relaxed),
        )?;
        gauge(
            enc,
            Family::new(
                "clients_parked",
                "Idle client connections held in the parking lot, without a task of their own.",
                MetricType::Gauge,
            ),
            m.clients_parked.load(Ordering::Relaxed),
        )?;
        counter(
            enc,
            "clients_accepted",
            "Client connections accepted.",
            load(&m.clients_accepted),
        )?;
        counter(
            enc,
            "clients_rejected",
            "Client connections refused because `limits.max_clients` was reached.",
            load(&m.clients_rejected),
        )?;
        counter(
            enc,
            "clients_limited",
            "Clients disconnected for exceeding a limit (e.g. output buffer).",
            load(&m.clients_limited),
        )?;

        // Control plane.
        counters(
            enc,
            "config_reloads",
            "Configuration reloads, by result (ok: applied; rejected: invalid file, old config kept).",
            [(vec![("result", Esc("ok"))], load(&m.reloads_ok)), (vec![("result", Esc("rejected"))], load(&m.reloads_rejected))],
        )?;
        counter(
            enc,
            "pool_changes",
            "Replicas entering or leaving a read pool.",
            load(&m.pool_changes),
        )?;
        counter(
            enc,
            "topology_changes",
            "Master changes followed (failovers).",
            load(&m.topology_changes),
        )?;
        counters(
            enc,
            "durable_writes",
            "Writes whose reply waited for replicas to hold them, by result.",
            [
                (vec![("result", Esc("ok"))], load(&m.durable_ok)),
                (vec![("result", Esc("timeout"))], load(&m.durable_timeout)),
            ],
        )?;
        let fence = p.key_fence.stats();
        gauge(
            enc,
            Family::new(
                "key_fence_entries",
                "Keys the key fence of `read_your_writes: key` remembers now.",
                MetricType::Gauge,
            ),
            gauge_u64(fence.entries as u64),
        )?;
        counters(
            enc,
            "key_fence_global_raises",
            "Times the key fence's keyspace-wide fence was raised, by cause (keyspace_write: a write whose keys are unknown, such as FLUSHDB or a script without keys; capacity: more keys than routing.key_fence_capacity).",
            [
                (vec![("cause", Esc("keyspace_write"))], fence.keyspace_raises),
                (vec![("cause", Esc("capacity"))], fence.capacity_raises),
            ],
        )?;
        let generation = settings.policy.generation.to_string();
        Family::new(
            "config",
            "The configuration in force: its generation and fingerprint.",
            MetricType::Info,
        )
        .encode(enc, |e| {
            e.encode_info(&vec![
                ("generation", Esc(&generation)),
                ("fingerprint", Esc(&settings.fingerprint)),
            ])
        })?;
        gauge(
            enc,
            Family::new("uptime", "Time since the proxy started.", MetricType::Gauge)
                .unit(Unit::Seconds),
            p.started.elapsed().as_secs_f64(),
        )?;

        encode_backends(
            enc,
            &view,
            &settings.policy.budgets,
            settings.policy.generation,
            now,
        )?;

        // Rules.
        let policy = &settings.policy;
        counters(
            enc,
            "rule_hits",
            "Reads whose consistency level a rule decided (`default`: no rule matched).",
            policy
                .rules
                .iter()
                .map(|r| (vec![("rule", Esc(&r.name))], load(&r.hits)))
                .chain(std::iter::once((
                    vec![("rule", Esc("default"))],
                    load(&policy.default_hits),
                ))),
        )?;
        Ok(())
    }
}

/// Per-backend and per-replica metrics from the view (in a cluster, every shard's, each
/// sample labelled with its `shard`).
fn encode_backends(
    enc: &mut DescriptorEncoder,
    view: &View,
    budgets: &[Budget],
    policy_gen: u64,
    now: Instant,
) -> fmt::Result {
    struct Row<'a> {
        shard: Option<&'a str>,
        addr: &'a str,
        role: &'static str,
        up: bool,
        served: u64,
        outstanding: u64,
    }
    let cluster = view.cluster.is_some();
    let shard_names: Vec<String> = (0..view.shard_views().count())
        .map(|i| i.to_string())
        .collect();
    // Each shard's view, with its label (none outside a cluster).
    let shards: Vec<(Option<&str>, &View)> = view
        .shard_views()
        .enumerate()
        .map(|(i, v)| {
            (
                shard_names.get(i).map(|s| s.as_str()).filter(|_| cluster),
                v,
            )
        })
        .collect();
    let replicas: Vec<(Option<&str>, &crate::topology::ReplicaView)> = shards
        .iter()
        .flat_map(|(s, v)| v.replicas.iter().map(move |r| (*s, r)))
        .collect();
    let rows: Vec<Row> = shards
        .iter()
        .flat_map(|(s, v)| {
            v.master
                .iter()
                .map(move |mv| Row {
                    shard: *s,
                    addr: &mv.backend.addr,
                    role: mv.backend.role.as_str(),
                    up: mv.up,
                    served: load(&mv.backend.served),
                    outstanding: mv.backend.outstanding(),
                })
                .chain(v.replicas.iter().map(move |r| Row {
                    shard: *s,
                    addr: &r.backend.addr,
                    role: r.backend.role.as_str(),
                    up: r.reachable,
                    served: load(&r.backend.served),
                    outstanding: r.backend.outstanding(),
                }))
        })
        .collect();
    /// `labels`, after the `shard` label when there is one.
    fn sharded<'a>(shard: Option<&'a str>, labels: Labels<'a>) -> Labels<'a> {
        shard
            .map(|s| ("shard", Esc(s)))
            .into_iter()
            .chain(labels)
            .collect()
    }
    fn labels<'a>(r: &Row<'a>) -> Labels<'a> {
        sharded(r.shard, vec![("addr", Esc(r.addr)), ("role", Esc(r.role))])
    }
    gauges(
        enc,
        Family::new(
            "backend_up",
            "1 if the backend answers polls (a master must also say it is the master).",
            MetricType::Gauge,
        ),
        rows.iter().map(|r| (labels(r), i64::from(r.up))),
    )?;
    counters(
        enc,
        "backend_served",
        "Requests routed to the backend.",
        rows.iter().map(|r| (labels(r), r.served)),
    )?;
    gauges(
        enc,
        Family::new(
            "backend_outstanding",
            "Requests in flight on the backend's shared connections.",
            MetricType::Gauge,
        ),
        rows.iter().map(|r| (labels(r), gauge_u64(r.outstanding))),
    )?;

    fn addr<'a>(shard: Option<&'a str>, a: &'a str) -> Labels<'a> {
        sharded(shard, vec![("addr", Esc(a))])
    }
    gauges(
        enc,
        Family::new(
            "replica_read_latency_smoothed",
            "The replica's smoothed read latency, which replica_choice: balanced weighs (left out until measured).",
            MetricType::Gauge,
        )
        .unit(Unit::Seconds),
        replicas.iter().filter_map(|(s, r)| {
            let (us, _) = r.backend.latency.get(now);
            (us > 0).then(|| (addr(*s, &r.backend.addr), us as f64 / 1e6))
        }),
    )?;
    gauges(
        enc,
        Family::new(
            "replica_lag",
            "Master offset minus the replica's own offset.",
            MetricType::Gauge,
        )
        .unit(Unit::Bytes),
        replicas
            .iter()
            .filter_map(|(s, r)| Some((addr(*s, &r.backend.addr), gauge_u64(r.lag_bytes?)))),
    )?;
    gauges(
        enc,
        Family::new(
            "replica_staleness",
            "Upper bound on how far behind the master the replica's data is, now.",
            MetricType::Gauge,
        )
        .unit(Unit::Other("milliseconds".into())),
        replicas.iter().filter_map(|(s, r)| {
            Some((addr(*s, &r.backend.addr), gauge_u64(r.staleness_ms(now)?)))
        }),
    )?;
    gauges(
        enc,
        Family::new(
            "replica_health",
            "State set: 1 for the replica's current health state, 0 for the others (ok: may serve reads).",
            MetricType::Gauge,
        ),
        replicas.iter().flat_map(|(s, r)| {
            HEALTH_STATES.iter().map(move |h| {
                (
                    sharded(
                        *s,
                        vec![("addr", Esc(r.backend.addr.as_str())), ("health", Esc(h.as_str()))],
                    ),
                    i64::from(r.health == *h),
                )
            })
        }),
    )?;
    // Each budget's bounds, under the label `replica_in_pool` uses, so a dashboard can
    // draw a replica's staleness and offset gap against every budget in force.
    let names: Vec<String> = budgets.iter().map(budget_label).collect();
    gauges(
        enc,
        Family::new(
            "budget_max_lag",
            "The largest staleness a read pool's budget allows (budgets without a staleness bound are left out).",
            MetricType::Gauge,
        )
        .unit(Unit::Other("milliseconds".into())),
        budgets.iter().zip(names.iter()).filter_map(|(b, name)| {
            Some((vec![("budget", Esc(name.as_str()))], gauge_u64(b.max_lag_ms?)))
        }),
    )?;
    gauges(
        enc,
        Family::new(
            "budget_max_lag",
            "The largest offset gap a read pool's budget allows (budgets without a byte bound are left out).",
            MetricType::Gauge,
        )
        .unit(Unit::Bytes),
        budgets.iter().zip(names.iter()).filter_map(|(b, name)| {
            Some((vec![("budget", Esc(name.as_str()))], gauge_u64(b.max_lag_bytes?)))
        }),
    )?;
    // Pool bits refer to the policy generation the view was built for; right after a
    // reload they may not match the new budgets yet, and are left out until they do.
    let current = |v: &View| v.policy_gen == policy_gen;
    let pooled: Vec<(Option<&str>, &crate::topology::ReplicaView)> = shards
        .iter()
        .filter(|(_, v)| current(v))
        .flat_map(|(s, v)| v.replicas.iter().map(move |r| (*s, r)))
        .collect();
    gauges(
        enc,
        Family::new(
            "replica_in_pool",
            "1 if the replica is in the read pool of the budget.",
            MetricType::Gauge,
        ),
        pooled.iter().flat_map(|(s, r)| {
            names.iter().enumerate().map(move |(i, name)| {
                let bit = i < 64 && r.in_pool & (1u64 << i) != 0;
                (
                    sharded(
                        *s,
                        vec![
                            ("addr", Esc(r.backend.addr.as_str())),
                            ("budget", Esc(name.as_str())),
                        ],
                    ),
                    i64::from(bit),
                )
            })
        }),
    )?;
    /// A gauge per shard; outside a cluster one sample without labels.
    fn per_shard<V: EncodeGaugeValue>(
        enc: &mut DescriptorEncoder,
        family: Family,
        samples: Vec<(Labels<'_>, V)>,
    ) -> fmt::Result {
        family.encode(enc, |m| {
            for (labels, v) in samples {
                if labels.is_empty() {
                    m.encode_gauge(&v)?;
                } else {
                    m.encode_family(&labels)?.encode_gauge(&v)?;
                }
            }
            Ok(())
        })
    }
    /// A shard's labels (its master's address too), none outside a cluster.
    fn label<'b>(s: Option<&'b str>, v: &'b View) -> Labels<'b> {
        match (s, v.master.as_ref()) {
            (None, _) => Vec::new(),
            (Some(_), Some(mv)) => addr(s, &mv.backend.addr),
            (Some(_), None) => sharded(s, Vec::new()),
        }
    }
    per_shard(
        enc,
        Family::new(
            "master_offset",
            "The master's replication offset at its last poll.",
            MetricType::Gauge,
        )
        .unit(Unit::Bytes),
        shards
            .iter()
            .filter_map(|(s, v)| Some((label(*s, v), gauge_u64(v.master.as_ref()?.offset?))))
            .collect(),
    )?;
    per_shard(
        enc,
        Family::new(
            "master_write_rate",
            "Replication bytes per second written on the master, recently.",
            MetricType::Gauge,
        )
        .unit(Unit::Other("bytes_per_second".into())),
        shards
            .iter()
            .map(|(s, v)| (label(*s, v), v.write_rate))
            .collect(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use prometheus_client::registry::Registry;

    fn render(proxy: Arc<Proxy>) -> String {
        let mut reg = Registry::with_prefix("redsplit");
        reg.register_collector(Box::new(ProxyCollector::new(proxy)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        out
    }

    #[test]
    fn renders_counters_and_histograms() {
        let proxy = Proxy::new(Config::default(), None).unwrap();
        proxy.metrics.requests[0].store(7, Ordering::Relaxed);
        let mut local = crate::metrics::LocalHistogram::default();
        local.observe(300, &crate::metrics::LATENCY_BOUNDS_US);
        local.observe(3_000_000, &crate::metrics::LATENCY_BOUNDS_US);
        proxy.metrics.read_latency.add(&local);
        let text = render(proxy);
        assert!(
            text.contains("# TYPE redsplit_requests counter\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_requests_total{class=\"read\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_read_latency_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_read_latency_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_read_latency_seconds_bucket{le=\"2.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_read_latency_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_read_latency_seconds_sum 3.0003\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_config_info{generation=\"1\",fingerprint=\""),
            "{text}"
        );
        assert!(text.contains("redsplit_key_fence_entries 0\n"), "{text}");
        assert!(
            text.contains("redsplit_key_fence_global_raises_total{cause=\"capacity\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut cfg = Config::default();
        cfg.routing.rules =
            serde_yaml::from_str("- name: 'say \"hi\" \\ bye'\n  keys: ['k*']\n").expect("rule");
        let proxy = Proxy::new(cfg, None).unwrap();
        let text = render(proxy);
        assert!(
            text.contains(r#"redsplit_rule_hits_total{rule="say \"hi\" \\ bye"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn budgets_are_exported_with_their_bounds() {
        let mut cfg = Config::default();
        cfg.routing.rules = serde_yaml::from_str(
            "- name: feeds\n  keys: ['feed:*']\n  max_lag_ms: 5000\n- name: tight\n  keys: ['t:*']\n  max_lag_bytes: 4096\n",
        )
        .expect("rules");
        let proxy = Proxy::new(cfg, None).unwrap();
        let text = render(proxy);
        assert!(
            text.contains("redsplit_budget_max_lag_milliseconds{budget=\"5000ms\"} 5000\n"),
            "{text}"
        );
        assert!(
            text.contains("redsplit_budget_max_lag_bytes{budget=\"4096B\"} 4096\n"),
            "{text}"
        );
        assert!(
            !text.contains("redsplit_budget_max_lag_milliseconds{budget=\"4096B\"}"),
            "a byte-only budget has no staleness bound: {text}"
        );
    }

    #[test]
    fn budget_labels() {
        assert_eq!(
            budget_label(&Budget {
                max_lag_ms: Some(1000),
                max_lag_bytes: None
            }),
            "1000ms"
        );
        assert_eq!(
            budget_label(&Budget {
                max_lag_ms: None,
                max_lag_bytes: Some(4096)
            }),
            "4096B"
        );
        assert_eq!(
            budget_label(&Budget {
                max_lag_ms: Some(5),
                max_lag_bytes: Some(10)
            }),
            "5ms+10B"
        );
        assert_eq!(budget_label(&Budget::default()), "unbounded");
    }
}
