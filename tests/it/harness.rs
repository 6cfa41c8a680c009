//! Self-tests of the integration-test harness (`tests/it/common`): each checks that a
//! harness primitive does to real Redis processes what the proxy's tests rely on.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn replica_set_via_relays_syncs_and_replicates_writes() {
    let set = ReplicaSet::start(2, true);
    assert_eq!(set.replicas.len(), 2);
    assert_eq!(set.relays.len(), 2);

    let master_offset = set.master.repl_offset();
    for (i, (replica, relay)) in set.replicas.iter().zip(&set.relays).enumerate() {
        let info = replica.info("replication");
        assert_eq!(info["role"], "slave", "replica {i}");
        assert_eq!(info["master_link_status"], "up", "replica {i}");
        // The replica replicates through its relay, not straight from the master.
        assert_eq!(
            info["master_port"],
            relay.addr().port().to_string(),
            "replica {i}"
        );
        assert_eq!(relay.connections(), 1, "relay {i}");
        assert!(
            replica.repl_offset() >= master_offset,
            "replica {i} is synced when start returns"
        );
    }
    // The start-up write left no key behind.
    assert_eq!(set.master.cmd(&["DBSIZE"]), redis::Value::Int(0));

    set.master.set("greeting", "hello");
    for (i, replica) in set.replicas.iter().enumerate() {
        wait_until(&format!("replica {i} has the write"), SYNC_TIMEOUT, || {
            replica.get("greeting").as_deref() == Some("hello")
        });
        assert!(
            replica.calls("set") >= 1,
            "a replicated SET is counted on replica {i}"
        );
    }
}

#[test]
fn paused_relay_holds_the_stream_while_the_link_stays_up() {
    let set = ReplicaSet::start(2, true);
    set.master.set("stock", "old");
    set.wait_synced(SYNC_TIMEOUT);

    set.relays[0].pause();
    set.master.set("stock", "new");
    for _ in 0..10 {
        set.master.cmd(&["INCR", "sold"]);
    }
    let target = set.master.repl_offset();

    // Replica 1 receiving the writes proves the master sent them.
    let fresh = &set.replicas[1];
    wait_until("replica 1 catches up", SYNC_TIMEOUT, || {
        fresh.repl_offset() >= target
    });
    assert_eq!(fresh.get("stock").as_deref(), Some("new"));

    let stale = &set.replicas[0];
    let stale_offset = stale.repl_offset();
    assert!(
        stale_offset < target,
        "held replica at {stale_offset} must be behind master offset {target}"
    );
    assert!(stale.link_up(), "a held stream keeps master_link_status:up");
    assert_eq!(stale.get("stock").as_deref(), Some("old"), "stale read");
    assert_eq!(stale.get("sold"), None, "stale read");

    set.relays[0].resume();
    wait_until("replica 0 catches up after resume", SYNC_TIMEOUT, || {
        stale.repl_offset() >= target
    });
    assert_eq!(stale.get("stock").as_deref(), Some("new"));
    assert_eq!(stale.get("sold").as_deref(), Some("10"));
}

