//! Backend faults under load: a stopped replica, a replica cut off, and the master down
//! then restarted.

use crate::common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::shared;

/// Readers and a writer in the background; every reply checked, read latencies kept.
struct Load {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    max_read: Arc<Mutex<Duration>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `readers` threads GET `key` (expecting `value`); one thread SETs its own keys.
    fn start(addr: SocketAddr, readers: usize, key: &str, value: &str) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            reads: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            max_read: Arc::new(Mutex::new(Duration::ZERO)),
            threads: Vec::new(),
        };
        let mut threads = Vec::new();
        for _ in 0..readers {
            let (stop, reads, errors, max_read) = (
                load.stop.clone(),
                load.reads.clone(),
                load.errors.clone(),
                load.max_read.clone(),
            );
            let (key, value) = (key.to_owned(), value.to_owned());
            threads.push(std::thread::spawn(move || {
                let mut c = connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = query(&mut c, &["GET", &key]);
                    let took = t.elapsed();
                    match r {
                        Ok(v) if value_text(&v).as_deref() == Some(&value) => {}
                        other => {
                            let what = format!("{other:?}");
                            errors.lock().unwrap().push(format!(
                                "GET after {took:?}: {}",
                                &what[..what.len().min(200)]
                            ));
                            if other.is_err() {
                                c = connect(addr);
                            }
                        }
                    }
                    let mut m = max_read.lock().unwrap();
                    *m = (*m).max(took);
                    drop(m);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        {
            let (stop, writes, errors) =
                (load.stop.clone(), load.writes.clone(), load.errors.clone());
            threads.push(std::thread::spawn(move || {
                let mut c = connect(addr);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match query(&mut c, &["SET", &format!("w:{}", i % 100), "1"]) {
                        Ok(v) if text(&v) == "OK" => {}
                        other => errors.lock().unwrap().push(format!("SET: {other:?}")),
                    }
                    writes.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        Load { threads, ..load }
    }

    /// Wait until `n` more reads completed.
    fn reads_continue(&self, n: u64, what: &str) {
        let start = self.reads.load(Ordering::Relaxed);
        let reads = self.reads.clone();
        wait_until(what, Duration::from_secs(15), || {
            reads.load(Ordering::Relaxed) >= start + n
        });
    }

    /// Stop; the errors seen and the slowest read.
    fn finish(self) -> (Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        let max = *self.max_read.lock().unwrap();
        (errors, max)
    }
}

#[test]
fn a_stopped_replica_costs_reads_at_most_the_command_timeout() {
    let _g = shared();
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "  command_timeout_ms: 500\n  connect_timeout_ms: 500\n",
    ));
    proxy.wait_in_pool(2);
    set.master.set("r", "1");
    set.wait_synced(SYNC_TIMEOUT);
    let load = Load::start(proxy.addr, 4, "r", "1");
    load.reads_continue(500, "reads flow");
    // SIGSTOP: the replica's sockets stay open; it just never answers.
    set.replicas[0].pause();
    load.reads_continue(2000, "reads continue while the replica is stopped");
    // Until the monitor takes it out of the pool, and after.
    let state = proxy.state().clone();
    let stopped = set.replicas[0].addr().to_string();
    wait_until(
        "the stopped replica leaves the read pool",
        SYNC_TIMEOUT,
        || {
            state
                .view
                .load()
                .replicas
                .iter()
                .any(|r| r.backend.addr == stopped && r.in_pool & 1 == 0)
        },
    );
    load.reads_continue(500, "reads still continue");
    set.replicas[0].resume();
    proxy.wait_in_pool(2);
    let served = set.replicas[0].calls("get");
    let r0 = set.replicas[0].calls("get");
    wait_until(
        "the thawed replica serves reads again",
        Duration::from_secs(10),
        || set.replicas[0].calls("get") > r0 + 10,
    );
    let (errors, max) = load.finish();
    eprintln!("stopped replica: slowest read {max:?}; replica 0 had served {served} GETs");
    assert!(errors.is_empty(), "no read or write failed: {errors:?}");
    assert!(
        max < Duration::from_millis(500 + 1000),
        "a read waited {max:?}, more than the command timeout + 1 s"
    );
}

#[test]
fn a_replica_cut_off_mid_load_loses_no_read() {
    let _g = shared();
    let set = ReplicaSet::start(2, false);
    // The proxy reaches replica 0 through a relay, which can cut every connection.
    let relay = Relay::start(set.replicas[0].addr());
    let yaml = format!(
        "backend:\n  master: \"{}\"\n  replicas: [\"{}\", \"{}\"]\n  reconnect_min_ms: 20\n  reconnect_max_ms: 200\n",
        set.master.addr(),
        relay.addr(),
        set.replicas[1].addr()
    );
    let proxy = ProxyUnderTest::start(&yaml);
    proxy.wait_in_pool(2);
    // A 256 KB value: replies are mid-flight when the cut comes.
    let value = "v".repeat(256 * 1024);
    set.master.set("cutkey", &value);
    set.wait_synced(SYNC_TIMEOUT);
    let load = Load::start(proxy.addr, 4, "cutkey", &value);
    load.reads_continue(200, "reads flow");
    for round in 0..5 {
        let g0 = set.replicas[0].calls("get");
        wait_until(
            "reads go through the relay",
            Duration::from_secs(10),
            || set.replicas[0].calls("get") > g0 + 5,
        );
        relay.cut();
        load.reads_continue(50, &format!("reads continue after cut {round}"));
    }
    let accepted = relay.accepted();
    proxy.wait_in_pool(2);
    let g0 = set.replicas[0].calls("get");
    wait_until(
        "the proxy reconnects through the relay",
        Duration::from_secs(10),
        || set.replicas[0].calls("get") > g0 + 5,
    );
    let (errors, max) = load.finish();
    eprintln!("cut replica: slowest read {max:?}; relay accepted {accepted} connections");
    assert!(errors.is_empty(), "no read or write failed: {errors:?}");
    assert!(max < Duration::from_secs(2), "a read waited {max:?}");
}

#[test]
fn master_down_reads_follow_the_policy_and_writes_resume_after_restart() {
    let _g = shared();
    let mut set = ReplicaSet::start(1, false);
    let serve = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    let refuse = ProxyUnderTest::start(&proxy_yaml(&set, "routing:\n  on_master_down: error\n"));
    serve.wait_in_pool(1);
    refuse.wait_in_pool(1);
    set.master.set("md", "1");
    set.wait_synced(SYNC_TIMEOUT);
    let load = Load::start(serve.addr, 2, "md", "1");
    load.reads_continue(200, "reads flow");
    set.master.kill();
    let master = set.master.addr().to_string();
    // Writes fail fast, naming the master.
    for p in [&serve, &refuse] {
        let mut w = p.conn();
        let t = Instant::now();
        let e = query(&mut w, &["SET", "x", "1"]).unwrap_err().to_string();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the write failed in {:?}",
            t.elapsed()
        );
        assert!(e.contains("master") && e.contains(&master), "{e}");
    }
    for p in [&serve, &refuse] {
        let state = p.state().clone();
        wait_until(
            "the monitor sees the master down",
            Duration::from_secs(10),
            || state.view.load().master.as_ref().is_some_and(|m| m.down),
        );
    }
    // serve_replicas: reads go on from the replica, whose staleness bound grows.
    let mut r = serve.conn();
    assert_eq!(text(&query(&mut r, &["GET", "md"]).unwrap()), "1");
    let staleness =
        |p: &ProxyUnderTest| p.state().view.load().replicas[0].staleness_ms(Instant::now());
    let s1 = staleness(&serve).expect("a staleness bound");
    wait_until(
        "the staleness bound grows while the master is down",
        Duration::from_secs(5),
        || staleness(&serve).is_some_and(|s2| s2 >= s1 + 250),
    );

    // error: reads are refused, saying why.
    let mut e = refuse.conn();
    let err = query(&mut e, &["GET", "md"]).unwrap_err().to_string();
    assert!(
        err.contains("master") && err.contains("down") && err.contains("on_master_down"),
        "{err}"
    );
    load.reads_continue(200, "reads continue from the replica");
    let (mut errors, _) = load.finish();
    // The writer of the load failed while the master was down, as it must.
    errors.retain(|e| !e.starts_with("SET"));
    eprintln!("read errors around the master's death: {errors:?}");

    // The master comes back: writes resume, through reconnect backoff (at most
    // reconnect_max_ms, 2 s by default).
    set.master.restart();
    let t = Instant::now();
    for p in [&serve, &refuse] {
        let mut w = p.conn();
        wait_until("writes succeed again", Duration::from_secs(10), || {
            query(&mut w, &["SET", "back", "1"]).is_ok()
        });
    }
    let took = t.elapsed();
    eprintln!("writes resumed {took:?} after the master restarted");
    assert!(
        took < Duration::from_secs(5),
        "writes resumed after {took:?}"
    );
    let state = refuse.state().clone();
    wait_until("the master is up again", Duration::from_secs(10), || {
        state.view.load().master.as_ref().is_some_and(|m| !m.down)
    });
    let mut e = refuse.conn();
    wait_until("reads are served again", Duration::from_secs(10), || {
        query(&mut e, &["GET", "back"]).is_ok()
    });
}
