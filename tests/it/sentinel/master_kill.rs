//! The master killed under load: writes move to the new master, reads never fail, and
//! reads in flight on the killed master are retried.

use crate::common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    error_kinds, failure_window, load, longest_failure_streak, missing_on, pool_sampler, Load, Op,
    SwitchWatch, World,
};

#[test]
fn master_killed_under_load_writes_move_to_the_new_master() {
    let mut w = World::start(
        "  rules:\n    - {name: durable, keys: ['d:*'], consistency: master, wait: {replicas: 1, timeout_ms: 1000}}\n",
    );
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let writer = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("w:{n}"), &n.to_string()]).map(drop)
    });
    let durable = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("d:{n}"), &n.to_string()]).map(drop)
    });
    let reader = load(addr, &stop, Duration::from_millis(1), |c, n| {
        query(c, &["GET", &format!("w:{}", n % 500)]).map(drop)
    });
    let pool = pool_sampler(&w, &stop);
    let watch = SwitchWatch::start(&w.sentinels);
    writer.wait_ok(100, "writes flow");
    reader.wait_ok(100, "reads flow");
    let killed = Instant::now();
    w.set.master.kill();
    let (new, adopted) = w.wait_new_master(old);
    watch.wait_published();
    // Keep the load going on the new master for a while.
    writer.wait_ok(300, "writes flow on the new master");
    reader.wait_ok(300, "reads flow after the failover");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let durables = durable.join().unwrap();
    let reads = reader.join().unwrap();
    let samples = pool.join().unwrap();
    // Every Sentinel switches (the last ones on the others' hello messages).
    watch.wait_published_by(w.sentinels.addrs().len());
    let (first_switch, last_switch) = watch.first_and_last().unwrap();
    watch.stop();

    let new_master = w.server(new);
    assert_eq!(new_master.role(), "master");
    let (fail_start, fail_end) =
        failure_window(&writes).expect("writes failed while no master was known");
    let window = fail_end - fail_start;
    let first_ok_after = writes
        .iter()
        .find(|o| o.err.is_none() && o.sent > killed)
        .map(|o| o.done - killed);
    let read_streak = longest_failure_streak(&reads);
    let slowest = writes
        .iter()
        .chain(&durables)
        .chain(&reads)
        .map(|o| o.done - o.sent)
        .max()
        .unwrap();
    eprintln!(
        "killed master: Sentinel +switch-master after {:?} (first) / {:?} (last); proxy used the new master after {:?}; \
         writes failed for {:?} (from {:?} to {:?} after the kill), first write ok on the new master {:?} after the kill; \
         longest read failure streak {:?}; slowest request {:?}",
        first_switch - killed,
        last_switch - killed,
        adopted - killed,
        window,
        fail_start.saturating_duration_since(killed),
        fail_end - killed,
        first_ok_after,
        read_streak,
        slowest,
    );
    eprintln!("{samples} views sampled: no replica was in the read pool without a known lag within budget");
    eprintln!(
        "writes: {} ok, {} failed {:?}; durable: {} ok, {} failed {:?}; reads: {} ok, {} failed {:?}",
        writes.iter().filter(|o| o.err.is_none()).count(),
        writes.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&writes),
        durables.iter().filter(|o| o.err.is_none()).count(),
        durables.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&durables),
        reads.iter().filter(|o| o.err.is_none()).count(),
        reads.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&reads),
    );

    // Writes failed only around the failover, and failed fast, never hanging.
    assert!(
        writes.iter().all(|o| o.err.is_none() || o.done >= killed),
        "no write failed before the kill"
    );
    assert!(
        slowest < Duration::from_secs(3),
        "no request hung: {slowest:?}"
    );
    for e in writes.iter().filter_map(|o| o.err.as_ref()) {
        assert!(e.contains("redsplit"), "a clear error from the proxy: {e}");
    }
    // After the window, every write was acknowledged and is on the new master.
    let after: Vec<&Op> = writes.iter().filter(|o| o.sent > fail_end).collect();
    assert!(
        after.len() > 100,
        "the load went on after the failover ({} writes)",
        after.len()
    );
    assert!(after.iter().all(|o| o.err.is_none()));
    let missing = missing_on(new_master, "w:", &after);
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on the new master: {missing:?}"
    );
    // No durable write the proxy acknowledged was lost.
    let acked: Vec<&Op> = durables.iter().filter(|o| o.err.is_none()).collect();
    assert!(
        acked.iter().any(|o| o.sent > fail_end),
        "durable writes resumed"
    );
    let missing = missing_on(new_master, "d:", &acked);
    assert!(
        missing.is_empty(),
        "acknowledged durable writes lost: {missing:?}"
    );
    // Reads never failed for longer than writes did.
    assert!(
        read_streak <= window,
        "reads failed for {read_streak:?}, writes for {window:?}"
    );
    assert!(
        reads
            .iter()
            .filter(|o| o.sent > killed && o.done < fail_end && o.err.is_none())
            .count()
            > 0,
        "reads were served during the failover"
    );
    // The change was counted, and the old master left the topology.
    let v = w.view();
    assert!(v.replicas.iter().all(|r| r.backend.addr != old.to_string()));
    assert!(
        w.proxy
            .state()
            .metrics
            .topology_changes
            .load(Ordering::Relaxed)
            >= 1
    );
}

