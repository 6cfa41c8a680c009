//! Hedged replica reads against a replica frozen with SIGSTOP: its socket stays open
//! and it answers nothing, so only the hedge (or, without it, the command timeout)
//! gets its reads answered. The monitor polls only every 2 s (with a long poll timeout),
//! so the frozen replica is not marked stalled during a test and keeps being chosen:
//! only hedging and the replica choice keep reads off it.

use crate::common::*;
use redis::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Keys `k:0..KEYS` (read from replicas) and `m:0..KEYS` (read from the master by rule).
const KEYS: usize = 50;

fn hedge_yaml(set: &ReplicaSet, backend: &str, choice: &str) -> String {
    proxy_yaml(
        set,
        &format!(
            "{backend}replication: {{poll_interval_ms: 2000, poll_timeout_ms: 60000}}\nrouting:\n  replica_choice: {choice}\n  default: {{consistency: replica, max_lag_ms: 60000, read_your_writes: false}}\n  rules:\n    - {{name: on_master, keys: ['m:*'], consistency: master}}\n"
        ),
    )
}

/// A replica set holding the keys, synced.
fn replica_set() -> ReplicaSet {
    let set = ReplicaSet::start(2, false);
    for i in 0..KEYS {
        set.master.set(&format!("k:{i}"), &format!("v{i}"));
        set.master.set(&format!("m:{i}"), &format!("mv{i}"));
    }
    set.wait_synced(SYNC_TIMEOUT);
    set
}

fn get(c: &mut redis::Connection, key: &str) -> String {
    text(&query(c, &["GET", key]).unwrap())
}

/// A pipeline of `n` commands mixing replica reads, master reads (by rule) and writes
/// (which make the session wait for its replica reads, so the next reads may go to the
/// other replica), with the reply each must get.
fn mixed_pipeline(round: usize, n: usize) -> (redis::Pipeline, Vec<String>) {
    let mut pipe = redis::pipe();
    let mut expected = Vec::with_capacity(n);
    for j in 0..n {
        let i = (round * 7 + j) % KEYS;
        match j % 10 {
            3 | 8 => {
                pipe.cmd("SET").arg(format!("w:{round}:{j}")).arg(j);
                expected.push("OK".to_string());
            }
            5 => {
                pipe.cmd("GET").arg(format!("m:{i}"));
                expected.push(format!("mv{i}"));
            }
            _ => {
                pipe.cmd("GET").arg(format!("k:{i}"));
                expected.push(format!("v{i}"));
            }
        }
    }
    (pipe, expected)
}

/// Run [`mixed_pipeline`] and check every reply in order; returns how long it took.
fn check_pipeline(c: &mut redis::Connection, round: usize, n: usize) -> Duration {
    let (pipe, expected) = mixed_pipeline(round, n);
    let t = Instant::now();
    let replies: Vec<Value> = pipe.query(c).unwrap();
    let took = t.elapsed();
    assert_eq!(replies.len(), expected.len());
    for (j, (r, e)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(&text(r), e, "round {round}, reply {j}");
    }
    took
}

fn metric(proxy: &ProxyUnderTest, which: fn(&redsplit::metrics::Metrics) -> u64) -> u64 {
    which(&proxy.state().metrics)
}

fn hedges_sent(m: &redsplit::metrics::Metrics) -> u64 {
    m.hedges_sent.load(Ordering::Relaxed)
}

/// A proxy over `set` with these `backend` settings, replicas taken in turn, both in the
/// pool, and a connection that has read keys `k:0` to `k:{warm}` (so both served).
fn started(set: &ReplicaSet, backend: &str, warm: usize) -> (ProxyUnderTest, redis::Connection) {
    let proxy = ProxyUnderTest::start(&hedge_yaml(set, backend, "round_robin"));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    slowest_read(&mut c, warm);
    (proxy, c)
}

/// Read keys `k:0` to `k:{n}` one at a time, checking each; the slowest read's time.
fn slowest_read(c: &mut redis::Connection, n: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        assert_eq!(get(c, &format!("k:{i}")), format!("v{i}"));
        slowest = slowest.max(t.elapsed());
    }
    slowest
}

