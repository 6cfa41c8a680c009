//! Other changes of master: a graceful failover, the old master restarted, a failover
//! with a Sentinel down, and a master turned replica behind everyone's back (`READONLY`).

use crate::common::*;
use redis::Value;
use redsplit::topology::Health;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    error_kinds, failure_window, load, longest_failure_streak, missing_on, sentinel_yaml, Op,
    SwitchWatch, World, BUDGET_MS, NAME,
};

#[test]
fn graceful_failover() {
    let w = World::start("");
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let writer = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("w:{n}"), &n.to_string()]).map(drop)
    });
    let reader = load(addr, &stop, Duration::from_millis(1), |c, n| {
        query(c, &["GET", &format!("w:{}", n % 500)]).map(drop)
    });
    let watch = SwitchWatch::start(&w.sentinels);
    writer.wait_ok(100, "writes flow");
    reader.wait_ok(100, "reads flow");
    let started = Instant::now();
    w.sentinels.cmd(1, &["SENTINEL", "FAILOVER", NAME]);
    let (new, adopted) = w.wait_new_master(old);
    watch.wait_published();
    writer.wait_ok(300, "writes flow on the new master");
    reader.wait_ok(300, "reads flow after the failover");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let reads = reader.join().unwrap();
    let (first_switch, _) = watch.first_and_last().unwrap();
    watch.stop();

    let failed: Vec<&Op> = writes.iter().filter(|o| o.err.is_some()).collect();
    let window = failure_window(&writes).map(|(a, b)| b - a);
    eprintln!(
        "SENTINEL FAILOVER: +switch-master after {:?}; proxy used the new master after {:?}; \
         {} of {} writes failed {:?} over {window:?}; {} reads failed {:?}",
        first_switch - started,
        adopted - started,
        failed.len(),
        writes.len(),
        error_kinds(&writes),
        reads.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&reads),
    );
    // No write fails: while the replica is promoted (the old master would lose what it
    // took then), writes wait for the new master instead.
    assert!(
        failed.is_empty(),
        "writes failed: {:?}",
        error_kinds(&writes)
    );
    let slowest = writes
        .iter()
        .map(|o| o.done - o.sent)
        .max()
        .unwrap_or_default();
    eprintln!("slowest write across the switch: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(4),
        "a write waited {slowest:?} (hold is 3 s)"
    );
    // Every write the proxy acknowledged, before and after the switch, is on the new
    // master: none was taken by the old master once the new one was promoted.
    let new_master = w.server(new);
    let acked: Vec<&Op> = writes.iter().filter(|o| o.err.is_none()).collect();
    let missing = missing_on(new_master, "w:", &acked);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    // Reads kept being served.
    let read_streak = longest_failure_streak(&reads);
    assert!(
        read_streak < Duration::from_secs(1),
        "reads failed for {read_streak:?}"
    );
}

