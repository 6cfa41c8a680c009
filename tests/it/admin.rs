//! The admin endpoint against a real replica set: metrics agree with the traffic sent,
//! readiness follows the master, `/status` describes every backend, the token guards
//! every route but `/healthz` and never leaks, and the status page renders in a real
//! (headless) browser.

use crate::common::*;
use prometheus_parse::{Sample, Scrape, Value as PromValue};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client
// ---------------------------------------------------------------------------------------

/// One HTTP response.
pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with an optional bearer token; `Connection: close`, read to the end.
pub(crate) fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, CMD_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to admin {addr}: {e}"));
    s.set_read_timeout(Some(CMD_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(CMD_TIMEOUT))
        .expect("write timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size_text = String::from_utf8_lossy(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

// ---------------------------------------------------------------------------------------
// Metrics helpers
// ---------------------------------------------------------------------------------------

/// Scrape `/metrics`, check the exposition's framing, and parse it.
fn scrape(admin: SocketAddr, token: Option<&str>) -> (Scrape, String) {
    let r = http_get(admin, "/metrics", token);
    assert_eq!(r.status, 200, "/metrics: {}", r.body);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "content type {ct}"
    );
    assert!(
        r.body.ends_with("# EOF\n"),
        "the exposition ends with # EOF"
    );
    let scrape =
        Scrape::parse(r.body.lines().map(|l| Ok(l.to_string()))).expect("parse the exposition");
    (scrape, r.body)
}

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

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

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

#[test]
fn readyz_follows_the_master() {
    let mut set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_healthy(2);
    let r = http_get(admin, "/healthz", None);
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(admin, "/readyz", None).status, 200);

    set.master.kill();
    let mut last = String::new();
    wait_until(
        "/readyz turns 503 after the master dies",
        SYNC_TIMEOUT,
        || {
            let r = http_get(admin, "/readyz", None);
            last = r.body;
            r.status == 503
        },
    );
    let master = set.master.addr().to_string();
    assert!(
        last.contains(&master) && last.ends_with('\n') && last.lines().count() == 1,
        "one-line reason: {last:?}"
    );
    // The process itself is still alive.
    assert_eq!(http_get(admin, "/healthz", None).status, 200);

    set.master.restart();
    wait_until(
        "/readyz turns 200 after the master restarts",
        SYNC_TIMEOUT,
        || http_get(admin, "/readyz", None).status == 200,
    );
}

