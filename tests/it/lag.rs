//! Lag-bounded reads against real replicas made to lag on purpose: each replica
//! replicates through a relay that the test pauses or delays, while the replica stays up
//! and keeps answering reads with stale data.

use crate::common::*;
use redis::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A replica-read default with budget `budget_ms`, polled every `poll_ms`, with `extra`
/// (`key: value, `) inside `replication:`.
fn monitor_yaml(set: &ReplicaSet, poll_ms: u64, extra: &str, budget_ms: u64) -> String {
    proxy_yaml(
        set,
        &format!(
            "replication: {{{extra}poll_interval_ms: {poll_ms}, dwell_ms: {DWELL_MS}}}\nrouting:\n  default: {{consistency: replica, max_lag_ms: {budget_ms}}}\n"
        ),
    )
}

/// The writer's log: for each value n, when the write of n was acknowledged.
type Acks = Arc<Mutex<Vec<(u64, Instant)>>>;

/// A thread writing `key` = 1, 2, 3, … to `addr` every ~2 ms until `stop`, each
/// acknowledgement logged in `acks`.
fn seq_writer(
    addr: std::net::SocketAddr,
    key: &'static str,
    stop: &Arc<AtomicBool>,
    acks: &Acks,
) -> std::thread::JoinHandle<()> {
    let (stop, acks) = (stop.clone(), acks.clone());
    std::thread::spawn(move || {
        let mut c = connect(addr);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            query(&mut c, &["SET", key, &n.to_string()]).unwrap();
            acks.lock().unwrap().push((n, Instant::now()));
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[test]
fn stale_replicas_are_avoided_and_rejoin_after_the_dwell() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&lag_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::new(Mutex::new(Vec::new()));
    // Writer: seq = 1, 2, 3, … through the proxy, every ~2 ms.
    let writer = seq_writer(proxy.addr, "seq", &stop, &acks);
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
    let view = proxy.state().clone();
    // Whether replica `i` is in the read pool of the (only) budget.
    let in_pool = |i: usize| view.view.load().replicas[i].in_pool & 1 == 1;
    let reads_done = || reads.lock().unwrap().len();
    // Reads complete after any routed before the call (each reader has one in flight).
    let more_reads = |what: &str, n: usize| {
        let from = reads_done();
        wait_until(what, SYNC_TIMEOUT, || reads_done() >= from + n);
    };
    wait_until("both replicas serve reads", SYNC_TIMEOUT, || {
        set.replica_calls("get").iter().all(|&n| n > 0) && reads_done() > 100
    });
    // One replica's stream stops; then the other's.
    set.relays[0].pause();
    wait_until("replica 0 leaves the pool", SYNC_TIMEOUT, || !in_pool(0));
    let r1 = set.replica_calls("get")[1];
    wait_until("replica 1 serves on alone", SYNC_TIMEOUT, || {
        set.replica_calls("get")[1] > r1 + 100
    });
    let before_both = set.replica_calls("get");
    set.relays[1].pause();
    // Once neither replica qualifies (and the reads routed before are done), the master
    // serves every read.
    wait_until("replica 1 leaves the pool", SYNC_TIMEOUT, || !in_pool(1));
    more_reads("reads routed before are done", 10);
    let both_start = (set.replica_calls("get"), set.master.calls("get"));
    more_reads("reads while both replicas are stale", 300);
    let both_end = (set.replica_calls("get"), set.master.calls("get"));
    set.relays[0].resume();
    set.relays[1].resume();
    let resumed = Instant::now();
    // Replicas catch up at once but rejoin only after the dwell time: a sample once both
    // are within the budget again, and the last one taken while both were still out of the pool (reads
    // counted before the view said so).
    let caught_up = |i: usize| {
        view.view.load().replicas[i]
            .staleness_ms(Instant::now())
            .is_some_and(|ms| ms < BUDGET_MS)
    };
    wait_until("both replicas catch up", SYNC_TIMEOUT, || {
        caught_up(0) && caught_up(1)
    });
    let during_dwell = set.replica_calls("get");
    let mut during_dwell_end = during_dwell.clone();
    wait_until("both replicas rejoin the pool", SYNC_TIMEOUT, || {
        let sample = set.replica_calls("get");
        let (in0, in1) = (in_pool(0), in_pool(1));
        if !in0 && !in1 {
            during_dwell_end = sample;
        }
        in0 && in1
    });
    let rejoined = resumed.elapsed();
    assert!(
        rejoined >= Duration::from_millis(DWELL_MS),
        "rejoined after {rejoined:?}"
    );
    wait_until("both replicas serve again", SYNC_TIMEOUT, || {
        set.replica_calls("get")
            .iter()
            .zip(&during_dwell_end)
            .all(|(a, b)| a > b)
    });
    let after = set.replica_calls("get");
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
    let before = set.replica_calls("get");
    for _ in 0..20 {
        query(&mut c, &["GET", "k"]).unwrap();
    }
    let after = set.replica_calls("get");
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
    let (r0, m0) = (set.replica_calls("get"), set.master.calls("get"));
    let n = 5000;
    for i in 0..n {
        query(&mut c, &["GET", &format!("w:{}", i % 100)]).unwrap();
    }
    let (r1, m1) = (set.replica_calls("get"), set.master.calls("get"));
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

/// With writes flowing, a caught-up replica's staleness bound stays within one poll
/// period (plus a few ms for the round trips): each replica is polled right after a master
/// sample, so the sample it is compared with is the one just before its reading. Polled
/// on their own, the bound of a caught-up replica ranged between one and two periods.
#[test]
fn a_caught_up_replicas_bound_stays_within_one_poll_period() {
    // A period long against scheduling delays on a loaded machine.
    const POLL_MS: u64 = 200;
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&monitor_yaml(&set, POLL_MS, "", 5000));
    proxy.wait_in_pool(2);
    let stop = Arc::new(AtomicBool::new(false));
    // About 500 writes a second, straight to the master: its offset moves between polls.
    let writer = seq_writer(set.master.addr(), "bound", &stop, &Acks::default());
    let state = proxy.state().clone();
    let mut bounds: Vec<u64> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let v = state.view.load();
        let now = Instant::now();
        for r in &v.replicas {
            if let Some(ms) = r.staleness_ms(now) {
                bounds.push(ms);
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    bounds.sort_unstable();
    let at = |q: f64| bounds[((bounds.len() - 1) as f64 * q) as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    eprintln!(
        "bound over {} samples: p50 {p50} ms, p99 {p99} ms, max {} ms (poll {POLL_MS} ms)",
        bounds.len(),
        bounds[bounds.len() - 1]
    );
    assert!(bounds.len() > 500, "too few samples: {}", bounds.len());
    // Uniform over one period: the median near half of it, the 99th percentile under it
    // plus scheduling slack. Over two periods (replicas polled apart from the master
    // sample) the median sits near one period and the 99th percentile near two.
    assert!(p50 <= POLL_MS * 3 / 4, "median bound {p50} ms");
    assert!(p99 <= POLL_MS * 3 / 2, "99th percentile bound {p99} ms");
}

/// A replica that stops answering (SIGSTOP) takes no reads once its poll has gone
/// unanswered for a poll period, not after `poll_timeout_ms`; it serves again as soon as
/// it answers, caught up (a stall is not lag: no dwell).
#[test]
fn a_stalled_replica_leaves_the_pools_within_a_poll_period() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&monitor_yaml(
        &set,
        POLL_MS,
        "poll_timeout_ms: 20000, ",
        10000,
    ));
    proxy.wait_in_pool(2);
    let state = proxy.state().clone();
    let health = |i: usize| state.view.load().replicas[i].health;
    set.replicas[0].pause();
    // No writes flow, so the bound alone would keep it in the pool for 10 s, and the
    // poll would fail only after 20 s.
    wait_until(
        "the stopped replica is stalled",
        Duration::from_secs(3),
        || health(0) == redsplit::topology::Health::Stalled,
    );
    assert_eq!(
        state.view.load().replicas[1].health,
        redsplit::topology::Health::Ok
    );
    // Reads go to the other replica meanwhile.
    let before = set.replicas[1].calls("get");
    let mut c = proxy.conn();
    for _ in 0..20 {
        query(&mut c, &["GET", "k"]).unwrap();
    }
    assert_eq!(set.replicas[1].calls("get") - before, 20);
    set.replicas[0].resume();
    wait_until("the replica answers again", SYNC_TIMEOUT, || {
        health(0) == redsplit::topology::Health::Ok
    });
    let before = set.replicas[0].calls("get");
    wait_until("the replica serves reads again", SYNC_TIMEOUT, || {
        query(&mut c, &["GET", "k"]).unwrap();
        set.replicas[0].calls("get") > before
    });
}

/// A replica that lags (its replication stream delayed 20 ms) under a steady write load:
/// its bound exceeds its real staleness (how long ago the oldest write it lacks was
/// acknowledged) by about one poll period at most, because the master is sampled four
/// times a period, so the sample its offset falls just after is recent. With one master
/// sample a period, the excess reached two periods.
#[test]
fn a_lagging_replicas_bound_exceeds_its_real_staleness_by_about_one_poll_period() {
    // A period long against scheduling delays on a loaded machine.
    const POLL_MS: u64 = 200;
    let set = ReplicaSet::start(2, true);
    for r in &set.relays {
        r.set_delay(Duration::from_millis(20));
    }
    let proxy = ProxyUnderTest::start(&monitor_yaml(&set, POLL_MS, "", 5000));
    proxy.wait_in_pool(2);
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::new(Mutex::new(Vec::new()));
    // seq = 1, 2, 3, … straight to the master, every ~2 ms, each ack time kept.
    let writer = seq_writer(set.master.addr(), "seq", &stop, &acks);
    let state = proxy.state().clone();
    let mut replicas: Vec<redis::Connection> = set.replicas.iter().map(|r| r.conn()).collect();
    let mut excess: Vec<i64> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let now = Instant::now();
        let bounds: Vec<Option<u64>> = state
            .view
            .load()
            .replicas
            .iter()
            .map(|r| r.staleness_ms(now))
            .collect();
        for (bound, c) in bounds.into_iter().zip(&mut replicas) {
            let have: usize = match query(c, &["GET", "seq"]).unwrap() {
                Value::Nil => 0,
                v => text(&v).parse().unwrap(),
            };
            // The first write the replica lacks is seq have + 1, at index `have`.
            let missing = acks.lock().unwrap().get(have).map(|(_, at)| *at);
            let real = missing
                .filter(|at| *at < now)
                .map_or(0, |at| now.duration_since(at).as_millis() as i64);
            if let Some(b) = bound {
                excess.push(b as i64 - real);
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    excess.sort_unstable();
    let at = |q: f64| excess[((excess.len() - 1) as f64 * q) as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), excess[excess.len() - 1]);
    eprintln!(
        "excess of the bound over real staleness, {} samples: p50 {p50} ms, p99 {p99} ms, max {max} ms (poll {POLL_MS} ms)",
        excess.len()
    );
    assert!(excess.len() > 500, "too few samples: {}", excess.len());
    assert!(
        excess[0] >= 0,
        "the bound was under the real staleness: {excess:?}"
    );
    assert!(
        p99 <= (POLL_MS * 3 / 2) as i64,
        "99th percentile excess {p99} ms"
    );
}