#[test]
fn a_stalled_replicas_reads_are_hedged_on_the_master_in_request_order() {
    let set = replica_set();
    // A command timeout past the test's length: only the hedges answer the frozen
    // replica's reads, its connection is not given up on meanwhile.
    let (proxy, mut c) = started(
        &set,
        "  hedge_after_ms: 20\n  command_timeout_ms: 20000\n",
        10,
    );
    let before = set.replica_calls("get");
    assert!(
        before.iter().all(|&n| n > 0),
        "both replicas serve: {before:?}"
    );
    set.replicas[0].pause();

    // One at a time: every other read goes to the frozen replica.
    let slowest = slowest_read(&mut c, 20);
    assert!(
        slowest < Duration::from_secs(1),
        "a read took {slowest:?} with hedging after 20 ms"
    );
    // Pipelines mixing reads to both replicas and the master, and writes.
    for round in 0..6 {
        let took = check_pipeline(&mut c, round, 30);
        assert!(
            took < Duration::from_secs(1),
            "pipeline {round} took {took:?}"
        );
    }
    let hedged = metric(&proxy, hedges_sent);
    assert!(hedged > 0, "no read was hedged");

    // The frozen replica answers its reads late; the proxy discards those replies.
    set.replicas[0].resume();
    wait_until(
        "the resumed replica answers what it was sent",
        SYNC_TIMEOUT,
        || {
            set.replicas[0].calls("get") > before[0]
                && proxy.state().view.load().replicas[0].backend.outstanding() == 0
        },
    );
    let m = &proxy.state().metrics;
    let (won, lost) = (
        m.hedges_won.load(Ordering::Relaxed),
        m.hedges_lost.load(Ordering::Relaxed),
    );
    assert_eq!(won + lost, hedged, "every hedged read was settled once");
    assert!(won > 0, "the hedge answered while the replica was frozen");
    // The connection goes on answering correctly, one at a time and pipelined.
    for i in 0..100 {
        let k = i % KEYS;
        if i % 5 == 0 {
            assert_eq!(get(&mut c, &format!("m:{k}")), format!("mv{k}"));
        } else {
            assert_eq!(get(&mut c, &format!("k:{k}")), format!("v{k}"));
        }
    }
    for round in 10..14 {
        check_pipeline(&mut c, round, 25);
    }
}

#[test]
fn without_hedging_a_stalled_replica_holds_its_read_for_the_command_timeout() {
    let set = replica_set();
    let (proxy, mut c) = started(&set, "  hedge_after_ms: 0\n  command_timeout_ms: 500\n", 4);
    set.replicas[0].pause();
    let slowest = slowest_read(&mut c, 4);
    set.replicas[0].resume();
    assert!(
        slowest >= Duration::from_millis(450),
        "the frozen replica's read was retried after {slowest:?}, before the command timeout"
    );
    assert_eq!(metric(&proxy, hedges_sent), 0);
}

/// Two proxies in one process, over the same replicas: each one's watchdog times out
/// its own connections only. The short-timeout proxy's reads on a frozen replica are
/// retried after its timeout; the long-timeout proxy's read there keeps waiting.
#[test]
fn each_proxy_times_out_only_its_own_backend_connections() {
    let set = replica_set();
    let (short, mut quick) = started(&set, "  hedge_after_ms: 0\n  command_timeout_ms: 300\n", 4);
    let (long, mut patient) = started(
        &set,
        "  hedge_after_ms: 0\n  command_timeout_ms: 60000\n",
        4,
    );
    set.replicas[0].pause();
    let waiting = std::thread::spawn(move || slowest_read(&mut patient, 4));
    let frozen_outstanding = || {
        long.state()
            .view
            .load()
            .replicas
            .iter()
            .map(|r| r.backend.outstanding())
            .sum::<u64>()
    };
    wait_until(
        "the patient read waits on the frozen replica",
        SYNC_TIMEOUT,
        || frozen_outstanding() > 0,
    );
    // Past the short proxy's timeout, seen by its own retried read. A watchdog failing
    // a connection zeroes its backend's count of requests in flight at once.
    let slowest = slowest_read(&mut quick, 4);
    assert!(
        slowest >= Duration::from_millis(250),
        "no read of the short-timeout proxy met the frozen replica ({slowest:?})"
    );
    let still_waiting = frozen_outstanding();
    let failed = long
        .state()
        .metrics
        .backend_failures
        .load(Ordering::Relaxed);
    let done_early = waiting.is_finished();
    set.replicas[0].resume();
    let slowest = waiting.join().expect("the patient reads are answered");
    assert!(
        still_waiting > 0 && failed == 0 && !done_early,
        "the long-timeout proxy's connection was timed out by the other proxy's watchdog \
         (in flight {still_waiting}, failures {failed}, finished {done_early})"
    );
    assert!(slowest >= Duration::from_millis(500), "{slowest:?}");
    assert!(short.state().metrics.retries.load(Ordering::Relaxed) > 0);
}