#[test]
fn status_describes_every_backend() {
    let set = ReplicaSet::start(2, false);
    let rules = "routing:\n  rules:\n    - name: feeds\n      keys: [\"feed:*\"]\n      max_lag_ms: 5000\n    - name: stock\n      keys: [\"stock:*\"]\n      consistency: master\n      wait: {replicas: 1, timeout_ms: 500}\n";
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, rules));
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    for i in 0..10 {
        query(&mut c, &["GET", &format!("feed:{i}")]).expect("GET");
    }

    let mut s = serde_json::Value::Null;
    wait_until(
        "/status has chart points for both replicas",
        SYNC_TIMEOUT,
        || {
            let r = http_get(admin, "/status", None);
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"));
            s = serde_json::from_str(&r.body).expect("JSON");
            s["chart"].as_array().is_some_and(|c| {
                c.len() == 2
                    && c.iter()
                        .all(|x| !x["points"].as_array().unwrap().is_empty())
            })
        },
    );

    assert!(s["config"]["fingerprint"]
        .as_str()
        .is_some_and(|f| !f.is_empty()));
    assert_eq!(s["config"]["generation"], 1);
    assert!(s["uptime_secs"].is_u64() && s["now_ms"].as_u64().unwrap() > 0);
    assert_eq!(s["master"]["address"], set.master.addr().to_string());
    assert_eq!(s["master"]["up"], true);
    assert!(s["master"]["offset"].as_u64().unwrap() > 0);
    assert!(s["master"]["write_rate_bytes_per_sec"].is_number());

    let backends = s["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 3);
    assert_eq!(backends[0]["role"], "master");
    assert_eq!(backends[0]["health"], "ok");
    let budgets: Vec<&str> = s["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert!(
        budgets.contains(&"1000ms") && budgets.contains(&"5000ms"),
        "{budgets:?}"
    );
    for addr in set.replica_addrs() {
        let b = backends
            .iter()
            .find(|b| b["address"] == addr.to_string())
            .unwrap_or_else(|| panic!("replica {addr} in {s}"));
        assert_eq!(b["role"], "replica");
        assert_eq!(b["up"], true);
        assert_eq!(b["health"], "ok");
        assert!(b["offset"].is_u64(), "{b}");
        assert!(b["lag_bytes"].is_u64(), "{b}");
        assert!(
            b["staleness_ms"].as_u64().is_some_and(|ms| ms < 1000),
            "{b}"
        );
        assert!(b["served"].is_u64() && b["outstanding"].is_u64(), "{b}");
        let pools = b["in_pool"].as_array().expect("in_pool");
        assert_eq!(pools.len(), budgets.len());
        assert!(pools.iter().all(|p| p["in"] == true), "{b}");
        let series = s["chart"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["address"] == addr.to_string())
            .expect("chart series");
        let points = series["points"].as_array().expect("points");
        assert!(points.iter().all(|p| p["t"].is_u64()), "{series}");
        let latest = points.last().expect("a point");
        assert!(
            latest["staleness_ms"].is_u64() && latest["lag_bytes"].is_u64(),
            "{series}"
        );
    }

    let rules = s["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["name"], "feeds");
    assert_eq!(rules[0]["keys"], serde_json::json!(["feed:*"]));
    assert_eq!(rules[0]["consistency"], "replica");
    assert_eq!(rules[0]["budget"]["max_lag_ms"], 5000);
    assert_eq!(rules[0]["hits"], 10);
    assert_eq!(rules[1]["consistency"], "master");
    assert!(rules[1]["budget"].is_null());
    assert_eq!(
        rules[1]["wait"],
        serde_json::json!({"replicas": 1, "timeout_ms": 500})
    );
    assert_eq!(s["default"]["budget"]["max_lag_ms"], 1000);

    assert_eq!(s["reads"]["replica"], 10);
    assert_eq!(s["reads"]["master"], 0);
    assert_eq!(s["reads"]["replica_share"], 1.0);
    assert_eq!(s["reads"]["by_reason"]["fresh"]["replica"], 10);
    assert_eq!(s["clients"], 1);
}

const TOKEN: &str = "adm-7Qx2-secret-token";
const USER_PASSWORD: &str = "usr-Pw9-never-shown";

fn token_yaml(set: &ReplicaSet) -> String {
    let extra = format!(
        "admin:\n  listen: \"127.0.0.1:0\"\n  token: \"{TOKEN}\"\nusers:\n  - name: app\n    password: \"{USER_PASSWORD}\"\n    commands: all\n"
    );
    proxy_yaml(set, &extra)
}

#[test]
fn token_guards_everything_but_healthz() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&token_yaml(&set));
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_healthy(2);

    for path in ["/metrics", "/status", "/readyz", "/"] {
        let r = http_get(admin, path, None);
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}"
        );
        assert_eq!(
            http_get(admin, path, Some("wrong-token")).status,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            http_get(admin, path, Some(&TOKEN[..TOKEN.len() - 1])).status,
            401,
            "{path} with a prefix"
        );
        let ok = http_get(admin, path, Some(TOKEN));
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.body);
        for secret in [TOKEN, USER_PASSWORD] {
            assert!(!ok.body.contains(secret), "{path} shows a secret");
        }
    }
    assert_eq!(http_get(admin, "/healthz", None).status, 200);
    // The page (only the page) also takes the token in its URL, for browsers.
    let page = http_get(admin, &format!("/?token={TOKEN}"), None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<canvas id=\"chart\""));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(http_get(admin, "/?token=nope", None).status, 401);
    assert_eq!(
        http_get(admin, &format!("/status?token={TOKEN}"), None).status,
        401
    );
    assert_eq!(
        http_get(admin, &format!("/metrics?token={TOKEN}"), None).status,
        401
    );

    let (_, metrics) = scrape(admin, Some(TOKEN));
    let status = http_get(admin, "/status", Some(TOKEN)).body;
    for (what, text) in [("/metrics", &metrics), ("/status", &status)] {
        assert!(!text.contains(TOKEN), "{what} shows the admin token");
        assert!(
            !text.contains(USER_PASSWORD),
            "{what} shows a user password"
        );
        assert!(
            !text.contains("secret") && !text.contains("never-shown"),
            "{what} shows part of a secret"
        );
    }
}