/// Reads never fail while the master is killed and Sentinel fails it over: a read whose
/// replica fails (Sentinel closes the client connections of each replica it
/// reconfigures) while no master is known goes to another replica that can answer, or
/// waits for the new master. Writes may fail in the gap.
#[test]
fn reads_never_fail_through_a_master_kill() {
    let mut w = World::start("");
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let writer = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("w:{n}"), &n.to_string()]).map(drop)
    });
    let readers: Vec<Load> = (0..2)
        .map(|i| {
            load(addr, &stop, Duration::from_millis(1), move |c, n| {
                query(c, &["GET", &format!("w:{}", (n + i) % 500)]).map(drop)
            })
        })
        .collect();
    for r in &readers {
        r.wait_ok(100, "reads flow");
    }
    writer.wait_ok(100, "writes flow");
    let killed = Instant::now();
    w.set.master.kill();
    let (new, adopted) = w.wait_new_master(old);
    // Past the reconfiguration of the other replica too.
    for r in &readers {
        r.wait_ok(500, "reads flow after the failover");
    }
    writer.wait_ok(300, "writes flow on the new master");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let reads: Vec<Op> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let failed: Vec<&Op> = reads.iter().filter(|o| o.err.is_some()).collect();
    let during = reads
        .iter()
        .filter(|o| o.sent >= killed && o.done <= adopted)
        .count();
    let slowest = reads.iter().map(|o| o.done - o.sent).max().unwrap();
    eprintln!(
        "master killed: new master {new} used after {:?}; reads: {} ({during} while no new master was used), {} failed {:?}, slowest {slowest:?}; writes: {} failed {:?}",
        adopted - killed,
        reads.len(),
        failed.len(),
        error_kinds(&reads),
        writes.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&writes),
    );
    assert!(during > 0, "reads were sent during the failover");
    assert!(
        failed.is_empty(),
        "{} reads failed: {:?}",
        failed.len(),
        error_kinds(&reads)
    );
    assert_eq!(w.server(new).role(), "master");
}

/// Reads that a rule sends to the master, in flight on it when it is killed, are sent
/// again once Sentinel's new master is in use: none fails with the old master's lost
/// connection. Reads sent while no master can be used (none known, or the old one
/// refusing connections) are refused at once (their rule allows no replica), as writes
/// are.
#[test]
fn master_reads_in_flight_through_a_master_kill_are_retried() {
    let mut w =
        World::start("  rules:\n    - {name: strong, keys: ['m:*'], consistency: master}\n");
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let readers: Vec<Load> = (0..3)
        .map(|i| {
            load(addr, &stop, Duration::ZERO, move |c, n| {
                // A pipeline, so that reads are always in flight on the master.
                let mut pipe = redis::pipe();
                for k in 0..8 {
                    pipe.cmd("GET").arg(format!("m:{}", (n * 8 + k + i) % 500));
                }
                pipe.query::<Vec<Option<String>>>(c).map(drop)
            })
        })
        .collect();
    for r in &readers {
        r.wait_ok(100, "reads flow");
    }
    let retries_before = w.proxy.state().metrics.retries.load(Ordering::Relaxed);
    w.set.master.kill();
    let (new, _) = w.wait_new_master(old);
    for r in &readers {
        r.wait_ok(300, "reads flow on the new master");
    }
    stop.store(true, Ordering::Relaxed);
    let reads: Vec<Op> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let kinds = error_kinds(&reads);
    let retries = w.proxy.state().metrics.retries.load(Ordering::Relaxed) - retries_before;
    eprintln!(
        "master killed, new master {new}: {} read pipelines, {retries} reads retried; failures {kinds:?}",
        reads.len()
    );
    // Refused before being sent: no master, or the old one refusing connections.
    let refused = |e: &str| {
        ["master is down", "no master", "unreachable", "reconnecting"]
            .iter()
            .any(|r| e.contains(r))
    };
    let lost: Vec<&String> = kinds.keys().filter(|e| !refused(e)).collect();
    assert!(
        lost.is_empty(),
        "reads failed with the old master's connection: {kinds:?}"
    );
    assert!(retries > 0, "no read was in flight on the killed master");
}
