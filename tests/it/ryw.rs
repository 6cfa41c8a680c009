//! Read-your-writes across connections (`read_your_writes: key`): a write on one proxy
//! connection and a read of the same key on another, against replicas whose replication
//! stream is delayed on purpose, as an app's connection pool produces them.

use crate::common::*;
use std::time::{Duration, Instant};

const PAIRS: usize = 2000;
const KEYS: usize = 5;

fn ryw_yaml(set: &ReplicaSet, mode: &str, extra: &str) -> String {
    proxy_yaml(
        set,
        &format!(
            "replication: {{poll_interval_ms: 20, dwell_ms: 100}}\nrouting:\n  default: {{consistency: replica, max_lag_ms: 5000, read_your_writes: {mode}}}\n{extra}"
        ),
    )
}

/// The field `field` of `PROXY EXPLAIN GET key` on `c` (top level), as text.
fn explain_field(c: &mut redis::Connection, key: &str, field: &str) -> String {
    let v = query(c, &["PROXY", "EXPLAIN", "GET", key]).unwrap();
    let pairs: Vec<(String, redis::Value)> = match v {
        redis::Value::Array(items) => items
            .chunks(2)
            .map(|p| (text(&p[0]), p[1].clone()))
            .collect(),
        redis::Value::Map(items) => items.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        other => panic!("EXPLAIN replied {other:?}"),
    };
    pairs
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| text(&v))
        .unwrap_or_else(|| panic!("EXPLAIN has no {field}"))
}

/// What the write-then-read pairs saw.
struct Pairs {
    /// Reads on B that did not see A's write just acknowledged.
    stale: usize,
    /// GETs the replicas served during the run (of the written and the other keys).
    replica_gets: u64,
}

/// `PAIRS` times: SET a key on connection A to a new value, then at once GET it on
/// connection B; every tenth pair B also reads a key nobody writes.
fn run_pairs(set: &ReplicaSet, proxy: &ProxyUnderTest) -> Pairs {
    proxy.wait_in_pool(2);
    set.relays[0].set_delay(Duration::from_millis(5));
    set.relays[1].set_delay(Duration::from_millis(20));
    let mut a = proxy.conn();
    let mut b = proxy.conn();
    let before: u64 = set.replica_calls("get").iter().sum();
    let mut stale = 0;
    for i in 0..PAIRS {
        let k = format!("ryw:{}", i % KEYS);
        let v = i.to_string();
        assert_eq!(text(&query(&mut a, &["SET", &k, &v]).unwrap()), "OK");
        if text(&query(&mut b, &["GET", &k]).unwrap()) != v {
            stale += 1;
        }
        if i % 10 == 0 {
            query(&mut b, &["GET", &format!("other:{i}")]).unwrap();
        }
    }
    let after: u64 = set.replica_calls("get").iter().sum();
    Pairs {
        stale,
        replica_gets: after - before,
    }
}

#[test]
fn key_mode_reads_see_writes_made_on_other_connections() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&ryw_yaml(&set, "key", ""));
    let t = Instant::now();
    let p = run_pairs(&set, &proxy);
    eprintln!(
        "read_your_writes key: {} stale of {PAIRS}; replicas served {} GETs; {:?}",
        p.stale,
        p.replica_gets,
        t.elapsed()
    );
    assert_eq!(p.stale, 0, "every GET on B sees A's acknowledged SET");
    assert!(
        p.replica_gets >= (PAIRS / 10) as u64 / 2,
        "replicas still serve reads of keys not written lately ({} GETs)",
        p.replica_gets
    );
    // Once the replicas hold every write, the fence forgets the keys.
    let state = proxy.state().clone();
    wait_until("the key fence empties", Duration::from_secs(5), || {
        state.key_fence.stats().entries == 0
    });
    assert_eq!(state.key_fence.stats().capacity_raises, 0);
}

#[test]
fn connection_mode_reads_on_another_connection_can_be_stale() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&ryw_yaml(&set, "connection", ""));
    let p = run_pairs(&set, &proxy);
    eprintln!(
        "read_your_writes connection: {} stale of {PAIRS}; replicas served {} GETs",
        p.stale, p.replica_gets
    );
    assert!(
        p.stale > 0,
        "without the key fence, B reads replicas that lack A's write"
    );
    assert_eq!(
        proxy.state().key_fence.stats().entries,
        0,
        "no rule has `key`: writes record nothing"
    );
}

