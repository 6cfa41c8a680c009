//! Self-tests of [`RedisCluster`]: each checks, directly against the nodes, that a
//! harness primitive does to a real Redis Cluster what the proxy's cluster tests rely on.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

/// Sends one command on a raw socket and returns its reply as text (`-ASK 12 ...\r\n`).
fn send(s: &mut TcpStream, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    String::from_utf8(read_reply(s)).unwrap()
}

/// The reply to one command on a new raw connection to `addr`.
fn reply(addr: SocketAddr, args: &[&str]) -> String {
    send(&mut raw(addr), args)
}

fn bulk(value: &str) -> String {
    format!("${}\r\n{value}\r\n", value.len())
}

#[test]
fn three_masters_with_a_replica_each_start_ok() {
    let cluster = RedisCluster::start(3, 1);
    let seeds = cluster.seeds();
    assert_eq!(seeds.len(), 6);

    let masters = cluster.masters();
    assert_eq!(masters, seeds[..3], "shard i is served by the i-th seed");
    let ranges = cluster.slot_ranges();
    assert_eq!(ranges.first().unwrap().start, 0);
    assert_eq!(ranges.last().unwrap().end, SLOT_COUNT - 1);
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].end + 1, pair[1].start, "slots are contiguous");
    }

    let mut replicas = Vec::new();
    for &master in &masters {
        let of = cluster.replicas_of(master);
        assert_eq!(of.len(), 1, "one replica of {master}");
        let info = cluster.node(of[0]).info("replication");
        assert_eq!(info["role"], "slave");
        assert_eq!(info["master_port"], master.port().to_string());
        assert_eq!(info["master_link_status"], "up");
        replicas.extend(of);
    }
    replicas.sort();
    let mut expected = seeds[3..].to_vec();
    expected.sort();
    assert_eq!(replicas, expected, "every other seed is a replica");

    for &addr in &seeds {
        let info = parse_info(&text(&cluster.cmd(addr, &["CLUSTER", "INFO"])));
        assert_eq!(info["cluster_state"], "ok", "{addr}");
        assert_eq!(info["cluster_known_nodes"], "6", "{addr}");
        assert_eq!(info["cluster_slots_assigned"], "16384", "{addr}");
        assert_eq!(info["cluster_size"], "3", "{addr}");
    }
}

#[test]
fn a_write_on_the_owner_is_read_on_its_replica_after_wait() {
    let cluster = RedisCluster::start(3, 1);
    for master in cluster.masters() {
        let key = cluster.key_in_slot_of(master, "harness:ryw:");
        let slot = RedisCluster::slot_of(&key);
        assert_eq!(cluster.owner_of_slot(slot), master);

        // Anywhere else the key is redirected to its owner.
        let other = cluster
            .masters()
            .into_iter()
            .find(|m| *m != master)
            .unwrap();
        assert_eq!(
            reply(other, &["SET", &key, "v"]),
            format!("-MOVED {slot} {master}\r\n")
        );

        let mut conn = cluster.conn(master);
        query(&mut conn, &["SET", &key, &format!("value of {master}")]).unwrap();
        let acked = query(&mut conn, &["WAIT", "1", "5000"]).unwrap();
        assert_eq!(acked, redis::Value::Int(1), "the replica acknowledges");

        let replica = cluster.replicas_of(master)[0];
        let mut s = raw(replica);
        // A replica redirects reads to its master unless the connection is READONLY.
        assert_eq!(
            send(&mut s, &["GET", &key]),
            format!("-MOVED {slot} {master}\r\n")
        );
        assert_eq!(send(&mut s, &["READONLY"]), "+OK\r\n");
        assert_eq!(
            send(&mut s, &["GET", &key]),
            bulk(&format!("value of {master}"))
        );
    }
}

#[test]
fn a_slot_migration_answers_ask_during_and_moved_after() {
    let cluster = RedisCluster::start(3, 1);
    let masters = cluster.masters();
    let (from, to) = (masters[0], masters[2]);
    let key = cluster.key_in_slot_of(from, "harness:migrate:");
    let slot = RedisCluster::slot_of(&key);
    let sibling = RedisCluster::key_in_slot(slot, &format!("{key}:sibling:"));
    assert_eq!(RedisCluster::slot_of(&sibling), slot);
    cluster.node(from).set(&key, "moving");
    cluster.node(from).set(&sibling, "also moving");

    cluster.begin_migration(slot, from, to);
    // Keys still on the source are served there; the target serves the slot only to
    // clients that said ASKING.
    assert_eq!(reply(from, &["GET", &key]), bulk("moving"));
    assert_eq!(
        reply(to, &["GET", &key]),
        format!("-MOVED {slot} {from}\r\n")
    );

    assert_eq!(cluster.migrate_keys(slot, from, to, 1), 2);
    assert_eq!(
        reply(from, &["GET", &key]),
        format!("-ASK {slot} {to}\r\n"),
        "a moved key is asked for on the target"
    );
    let mut s = raw(to);
    assert_eq!(send(&mut s, &["ASKING"]), "+OK\r\n");
    assert_eq!(send(&mut s, &["GET", &key]), bulk("moving"));
    // ASKING holds for one command only.
    assert_eq!(
        send(&mut s, &["GET", &sibling]),
        format!("-MOVED {slot} {from}\r\n")
    );
    assert_eq!(cluster.owner_of_slot(slot), from, "not moved yet");

    cluster.finish_migration(slot, to);
    assert_eq!(cluster.owner_of_slot(slot), to);
    for addr in cluster.seeds() {
        let owner = cluster
            .slots_view(addr)
            .unwrap()
            .into_iter()
            .find(|r| r.contains(slot))
            .unwrap()
            .master;
        assert_eq!(owner, to, "{addr} knows the new owner");
    }
    assert_eq!(
        reply(from, &["GET", &key]),
        format!("-MOVED {slot} {to}\r\n")
    );
    assert_eq!(reply(to, &["GET", &sibling]), bulk("also moving"));

    // And back in one step.
    cluster.move_slot(slot, from);
    assert_eq!(cluster.owner_of_slot(slot), from);
    assert_eq!(reply(from, &["GET", &key]), bulk("moving"));
    assert_eq!(
        reply(to, &["GET", &key]),
        format!("-MOVED {slot} {from}\r\n")
    );
}

