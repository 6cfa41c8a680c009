//! The endpoints: `/readyz` follows the master, `/status` describes every backend, the
//! token guards everything but `/healthz`, and the admin endpoint can be disabled.

use crate::common::*;

use super::{http_get, scrape, TOKEN};

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
