//! Live reloads of `proxy.yaml` under load: the policy changes without a failed request,
//! an invalid edit changes nothing, and restart-only settings are reported.

use crate::common::*;
use redis::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config_text(set: &ReplicaSet, flip_level: &str) -> String {
    proxy_yaml(
        set,
        &format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: ''}}\nreplication: {{dwell_ms: 200}}\nrouting:\n  rules:\n    - {{name: flip, keys: ['flip:*'], consistency: {flip_level}}}\n"
        ),
    )
}

/// Replace the file the way editors do: write a temporary file, rename it over.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn explain_target(c: &mut redis::Connection, key: &str) -> String {
    format!("{:?}", query(c, &["PROXY", "EXPLAIN", "GET", key]).unwrap())
}

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Waits until `n` more requests succeeded than when called: a window of real
    /// traffic (about half a second at the asserted rate), and enough for each thread's
    /// request in flight at the call to have finished.
    fn wait_ops(&self, n: u64) {
        let from = self.ok.load(Ordering::Relaxed);
        wait_until(
            &format!("the load serves {n} more requests"),
            SYNC_TIMEOUT,
            || self.ok.load(Ordering::Relaxed) >= from + n,
        );
    }

    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..4)
            .map(|t| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut c = connect(addr);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let r = if t == 0 && i % 2 == 0 {
                            query(&mut c, &["SET", &format!("other:{}", i % 50), "x"])
                        } else {
                            query(&mut c, &["GET", &format!("flip:{}", i % 50)])
                        };
                        match r {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("request failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_rule_flips_under_load_without_a_failed_request() {
    let set = ReplicaSet::start(2, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config_text(&set, "replica")).unwrap();
    let proxy = ProxyUnderTest::start_file(&path);
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    assert!(explain_target(&mut c, "flip:1").contains("replica 127.0.0.1"));
    let load = Load::start(proxy.addr);
    load.wait_ops(500);
    let started = Instant::now();
    let ops_before = load.ok.load(Ordering::Relaxed);
    save(&path, &config_text(&set, "master"));
    wait_until(
        "the new rule routes flip:* to the master",
        Duration::from_secs(1),
        || explain_target(&mut c, "flip:1").contains(&format!("master {}", set.master.addr())),
    );
    let switched = started.elapsed();
    // From now on no replica serves a flip:* read (once the reads already routed end).
    load.wait_ops(100);
    let r0 = set.replica_calls("get").iter().sum::<u64>();
    load.wait_ops(500);
    let r1 = set.replica_calls("get").iter().sum::<u64>();
    assert_eq!(r0, r1, "reads follow the new rule");
    let state = proxy.state().clone();
    assert_eq!(state.metrics.reloads_ok.load(Ordering::Relaxed), 1);
    // An invalid edit: rejected, counted, the running rule stays.
    save(&path, &config_text(&set, "sometimes"));
    wait_until(
        "the invalid file is rejected",
        Duration::from_secs(2),
        || state.metrics.reloads_rejected.load(Ordering::Relaxed) == 1,
    );
    load.wait_ops(300);
    assert!(explain_target(&mut c, "flip:1").contains("master "));
    assert_eq!(set.replica_calls("get").iter().sum::<u64>(), r1);
    let (ok, failed) = load.finish();
    let rate = (ok - ops_before) as f64 / started.elapsed().as_secs_f64();
    eprintln!("switched in {switched:?}; {ok} requests ({rate:.0}/s), {failed} failed");
    assert_eq!(failed, 0, "no request failed across the reloads");
    assert!(rate > 1000.0, "the load was real: {rate:.0}/s");
}

#[test]
fn a_configmap_symlink_swap_is_seen() {
    let set = ReplicaSet::start(1, false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The layout Kubernetes gives a mounted ConfigMap.
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/proxy.yaml"), config_text(&set, "replica")).unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/proxy.yaml", d.join("proxy.yaml")).unwrap();
    let proxy = ProxyUnderTest::start_file(&d.join("proxy.yaml"));
    proxy.wait_in_pool(1);
    let mut c = proxy.conn();
    assert!(explain_target(&mut c, "flip:1").contains("replica 127.0.0.1"));
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/proxy.yaml"), config_text(&set, "master")).unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    wait_until("the swapped config applies", Duration::from_secs(2), || {
        explain_target(&mut c, "flip:1").contains("master ")
    });
}

