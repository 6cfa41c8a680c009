//! redsplit in front of a real Redis Cluster (3 masters, 1 replica each): requests reach
//! the shard of their keys, replica reads are bounded per shard, cross-slot requests
//! get Redis Cluster's own errors, and redirections during a resharding and a failover
//! are followed without a failed reply.

use crate::common::*;
use redis::Value;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUDGET_MS: u64 = 400;

/// A proxy in front of `cluster`, reads on replicas within `BUDGET_MS`.
fn proxy_for(cluster: &RedisCluster, extra: &str) -> ProxyUnderTest {
    proxy_with(cluster, "", extra)
}

/// As [`proxy_for`], with `default` (`key: value, `) in the default read level.
fn proxy_with(cluster: &RedisCluster, default: &str, extra: &str) -> ProxyUnderTest {
    let seeds: Vec<String> = cluster.seeds().iter().map(|a| format!("\"{a}\"")).collect();
    let yaml = format!(
        "backend:\n  cluster: {{seeds: [{}], refresh_ms: 500}}\n  command_timeout_ms: 5000\nreplication: {{poll_interval_ms: 50, dwell_ms: 300}}\nrouting:\n  default: {{{default}consistency: replica, max_lag_ms: {BUDGET_MS}}}\n{extra}",
        seeds.join(", ")
    );
    let p = ProxyUnderTest::start(&yaml);
    wait_shards_in_pool(&p, cluster.masters().len(), Duration::from_secs(20));
    p
}

/// A cluster of 3 masters with a replica each, shard `shard`'s replication through a
/// relay that can pause or delay it.
fn relayed_cluster(shard: usize) -> RedisCluster {
    RedisCluster::start_with(
        3,
        1,
        ClusterOptions {
            relay_replica_of_shard: Some(shard),
            ..ClusterOptions::default()
        },
    )
}

/// `PROXY STATUS` rows, as maps of field to text.
fn status_rows(p: &ProxyUnderTest) -> Vec<HashMap<String, String>> {
    let mut c = p.conn();
    let Value::Array(rows) = query(&mut c, &["PROXY", "STATUS"]).unwrap() else {
        panic!("PROXY STATUS is not an array");
    };
    rows.iter()
        .map(|r| {
            let mut m = HashMap::new();
            let items: Vec<(Value, Value)> = match r {
                Value::Map(kv) => kv.clone(),
                Value::Array(a) => a.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect(),
                other => panic!("row {other:?}"),
            };
            for (k, v) in items {
                let v = match &v {
                    Value::Map(_) | Value::Array(_) => format!("{v:?}"),
                    v => text(v),
                };
                m.insert(text(&k), v);
            }
            m
        })
        .collect()
}

/// Until every shard's master is up and every replica is in a read pool.
fn wait_shards_in_pool(p: &ProxyUnderTest, shards: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let ok = |rows: &[HashMap<String, String>]| {
        let masters = rows
            .iter()
            .filter(|r| r["role"] == "master" && r["state"] == "up")
            .count();
        let replicas: Vec<_> = rows.iter().filter(|r| r["role"] == "replica").collect();
        masters == shards
            && replicas.len() >= shards
            && replicas
                .iter()
                .all(|r| r["state"] == "ok" && r["in_pool"].to_lowercase().contains("int(1)"))
    };
    loop {
        let rows = status_rows(p);
        if ok(&rows) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every shard's replicas are in the read pool after {timeout:?}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET` calls a node has served.
fn gets(cluster: &RedisCluster, addr: std::net::SocketAddr) -> u64 {
    cluster.node(addr).calls("get")
}

#[test]
fn reads_and_writes_reach_the_shard_of_their_keys() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let mut c = p.conn();
    let masters = cluster.masters();
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        assert_eq!(
            query(&mut c, &["SET", k, &format!("v-{k}")]).unwrap(),
            Value::Okay
        );
    }
    // Each key is on the master that owns its slot, and on no other.
    for k in &keys {
        let owner = cluster.owner_of_slot(RedisCluster::slot_of(k));
        assert_eq!(
            cluster.cmd(owner, &["EXISTS", k]),
            Value::Int(1),
            "{k} on {owner}"
        );
    }
    let total: i64 = masters
        .iter()
        .map(|m| match cluster.cmd(*m, &["DBSIZE"]) {
            Value::Int(n) => n,
            v => panic!("DBSIZE {v:?}"),
        })
        .sum();
    assert_eq!(total, keys.len() as i64);
    cluster.wait_synced(Duration::from_secs(10));
    wait_shards_in_pool(&p, 3, Duration::from_secs(10));
    let before: Vec<u64> = masters
        .iter()
        .flat_map(|m| cluster.replicas_of(*m))
        .map(|r| gets(&cluster, r))
        .collect();
    for k in &keys {
        let v = query(&mut c, &["GET", k]).unwrap();
        assert_eq!(text(&v), format!("v-{k}"));
    }
    // Every shard's replica served reads of its own shard's keys.
    let after: Vec<u64> = masters
        .iter()
        .flat_map(|m| cluster.replicas_of(*m))
        .map(|r| gets(&cluster, r))
        .collect();
    for (i, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        assert!(a > b, "replica {i} served no read ({b} -> {a})");
    }
    // Hash tags keep keys together; multi-key commands in one slot work.
    assert_eq!(
        query(&mut c, &["MSET", "{user1}:a", "1", "{user1}:b", "2"]).unwrap(),
        Value::Okay
    );
    let v = query(&mut c, &["MGET", "{user1}:a", "{user1}:b"]).unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::BulkString(b"2".to_vec())
        ])
    );
    // /metrics and /status show every shard.
    let admin = p.admin_addr.expect("admin endpoint");
    let m = crate::admin::http_get(admin, "/metrics", None);
    assert_eq!(m.status, 200);
    assert!(m.body.ends_with("# EOF\n"));
    wait_until(
        "a staleness chart point per replica",
        Duration::from_secs(10),
        || {
            let st = crate::admin::http_get(admin, "/status", None);
            masters.iter().all(|m| {
                st.body.contains(&format!(
                    "\"address\":\"{}\",\"points\":[{{",
                    cluster.replicas_of(*m)[0]
                ))
            })
        },
    );
    // The status page, rendered: every shard's master and replica.
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{admin}/");
    let dom = crate::admin::status_page::chromium(
        profile.path(),
        &["--virtual-time-budget=4000", "--dump-dom", &url],
    );
    assert!(dom.contains("3 of 3 shard masters up"), "{dom}");
    for i in 0..3 {
        assert!(
            dom.contains(&format!("shard {i} · replica")),
            "shard {i} in\n{dom}"
        );
    }
    let st = crate::admin::http_get(admin, "/status", None);
    for (i, master) in masters.iter().enumerate() {
        let replica = cluster.replicas_of(*master)[0];
        let series = format!("redsplit_replica_lag_bytes{{shard=\"{i}\",addr=\"{replica}\"}}");
        assert!(m.body.contains(&series), "{series} in\n{}", m.body);
        assert!(st.body.contains(&format!("\"shard\":{i}")), "{}", st.body);
    }
    // PROXY EXPLAIN names the slot and the shard.
    let e = format!(
        "{:?}",
        query(&mut c, &["PROXY", "EXPLAIN", "GET", "key:1"]).unwrap()
    );
    let slot = RedisCluster::slot_of("key:1");
    assert!(e.to_lowercase().contains(&format!("int({slot})")), "{e}");
    assert!(e.contains("shard"), "{e}");
}

