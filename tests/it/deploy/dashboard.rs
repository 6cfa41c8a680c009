//! The Grafana dashboard: the PromQL references of its queries, checked against what the
//! proxy exports.

use crate::admin::http_get;
use crate::common::*;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::root;

// ---------------------------------------------------------------------------------------
// PromQL references and the exposition
// ---------------------------------------------------------------------------------------

/// The metric names (those of the proxy: `redsplit_…`) and label names a PromQL
/// expression refers to.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// Lex `expr` just enough to tell metric names from label names, function names,
/// keywords, strings (label values), durations and Grafana variables.
fn promql_refs(expr: &str) -> Refs {
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b = expr.as_bytes();
    let mut refs = Refs::default();
    let (mut i, mut braces) = (0, 0usize);
    // After `by`/`on`/…: the next `(` opens a list of label names.
    let (mut pending_group, mut in_group) = (false, false);
    while i < b.len() {
        let c = b[i];
        let ident_start = c.is_ascii_alphabetic() || c == b'_' || c == b':';
        if c == b'"' || c == b'\'' || c == b'`' {
            // A string: skip it (label values may look like anything).
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == b'[' {
            // A range or subquery duration (`[5m]`, `[$__rate_interval]`).
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c == b'$' || c.is_ascii_digit() {
            // A Grafana variable or a number (`0.99`, `1e3`).
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
        } else if ident_start {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            if braces > 0 || in_group {
                refs.labels.insert(word.to_string());
            } else if GROUPING.contains(&word) {
                pending_group = true;
                continue;
            } else if word.starts_with("redsplit_") {
                refs.metrics.insert(word.to_string());
            }
            pending_group = false;
        } else {
            match c {
                b'{' => braces += 1,
                b'}' => braces = braces.saturating_sub(1),
                b'(' if pending_group => in_group = true,
                b')' => in_group = false,
                _ => {}
            }
            if !c.is_ascii_whitespace() {
                pending_group = false;
            }
            i += 1;
        }
    }
    refs
}

/// What a scrape of `/metrics` holds: each family's type, and each sample name with the
/// label names its samples carry.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let mut parts = t.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    e.types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = e.samples.entry(line[..end].to_string()).or_default();
            if line[end..].starts_with('{') {
                // `name="value"` pairs; values are quoted with `\` escapes.
                let b = line.as_bytes();
                let mut i = end + 1;
                while i < b.len() && b[i] != b'}' {
                    let eq = i + line[i..].find('=').expect("a label's `=`");
                    labels.insert(line[i..eq].trim_start_matches(',').to_string());
                    i = eq + 2;
                    while b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                    if b[i] == b',' {
                        i += 1;
                    }
                }
            }
        }
        e
    }

    /// Why `name` cannot be queried, if it cannot: not exported, or a suffix its family's
    /// type does not have (`_bucket` only on histograms, a histogram or a counter named
    /// without its sample suffix).
    fn problem(&self, name: &str) -> Option<String> {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(kind) = self.types.get(base) {
                    let ok = match suffix {
                        "_bucket" => kind == "histogram" || kind == "gaugehistogram",
                        _ => kind == "histogram" || kind == "summary",
                    };
                    return match (ok, self.samples.contains_key(name)) {
                        (true, true) => None,
                        (true, false) => Some(format!("{name}: no such sample in the exposition")),
                        (false, _) => Some(format!(
                            "{name}: `{base}` is a {kind}, it has no {suffix} samples"
                        )),
                    };
                }
            }
        }
        if self.samples.contains_key(name) {
            return None;
        }
        Some(match self.types.get(name) {
            Some(kind) if kind == "histogram" => {
                format!("{name}: a histogram is queried as {name}_bucket, _sum or _count")
            }
            Some(kind) if kind == "counter" => {
                format!("{name}: a counter is queried as {name}_total")
            }
            Some(kind) => format!("{name}: a {kind} family without a sample of that name"),
            None => format!("{name}: not in the exposition"),
        })
    }

    /// Every label name any sample of `metric` carries.
    fn labels_of(&self, metric: &str) -> BTreeSet<String> {
        self.samples.get(metric).cloned().unwrap_or_default()
    }
}

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// `{{label}}` references of a Grafana legend format.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------------------