#[test]
fn old_master_restarted_rejoins_as_a_replica_once_in_sync() {
    let mut w = World::start("");
    let old = w.set.master.addr();
    let mut c = w.proxy.conn();
    for i in 0..100 {
        query(&mut c, &["SET", &format!("k:{i}"), &i.to_string()]).unwrap();
    }
    w.set.master.kill();
    let (new, _) = w.wait_new_master(old);
    // Written to the new master while the old one is away.
    query(&mut c, &["SET", "after", "failover"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = load(w.proxy.addr, &stop, Duration::from_millis(1), |c, n| {
        query(c, &["GET", &format!("k:{}", n % 100)]).map(drop)
    });
    w.set.master.restart();
    let restarted = Instant::now();
    let old_server = &w.set.master;
    // It comes back as a master with no data, until Sentinel converts it.
    let mut in_view_as: Option<Instant> = None;
    let mut joined: Option<Instant> = None;
    let mut samples = 0;
    // Sentinel converts it after 8 s (longer in TILT mode, see FAILOVER_DEADLINE).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() >= deadline {
            panic!(
                "the old master did not rejoin the read pool; its INFO: {:?}; Sentinel 0 lists {:?} (INFO {:?}); the proxy sees {:?}",
                old_server.info("replication"),
                w.sentinels.replicas(0),
                w.sentinels.cmd(0, &["INFO", "sentinel"]),
                w.view().replicas,
            );
        }
        samples += 1;
        let served = old_server.calls("get");
        let v = w.view();
        assert!(
            v.master
                .as_ref()
                .is_some_and(|m| m.backend.addr == new.to_string()),
            "the master stays"
        );
        let entry = v
            .replicas
            .iter()
            .find(|r| r.backend.addr == old.to_string());
        if let Some(r) = entry {
            if in_view_as.is_none() {
                in_view_as = Some(Instant::now());
                let info = old_server.info("replication");
                assert_eq!(info["role"], "slave", "it joined only as a replica");
            }
            if r.in_pool & 1 == 1 && joined.is_none() {
                joined = Some(Instant::now());
                // Link up to the new master, same history, lag within budget.
                let info = old_server.info("replication");
                assert_eq!(info["master_link_status"], "up");
                assert_eq!(
                    format!("{}:{}", info["master_host"], info["master_port"]),
                    new.to_string()
                );
                assert_eq!(r.health, Health::Ok);
                let staleness = r.staleness_ms(Instant::now()).expect("known staleness");
                assert!(staleness <= BUDGET_MS, "staleness {staleness} ms");
            }
        }
        if joined.is_none() {
            assert_eq!(
                served, 0,
                "no read went to the old master before it joined the pool"
            );
        } else if served > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    let joined = joined.unwrap();
    eprintln!(
        "old master restarted: in the topology after {:?}, in the read pool after {:?} ({samples} samples); {} reads, {} failed",
        in_view_as.map(|t| t - restarted),
        joined - restarted,
        reads.len(),
        reads.iter().filter(|o| o.err.is_some()).count(),
    );
    assert!(
        reads.iter().all(|o| o.err.is_none()),
        "reads kept being served"
    );
    // It holds the data, the write made while it was away included.
    assert_eq!(old_server.get("after").as_deref(), Some("failover"));
    assert_eq!(old_server.get("k:7").as_deref(), Some("7"));
    // PROXY STATUS shows it as a healthy replica in the pool.
    let status = query(&mut c, &["PROXY", "STATUS"]).unwrap();
    let Value::Array(rows) = status else {
        panic!("{status:?}")
    };
    let row = rows
        .iter()
        .map(|r| format!("{r:?}"))
        .find(|r| r.contains(&old.to_string()))
        .expect("the old master has a row");
    assert!(row.contains("replica") && row.contains("\"ok\""), "{row}");
}

#[test]
fn one_sentinel_down_the_proxy_still_follows() {
    let mut w = World::start("");
    let old = w.set.master.addr();
    // The first Sentinel of the list goes away before the failover.
    w.sentinels.kill(0);
    let mut c = w.proxy.conn();
    query(&mut c, &["SET", "before", "1"]).unwrap();
    w.set.master.kill();
    let killed = Instant::now();
    let (new, adopted) = w.wait_new_master(old);
    eprintln!(
        "one Sentinel down: the proxy used the new master {:?} after the kill",
        adopted - killed
    );
    let new_master = w.server(new);
    assert_eq!(new_master.role(), "master");
    // Writes go to the new master.
    wait_until(
        "a write through the proxy succeeds",
        Duration::from_secs(5),
        || query(&mut c, &["SET", "after", "2"]).is_ok(),
    );
    assert_eq!(new_master.get("after").as_deref(), Some("2"));
    assert_eq!(new_master.get("before").as_deref(), Some("1"));
    assert!(w
        .view()
        .replicas
        .iter()
        .all(|r| r.backend.addr != old.to_string()));
}

#[test]
fn readonly_from_the_master_triggers_a_check_at_once() {
    // Periodic refreshes are a minute apart: only the READONLY reply can trigger a check.
    let w =
        World::start_yaml(|s| sentinel_yaml(s, "").replace("refresh_ms: 200", "refresh_ms: 60000"));
    let elsewhere = RedisServer::start();
    let mut c = w.proxy.conn();
    query(&mut c, &["SET", "k", "1"]).unwrap();
    // The master becomes a replica behind the proxy's and Sentinel's backs.
    let port = elsewhere.port().to_string();
    w.set.master.cmd(&["REPLICAOF", "127.0.0.1", &port]);
    let e = query(&mut c, &["SET", "k", "2"]).unwrap_err().to_string();
    assert!(
        e.contains("read only replica"),
        "the write got READONLY: {e}"
    );
    let refused = Instant::now();
    let state = w.proxy.state().clone();
    wait_until(
        "the proxy stops writing to a node that says it is a replica",
        Duration::from_secs(2),
        || state.view.load().master.is_none(),
    );
    let took = refused.elapsed();
    eprintln!("READONLY: the proxy dropped the master {took:?} after the refused write");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let e = query(&mut c, &["SET", "k", "3"]).unwrap_err().to_string();
    assert!(e.contains("no master is known"), "{e}");
}