#[test]
fn cross_slot_requests_get_the_errors_a_cluster_gives() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let mut c = p.conn();
    // The same request straight to a node that owns the first key.
    let owner = cluster.owner_of_slot(RedisCluster::slot_of("a"));
    let mut direct = cluster.conn(owner);
    let want = query(&mut direct, &["SINTER", "a", "b"]).unwrap_err();
    let got = query(&mut c, &["SINTER", "a", "b"]).unwrap_err();
    assert_eq!(got.code(), want.code());
    assert_eq!(got.detail(), want.detail());
    assert_eq!(got.code(), Some("CROSSSLOT"));
    // SELECT: database 0 only, as on a cluster node.
    for db in ["0", "1"] {
        let want = query(&mut direct, &["SELECT", db]);
        let got = query(&mut c, &["SELECT", db]);
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "SELECT {db}");
    }
    // A transaction across slots fails as a whole.
    assert_eq!(query(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    assert_eq!(
        query(&mut c, &["SET", "{t}x", "1"]).unwrap(),
        Value::SimpleString("QUEUED".into())
    );
    let e = query(&mut c, &["SET", "{other}y", "1"]).unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"));
    let e = query(&mut c, &["EXEC"]).unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"), "{e:?}");
    let owner = cluster.owner_of_slot(RedisCluster::slot_of("{t}x"));
    assert_eq!(cluster.cmd(owner, &["EXISTS", "{t}x"]), Value::Int(0));
    // One in one slot runs on that slot's master.
    assert_eq!(query(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    query(&mut c, &["SET", "{t}x", "5"]).unwrap();
    query(&mut c, &["INCR", "{t}x"]).unwrap();
    let v = query(&mut c, &["EXEC"]).unwrap();
    assert_eq!(v, Value::Array(vec![Value::Okay, Value::Int(6)]));
    assert_eq!(text(&cluster.cmd(owner, &["GET", "{t}x"])), "6");
    // WATCH pins the transaction to its key's shard.
    query(&mut c, &["WATCH", "{w}k"]).unwrap();
    assert_eq!(query(&mut c, &["MULTI"]).unwrap(), Value::Okay);
    query(&mut c, &["SET", "{w}k", "1"]).unwrap();
    let v = query(&mut c, &["EXEC"]).unwrap();
    assert_eq!(v, Value::Array(vec![Value::Okay]));
    // A keyless command the proxy cannot send to every shard is refused, saying why.
    // One node's own answer, as to a client connected to it.
    let info = text(&query(&mut c, &["INFO", "server"]).unwrap());
    assert!(info.contains("redis_mode:cluster"), "{info}");
    let e = query(&mut c, &["CONFIG", "SET", "maxmemory", "0"]).unwrap_err();
    assert!(format!("{e:?}").contains("keyless"), "{e:?}");
    // Client-side caching would miss other shards' invalidations: refused, saying why.
    let e = query(&mut c, &["CLIENT", "TRACKING", "ON"]).unwrap_err();
    assert!(
        format!("{e:?}").contains("not supported in front of a Redis Cluster"),
        "{e:?}"
    );
    assert_eq!(query(&mut c, &["SET", "{t}x", "7"]).unwrap(), Value::Okay);
    assert_eq!(text(&query(&mut c, &["GET", "{t}x"]).unwrap()), "7");
}

#[test]
fn pub_sub_crosses_the_cluster_and_sharded_channels_reach_their_shard() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let mut sub = p.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = p.conn();
    // Published through the proxy, and straight to a node of another shard: the cluster
    // bus carries both to the subscriber.
    wait_until("a subscriber is counted", Duration::from_secs(5), || {
        query(&mut c, &["PUBLISH", "news", "warmup"]).unwrap() != Value::Int(0)
    });
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "warmup");
    let last = *cluster.masters().last().unwrap();
    cluster.cmd(last, &["PUBLISH", "news", "from-another-node"]);
    loop {
        let m: String = pubsub.get_message().unwrap().get_payload().unwrap();
        if m == "from-another-node" {
            break;
        }
    }
    // SPUBLISH goes to the channel's shard: a direct SSUBSCRIBE there hears it.
    let owner = cluster.owner_of_slot(RedisCluster::slot_of("orders"));
    let mut direct = raw(owner);
    direct
        .write_all(b"*2\r\n$10\r\nSSUBSCRIBE\r\n$6\r\norders\r\n")
        .unwrap();
    let confirm = read_reply(&mut direct);
    assert!(String::from_utf8_lossy(&confirm).contains("ssubscribe"));
    let n = query(&mut c, &["SPUBLISH", "orders", "x"]).unwrap();
    assert_eq!(n, Value::Int(1), "the shard's subscriber got it");
    let msg = read_reply(&mut direct);
    assert!(
        String::from_utf8_lossy(&msg).contains("smessage"),
        "{msg:?}"
    );
}

/// Reads of shard 0's key while its replica's replication is paused: every value read
/// is at least the last one acknowledged `BUDGET_MS` before the read began, and shard
/// 1's reads stay on its replica.
#[test]
fn a_lagging_replica_of_one_shard_serves_no_read_staler_than_the_budget() {
    let cluster = relayed_cluster(0);
    let p = proxy_for(&cluster, "");
    let masters = cluster.masters();
    let lagged = cluster.relayed_node().expect("a relayed master");
    let other = *masters.iter().find(|m| **m != lagged).unwrap();
    let key = cluster.key_in_slot_of(lagged, "lag");
    let other_key = cluster.key_in_slot_of(other, "fresh");
    let other_replica = cluster.replicas_of(other)[0];
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acks, key, addr) = (stop.clone(), acks.clone(), key.clone(), p.addr);
        std::thread::spawn(move || {
            let mut c = connect(addr);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                query(&mut c, &["SET", &key, &n.to_string()]).unwrap();
                acks.lock().unwrap().push((n, Instant::now()));
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let mut c = p.conn();
    query(&mut c, &["SET", &other_key, "1"]).unwrap();
    let check_reads = |c: &mut redis::Connection, for_ms: u64| {
        let until = Instant::now() + Duration::from_millis(for_ms);
        while Instant::now() < until {
            let began = Instant::now();
            let floor = {
                let a = acks.lock().unwrap();
                a.iter()
                    .rev()
                    .find(|(_, t)| began.duration_since(*t) >= Duration::from_millis(BUDGET_MS))
                    .map_or(0, |(n, _)| *n)
            };
            let v = query(c, &["GET", &key]).unwrap();
            let got: u64 = match v {
                Value::Nil => 0,
                v => text(&v).parse().unwrap(),
            };
            assert!(
                got >= floor,
                "read {got}, but {floor} was acknowledged {BUDGET_MS} ms before the read"
            );
            reads.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(3));
        }
    };
    check_reads(&mut c, 500);
    cluster.pause_replication();
    let other_before = gets(&cluster, other_replica);
    check_reads(&mut c, 2500);
    // The other shard's reads still go to its replica.
    for _ in 0..20 {
        assert_eq!(text(&query(&mut c, &["GET", &other_key]).unwrap()), "1");
    }
    assert!(gets(&cluster, other_replica) >= other_before + 20);
    // The lagging replica is out of its pool; the other shards' are in theirs.
    let rows = status_rows(&p);
    let lagged_replica = cluster.replicas_of(lagged)[0].to_string();
    let row = rows.iter().find(|r| r["addr"] == lagged_replica).unwrap();
    assert!(!row["in_pool"].to_lowercase().contains("int(1)"), "{row:?}");
    cluster.resume_replication();
    check_reads(&mut c, 500);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 100);
}