#[test]
fn paused_replication_holds_the_relayed_shards_replica_behind() {
    let cluster = RedisCluster::start_with(
        3,
        1,
        ClusterOptions {
            relay_replica_of_shard: Some(1),
            ..ClusterOptions::default()
        },
    );
    let masters = cluster.masters();
    let relayed = masters[1];
    // The cluster announces the relayed master at the relay: clients and its replica
    // reach it through the relay; only the replication link is ever held.
    assert_eq!(cluster.relayed_node(), Some(relayed));
    assert_eq!(relayed, cluster.relay().addr());
    assert_ne!(relayed, cluster.node(relayed).addr());
    let replica = cluster.replicas_of(relayed)[0];
    assert_eq!(
        cluster.node(replica).info("replication")["master_port"],
        relayed.port().to_string()
    );
    assert_eq!(cluster.relay().replication_connections(), 1);

    let key = cluster.key_in_slot_of(relayed, "harness:lag:");
    let other_key = cluster.key_in_slot_of(masters[0], "harness:lag:");
    let (master, stale) = (cluster.node(relayed), cluster.node(replica));
    let mut through_relay = cluster.conn(relayed);

    cluster.pause_replication();
    let held_at = stale.repl_offset();
    let mut last = 0;
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        last += 1;
        // Client traffic through the relay keeps flowing while replication is held.
        query(&mut through_relay, &["SET", &key, &last.to_string()]).unwrap();
        let (ahead, behind) = (master.repl_offset(), stale.repl_offset());
        assert_eq!(behind, held_at, "the held replica's offset does not move");
        assert!(
            ahead > behind,
            "master at {ahead} is ahead of the held replica at {behind}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stale.link_up(), "a held stream keeps the link up");
    assert_eq!(
        query(&mut through_relay, &["WAIT", "1", "100"]).unwrap(),
        redis::Value::Int(0),
        "no replica acknowledges the held writes"
    );
    // The other shards replicate as usual.
    let mut other = cluster.conn(masters[0]);
    query(&mut other, &["SET", &other_key, "fresh"]).unwrap();
    assert_eq!(
        query(&mut other, &["WAIT", "1", "5000"]).unwrap(),
        redis::Value::Int(1)
    );

    let target = master.repl_offset();
    cluster.resume_replication();
    cluster.wait_synced(SYNC_TIMEOUT);
    assert!(stale.repl_offset() >= target, "the replica caught up");
    let mut s = raw(replica);
    assert_eq!(send(&mut s, &["READONLY"]), "+OK\r\n");
    assert_eq!(send(&mut s, &["GET", &key]), bulk(&last.to_string()));

    // A delayed stream: each write reaches the replica no sooner than the delay.
    let delay = Duration::from_millis(300);
    cluster.set_replication_delay(delay);
    let written = Instant::now();
    query(&mut through_relay, &["SET", &key, "delayed"]).unwrap();
    wait_until("the delayed write arrives", SYNC_TIMEOUT, || {
        send(&mut s, &["GET", &key]) == bulk("delayed")
    });
    assert!(
        written.elapsed() >= delay,
        "arrived after {:?}, before the delay",
        written.elapsed()
    );
    cluster.set_replication_delay(Duration::ZERO);
}

#[test]
fn killing_a_master_promotes_its_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let old = cluster.masters()[0];
    let replica = cluster.replicas_of(old)[0];
    let key = cluster.key_in_slot_of(old, "harness:failover:");
    let slot = RedisCluster::slot_of(&key);
    let mut conn = cluster.conn(old);
    query(&mut conn, &["SET", &key, "survives"]).unwrap();
    assert_eq!(
        query(&mut conn, &["WAIT", "1", "5000"]).unwrap(),
        redis::Value::Int(1)
    );
    drop(conn);

    let started = Instant::now();
    cluster.kill(old);
    let promoted = cluster.wait_failover(old, Duration::from_secs(25));
    let took = started.elapsed();
    assert_eq!(
        promoted, replica,
        "the replica of the dead master is promoted"
    );
    assert!(
        took >= cluster.node_timeout(),
        "a failover waits for the node timeout ({took:?})"
    );

    assert_eq!(cluster.node(promoted).role(), "master");
    assert_eq!(cluster.owner_of_slot(slot), promoted);
    let masters = cluster.masters();
    assert!(masters.contains(&promoted) && !masters.contains(&old));
    assert!(cluster.replicas_of(promoted).is_empty());
    assert_eq!(reply(promoted, &["GET", &key]), bulk("survives"));
    assert!(!cluster.is_alive(old));

    // The old master, started again, rejoins as a replica of the promoted one.
    cluster.restart(old);
    cluster.wait_ready(CLUSTER_TIMEOUT);
    assert_eq!(cluster.replicas_of(promoted), vec![old]);
    assert_eq!(cluster.node(old).role(), "slave");
    assert_eq!(
        reply(old, &["GET", &key]),
        format!("-MOVED {slot} {promoted}\r\n")
    );
}
