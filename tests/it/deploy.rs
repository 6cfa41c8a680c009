//! The operators' files under `deploy/`: the Grafana dashboard queries only metrics the
//! proxy exports, with labels they carry; the Kubernetes manifests pass the Kubernetes
//! schemas offline, agree with each other and with the proxy (ports, probe paths,
//! shutdown grace, Secret keys), and their proxy.yaml passes `redsplit check`.

use crate::admin::http_get;
use crate::common::*;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

// ---------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

fn yaml_file(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The resource files kustomization.yaml lists.
fn k8s_resources() -> Vec<PathBuf> {
    let k = yaml_file(&k8s_dir().join("kustomization.yaml"));
    k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| k8s_dir().join(r.as_str().expect("a file name")))
        .collect()
}

/// Every resource of the manifests, by kind.
fn k8s_objects() -> BTreeMap<String, serde_yaml::Value> {
    let mut out = BTreeMap::new();
    for f in k8s_resources() {
        let v = yaml_file(&f);
        let kind = v["kind"].as_str().expect("kind").to_string();
        assert!(out.insert(kind.clone(), v).is_none(), "one {kind}");
    }
    out
}

#[test]
fn kubernetes_manifests_pass_the_schemas() {
    let files = k8s_resources();
    // kustomization.yaml lists every manifest of the folder.
    let mut on_disk: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    on_disk.sort();
    let mut listed = files.clone();
    listed.sort();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");

    // The oldest Kubernetes these manifests are for (the preStop `sleep` action is on by
    // default from 1.30), and the newest the validator knows.
    for version in ["1.32.0", "1.37.0"] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap_or_else(|e| {
                panic!("kubernetes-validate is needed ({e}); scripts/test.sh installs it (python3 -m pip install kubernetes-validate==1.37.0)")
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate {version}:\n{text}"
        );
        // A kind without a schema is only a warning to the tool: here it fails.
        let passed = text
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert_eq!(
            passed,
            files.len(),
            "every resource validated ({version}):\n{text}"
        );
        assert!(
            !text.contains("WARN") && !text.contains("ERROR"),
            "kubernetes-validate {version}:\n{text}"
        );
    }

    // The validator rejects what it should (so a pass above means something).
    let bad = tempfile::tempdir().unwrap();
    let path = bad.path().join("deployment.yaml");
    let d = std::fs::read_to_string(k8s_dir().join("deployment.yaml"))
        .unwrap()
        .replace("periodSeconds: 5", "periodSeconds: five");
    std::fs::write(&path, d).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.32.0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad probe period fails validation");
}

/// The Deployment's environment, Secret references resolved from the Secret.
fn container_env(objects: &BTreeMap<String, serde_yaml::Value>) -> Vec<(String, String)> {
    env_and_sources(objects)
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect()
}

/// The Deployment's environment: name, value, and whether the value is the Secret's.
fn env_and_sources(objects: &BTreeMap<String, serde_yaml::Value>) -> Vec<(String, String, bool)> {
    let secret = &objects["Secret"];
    let c = &objects["Deployment"]["spec"]["template"]["spec"]["containers"][0];
    c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            match e["value"].as_str() {
                Some(v) => (name, v.to_string(), false),
                None => {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    assert_eq!(
                        r["name"], secret["metadata"]["name"],
                        "{name} refers to the Secret"
                    );
                    let key = r["key"].as_str().expect("key");
                    let value = secret["stringData"][key]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: the Secret has no key {key}"))
                        .to_string();
                    (name, value, true)
                }
            }
        })
        .collect()
}