#[test]
fn admin_endpoint_can_be_disabled() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, "admin:\n  listen: \"\"\n"));
    assert_eq!(proxy.admin_addr, None);
}

// ---------------------------------------------------------------------------------------
// The status page in a real browser
// ---------------------------------------------------------------------------------------

/// Chromium's binary, found on PATH (`chromium`, or `chromium-browser` as some
/// distributions name it).
fn chromium_binary() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
        .expect("no chromium on PATH: the status page test needs a headless browser; run `apt-get install chromium` (scripts/test.sh installs it)")
}

/// Run headless Chromium with `args` (after the common flags); returns its stdout.
fn chromium(profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s ({args:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("stdout reader")
}

/// The text of every `<td class="num staleness …">…</td>` cell.
fn staleness_cells(dom: &str) -> Vec<String> {
    dom.match_indices("class=\"num staleness")
        .filter_map(|(i, _)| {
            let rest = &dom[i..];
            let start = rest.find('>')? + 1;
            let end = rest[start..].find('<')? + start;
            Some(rest[start..end].to_string())
        })
        .collect()
}

/// The opening tags of the elements whose `class` attribute starts with `class`.
fn tags_with_class<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let needle = format!("class=\"{class}");
    dom.match_indices(&needle)
        .filter_map(|(i, _)| {
            let start = dom[..i].rfind('<')?;
            let end = i + dom[i..].find('>')?;
            Some(&dom[start..=end])
        })
        .collect()
}

/// The value of attribute `name` in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(&tag[start..end])
}

/// The text inside the element that `tag` (an opening tag found in `dom`) opens, the
/// text of nested elements included.
fn text_after(dom: &str, tag: &str) -> String {
    let start = dom.find(tag).map(|i| i + tag.len()).unwrap_or(dom.len());
    let (mut depth, mut out, mut rest) = (1, String::new(), &dom[start..]);
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let end = rest[lt..].find('>').map_or(rest.len(), |e| lt + e + 1);
        let t = &rest[lt..end];
        if t.starts_with("</") {
            depth -= 1;
            if depth == 0 {
                break;
            }
        } else if !t.ends_with("/>") {
            depth += 1;
        }
        rest = &rest[end..];
    }
    out
}

