//! Lag-bounded reads against real replicas made to lag on purpose: each replica
//! replicates through a relay that the test pauses or delays, while the replica stays up
//! and keeps answering reads with stale data.
// Test code: unwrap, panic and indexing fail the test; `unsafe` is libc calls (signals, rlimits).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    unsafe_code
)]
mod common;

use common::*;
use redis::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn text(v: &Value) -> String {
    value_text(v).unwrap_or_else(|| format!("{v:?}"))
}

fn replica_gets(set: &ReplicaSet) -> Vec<u64> {
    set.replicas
        .iter()
        .map(|r| r.commandstats().get("get").copied().unwrap_or(0))
        .collect()
}

fn master_gets(set: &ReplicaSet) -> u64 {
    set.master.commandstats().get("get").copied().unwrap_or(0)
}

const BUDGET_MS: u64 = 400;
const POLL_MS: u64 = 50;
const DWELL_MS: u64 = 600;

fn lag_yaml(set: &ReplicaSet, rules: &str) -> String {
    proxy_yaml(
        set,
        &format!(
            "replication: {{poll_interval_ms: {POLL_MS}, dwell_ms: {DWELL_MS}}}\nrouting:\n  default: {{consistency: replica, max_lag_ms: {BUDGET_MS}}}\n{rules}"
        ),
    )
}

/// The writer's log: for each value n, when the write of n was acknowledged.
type Acks = Arc<Mutex<Vec<(u64, Instant)>>>;

#[test]
fn stale_replicas_are_avoided_and_rejoin_after_the_dwell() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&lag_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::new(Mutex::new(Vec::new()));
    // Writer: seq = 1, 2, 3, … through the proxy, every ~2 ms.
    let writer = {
        let (stop, acks, addr) = (stop.clone(), acks.clone(), proxy.addr);
        std::thread::spawn(move || {
            let mut c = connect(addr);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                query(&mut c, &["SET", "seq", &n.to_string()]).unwrap();
                acks.lock().unwrap().push((n, Instant::now()));
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Readers: fresh connections that never write, so only the budget decides.
    type Reads = Arc<Mutex<Vec<(Instant, u64)>>>;
    let reads: Reads = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, reads, addr) = (stop.clone(), reads.clone(), proxy.addr);
            std::thread::spawn(move || {
                let mut c = connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let v = query(&mut c, &["GET", "seq"]).unwrap();
                    let n = match v {
                        Value::Nil => 0,
                        v => text(&v).parse().unwrap(),
                    };
                    reads.lock().unwrap().push((sent, n));
                }
            })
        })
        .collect();
    let phase = Duration::from_millis(1500);
    std::thread::sleep(Duration::from_millis(500));
    // One replica's stream stops; then the other's.
    set.relays[0].pause();
    std::thread::sleep(phase);
    let before_both = replica_gets(&set);
    set.relays[1].pause();
    // Wait out the budget so that neither replica can still qualify.
    std::thread::sleep(Duration::from_millis(BUDGET_MS + 3 * POLL_MS));
    let both_start = (replica_gets(&set), master_gets(&set));
    std::thread::sleep(phase);
    let both_end = (replica_gets(&set), master_gets(&set));
    set.relays[0].resume();
    set.relays[1].resume();
    let resumed = Instant::now();
    // Replicas catch up at once but rejoin only after the dwell time.
    std::thread::sleep(Duration::from_millis(DWELL_MS / 2));
    let during_dwell = replica_gets(&set);
    std::thread::sleep(Duration::from_millis(DWELL_MS / 4));
    let during_dwell_end = replica_gets(&set);
    proxy.wait_in_pool(2);
    let rejoined = resumed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = replica_gets(&set);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }

    // No read returned a value superseded longer than budget + poll interval before it
    // was sent.
    let acks = acks.lock().unwrap();
    let reads = reads.lock().unwrap();
    let ack_of = |n: u64| {
        acks.get(n as usize).map(|(m, t)| {
            assert_eq!(*m, n + 1);
            *t
        })
    };
    let bound = Duration::from_millis(BUDGET_MS + POLL_MS);
    let mut worst = Duration::ZERO;
    for (sent, n) in reads.iter() {
        // Value n was superseded when write n+1 was acknowledged.
        if let Some(superseded) = ack_of(*n) {
            if *sent > superseded {
                let age = *sent - superseded;
                worst = worst.max(age);
                assert!(
                    age <= bound,
                    "read sent {age:?} after value {n} was superseded (bound {bound:?})"
                );
            }
        }
    }
    eprintln!(
        "reads: {}, writes: {}, worst superseded age: {worst:?}, rejoin after {rejoined:?}",
        reads.len(),
        acks.len()
    );
    assert!(reads.len() > 500, "enough reads to mean something");
    // With both replicas paused, every read went to the master.
    assert_eq!(
        both_start.0, both_end.0,
        "no replica served reads while both were stale"
    );
    assert!(both_end.1 > both_start.1 + 100, "the master served them");
    // While only relay 0 was paused, replica 1 kept serving.
    assert!(before_both[1] > 0);
    // Rejoin only after the dwell time, then serve again.
    assert_eq!(
        during_dwell, during_dwell_end,
        "no replica served reads during the dwell time"
    );
    assert!(
        rejoined >= Duration::from_millis(DWELL_MS),
        "rejoined after {rejoined:?}"
    );
    assert!(
        after.iter().zip(&during_dwell_end).all(|(a, b)| a > b),
        "both replicas serve again: {after:?}"
    );
}