#[test]
fn a_slot_migration_is_followed_through_ask_and_moved() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_with(&cluster, "read_your_writes: connection, ", "");
    let masters = cluster.masters();
    let (from, to) = (masters[0], masters[1]);
    let slot = cluster.slots_of(from)[0].0;
    let keys: Vec<String> = (0..40)
        .map(|i| RedisCluster::key_in_slot(slot, &format!("m{i}:")))
        .collect();
    let mut c = p.conn();
    for k in &keys {
        query(&mut c, &["SET", k, "before"]).unwrap();
    }
    // Load on the slot throughout: each client writes its keys and reads each back at
    // once; every reply must be the one Redis would give.
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..3)
        .map(|t| {
            let (stop, ops, addr) = (stop.clone(), ops.clone(), p.addr);
            let mine: Vec<String> = (0..10)
                .map(|i| RedisCluster::key_in_slot(slot, &format!("load{t}:{i}:")))
                .collect();
            std::thread::spawn(move || {
                let mut c = connect(addr);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in &mine {
                        n += 1;
                        let v = n.to_string();
                        assert_eq!(query(&mut c, &["SET", k, &v]).unwrap(), Value::Okay);
                        assert_eq!(text(&query(&mut c, &["GET", k]).unwrap()), v, "{k}");
                        ops.fetch_add(2, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    cluster.begin_migration(slot, from, to);
    // Within a poll period the proxy knows: the slot's reads go to its master, whose
    // replica may lose keys as they move.
    wait_until(
        "the proxy sees the slot migrating",
        Duration::from_secs(5),
        || {
            let e = format!(
                "{:?}",
                query(&mut c, &["PROXY", "EXPLAIN", "GET", &keys[0]]).unwrap()
            );
            e.contains("migrating")
        },
    );
    // Half the keys move: the source answers ASK for them.
    let moved = cluster.migrate_keys(slot, from, to, 20);
    assert!(moved > 0);
    let mut direct = cluster.conn(from);
    let asks = keys
        .iter()
        .filter(|k| {
            query(&mut direct, &["GET", k])
                .err()
                .is_some_and(|e| e.code() == Some("ASK"))
        })
        .count();
    assert!(asks > 0, "the source answers ASK for moved keys");
    for k in &keys {
        assert_eq!(text(&query(&mut c, &["GET", k]).unwrap()), "before", "{k}");
    }
    // Writes during the migration: existing keys where they are, new ones (ASK) on the target.
    for k in &keys {
        query(&mut c, &["SET", k, "during"]).unwrap();
    }
    let fresh = RedisCluster::key_in_slot(slot, "new");
    query(&mut c, &["SET", &fresh, "x"]).unwrap();
    cluster.migrate_keys(slot, from, to, 1000);
    cluster.finish_migration(slot, to);
    // The source now answers MOVED; the proxy follows it and reads its map again.
    for k in &keys {
        assert_eq!(text(&query(&mut c, &["GET", k]).unwrap()), "during", "{k}");
        query(&mut c, &["SET", k, "after"]).unwrap();
    }
    assert_eq!(text(&query(&mut c, &["GET", &fresh]).unwrap()), "x");
    for k in &keys {
        assert_eq!(
            text(&cluster.cmd(to, &["GET", k])),
            "after",
            "{k} on the target"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().expect("a loader saw a wrong or failed reply");
    }
    assert!(ops.load(Ordering::Relaxed) > 100, "the load ran");
    // The read goes to the new owner or its replica, whichever the budget picks.
    let to_replica = cluster.replicas_of(to)[0].to_string();
    wait_until(
        "the proxy's map names the new owner",
        Duration::from_secs(10),
        || {
            let e = format!(
                "{:?}",
                query(&mut c, &["PROXY", "EXPLAIN", "GET", &keys[0]]).unwrap()
            );
            (e.contains(&to.to_string()) || e.contains(&to_replica)) && !e.contains("migrating")
        },
    );
}

#[test]
fn a_killed_master_is_failed_over_and_other_shards_keep_serving() {
    let mut cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let masters = cluster.masters();
    let victim = masters[0];
    let key = cluster.key_in_slot_of(victim, "f");
    let others: Vec<String> = masters[1..]
        .iter()
        .map(|m| cluster.key_in_slot_of(*m, "ok"))
        .collect();
    let mut c = p.conn();
    query(&mut c, &["SET", &key, "1"]).unwrap();
    for k in &others {
        query(&mut c, &["SET", k, "1"]).unwrap();
    }
    cluster.wait_synced(Duration::from_secs(10));
    // The other shards keep serving while one has no master (Redis's default stops the
    // whole cluster until the failover).
    for n in cluster.seeds() {
        cluster.cmd(n, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let killed_at = Instant::now();
    cluster.kill(victim);
    // Reads on the other shards never fail meanwhile.
    let promoted = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for k in &others {
                assert_eq!(text(&query(&mut c, &["GET", k]).unwrap()), "1");
            }
            if cluster.masters().len() == 3 && !cluster.masters().contains(&victim) {
                break cluster
                    .masters()
                    .into_iter()
                    .find(|m| !masters.contains(m))
                    .unwrap();
            }
            assert!(Instant::now() < deadline, "no failover");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let failed_over = killed_at.elapsed();
    // Writes to the shard come back within a second of the cluster's own failover.
    let deadline = Instant::now() + Duration::from_secs(1) + Duration::from_millis(500);
    let mut w = connect(p.addr);
    loop {
        if query(&mut w, &["SET", &key, "2"]).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes not back 1 s after the failover ({failed_over:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(text(&cluster.cmd(promoted, &["GET", &key])), "2");
}

/// Multi-key commands whose keys span slots, pipelined, answer exactly as one Redis
/// answers the same session.
#[test]
fn cross_slot_multi_key_commands_answer_as_a_single_redis() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let single = RedisServer::start();
    let session: Vec<Vec<&str>> = vec![
        vec![
            "MSET", "a", "1", "b", "2", "c", "3", "{x}d", "4", "{x}e", "5",
        ],
        vec!["MGET", "a", "b", "c", "nokey", "{x}d", "{x}e", "a"],
        vec!["RPUSH", "list", "x"],
        vec!["MGET", "list", "a", "nokey2"],
        vec!["EXISTS", "a", "b", "nokey", "a", "{x}d"],
        vec!["TOUCH", "a", "b", "zz", "c"],
        vec!["DEL", "a", "nokey", "b", "b"],
        vec!["UNLINK", "c", "{x}d", "list"],
        vec!["MGET", "a", "b", "c", "{x}d", "{x}e"],
        vec!["MSET", "a", "1", "b"],
        vec!["MSET", "k1", "v1", "k2", "v2", "k1", "v3"],
        vec!["MGET", "k1", "k2"],
        vec!["DEL", "k1", "k2", "{x}e"],
    ];
    // The whole session in one write; every reply's bytes, in order.
    let run = |addr: std::net::SocketAddr| -> Vec<Vec<u8>> {
        let mut s = raw(addr);
        let mut out = Vec::new();
        for cmd in &session {
            out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
            for a in cmd {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        s.write_all(&out).unwrap();
        read_replies(&mut s, session.len())
    };
    let want = run(single.addr());
    let got = run(p.addr);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w),
            "reply {i} to {:?}",
            session[i]
        );
    }
    // Inside a transaction, as in a cluster: CROSSSLOT.
    let mut c = p.conn();
    query(&mut c, &["MULTI"]).unwrap();
    let e = query(&mut c, &["MGET", "a", "b"]).unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"));
    query(&mut c, &["DISCARD"]).unwrap();
    // MSETNX across slots is refused, saying why.
    let e = query(&mut c, &["MSETNX", "a", "1", "b", "2"]).unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"));
    assert!(format!("{e:?}").contains("MSETNX"), "{e:?}");
}

/// `n` whole replies from `s`, each as its bytes.
fn read_replies(s: &mut std::net::TcpStream, n: usize) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        if let Some(len) = redsplit::protocol::ReplyScanner::new()
            .scan(&got)
            .expect("RESP")
        {
            out.push(got.drain(..len).collect());
            continue;
        }
        let r = s.read(&mut buf).expect("a reply");
        assert!(r > 0, "closed after {} replies", out.len());
        got.extend_from_slice(&buf[..r]);
    }
    out
}

#[test]
fn keyless_commands_cover_every_shard() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let mut c = p.conn();
    let mut keys: Vec<String> = (0..200).map(|i| format!("k:{i}")).collect();
    for k in &keys {
        query(&mut c, &["SET", k, "v"]).unwrap();
    }
    keys.sort();
    assert_eq!(query(&mut c, &["DBSIZE"]).unwrap(), Value::Int(200));
    let all = |v: Value| -> Vec<String> {
        match v {
            Value::Array(items) => items.iter().map(text).collect(),
            other => panic!("{other:?}"),
        }
    };
    let mut got = all(query(&mut c, &["KEYS", "k:*"]).unwrap());
    got.sort();
    assert_eq!(got, keys);
    // SCAN walks every master once: every key, none twice.
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let v = query(&mut c, &["SCAN", &cursor, "COUNT", "7"]).unwrap();
        let Value::Array(parts) = v else {
            panic!("{v:?}")
        };
        cursor = text(&parts[0]);
        seen.extend(all(parts[1].clone()));
        rounds += 1;
        if cursor == "0" {
            break;
        }
        assert!(rounds < 1000, "SCAN does not end");
    }
    seen.sort();
    assert_eq!(seen, keys, "SCAN returned each key exactly once");
    let r = text(&query(&mut c, &["RANDOMKEY"]).unwrap());
    assert!(keys.contains(&r), "{r}");
    // A script loaded through the proxy runs on every shard.
    let sha = text(
        &query(
            &mut c,
            &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
        )
        .unwrap(),
    );
    for m in cluster.masters() {
        let k = cluster.key_in_slot_of(m, "s");
        query(&mut c, &["SET", &k, "here"]).unwrap();
        assert_eq!(
            text(&query(&mut c, &["EVALSHA", &sha, "1", &k]).unwrap()),
            "here"
        );
    }
    // A function library loaded through the proxy is on every shard, as is its removal.
    let lib = "#!lua name=plib\nredis.register_function('pget', function(keys) return redis.call('GET', keys[1]) end)";
    assert_eq!(
        text(&query(&mut c, &["FUNCTION", "LOAD", lib]).unwrap()),
        "plib"
    );
    for m in cluster.masters() {
        let k = cluster.key_in_slot_of(m, "s");
        assert_eq!(
            text(&query(&mut c, &["FCALL", "pget", "1", &k]).unwrap()),
            "here"
        );
    }
    assert_eq!(
        format!("{:?}", query(&mut c, &["FUNCTION", "LOAD", lib])),
        format!(
            "{:?}",
            query(
                &mut cluster.conn(cluster.masters()[1]),
                &["FUNCTION", "LOAD", lib]
            )
        ),
        "loading it again fails as on a node"
    );
    assert_eq!(
        query(&mut c, &["FUNCTION", "DELETE", "plib"]).unwrap(),
        Value::Okay
    );
    for m in cluster.masters() {
        assert_eq!(
            cluster.cmd(m, &["FUNCTION", "LIST"]),
            Value::Array(vec![]),
            "{m}"
        );
    }
    // A script that declares no key runs on one node, as on a cluster client's
    // connection: its answer is that node's.
    assert_eq!(
        text(&query(&mut c, &["EVAL", "return ARGV[1]", "0", "hello"]).unwrap()),
        "hello"
    );
    let first = cluster.owner_of_slot(0);
    let want = query(
        &mut cluster.conn(first),
        &["EVAL", "return redis.call('DBSIZE')", "0"],
    );
    let got = query(&mut c, &["EVAL", "return redis.call('DBSIZE')", "0"]);
    assert!(matches!(got, Ok(Value::Int(_))), "{got:?}");
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    assert_eq!(query(&mut c, &["FLUSHALL"]).unwrap(), Value::Okay);
    for m in cluster.masters() {
        assert_eq!(cluster.cmd(m, &["DBSIZE"]), Value::Int(0), "{m}");
    }
    assert_eq!(query(&mut c, &["DBSIZE"]).unwrap(), Value::Int(0));
    assert_eq!(query(&mut c, &["RANDOMKEY"]).unwrap(), Value::Nil);
}

#[test]
fn blocking_commands_and_durable_writes_run_on_their_keys_shard() {
    let cluster = relayed_cluster(2);
    let p = proxy_for(
        &cluster,
        "  rules:\n    - name: durable\n      keys: [\"dur:*\"]\n      consistency: master\n      wait: {replicas: 1, timeout_ms: 2000}\n",
    );
    // A blocked pop on one client, woken by a push through another.
    let waiter = {
        let addr = p.addr;
        std::thread::spawn(move || {
            let mut c = connect(addr);
            query(&mut c, &["BLPOP", "queue", "5"]).unwrap()
        })
    };
    let owner = cluster.owner_of_slot(RedisCluster::slot_of("queue"));
    cluster
        .node(owner)
        .wait_blocked_clients(1, Duration::from_secs(5));
    let mut c = p.conn();
    query(&mut c, &["RPUSH", "queue", "job"]).unwrap();
    let got = waiter.join().unwrap();
    assert_eq!(
        got,
        Value::Array(vec![
            Value::BulkString(b"queue".to_vec()),
            Value::BulkString(b"job".to_vec())
        ])
    );
    // CLIENT UNBLOCK reaches the shard the blocked client waits on, whichever it is.
    for m in cluster.masters() {
        let k = cluster.key_in_slot_of(m, "blocked");
        let mut blocked = p.conn();
        let id = match query(&mut blocked, &["CLIENT", "ID"]).unwrap() {
            Value::Int(i) => i,
            v => panic!("{v:?}"),
        };
        let waiter = std::thread::spawn(move || query(&mut blocked, &["BLPOP", &k, "10"]).unwrap());
        cluster
            .node(m)
            .wait_blocked_clients(1, Duration::from_secs(5));
        let unblocked = query(&mut c, &["CLIENT", "UNBLOCK", &id.to_string()]).unwrap();
        assert_eq!(unblocked, Value::Int(1), "on {m}");
        assert_eq!(waiter.join().unwrap(), Value::Nil);
    }
    // CLIENT PAUSE pauses every master: a direct write to each waits for its end.
    assert_eq!(
        query(&mut c, &["CLIENT", "PAUSE", "700", "WRITE"]).unwrap(),
        Value::Okay
    );
    let paused_at = Instant::now();
    let writers: Vec<_> = cluster
        .masters()
        .into_iter()
        .map(|m| {
            let k = cluster.key_in_slot_of(m, "paused");
            let mut d = cluster.conn(m);
            std::thread::spawn(move || {
                query(&mut d, &["SET", &k, "1"]).unwrap();
                paused_at.elapsed()
            })
        })
        .collect();
    for w in writers {
        let waited = w.join().unwrap();
        assert!(
            waited >= Duration::from_millis(500),
            "held for {waited:?} only"
        );
    }
    // A durable write is answered once its shard's replica holds it.
    for i in 0..20 {
        let k = format!("dur:{i}");
        assert_eq!(query(&mut c, &["SET", &k, "v"]).unwrap(), Value::Okay);
        let master = cluster.owner_of_slot(RedisCluster::slot_of(&k));
        let replica = cluster.replicas_of(master)[0];
        let mut r = raw(replica);
        r.write_all(b"*1\r\n$8\r\nREADONLY\r\n").unwrap();
        assert_eq!(read_reply(&mut r), b"+OK\r\n");
        let get = format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
        r.write_all(get.as_bytes()).unwrap();
        assert_eq!(read_reply(&mut r), b"$1\r\nv\r\n", "{k} on {replica}");
    }
    // WAIT counts the replicas of the shard the last write went to: with one shard's
    // replication paused, a write there is held by no replica; elsewhere it is.
    let paused = cluster.relayed_node().expect("a relayed master");
    cluster.pause_replication();
    let k = cluster.key_in_slot_of(paused, "w");
    query(&mut c, &["SET", &k, "1"]).unwrap();
    assert_eq!(query(&mut c, &["WAIT", "1", "300"]).unwrap(), Value::Int(0));
    for m in cluster.masters().into_iter().filter(|m| *m != paused) {
        let k = cluster.key_in_slot_of(m, "w");
        query(&mut c, &["SET", &k, "1"]).unwrap();
        assert_eq!(
            query(&mut c, &["WAIT", "1", "2000"]).unwrap(),
            Value::Int(1),
            "{m}"
        );
    }
    // A durable write across slots is split, and each part waits for its own shard's
    // replica: the paused shard's part fails the whole as a single node's would.
    let others: Vec<String> = cluster
        .masters()
        .into_iter()
        .filter(|m| *m != paused)
        .map(|m| cluster.key_in_slot_of(m, "dur:x"))
        .collect();
    let mut mset = vec!["MSET"];
    for k in &others {
        mset.extend([k.as_str(), "1"]);
    }
    assert_eq!(query(&mut c, &mset).unwrap(), Value::Okay);
    for (k, m) in others
        .iter()
        .zip(cluster.masters().into_iter().filter(|m| *m != paused))
    {
        let mut r = raw(cluster.replicas_of(m)[0]);
        r.write_all(b"*1\r\n$8\r\nREADONLY\r\n").unwrap();
        assert_eq!(read_reply(&mut r), b"+OK\r\n");
        r.write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).as_bytes())
            .unwrap();
        assert_eq!(
            read_reply(&mut r),
            b"$1\r\n1\r\n",
            "{k} already on its replica"
        );
    }
    let on_paused = cluster.key_in_slot_of(paused, "dur:x");
    mset.extend([on_paused.as_str(), "1"]);
    let started = Instant::now();
    let e = query(&mut c, &mset).unwrap_err();
    assert!(
        format!("{e:?}").contains("reached only 0 of 1 replicas"),
        "{e:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "held for its timeout"
    );
    assert_eq!(
        query(&mut c, &["PING"]).unwrap(),
        Value::SimpleString("PONG".into())
    );
    cluster.resume_replication();
}

#[test]
fn a_reload_reaches_every_shard() {
    let cluster = RedisCluster::start(3, 1);
    let p = proxy_for(&cluster, "");
    let state = p.state().clone();
    let before: Vec<Vec<u32>> = state
        .cluster
        .backends()
        .iter()
        .map(|b| b.all().map(|b| b.id).collect())
        .collect();
    let mut new = (*state.settings.load().config).clone();
    new.backend.connections = 3;
    new.routing.default.max_lag_ms = Some(250);
    match redsplit::reload::apply(&state, new, "test", false) {
        redsplit::reload::Outcome::Applied { .. } => {}
        other => panic!("{other:?}"),
    }
    let after = state.cluster.backends();
    let ids: Vec<Vec<u32>> = after
        .iter()
        .map(|b| b.all().map(|b| b.id).collect())
        .collect();
    assert_eq!(
        ids, before,
        "every shard keeps its backends and their connections"
    );
    for b in after
        .iter()
        .flat_map(|s| s.all().cloned().collect::<Vec<_>>())
    {
        assert_eq!(b.pool.size(), 3, "{}", b.label());
    }
    // The new budget is every shard's pool now.
    wait_until(
        "every replica in the new budget's pool",
        Duration::from_secs(10),
        || {
            let rows = status_rows(&p);
            rows.iter().filter(|r| r["role"] == "replica").all(|r| {
                r["in_pool"].contains("250ms") && r["in_pool"].to_lowercase().contains("int(1)")
            })
        },
    );
    let mut c = p.conn();
    assert_eq!(query(&mut c, &["SET", "k", "v"]).unwrap(), Value::Okay);
}

/// `PROXY EXPLAIN GET key` through `c`, as text.
fn explain_get(c: &mut redis::Connection, key: &str) -> String {
    format!("{:?}", query(c, &["PROXY", "EXPLAIN", "GET", key]).unwrap())
}

#[test]
fn read_your_writes_waits_only_for_the_shard_written() {
    let cluster = relayed_cluster(0);
    // A budget long enough that a paused replica stays within it: only read-your-writes
    // keeps a read off it.
    let p = proxy_for(
        &cluster,
        "  rules:\n    - {name: own, keys: [\"own*\"], consistency: replica, max_lag_ms: 60000, read_your_writes: connection}\n",
    );
    let paused = cluster.relayed_node().expect("a relayed master");
    let other = cluster
        .masters()
        .into_iter()
        .find(|m| *m != paused)
        .unwrap();
    let other_replica = cluster.replicas_of(other)[0];
    let kp = cluster.key_in_slot_of(paused, "own:p");
    let ko = cluster.key_in_slot_of(other, "own:o");
    let mut c = p.conn();
    query(&mut c, &["SET", &ko, "o"]).unwrap();
    wait_until(
        "the other shard's replica serves its key again",
        Duration::from_secs(5),
        || explain_get(&mut c, &ko).contains(&other_replica.to_string()),
    );
    cluster.pause_replication();
    let (replica_gets, master_gets) = (gets(&cluster, other_replica), gets(&cluster, other));
    // One pipeline: a write to the paused shard, and while it is in flight a read of the
    // other shard, which that write cannot concern.
    let mut s = raw(p.addr);
    let get = |k: &str| format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
    let set = format!("*3\r\n$3\r\nSET\r\n${}\r\n{kp}\r\n$1\r\nv\r\n", kp.len());
    s.write_all(format!("{set}{}", get(&ko)).as_bytes())
        .unwrap();
    assert_eq!(
        read_replies(&mut s, 2),
        vec![b"+OK\r\n".to_vec(), b"$1\r\no\r\n".to_vec()]
    );
    assert_eq!(
        (gets(&cluster, other_replica), gets(&cluster, other)),
        (replica_gets + 1, master_gets),
        "the other shard's read went to its replica"
    );
    // The written shard's reads stay on its master: its replica never gets the write.
    let paused_replica = cluster.replicas_of(paused)[0];
    let mut r = raw(paused_replica);
    r.write_all(b"*1\r\n$8\r\nREADONLY\r\n").unwrap();
    assert_eq!(read_reply(&mut r), b"+OK\r\n");
    r.write_all(get(&kp).as_bytes()).unwrap();
    assert_eq!(
        read_reply(&mut r),
        b"$-1\r\n",
        "the paused replica lacks the write"
    );
    for _ in 0..10 {
        s.write_all(get(&kp).as_bytes()).unwrap();
        assert_eq!(read_reply(&mut s), b"$1\r\nv\r\n");
    }
    // Another connection has no write of its own: it may read the paused replica.
    let mut s2 = raw(p.addr);
    s2.write_all(get(&kp).as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s2), b"$-1\r\n", "within its 60 s budget");
    let e = explain_get(&mut c, &kp);
    assert!(e.contains(&paused_replica.to_string()), "{e}");
    cluster.resume_replication();
}

#[test]
fn a_migrated_slot_is_read_from_its_new_owner_replica_once_it_holds_the_keys() {
    let cluster = relayed_cluster(1);
    let p = proxy_for(
        &cluster,
        "  rules:\n    - {name: mig, keys: [\"mig*\"], consistency: replica, max_lag_ms: 60000, read_your_writes: off}\n",
    );
    let to = cluster.relayed_node().expect("a relayed master");
    let from = cluster.masters().into_iter().find(|m| *m != to).unwrap();
    let (from_replica, to_replica) = (cluster.replicas_of(from)[0], cluster.replicas_of(to)[0]);
    let slot = cluster.slots_of(from)[0].0;
    let keys: Vec<String> = (0..10)
        .map(|i| RedisCluster::key_in_slot(slot, &format!("mig{i}:")))
        .collect();
    let mut c = p.conn();
    for k in &keys {
        query(&mut c, &["SET", k, "v"]).unwrap();
    }
    wait_until(
        "the source's replica serves the slot",
        Duration::from_secs(5),
        || explain_get(&mut c, &keys[0]).contains(&from_replica.to_string()),
    );
    // The new owner's replica will not receive the keys that move to its master.
    cluster.pause_replication();
    cluster.begin_migration(slot, from, to);
    assert_eq!(cluster.migrate_keys(slot, from, to, 100), keys.len());
    cluster.finish_migration(slot, to);
    let mut r = raw(to_replica);
    r.write_all(b"*1\r\n$8\r\nREADONLY\r\n").unwrap();
    assert_eq!(read_reply(&mut r), b"+OK\r\n");
    let get = |k: &str| format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
    r.write_all(get(&keys[0]).as_bytes()).unwrap();
    assert_eq!(
        read_reply(&mut r),
        b"$-1\r\n",
        "the new owner's replica lacks the keys"
    );
    // Every read through the proxy has the keys: they go to the new owner's master until
    // its replica holds what moved, however fresh its budget says it is.
    wait_until(
        "the proxy's map names the new owner",
        Duration::from_secs(10),
        || {
            let e = explain_get(&mut c, &keys[0]);
            e.contains(&to.to_string()) || e.contains(&to_replica.to_string())
        },
    );
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for k in &keys {
            assert_eq!(text(&query(&mut c, &["GET", k]).unwrap()), "v", "{k}");
        }
    }
    let e = explain_get(&mut c, &keys[0]);
    assert!(
        e.contains("migrat") && !e.contains(&to_replica.to_string()),
        "{e}"
    );
    cluster.resume_replication();
    wait_until(
        "the new owner's replica serves the slot once it holds the keys",
        Duration::from_secs(10),
        || explain_get(&mut c, &keys[0]).contains(&to_replica.to_string()),
    );
    for k in &keys {
        assert_eq!(text(&query(&mut c, &["GET", k]).unwrap()), "v", "{k}");
    }
}