/// What every load of the status page must show: every backend with a staleness cell,
/// data from a poll of `/status`, a distinct colour per chart line, and a y-axis scaled
/// to the data with each budget drawn or listed as above the chart.
///
/// Returns how many replicas showed a numeric staleness.
fn check_status_page(dom: &str, replicas: &[SocketAddr], budgets: usize, load: usize) -> usize {
    for addr in replicas {
        assert!(
            dom.contains(&addr.to_string()),
            "load {load}: the page shows replica {addr}:\n{dom}"
        );
    }
    assert!(
        !dom.contains("connecting…"),
        "load {load}: the page shows data:\n{dom}"
    );
    let body = dom
        .find("<body")
        .map(|i| &dom[i..i + dom[i..].find('>').unwrap() + 1])
        .expect("a body tag");
    let polls: u64 = attr(body, "data-polls")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("load {load}: no poll of /status succeeded: {body}"));
    assert!(polls >= 1, "load {load}: {body}");
    let cells = staleness_cells(dom);
    assert_eq!(
        cells.len(),
        replicas.len() + 1,
        "load {load}: a staleness cell per backend: {cells:?}"
    );
    // A replica's staleness is unknown ("—") while its or the master's polls lag (a
    // loaded machine); anything else is a number.
    let numeric = cells
        .iter()
        .filter(|c| c.replace(',', "").parse::<u64>().is_ok())
        .count();
    assert!(
        cells
            .iter()
            .all(|c| c == "—" || c.replace(',', "").parse::<u64>().is_ok()),
        "load {load}: staleness cells are numbers or \"—\": {cells:?}"
    );
    assert!(
        dom.contains("id=\"error\" class=\"error\" hidden"),
        "load {load}: no error banner:\n{dom}"
    );

    // One colour per line: each replica and each budget.
    let series = tags_with_class(dom, "item series");
    let budget_items = tags_with_class(dom, "item budget");
    assert_eq!(
        series.len(),
        replicas.len(),
        "load {load}: a legend item per replica"
    );
    assert_eq!(
        budget_items.len(),
        budgets,
        "load {load}: a legend item per budget"
    );
    let colors: Vec<&str> = series
        .iter()
        .chain(budget_items.iter())
        .map(|t| attr(t, "data-color").expect("data-color"))
        .collect();
    let distinct: std::collections::BTreeSet<&str> = colors.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        colors.len(),
        "load {load}: every line has its own colour: {colors:?}"
    );

    // The y-axis follows the data: above its largest value, and not far above it.
    let canvas = dom
        .find("<canvas id=\"chart\"")
        .map(|i| &dom[i..i + dom[i..].find('>').unwrap() + 1])
        .expect("the chart");
    let ymax: f64 = attr(canvas, "data-ymax")
        .and_then(|v| v.parse().ok())
        .expect("data-ymax");
    let data_max: f64 = attr(canvas, "data-data-max")
        .and_then(|v| v.parse().ok())
        .expect("data-data-max");
    assert!(
        ymax >= data_max && ymax <= 2.0 * data_max.max(10.0),
        "load {load}: y-axis up to {ymax} ms for data up to {data_max} ms"
    );
    for b in &budget_items {
        let ms: f64 = attr(b, "data-ms")
            .and_then(|v| v.parse().ok())
            .expect("data-ms");
        let above = text_after(dom, b).contains("above the chart");
        assert_eq!(
            above,
            ms > ymax,
            "load {load}: budget {ms} ms with the axis at {ymax} ms: {}",
            text_after(dom, b)
        );
    }
    numeric
}

