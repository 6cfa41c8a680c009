//! Faults: a client vanishing mid-pipeline, and a replica then the master killed under
//! load.

use crate::common::*;
use std::time::Duration;

#[test]
fn a_client_vanishing_mid_pipeline_harms_no_one() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let master_clients = |s: &RedisServer| {
        s.info("clients")
            .get("connected_clients")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    let mut c = proxy.conn();
    query(&mut c, &["SET", "warm", "1"]).unwrap();
    let before = master_clients(&set.master);
    for round in 0..5 {
        use std::io::Write;
        let mut s = raw(proxy.addr);
        let mut req = Vec::new();
        for i in 0..5000 {
            if i % 2 == 0 {
                req.extend_from_slice(
                    format!("*3\r\n$3\r\nSET\r\n$6\r\nv:{:04}\r\n$1\r\nx\r\n", i % 10000)
                        .as_bytes(),
                );
            } else {
                req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$4\r\nwarm\r\n");
            }
        }
        s.write_all(&req[..req.len() / 2 + round]).unwrap();
        drop(s);
        // Everyone else is served throughout.
        assert_eq!(text(&query(&mut c, &["GET", "warm"]).unwrap()), "1");
    }
    let state = proxy.state().clone();
    wait_until("vanished sessions are gone", Duration::from_secs(5), || {
        state.sessions.len() == 1
    });
    assert_eq!(text(&query(&mut c, &["SET", "after", "ok"]).unwrap()), "OK");
    // No backend connection leaked for them.
    assert!(
        master_clients(&set.master) <= before + 1,
        "master clients {} vs {before}",
        master_clients(&set.master)
    );
}

#[test]
fn replica_then_master_killed_under_load() {
    let mut set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(
        &proxy_yaml(&set, "backend_extra: 0\n").replace("backend_extra: 0\n", ""),
    );
    proxy.wait_in_pool(2);
    set.master.set("r", "1");
    set.wait_synced(SYNC_TIMEOUT);
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let read_errors = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, errs, reads, addr) =
                (stop.clone(), read_errors.clone(), reads.clone(), proxy.addr);
            std::thread::spawn(move || {
                let mut c = connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    match query(&mut c, &["GET", "r"]) {
                        Ok(v) => assert_eq!(text(&v), "1"),
                        Err(e) => {
                            eprintln!("read error: {e}");
                            errs.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("the readers are under way", Duration::from_secs(5), || {
        reads.load(Ordering::Relaxed) > 300
    });
    set.replicas[0].kill();
    let n0 = reads.load(Ordering::Relaxed);
    wait_until(
        "reads continue after the replica died",
        Duration::from_secs(5),
        || reads.load(Ordering::Relaxed) > n0 + 2000,
    );
    assert_eq!(
        read_errors.load(Ordering::Relaxed),
        0,
        "no read failed while the master was healthy"
    );
    // The master dies: writes fail fast with a clear error, reads follow on_master_down.
    set.master.kill();
    let mut w = proxy.conn();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let e = query(&mut w, &["SET", "x", "1"]).unwrap_err().to_string();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the write failed within a bounded time"
        );
        assert!(
            e.contains("master") && e.contains(&set.master.addr().to_string()),
            "{e}"
        );
    }
    let state = proxy.state().clone();
    wait_until(
        "the monitor sees the master down",
        Duration::from_secs(5),
        || state.view.load().master.as_ref().is_some_and(|m| m.down),
    );
    let errs = read_errors.load(Ordering::Relaxed);
    let n1 = reads.load(Ordering::Relaxed);
    wait_until(
        "reads are served by the surviving replica",
        Duration::from_secs(5),
        || reads.load(Ordering::Relaxed) > n1 + 500,
    );
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    eprintln!(
        "read errors around the master's death: {}",
        read_errors.load(Ordering::Relaxed) - errs
    );
    assert!(set.replicas[1].calls("get") > 0);
}