#[test]
fn relay_delay_holds_each_write_for_the_set_time_and_keeps_order() {
    let delay = Duration::from_millis(200);
    let set = ReplicaSet::start(2, true);
    set.relays[0].set_delay(delay);
    let (delayed, direct) = (&set.replicas[0], &set.replicas[1]);

    let written = Instant::now();
    set.master.set("k", "v");
    let (mut seen_delayed, mut seen_direct) = (None, None);
    wait_until("both replicas see the write", SYNC_TIMEOUT, || {
        if seen_direct.is_none() && direct.get("k").is_some() {
            seen_direct = Some(written.elapsed());
        }
        if seen_delayed.is_none() && delayed.get("k").is_some() {
            seen_delayed = Some(written.elapsed());
        }
        seen_direct.is_some() && seen_delayed.is_some()
    });
    let (seen_delayed, seen_direct) = (seen_delayed.unwrap(), seen_direct.unwrap());
    assert!(
        seen_delayed >= delay,
        "visible after {seen_delayed:?}, before the {delay:?} delay"
    );
    assert!(
        seen_delayed < delay + Duration::from_secs(2),
        "visible only after {seen_delayed:?}"
    );
    assert!(
        seen_direct < seen_delayed,
        "the undelayed replica ({seen_direct:?}) is ahead of the delayed one ({seen_delayed:?})"
    );

    // A burst arrives whole and in order: the value a reader sees never goes back.
    let first_write = Instant::now();
    for i in 1..=50 {
        set.master.set("seq", &i.to_string());
    }
    let mut observed = Vec::new();
    wait_until("replica 0 sees the whole burst", SYNC_TIMEOUT, || {
        let value: u32 = delayed.get("seq").map_or(0, |v| v.parse().unwrap());
        if observed.last() != Some(&value) {
            observed.push(value);
        }
        value == 50
    });
    let burst_visible = first_write.elapsed();
    assert!(
        observed.windows(2).all(|w| w[0] < w[1]),
        "values seen out of order: {observed:?}"
    );
    assert!(
        burst_visible >= delay,
        "burst visible after {burst_visible:?}"
    );
    assert!(
        burst_visible < delay + Duration::from_secs(2),
        "burst visible only after {burst_visible:?}"
    );
}

#[test]
fn relay_cut_closes_the_link_and_the_replica_reconnects() {
    let set = ReplicaSet::start(1, true);
    let relay = &set.relays[0];
    assert_eq!(relay.accepted(), 1);

    relay.cut();
    wait_until(
        "the replica reconnects through the relay",
        SYNC_TIMEOUT,
        || relay.accepted() == 2 && relay.connections() == 1,
    );
    set.master.set("after-cut", "1");
    wait_until(
        "the replica gets a write made after the cut",
        SYNC_TIMEOUT,
        || set.replicas[0].get("after-cut").is_some(),
    );
    assert!(set.replicas[0].link_up());
}

#[test]
fn relay_delay_shifts_a_steady_stream_without_throttling_it() {
    // Writes every 50 ms; each must arrive `delay` after it was made, not later. A relay
    // that slept per chunk would hold the writes queued behind a sleeping chunk for up
    // to 2 × delay − 50 ms (550 ms here).
    let delay = Duration::from_millis(300);
    let slack = Duration::from_millis(150);
    let set = ReplicaSet::start(1, true);
    set.relays[0].set_delay(delay);
    let replica = &set.replicas[0];

    const WRITES: u32 = 20;
    let start = Instant::now();
    let (written, seen) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut written = Vec::new();
            for i in 1..=WRITES {
                let at = start + Duration::from_millis(50) * i;
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                written.push(Instant::now());
                set.master.set("seq", &i.to_string());
            }
            written
        });
        // seen[i - 1]: when a value ≥ i was first read on the replica.
        let mut seen = Vec::new();
        wait_until("the replica sees every write", SYNC_TIMEOUT, || {
            let value: u32 = replica.get("seq").map_or(0, |v| v.parse().unwrap());
            let now = Instant::now();
            while (seen.len() as u32) < value {
                seen.push(now);
            }
            value == WRITES
        });
        (writer.join().unwrap(), seen)
    });
    let latencies: Vec<Duration> = written.iter().zip(&seen).map(|(w, s)| *s - *w).collect();
    assert!(
        latencies.iter().all(|&l| l >= delay),
        "a write arrived early: {latencies:?}"
    );
    assert!(
        latencies.iter().all(|&l| l < delay + slack),
        "a write arrived later than {delay:?} + {slack:?}: {latencies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_async_helpers_work_in_tokio_tests() {
    let set = ReplicaSet::start(2, true);
    let mut master = set.master.async_conn().await;
    let held = set.replicas[0].async_conn().await;
    let witness = set.replicas[1].async_conn().await;

    set.relays[0].pause();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut master)
        .await
        .unwrap();
    wait_until_async("replica 1 gets the write", SYNC_TIMEOUT, || {
        async_get(witness.clone(), "k")
    })
    .await;
    assert!(
        !async_get(held.clone(), "k").await,
        "the write is held by the paused relay"
    );

    set.relays[0].resume();
    wait_until_async("replica 0 gets the write", SYNC_TIMEOUT, || {
        async_get(held.clone(), "k")
    })
    .await;
    wait_for_port_async(set.master.addr(), SYNC_TIMEOUT).await;
}