#[test]
fn read_your_writes_with_a_delayed_replication_stream() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&lag_yaml(
        &set,
        "  rules:\n    - {name: loose, keys: ['loose:*'], consistency: any}\n",
    ));
    proxy.wait_in_pool(2);
    for r in &set.relays {
        r.set_delay(Duration::from_millis(100));
    }
    let mut c = proxy.conn();
    let pairs = 2000;
    let mut mismatches = 0;
    for i in 0..pairs {
        let k = format!("ryw:{i}");
        query(&mut c, &["SET", &k, &i.to_string()]).unwrap();
        if text(&query(&mut c, &["GET", &k]).unwrap()) != i.to_string() {
            mismatches += 1;
        }
    }
    assert_eq!(
        mismatches, 0,
        "read-your-writes: every GET sees the client's own SET"
    );
    // The same with a rule that allows any replica: the test can fail.
    let mut loose = 0;
    for i in 0..200 {
        let k = format!("loose:{i}");
        query(&mut c, &["SET", &k, &i.to_string()]).unwrap();
        if query(&mut c, &["GET", &k]).unwrap() != Value::BulkString(i.to_string().into_bytes()) {
            loose += 1;
        }
    }
    eprintln!("read-your-writes mismatches: 0 of {pairs}; with `any`: {loose} of 200");
    assert!(
        loose > 100,
        "with `any`, reads right after a write see stale replicas ({loose} of 200)"
    );
    // A write then a read in one pipeline always sees the write.
    let replies: Vec<Value> = redis::pipe()
        .cmd("SET")
        .arg("p")
        .arg("new")
        .cmd("GET")
        .arg("p")
        .query(&mut c)
        .unwrap();
    assert_eq!(text(&replies[1]), "new");
}