#[test]
fn writes_are_never_hedged() {
    let set = replica_set();
    let proxy = ProxyUnderTest::start(&hedge_yaml(
        &set,
        "  hedge_after_ms: 20\n  command_timeout_ms: 3000\n",
        "round_robin",
    ));
    proxy.wait_in_pool(2);
    let sets_before = set.master.calls("set");
    let gets_before = set.master.calls("get");
    let master = proxy.state().view.load().master.clone().unwrap().backend;
    // Everything frozen: writes wait on the master, the read waits on its replica and
    // then on its hedge, sent to the master.
    set.master.pause();
    for r in &set.replicas {
        r.pause();
    }
    let writer = {
        let addr = proxy.addr;
        std::thread::spawn(move || {
            let mut c = connect(addr);
            let mut pipe = redis::pipe();
            for i in 0..5 {
                pipe.cmd("SET").arg(format!("w:{i}")).arg(i);
            }
            pipe.query::<Vec<Value>>(&mut c).unwrap()
        })
    };
    wait_until("the writes are sent to the master", SYNC_TIMEOUT, || {
        master.outstanding() >= 5
    });
    let reader = {
        let addr = proxy.addr;
        std::thread::spawn(move || get(&mut connect(addr), "k:1"))
    };
    // Once the read is hedged, the writes have waited longer than the hedge delay.
    wait_until("the read is hedged", SYNC_TIMEOUT, || {
        metric(&proxy, hedges_sent) == 1
    });
    set.master.resume();
    for r in &set.replicas {
        r.resume();
    }
    let replies = writer.join().unwrap();
    assert_eq!(replies.iter().map(text).collect::<Vec<_>>(), vec!["OK"; 5]);
    assert_eq!(reader.join().unwrap(), "v1");
    assert_eq!(
        set.master.calls("set") - sets_before,
        5,
        "each write sent once"
    );
    assert_eq!(
        set.master.calls("get") - gets_before,
        1,
        "the read hedged once"
    );
    assert_eq!(metric(&proxy, hedges_sent), 1);
}

#[test]
fn balanced_choice_moves_reads_off_a_stalled_replica() {
    let set = replica_set();
    let proxy = ProxyUnderTest::start(&hedge_yaml(
        &set,
        "  hedge_after_ms: 20\n  command_timeout_ms: 3000\n",
        "balanced",
    ));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    for i in 0..40 {
        assert_eq!(
            get(&mut c, &format!("k:{}", i % KEYS)),
            format!("v{}", i % KEYS)
        );
    }
    let before = set.replica_calls("get");
    assert!(
        before.iter().all(|&n| n > 0),
        "both replicas serve: {before:?}"
    );
    set.replicas[0].pause();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        assert_eq!(
            get(&mut c, &format!("k:{}", i % KEYS)),
            format!("v{}", i % KEYS)
        );
        slowest = slowest.max(t.elapsed());
    }
    let hedged = metric(&proxy, hedges_sent);
    set.replicas[0].resume();
    assert!(slowest < Duration::from_secs(1), "a read took {slowest:?}");
    // The stalled replica is tried again about once a second, not every other read.
    assert!(hedged <= 10, "{hedged} of 200 reads were hedged");
    let served = set.replicas[1].calls("get") - before[1];
    assert!(
        served >= 180,
        "the healthy replica served {served} of 200 reads"
    );
}

/// The frozen replica's connections time out one after another while pipelines are
/// hedged: each failed connection is replaced while requests for other connections are
/// still being gathered, and every reply still reaches its request, in order.
#[test]
fn replica_connections_timing_out_under_hedged_pipelines_lose_no_reply() {
    let set = replica_set();
    let (proxy, mut c) = started(
        &set,
        "  hedge_after_ms: 20
  command_timeout_ms: 300
",
        10,
    );
    set.replicas[0].pause();
    slowest_read(&mut c, 20);
    for round in 0..20 {
        check_pipeline(&mut c, round, 30);
    }
    assert!(metric(&proxy, hedges_sent) > 0, "no read was hedged");
    set.replicas[0].resume();
    for round in 20..24 {
        check_pipeline(&mut c, round, 30);
    }
}