/// Whether `key` exists, read through an async connection.
async fn async_get(mut conn: redis::aio::MultiplexedConnection, key: &str) -> bool {
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    value.is_some()
}

#[test]
fn pause_resume_kill_and_restart_a_server() {
    let mut server = RedisServer::start();
    server.set("k", "v");

    let mut conn = server.conn();
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    server.pause();
    let err = query(&mut conn, &["PING"]).expect_err("a stopped server does not answer");
    assert!(err.is_timeout(), "expected a read timeout, got {err}");

    server.resume();
    assert_eq!(
        value_text(&query(&mut server.conn(), &["PING"]).unwrap()).as_deref(),
        Some("PONG")
    );
    assert_eq!(server.get("k").as_deref(), Some("v"));

    let (port, old_pid) = (server.port(), server.pid());
    server.kill();
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "nothing listens after kill"
    );

    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), old_pid);
    assert_eq!(value_text(&server.cmd(&["PING"])).as_deref(), Some("PONG"));
    assert_eq!(server.get("k"), None, "no persistence across restarts");
}

#[test]
fn sentinels_discover_the_set_and_fail_over() {
    let set = ReplicaSet::start(2, false);
    let sentinels = Sentinels::start(3, &set.master, "redsplit", 1000, 5000);

    let mut replica_addrs: Vec<String> =
        set.replica_addrs().iter().map(|a| a.to_string()).collect();
    replica_addrs.sort();
    for i in 0..3 {
        let mut seen: Vec<String> = sentinels
            .replicas(i)
            .iter()
            .map(|r| format!("{}:{}", r["ip"], r["port"]))
            .collect();
        seen.sort();
        assert_eq!(seen, replica_addrs, "sentinel {i} knows both replicas");
        assert_eq!(
            sentinels.sentinels(i).len(),
            2,
            "sentinel {i} knows the others"
        );
    }
    assert_eq!(sentinels.master_addr(), Some(set.master.addr()));

    sentinels.cmd(0, &["SENTINEL", "FAILOVER", sentinels.master_name()]);
    let old_master = set.master.addr();
    wait_until("the sentinels report a new master", SYNC_TIMEOUT, || {
        sentinels.master_addr().is_some_and(|a| a != old_master)
    });
    let new_master = sentinels.master_addr().unwrap();
    let promoted = set
        .replicas
        .iter()
        .find(|r| r.addr() == new_master)
        .unwrap_or_else(|| panic!("new master {new_master} is one of the replicas"));
    wait_until(
        "the promoted replica reports role:master",
        SYNC_TIMEOUT,
        || promoted.role() == "master",
    );
}

#[test]
fn nutcracker_forwards_to_the_master() {
    let master = RedisServer::start();
    let nutcracker = Nutcracker::start(master.addr());

    let mut conn = connect(nutcracker.addr());
    query(&mut conn, &["SET", "via", "twemproxy"]).unwrap();
    let got = query(&mut conn, &["GET", "via"]).unwrap();
    assert_eq!(value_text(&got).as_deref(), Some("twemproxy"));

    assert_eq!(master.get("via").as_deref(), Some("twemproxy"));
    let stats = master.commandstats();
    assert_eq!(stats.get("set"), Some(&1));
    assert_eq!(
        stats.get("get"),
        Some(&2),
        "one GET through nutcracker, one direct"
    );
}

#[test]
#[should_panic(expected = "waiting until the impossible happens")]
fn wait_until_panics_naming_the_condition() {
    wait_until("the impossible happens", Duration::from_millis(20), || {
        false
    });
}