#[test]
fn durable_writes_wait_for_replicas() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&lag_yaml(
        &set,
        "  rules:\n    - {name: stock, keys: ['stock:*'], consistency: master, wait: {replicas: 2, timeout_ms: 300}}\n",
    ));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    // Flowing: the reply comes once both replicas hold the write.
    assert_eq!(
        text(&query(&mut c, &["SET", "stock:1", "5"]).unwrap()),
        "OK"
    );
    for r in &set.replicas {
        assert_eq!(
            r.get("stock:1").as_deref(),
            Some("5"),
            "the replica held the write before the reply"
        );
    }
    // One stream paused: the write is applied on the master but times out.
    set.relays[0].pause();
    let addr = proxy.addr;
    let other = std::thread::spawn(move || {
        let mut o = connect(addr);
        let t = Instant::now();
        for i in 0..50 {
            query(&mut o, &["SET", &format!("other:{i}"), "x"]).unwrap();
        }
        t.elapsed()
    });
    let t = Instant::now();
    let e = query(&mut c, &["SET", "stock:1", "4"])
        .unwrap_err()
        .to_string();
    let took = t.elapsed();
    assert!(
        e.contains("write applied on the master but reached only 1 of 2 replicas"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(set.master.get("stock:1").as_deref(), Some("4"));
    let other_took = other.join().unwrap();
    assert!(
        other_took < Duration::from_millis(300),
        "other clients were not held: {other_took:?}"
    );
    // The client's own WAIT means what it means on Redis.
    assert_eq!(text(&query(&mut c, &["SET", "plain", "1"]).unwrap()), "OK");
    assert_eq!(
        query(&mut c, &["WAIT", "1", "1000"]).unwrap(),
        Value::Int(1)
    );
    let t = Instant::now();
    assert_eq!(query(&mut c, &["WAIT", "2", "200"]).unwrap(), Value::Int(1));
    assert!(t.elapsed() >= Duration::from_millis(200));
    set.relays[0].resume();
    assert_eq!(
        query(&mut c, &["WAIT", "2", "2000"]).unwrap(),
        Value::Int(2)
    );
    assert_eq!(
        text(&query(&mut c, &["SET", "stock:2", "1"]).unwrap()),
        "OK"
    );
}

#[test]
fn explain_agrees_with_where_reads_went() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&lag_yaml(
        &set,
        "  rules:\n    - {name: stock, keys: ['stock:*'], consistency: master}\n",
    ));
    proxy.wait_in_pool(2);
    set.relays[0].pause();
    // Make replica 0 stale: writes it cannot see.
    let mut w = connect(set.master.addr());
    for i in 0..10 {
        query(&mut w, &["SET", "noise", &i.to_string()]).unwrap();
    }
    let state = proxy.state().clone();
    wait_until("replica 0 leaves the pool", Duration::from_secs(5), || {
        state.view.load().replicas[0].in_pool & 1 == 0
    });
    let mut c = proxy.conn();
    let explain = query(&mut c, &["PROXY", "EXPLAIN", "GET", "k"]).unwrap();
    let s = format!("{explain:?}");
    let want = format!("replica {}", set.replicas[1].addr());
    assert!(s.contains(&want), "{s}");
    assert!(s.contains("over budget"), "{s}");
    let before = replica_gets(&set);
    for _ in 0..20 {
        query(&mut c, &["GET", "k"]).unwrap();
    }
    let after = replica_gets(&set);
    assert_eq!(after[0], before[0], "the stale replica served nothing");
    assert_eq!(
        after[1],
        before[1] + 20,
        "the replica EXPLAIN named served every read"
    );
    let s = format!(
        "{:?}",
        query(&mut c, &["PROXY", "EXPLAIN", "GET", "stock:1"]).unwrap()
    );
    assert!(
        s.contains(&format!("master {}", set.master.addr())) && s.contains("stock"),
        "{s}"
    );
    let status = format!("{:?}", query(&mut c, &["PROXY", "STATUS"]).unwrap());
    assert!(
        status.contains("staleness_ms") && status.contains(&set.replicas[0].addr().to_string()),
        "{status}"
    );
    set.relays[0].resume();
}

#[test]
fn calm_reads_are_served_by_replicas() {
    let set = ReplicaSet::start(2, false);
    // The shipped defaults: 1 s budget, 50 ms polls.
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, addr) = (stop.clone(), proxy.addr);
        std::thread::spawn(move || {
            let mut c = connect(addr);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                query(&mut c, &["SET", &format!("w:{}", n % 100), "v"]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut c = proxy.conn();
    let (r0, m0) = (replica_gets(&set), master_gets(&set));
    let n = 5000;
    for i in 0..n {
        query(&mut c, &["GET", &format!("w:{}", i % 100)]).unwrap();
    }
    let (r1, m1) = (replica_gets(&set), master_gets(&set));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let replica: u64 = r1.iter().zip(&r0).map(|(a, b)| a - b).sum();
    let share = replica as f64 / n as f64;
    eprintln!(
        "calm: {replica} of {n} reads on replicas ({:.1}%), {} on the master",
        share * 100.0,
        m1 - m0
    );
    assert!(share >= 0.95, "share of reads on replicas: {share}");
}