#[test]
fn flushdb_raises_the_global_fence() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&ryw_yaml(&set, "key", ""));
    proxy.wait_in_pool(2);
    let mut a = proxy.conn();
    let mut b = proxy.conn();
    // A key nobody writes through the proxy, set before the test: replicas hold it.
    set.master.set("seeded", "1");
    let state = proxy.state().clone();
    wait_until("replicas hold the seed", Duration::from_secs(5), || {
        set.replicas
            .iter()
            .all(|r| r.get("seeded").as_deref() == Some("1"))
    });
    wait_until("a replica serves the key", Duration::from_secs(5), || {
        explain_field(&mut b, "seeded", "reason") == "fresh"
    });
    for r in &set.relays {
        r.set_delay(Duration::from_millis(300));
    }
    assert_eq!(text(&query(&mut a, &["FLUSHDB"]).unwrap()), "OK");
    // B has written nothing and the key was never written through the proxy, yet its
    // read waits for replicas that hold the FLUSHDB.
    assert_eq!(
        explain_field(&mut b, "seeded", "reason"),
        "read_your_writes"
    );
    assert_eq!(explain_field(&mut b, "seeded", "read_your_writes"), "key");
    let fence = format!(
        "{:?}",
        query(&mut b, &["PROXY", "EXPLAIN", "GET", "seeded"]).unwrap()
    );
    assert!(fence.contains("until a replica holds the write"), "{fence}");
    assert_eq!(
        query(&mut b, &["GET", "seeded"]).unwrap(),
        redis::Value::Nil,
        "the flushed key is gone for every connection"
    );
    assert_eq!(state.key_fence.stats().keyspace_raises, 1);
    // Once the replicas hold the flush, they serve such reads again.
    wait_until(
        "replicas catch up with the flush",
        Duration::from_secs(5),
        || explain_field(&mut b, "seeded", "reason") == "fresh",
    );
    // And so for many flushes in a row.
    for r in &set.relays {
        r.set_delay(Duration::from_millis(10));
    }
    let mut stale = 0;
    for i in 0..50 {
        set.master.set("seeded", &i.to_string());
        query(&mut a, &["FLUSHALL"]).unwrap();
        if query(&mut b, &["GET", "seeded"]).unwrap() != redis::Value::Nil {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "no read after a flush sees the flushed key");
}

#[test]
fn past_the_capacity_the_global_fence_keeps_reads_fresh() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&ryw_yaml(&set, "key", "  key_fence_capacity: 50\n"));
    proxy.wait_in_pool(2);
    // Replication held: no replica gets any of the writes below, so none of their
    // entries can be swept as held, and the fence must go past its capacity; every read
    // a replica served would miss its key.
    for r in &set.relays {
        r.pause();
    }
    let state = proxy.state().clone();
    let mut a = proxy.conn();
    let mut b = proxy.conn();
    let mut stale = 0;
    let mut most = 0;
    for i in 0..500 {
        let k = format!("cap:{i}");
        query(&mut a, &["SET", &k, "new"]).unwrap();
        if query(&mut b, &["GET", &k]).unwrap() == redis::Value::Nil {
            stale += 1;
        }
        most = most.max(state.key_fence.stats().entries);
    }
    let s = state.key_fence.stats();
    eprintln!(
        "capacity 50: {stale} stale of 500; {} capacity raises; at most {most} entries seen",
        s.capacity_raises
    );
    assert_eq!(stale, 0, "dropping keys never allows a stale read");
    assert!(s.capacity_raises > 0, "the capacity was exceeded");
    for r in &set.relays {
        r.resume();
    }
    wait_until(
        "the fence is back under its capacity",
        Duration::from_secs(5),
        || state.key_fence.stats().entries <= 50,
    );
}

#[test]
fn transactions_and_scripts_fence_what_they_write() {
    let set = ReplicaSet::start(2, true);
    let proxy = ProxyUnderTest::start(&ryw_yaml(&set, "key", ""));
    proxy.wait_in_pool(2);
    for r in &set.relays {
        r.set_delay(Duration::from_millis(10));
    }
    let mut a = proxy.conn();
    let mut b = proxy.conn();
    let mut stale = 0;
    for i in 0..300 {
        let k = format!("tx:{}", i % 3);
        let v = i.to_string();
        match i % 3 {
            // MULTI … EXEC: the queued write's key is fenced from EXEC on.
            0 => {
                let _: () = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&k)
                    .arg(&v)
                    .ignore()
                    .query(&mut a)
                    .unwrap();
            }
            // A script with its key declared.
            1 => {
                query(
                    &mut a,
                    &["EVAL", "redis.call('SET', KEYS[1], ARGV[1])", "1", &k, &v],
                )
                .unwrap();
            }
            // A write under WATCH.
            _ => {
                query(&mut a, &["WATCH", &k]).unwrap();
                query(&mut a, &["SET", &k, &v]).unwrap();
                query(&mut a, &["UNWATCH"]).unwrap();
            }
        }
        if text(&query(&mut b, &["GET", &k]).unwrap()) != v {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "B sees every write A's transactions and scripts made"
    );
}