/// `redsplit check` on `file` with only `env` (and PATH) in its environment.
fn check(file: &Path, env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_redsplit"))
        .arg("check")
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

#[test]
fn kubernetes_manifests_agree_with_the_proxy() {
    let objects = k8s_objects();
    let dep = &objects["Deployment"];
    let pod = &dep["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&dep["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&objects["Service"]["spec"]["selector"], labels);
    assert_eq!(
        &objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        labels
    );
    assert!(
        dep["spec"]["replicas"].as_u64().is_some_and(|n| n >= 2),
        "more pods than the PodDisruptionBudget lets go"
    );

    // The config: the ConfigMap, mounted as the directory the proxy watches.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("--config");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| Path::new(config_path).parent() == m["mountPath"].as_str().map(Path::new))
        .expect("the config's directory is mounted");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    let volume = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let cm = &objects["ConfigMap"];
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let proxy_yaml = cm["data"][file_name]
        .as_str()
        .expect("the ConfigMap holds the config");

    // Ports: the env the ConfigMap's `${VAR}`s read, the container's named ports, the
    // probes, the scrape annotations and the Service.
    let env = container_env(&objects);
    let var = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert!(
        proxy_yaml.contains("${REDSPLIT_LISTEN") && proxy_yaml.contains("${REDSPLIT_ADMIN_LISTEN")
    );
    let client_port = port_of(&var("REDSPLIT_LISTEN").expect("REDSPLIT_LISTEN"));
    let admin_port = port_of(&var("REDSPLIT_ADMIN_LISTEN").expect("REDSPLIT_ADMIN_LISTEN"));
    let named = |n: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("a container port named {n}"))
    };
    assert_eq!(named("client"), u64::from(client_port));
    assert_eq!(named("admin"), u64::from(admin_port));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(admin_port.to_string().as_str())
    );
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let svc_port = &objects["Service"]["spec"]["ports"][0];
    assert_eq!(svc_port["targetPort"], "client");

    // SIGTERM: the preStop pause and the proxy's drain fit before the kubelet's SIGKILL.
    let cfg: serde_yaml::Value = serde_yaml::from_str(proxy_yaml).unwrap();
    let grace_ms = cfg["shutdown_grace_ms"]
        .as_u64()
        .expect("shutdown_grace_ms set explicitly");
    let pre_stop_ms = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0)
        * 1000;
    let termination_ms = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds")
        * 1000;
    assert!(
        pre_stop_ms + grace_ms + 2000 <= termination_ms,
        "preStop {pre_stop_ms} ms + shutdown_grace_ms {grace_ms} ms + 2 s must fit in terminationGracePeriodSeconds ({termination_ms} ms)"
    );

    // The image's user, and requests and limits set.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let uid = spec["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(
        dockerfile.contains(&format!("USER {uid}")),
        "runAsUser is the image's USER"
    );
    for what in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            if what == "limits" && r == "cpu" {
                continue; // no CPU limit: throttling a proxy adds latency to every request
            }
            assert!(
                c["resources"][what][r].as_str().is_some(),
                "resources.{what}.{r}"
            );
        }
    }

    // Secrets reach the config only through `${VAR}`: none is written in the ConfigMap.
    let secret = &objects["Secret"];
    for (_, v) in secret["stringData"].as_mapping().expect("stringData") {
        assert!(
            !proxy_yaml.contains(v.as_str().unwrap()),
            "a secret in the ConfigMap"
        );
    }
}

/// The ConfigMap's proxy.yaml written to a file of its own (kept while the directory is).
fn configmap_file(objects: &BTreeMap<String, serde_yaml::Value>) -> (tempfile::TempDir, PathBuf) {
    let proxy_yaml = objects["ConfigMap"]["data"]["proxy.yaml"]
        .as_str()
        .expect("proxy.yaml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, proxy_yaml).unwrap();
    (dir, file)
}

#[test]
fn kubernetes_config_passes_redsplit_check() {
    let objects = k8s_objects();
    let (_dir, file) = configmap_file(&objects);
    let sources = env_and_sources(&objects);
    let env = container_env(&objects);
    let out = check(&file, &env);
    assert!(
        out.status.success(),
        "redsplit check of the ConfigMap's proxy.yaml with the Deployment's env:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each variable the Secret provides is one the config needs: without it, check fails.
    let from_secret: Vec<&String> = sources.iter().filter(|e| e.2).map(|e| &e.0).collect();
    assert!(!from_secret.is_empty(), "the Secret provides variables");
    for name in from_secret {
        let without: Vec<(String, String)> =
            env.iter().filter(|(k, _)| k != name).cloned().collect();
        let out = check(&file, &without);
        assert!(!out.status.success(), "the config needs {name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(name.as_str()));
    }
}

/// The binary, started with the ConfigMap's proxy.yaml and the Deployment's environment
/// (listen addresses on free local ports): the probe paths answer as the kubelet expects
/// (alive; not ready without a master, since its Sentinels are not there), and SIGTERM
/// ends it well within terminationGracePeriodSeconds.
#[test]
fn kubernetes_pod_probes_and_sigterm() {
    let objects = k8s_objects();
    let (_dir, file) = configmap_file(&objects);
    let client: SocketAddr = local_addr(free_port());
    let admin: SocketAddr = local_addr(free_port());
    let mut env = container_env(&objects);
    for (k, v) in env.iter_mut() {
        match k.as_str() {
            "REDSPLIT_LISTEN" => *v = client.to_string(),
            "REDSPLIT_ADMIN_LISTEN" => *v = admin.to_string(),
            _ => {}
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_redsplit"))
        .args(["run", "--config"])
        .arg(&file)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(admin, START_TIMEOUT);
    let health = http_get(admin, "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.body);
    let ready = http_get(admin, "/readyz", None);
    assert_eq!(
        ready.status, 503,
        "not ready without a master: {}",
        ready.body
    );
    assert!(ready.body.contains("not ready"), "{}", ready.body);

    let spec = &objects["Deployment"]["spec"]["template"]["spec"];
    let termination = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap());
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > termination {
            let _ = child.kill();
            panic!("still running {termination:?} after SIGTERM");
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr);
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "the drain is logged:\n{stderr}");
    for (_, v) in env.iter().filter(|(k, _)| k.contains("PASSWORD")) {
        assert!(!stderr.contains(v.as_str()), "a secret in the logs");
    }
}