fn dashboard() -> Json {
    let path = root().join("deploy/grafana/redsplit.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, the panels of rows included.
fn panels(d: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// A PromQL expression of the dashboard, where it is, and its legend format.
struct Query {
    place: String,
    expr: String,
    legend: String,
}

/// Every PromQL expression in the dashboard: panel targets, annotations, and the
/// metric selectors of template variables (`label_values(metric, label)`).
fn queries(d: &Json) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!("panel `{}`", p["title"].as_str().unwrap_or("?")),
                expr: t["expr"].as_str().expect("a target's expr").to_string(),
                legend: t["legendFormat"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                place: format!("annotation `{}`", a["name"].as_str().unwrap_or("?")),
                expr: expr.to_string(),
                legend: a["titleFormat"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("a query variable's query");
        // label_values(metric, label): check `metric{label=""}`, so both are checked.
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .expect("variables use label_values(metric, label)");
        let (metric, label) = inner.rsplit_once(',').expect("label_values with a label");
        out.push(Query {
            place: format!("variable `{}`", v["name"].as_str().unwrap_or("?")),
            expr: format!("{}{{{}=\"\"}}", metric.trim(), label.trim()),
            legend: String::new(),
        });
    }
    out
}

#[test]
fn promql_references_are_told_apart() {
    let r = promql_refs(
        "histogram_quantile(0.99, sum by (le) (rate(redsplit_read_latency_seconds_bucket{instance=~\"$instance\",reason!=\"redsplit_not_a_metric\"}[$__rate_interval])))",
    );
    assert_eq!(
        r.metrics,
        BTreeSet::from(["redsplit_read_latency_seconds_bucket".to_string()])
    );
    assert_eq!(
        r.labels,
        BTreeSet::from(["le", "instance", "reason"].map(String::from))
    );
    let r = promql_refs(
        "(redsplit_replica_in_pool * 0 + on (instance, addr) group_left redsplit_replica_staleness_milliseconds) / on(budget) group_left() redsplit_budget_max_lag_milliseconds offset 5m",
    );
    assert_eq!(
        r.metrics,
        BTreeSet::from(
            [
                "redsplit_replica_in_pool",
                "redsplit_replica_staleness_milliseconds",
                "redsplit_budget_max_lag_milliseconds"
            ]
            .map(String::from)
        )
    );
    assert_eq!(
        r.labels,
        BTreeSet::from(["instance", "addr", "budget"].map(String::from))
    );
    assert_eq!(
        legend_labels("{{addr}} · {{ budget }}"),
        vec!["addr", "budget"]
    );
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "redsplit");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let vars = d["templating"]["list"].as_array().expect("variables");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable: {vars:?}"
    );
    let mut ids = BTreeSet::new();
    // Cells of the 24-column grid each panel covers: no two panels overlap.
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("a title").to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("an id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.clone()) {
                    panic!("panels `{other}` and `{title}` overlap at ({cx}, {cy})");
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title} says what it shows"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refIds unique"
            );
        }
    }
}

/// Start a proxy with two replicas and budgets of both kinds, send traffic of every
/// kind the dashboard shows, and check each of its queries against the exposition.
#[test]
fn dashboard_queries_only_exported_metrics() {
    let d = dashboard();
    let queries = queries(&d);
    let wanted: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| promql_refs(&q.expr).metrics)
        .collect();
    // What every replication runbook asks for, and the rest the dashboard promises.
    for must in [
        "redsplit_replica_lag_bytes",
        "redsplit_replica_staleness_milliseconds",
        "redsplit_budget_max_lag_milliseconds",
        "redsplit_budget_max_lag_bytes",
        "redsplit_master_write_rate_bytes_per_second",
        "redsplit_routed_total",
        "redsplit_served_staleness_milliseconds_bucket",
        "redsplit_read_latency_seconds_bucket",
        "redsplit_write_latency_seconds_bucket",
        "redsplit_clients",
        "redsplit_config_reloads_total",
    ] {
        assert!(wanted.contains(must), "the dashboard shows {must}");
    }

    let set = ReplicaSet::start(2, false);
    let rules = "routing:\n  rules:\n    - name: feeds\n      keys: [\"feed:*\"]\n      max_lag_ms: 5000\n    - name: bulk\n      keys: [\"bulk:*\"]\n      max_lag_bytes: 1048576\n    - name: stock\n      keys: [\"stock:*\"]\n      consistency: master\n      wait: {replicas: 1, timeout_ms: 2000}\n";
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, rules));
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_in_pool(2);
    let mut w = proxy.conn();
    for i in 0..20 {
        query(&mut w, &["SET", &format!("feed:{i}"), "v"]).expect("SET");
        query(&mut w, &["SET", &format!("bulk:{i}"), "v"]).expect("SET");
    }
    // A durable write: confirmed, or (on a machine too loaded for the replicas to keep
    // up within 2 s) answered with the timeout error; either is counted.
    if let Err(e) = query(&mut w, &["SET", "stock:1", "5"]) {
        assert!(e.to_string().contains("write applied on the master"), "{e}");
    }
    set.wait_synced(SYNC_TIMEOUT);
    let mut r = proxy.conn();
    for i in 0..40 {
        query(&mut r, &["GET", &format!("feed:{}", i % 20)]).expect("GET");
        query(&mut r, &["GET", &format!("bulk:{}", i % 20)]).expect("GET");
        query(&mut r, &["GET", "stock:1"]).expect("GET");
    }

    // Per-replica gauges are left out until measured, and sessions add their tallies once
    // per batch: scrape until everything is there, or report what is not.
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let (expo, problems) = loop {
        let resp = http_get(admin, "/metrics", None);
        assert_eq!(resp.status, 200, "{}", resp.body);
        let expo = Exposition::parse(&resp.body);
        let problems: Vec<String> = wanted.iter().filter_map(|m| expo.problem(m)).collect();
        if problems.is_empty() || Instant::now() >= deadline {
            break (expo, problems);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        problems.is_empty(),
        "the dashboard queries what the proxy does not export:\n{}",
        problems.join("\n")
    );
    // The check itself tells a queryable name from one that is not.
    assert!(expo.problem("redsplit_read_latency_seconds").is_some());
    assert!(expo.problem("redsplit_requests").is_some());
    assert!(expo.problem("redsplit_clients_bucket").is_some());
    assert!(expo.problem("redsplit_no_such_metric").is_some());
    assert!(expo.problem("redsplit_requests_total").is_none());

    // Labels in selectors, groupings and legends are labels those metrics carry.
    for q in &queries {
        let refs = promql_refs(&q.expr);
        let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        for m in &refs.metrics {
            known.extend(expo.labels_of(m));
        }
        for l in refs.labels.iter().chain(legend_labels(&q.legend).iter()) {
            assert!(
                known.contains(l),
                "{}: label `{l}` is on none of {:?} (`{}`)",
                q.place,
                refs.metrics,
                q.expr
            );
        }
    }
}