#[test]
fn restart_only_settings_are_reported_and_kept() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&config_text(&set, "replica"));
    let state = proxy.state().clone();
    let running = state.settings.load().config.listen.clone();
    let mut new = redsplit::config::Config::from_yaml(&config_text(&set, "master")).unwrap();
    new.listen = "127.0.0.1:1".into();
    new.workers = 7;
    let out = redsplit::reload::apply(&state, new, "test", false);
    match out {
        redsplit::reload::Outcome::Applied {
            restart_required, ..
        } => {
            assert!(
                restart_required.contains(&"listen") && restart_required.contains(&"workers"),
                "{restart_required:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let now = state.settings.load();
    assert_eq!(now.config.listen, running, "the running value stays");
    assert_eq!(
        now.policy.rules[0].level.consistency,
        redsplit::config::Consistency::Master,
        "the rest applies"
    );
    let mut c = proxy.conn();
    let cfg = query(&mut c, &["PROXY", "CONFIG"]).unwrap();
    let s = format!("{cfg:?}");
    assert!(s.contains("fingerprint") && s.contains("flip"), "{s}");
}

#[test]
fn pool_settings_apply_to_kept_backends_and_the_grace_is_restart_only() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&config_text(&set, "replica"));
    let state = proxy.state().clone();
    let before = state.monitor.backends();
    let grace = state.settings.load().config.shutdown_grace_ms;
    let mut new = redsplit::config::Config::from_yaml(&config_text(&set, "replica")).unwrap();
    new.backend.connections = 5;
    new.backend.connect_timeout_ms = 321;
    new.backend.reconnect_min_ms = 7;
    new.backend.reconnect_max_ms = 70;
    new.shutdown_grace_ms = grace + 1;
    match redsplit::reload::apply(&state, new, "test", false) {
        redsplit::reload::Outcome::Applied {
            restart_required, ..
        } => assert_eq!(restart_required, ["shutdown_grace_ms"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(state.settings.load().config.shutdown_grace_ms, grace);
    let after = state.monitor.backends();
    let ids = |b: &redsplit::topology::Backends| b.all().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&before),
        ids(&after),
        "the backends and their connections stay"
    );
    for b in after.all() {
        assert_eq!(b.pool.size(), 5, "{}", b.label());
        assert_eq!(
            b.pool.params().connect_timeout,
            std::time::Duration::from_millis(321)
        );
        assert_eq!(
            b.pool.backoff(),
            (
                std::time::Duration::from_millis(7),
                std::time::Duration::from_millis(70)
            )
        );
    }
    // Still serving.
    let mut c = proxy.conn();
    assert!(query(&mut c, &["SET", "k", "v"]).is_ok());
}

#[test]
fn sighup_reloads_the_binary() {
    let set = ReplicaSet::start(1, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let port = free_port();
    let text = config_text(&set, "replica")
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(&path, text).unwrap();
    let mut proxy = ProxyBinary::run(&path);
    let addr = local_addr(port);
    wait_for_port(addr, Duration::from_secs(10));
    let mut c = connect(addr);
    let generation = |c: &mut redis::Connection| -> i64 {
        match query(c, &["PROXY", "CONFIG"]).unwrap() {
            Value::Array(items) => match items.get(1) {
                Some(Value::Int(g)) => *g,
                other => panic!("{other:?}"),
            },
            Value::Map(items) => match &items[0].1 {
                Value::Int(g) => *g,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    };
    let g0 = generation(&mut c);
    proxy.signal(libc::SIGHUP);
    wait_until("SIGHUP reloads", Duration::from_secs(5), || {
        generation(&mut c) > g0
    });
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}: {}", proxy.output());
}

/// Rule hit counters only grow across reloads (an unchanged file included), so that a
/// Prometheus `rate()` over `redsplit_rule_hits_total` sees no reset.
#[test]
fn rule_hits_carry_over_a_reload() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&config_text(&set, "replica"));
    let state = proxy.state().clone();
    let mut c = proxy.conn();
    for i in 0..10 {
        query(&mut c, &["GET", &format!("flip:{i}")]).unwrap();
        query(&mut c, &["GET", &format!("other:{i}")]).unwrap();
    }
    let hits = || {
        let s = state.settings.load();
        (
            s.policy.rules[0].hits.load(Ordering::Relaxed),
            s.policy.default_hits.load(Ordering::Relaxed),
        )
    };
    // Sessions add their counts after each batch.
    wait_until("the hits are counted", SYNC_TIMEOUT, || hits() == (10, 10));
    for level in ["replica", "master"] {
        let new = redsplit::config::Config::from_yaml(&config_text(&set, level)).unwrap();
        let out = redsplit::reload::apply(&state, new, "test", false);
        // The same file again is `Unchanged`; the edited one is applied.
        let want_applied = level == "master";
        assert_eq!(
            matches!(out, redsplit::reload::Outcome::Applied { .. }),
            want_applied,
            "{out:?}"
        );
        assert_eq!(hits(), (10, 10), "after reloading with {level}");
    }
    query(&mut c, &["GET", "flip:x"]).unwrap();
    wait_until(
        "the next hit adds to the carried count",
        SYNC_TIMEOUT,
        || hits() == (11, 10),
    );
}
