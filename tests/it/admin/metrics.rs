//! Metrics agree with the traffic sent, read from a scrape by the helpers here.

use crate::common::*;
use prometheus_parse::{Sample, Scrape, Value as PromValue};
use std::time::{Duration, Instant};

use super::scrape;

fn labels_match(s: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
}

fn scalar(v: &PromValue) -> Option<f64> {
    match v {
        PromValue::Counter(x) | PromValue::Gauge(x) | PromValue::Untyped(x) => Some(*x),
        _ => None,
    }
}

/// The value of the one sample named `name` with (at least) `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels_match(x, labels))
        .filter_map(|x| scalar(&x.value))
        .collect();
    assert!(
        found.len() <= 1,
        "{name}{labels:?} matches {} samples",
        found.len()
    );
    found.first().copied()
}

fn must(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// Sum over every sample named `name` with (at least) `labels`.
fn sum(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels_match(x, labels))
        .filter_map(|x| scalar(&x.value))
        .sum()
}

/// A histogram's buckets `(le, cumulative count)`.
fn histogram(s: &Scrape, name: &str) -> Vec<(f64, f64)> {
    let h = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .unwrap_or_else(|| panic!("no histogram {name}"));
    match &h.value {
        PromValue::Histogram(b) => b.iter().map(|c| (c.less_than, c.count)).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

#[test]
fn metrics_agree_with_traffic() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_in_pool(2);
    let (before, _) = scrape(admin, None);

    const N: usize = 25;
    const M: usize = 40;
    let mut w = proxy.conn();
    for i in 0..N {
        query(&mut w, &["SET", &format!("k{i}"), "v"]).expect("SET");
    }
    set.wait_synced(SYNC_TIMEOUT);
    // A fresh connection has no read-your-writes constraint: its reads go to replicas.
    let mut r = proxy.conn();
    for i in 0..M {
        let v = query(&mut r, &["GET", &format!("k{}", i % N)]).expect("GET");
        assert_eq!(value_text(&v).as_deref(), Some("v"));
    }

    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        value(after, name, labels).unwrap_or(0.0) - value(&before, name, labels).unwrap_or(0.0)
    };
    // Sessions add their tallies once per batch: poll until the last batch is in.
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let (after, body) = loop {
        let (after, body) = scrape(admin, None);
        if delta(&after, "redsplit_requests_total", &[("class", "read")]) >= M as f64
            && delta(&after, "redsplit_requests_total", &[("class", "write")]) >= N as f64
            && delta(&after, "redsplit_read_latency_seconds_count", &[]) >= M as f64
        {
            break (after, body);
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up with the traffic:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Requests by class.
    assert_eq!(
        delta(&after, "redsplit_requests_total", &[("class", "write")]),
        N as f64
    );
    assert_eq!(
        delta(&after, "redsplit_requests_total", &[("class", "read")]),
        M as f64
    );
    // Routing: writes to the master, every read to a replica within its budget.
    assert_eq!(
        delta(
            &after,
            "redsplit_routed_total",
            &[("target", "master"), ("reason", "write")]
        ),
        N as f64
    );
    assert_eq!(
        delta(
            &after,
            "redsplit_routed_total",
            &[("target", "replica"), ("reason", "fresh")]
        ),
        M as f64
    );
    let replica_routed = sum(&after, "redsplit_routed_total", &[("target", "replica")])
        - sum(&before, "redsplit_routed_total", &[("target", "replica")]);
    assert_eq!(replica_routed, M as f64, "replica-routed reads");
    // Every reason of every target is exported (so rate() works from the first request).
    assert_eq!(
        after
            .samples
            .iter()
            .filter(|s| s.metric == "redsplit_routed_total")
            .count(),
        3 * redsplit::router::Reason::ALL.len()
    );
    assert_eq!(delta(&after, "redsplit_replies_total", &[]), (N + M) as f64);
    assert_eq!(delta(&after, "redsplit_error_replies_total", &[]), 0.0);
    // Rules decide reads only.
    assert_eq!(
        delta(&after, "redsplit_rule_hits_total", &[("rule", "default")]),
        M as f64
    );

    // Latency histograms: one observation per request, buckets cumulative up to +Inf.
    assert_eq!(
        delta(&after, "redsplit_read_latency_seconds_count", &[]),
        M as f64
    );
    assert_eq!(
        delta(&after, "redsplit_write_latency_seconds_count", &[]),
        N as f64
    );
    assert!(must(&after, "redsplit_read_latency_seconds_sum", &[]) > 0.0);
    for name in [
        "redsplit_read_latency_seconds",
        "redsplit_write_latency_seconds",
        "redsplit_served_staleness_milliseconds",
    ] {
        let buckets = histogram(&after, name);
        let count = must(&after, &format!("{name}_count"), &[]);
        assert_eq!(
            buckets.len(),
            if name.contains("staleness") { 13 } else { 15 },
            "{name} buckets"
        );
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name} is cumulative: {buckets:?}"
        );
        assert_eq!(
            buckets.last().map(|b| (b.0, b.1)),
            Some((f64::INFINITY, count)),
            "{name} +Inf bucket = count"
        );
    }
    let staleness_count = must(&after, "redsplit_served_staleness_milliseconds_count", &[])
        - value(&before, "redsplit_served_staleness_milliseconds_count", &[]).unwrap_or(0.0);
    assert_eq!(
        staleness_count, M as f64,
        "one staleness observation per replica read"
    );

    // Per backend and per replica.
    let master = set.master.addr().to_string();
    assert_eq!(
        must(
            &after,
            "redsplit_backend_up",
            &[("addr", &master), ("role", "master")]
        ),
        1.0
    );
    let mut served_by_replicas = 0.0;
    for r in set.replica_addrs() {
        let a = r.to_string();
        assert_eq!(
            must(
                &after,
                "redsplit_backend_up",
                &[("addr", &a), ("role", "replica")]
            ),
            1.0
        );
        served_by_replicas += delta(
            &after,
            "redsplit_backend_served_total",
            &[("addr", &a), ("role", "replica")],
        );
        must(
            &after,
            "redsplit_backend_outstanding",
            &[("addr", &a), ("role", "replica")],
        );
        let lag = must(&after, "redsplit_replica_lag_bytes", &[("addr", &a)]);
        assert!(lag >= 0.0, "lag {lag}");
        let staleness = must(
            &after,
            "redsplit_replica_staleness_milliseconds",
            &[("addr", &a)],
        );
        assert!(
            (0.0..1000.0).contains(&staleness),
            "replica {a} staleness {staleness} ms"
        );
        assert_eq!(
            must(
                &after,
                "redsplit_replica_health",
                &[("addr", &a), ("health", "ok")]
            ),
            1.0
        );
        assert_eq!(
            sum(&after, "redsplit_replica_health", &[("addr", &a)]),
            1.0,
            "one health state at a time"
        );
        assert_eq!(
            must(
                &after,
                "redsplit_replica_in_pool",
                &[("addr", &a), ("budget", "1000ms")]
            ),
            1.0
        );
    }
    assert_eq!(
        served_by_replicas, M as f64,
        "backend_served counts the reads"
    );
    assert!(
        delta(
            &after,
            "redsplit_backend_served_total",
            &[("addr", &master)]
        ) >= N as f64
    );
    must(&after, "redsplit_master_write_rate_bytes_per_second", &[]);
    assert!(must(&after, "redsplit_master_offset_bytes", &[]) > 0.0);
    must(&after, "redsplit_clients", &[]);
    assert!(delta(&after, "redsplit_clients_accepted_total", &[]) >= 2.0);
    let fp = proxy.state().settings.load().fingerprint.clone();
    assert!(
        body.contains(&format!(
            "redsplit_config_info{{generation=\"1\",fingerprint=\"{fp}\"}} 1\n"
        )),
        "{body}"
    );

    // Every family has HELP text and every sample belongs to a described family.
    let families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for f in &families {
        assert!(f.starts_with("redsplit_"), "{f} has the redsplit_ prefix");
        assert!(body.contains(&format!("# HELP {f} ")), "{f} has HELP text");
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            families.iter().any(|f| name.starts_with(f)),
            "sample {name} has a TYPE line"
        );
    }
}