#[test]
fn status_page_renders_in_a_browser() {
    let mut set = ReplicaSet::start(2, false);
    let rules = "routing:\n  rules:\n    - name: feeds\n      keys: [\"feed:*\"]\n      max_lag_ms: 5000\n    - name: leaderboard\n      keys: [\"lb:*\"]\n      max_lag_ms: 200\n    - name: stock\n      keys: [\"stock:*\"]\n      consistency: master\n      wait: {replicas: 1, timeout_ms: 500}\n";
    let yaml = format!(
        "{}admin:\n  listen: \"127.0.0.1:0\"\n  token: \"{TOKEN}\"\n",
        proxy_yaml(&set, rules)
    );
    let proxy = ProxyUnderTest::start(&yaml);
    let admin = proxy.admin_addr.expect("admin endpoint enabled");
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    for i in 0..20 {
        query(&mut c, &["SET", &format!("feed:{i}"), "1"]).expect("SET");
    }
    let mut r = proxy.conn();
    for i in 0..50 {
        query(&mut r, &["GET", &format!("feed:{i}")]).expect("GET");
        query(&mut r, &["GET", &format!("stock:{i}")]).expect("GET");
    }
    // A few seconds of chart.
    wait_until("the chart has 3 points per replica", SYNC_TIMEOUT, || {
        proxy
            .state()
            .monitor
            .chart()
            .iter()
            .all(|(_, p)| p.len() >= 3)
    });

    // Five loads (the default budget, feeds and leaderboard: three budget lines), each
    // with content, as a fresh browser would get it.
    let url = format!("http://{admin}/?token={TOKEN}");
    let replicas = set.replica_addrs();
    let mut all_numeric = 0;
    for load in 1..=5 {
        let profile = tempfile::tempdir().expect("profile dir");
        let dom = chromium(
            profile.path(),
            &["--virtual-time-budget=4000", "--dump-dom", &url],
        );
        if check_status_page(&dom, &replicas, 3, load) == replicas.len() {
            all_numeric += 1;
        }
    }
    assert!(
        all_numeric > 0,
        "no load showed a numeric staleness for every replica"
    );

    let profile = tempfile::tempdir().expect("profile dir");
    // Without the token the page says what is wrong instead of staying blank.
    let dom = chromium(
        profile.path(),
        &[
            "--virtual-time-budget=3000",
            "--dump-dom",
            &format!("http://{admin}/"),
        ],
    );
    assert!(
        dom.contains("unauthorized"),
        "the server refuses the page without a token:\n{dom}"
    );

    // A screenshot, for people and for a sanity check of the canvas.
    let shot: PathBuf = std::env::var_os("REDSPLIT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile.path().join("status.png"));
    let _ = std::fs::remove_file(&shot);
    let shot_arg = format!("--screenshot={}", shot.display());
    chromium(
        profile.path(),
        &[
            "--virtual-time-budget=4000",
            "--window-size=1200,900",
            &shot_arg,
            &url,
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("screenshot {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "the screenshot has content ({} bytes)",
        png.len()
    );

    // A replica that stops answering: the legend names its state with the table's word.
    let gone = replicas[1];
    set.replicas[1].kill();
    let state = proxy.state().clone();
    wait_until("the proxy sees the replica gone", SYNC_TIMEOUT, || {
        state.view.load().replicas.iter().any(|r| {
            r.backend.addr == gone.to_string() && r.health != redsplit::topology::Health::Ok
        })
    });
    let dom = chromium(
        profile.path(),
        &["--virtual-time-budget=3000", "--dump-dom", &url],
    );
    let row_start = dom
        .find(&format!("data-addr=\"{gone}\""))
        .expect("the replica's row");
    let health_tag = tags_with_class(&dom[row_start..], "pill health")
        .into_iter()
        .next()
        .expect("a health pill");
    let word = text_after(&dom[row_start..], health_tag);
    assert!(
        !word.is_empty() && word != "ok",
        "the table shows the replica's state: {word:?}"
    );
    let item = tags_with_class(&dom, "item series")
        .into_iter()
        .find(|t| attr(t, "data-addr") == Some(gone.to_string().as_str()))
        .expect("the replica's legend item");
    let legend = text_after(&dom, item);
    assert!(
        legend.contains(&word),
        "the legend says {legend:?} where the table says {word:?}"
    );
    if word != "unknown" {
        assert!(!legend.contains("unknown"), "{legend:?}");
    }
}

#[test]
fn status_page_says_when_status_fails() {
    // The page as a browser gets it, opened where `status` cannot be fetched: the script
    // must say so instead of showing an empty page.
    let profile = tempfile::tempdir().expect("profile dir");
    let page = profile.path().join("index.html");
    std::fs::write(&page, redsplit::admin::STATUS_PAGE).expect("write the page");
    let dom = chromium(
        profile.path(),
        &[
            "--virtual-time-budget=3000",
            "--dump-dom",
            &format!("file://{}", page.display()),
        ],
    );
    assert!(
        dom.contains("id=\"error\" class=\"error\">Status unavailable:"),
        "a visible error banner:\n{dom}"
    );
    assert!(
        dom.contains("status unavailable"),
        "the header badge says so too:\n{dom}"
    );
    // No external resources: everything the page needs is in it.
    let html = redsplit::admin::STATUS_PAGE;
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("src="),
        "self-contained"
    );
}
