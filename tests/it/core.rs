//! The core proxy against real Redis: any client works through redsplit unchanged.

use crate::common::*;
use redis::Value;
use std::time::Duration;

#[test]
fn set_get_and_reads_go_to_replicas() {
    let set = ReplicaSet::start(2, false);
    // Round robin: this test is about reads spreading over both replicas.
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "routing: {replica_choice: round_robin}\n",
    ));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    assert_eq!(text(&query(&mut c, &["SET", "k", "v"]).unwrap()), "OK");
    set.wait_synced(SYNC_TIMEOUT);
    // Reads from a fresh connection (no read-your-writes constraint).
    let mut r = proxy.conn();
    let before: u64 = set.replicas.iter().map(|s| s.calls("get")).sum();
    for _ in 0..20 {
        assert_eq!(text(&query(&mut r, &["GET", "k"]).unwrap()), "v");
    }
    let after: u64 = set.replicas.iter().map(|s| s.calls("get")).sum();
    assert_eq!(after - before, 20, "plain reads are served by replicas");
    let each: Vec<u64> = set.replicas.iter().map(|s| s.calls("get")).collect();
    assert!(
        each.iter().all(|n| *n >= 5),
        "reads spread over both replicas: {each:?}"
    );
    assert_eq!(set.master.calls("get"), 0);
}

#[test]
fn deep_pipeline_keeps_order() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    let mut p = redis::pipe();
    for i in 0..2000 {
        match i % 4 {
            0 => p.cmd("INCR").arg("ctr"),
            1 => p.cmd("GET").arg("ctr"),
            2 => p.cmd("PING"),
            _ => p.cmd("ECHO").arg(i),
        };
    }
    let replies: Vec<Value> = p.query(&mut c).unwrap();
    assert_eq!(replies.len(), 2000);
    for (i, v) in replies.iter().enumerate() {
        let n = (i / 4 + 1) as i64;
        match i % 4 {
            0 => assert_eq!(v, &Value::Int(n), "reply {i}"),
            1 => assert_eq!(text(v), n.to_string(), "reply {i} reads its own write"),
            2 => assert_eq!(text(v), "PONG"),
            _ => assert_eq!(text(v), i.to_string()),
        }
    }
}

/// Replies of many sizes (up to 300 KB, so they span many reads on both sides), from
/// replicas, the master and the proxy itself, in one pipeline while another client's
/// pipeline shares the backend connections: each reply whole, in order, with its own
/// bytes.
#[test]
fn large_replies_in_pipelines_arrive_whole_and_in_order() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let value = |k: usize, round: usize| -> Vec<u8> {
        let len = 1 + (k * 7_919) % 300_000;
        (0..len)
            .map(|i| b'a' + ((i + k + round) % 26) as u8)
            .collect()
    };
    let keys = 40;
    let mut c = proxy.conn();
    for k in 0..keys {
        let _: () = redis::cmd("SET")
            .arg(format!("big:{k}"))
            .arg(value(k, 0))
            .query(&mut c)
            .unwrap();
    }
    let other = {
        let mut o = proxy.conn();
        std::thread::spawn(move || {
            for round in 0..20 {
                let mut p = redis::pipe();
                for k in 0..keys {
                    p.cmd("STRLEN").arg(format!("big:{k}"));
                }
                let lens: Vec<usize> = p.query(&mut o).unwrap();
                assert_eq!(lens.len(), keys, "round {round}");
            }
        })
    };
    for round in 1..4 {
        let mut p = redis::pipe();
        for k in 0..keys {
            p.cmd("GET").arg(format!("big:{k}"));
            p.cmd("PING");
            if k % 5 == 0 {
                p.cmd("SET")
                    .arg(format!("big:{k}"))
                    .arg(value(k, round))
                    .ignore();
                p.cmd("GET").arg(format!("big:{k}"));
            }
        }
        let replies: Vec<Value> = p.query(&mut c).unwrap();
        let mut it = replies.iter();
        for k in 0..keys {
            let before = if k % 5 == 0 { round - 1 } else { 0 };
            let v = it.next().expect("a reply per GET");
            assert_eq!(
                v,
                &Value::BulkString(value(k, before)),
                "round {round} GET big:{k}"
            );
            assert_eq!(text(it.next().expect("a reply per PING")), "PONG");
            if k % 5 == 0 {
                let v = it.next().expect("a reply per GET");
                assert_eq!(
                    v,
                    &Value::BulkString(value(k, round)),
                    "round {round} reads its write of big:{k}"
                );
            }
        }
        assert!(it.next().is_none());
    }
    other.join().unwrap();
}

#[test]
fn transactions_and_watch_conflicts() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(2);
    let mut c = proxy.conn();
    let r: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("a")
        .arg(1)
        .cmd("INCR")
        .arg("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(text(&r[0]), "OK");
    assert_eq!(r[1], Value::Int(2));
    // Step by step, as a non-pipelining client does.
    assert_eq!(text(&query(&mut c, &["MULTI"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut c, &["INCR", "a"]).unwrap()), "QUEUED");
    assert_eq!(text(&query(&mut c, &["PING"]).unwrap()), "QUEUED");
    let r = query(&mut c, &["EXEC"]).unwrap();
    assert_eq!(
        r,
        Value::Array(vec![Value::Int(3), Value::SimpleString("PONG".into())])
    );
    assert!(query(&mut c, &["EXEC"])
        .unwrap_err()
        .to_string()
        .contains("EXEC without MULTI"));
    assert!(query(&mut c, &["DISCARD"])
        .unwrap_err()
        .to_string()
        .contains("DISCARD without MULTI"));
    // WATCH conflict: another client changes the key between WATCH and EXEC.
    let mut other = proxy.conn();
    assert_eq!(text(&query(&mut c, &["WATCH", "w"]).unwrap()), "OK");
    assert_eq!(query(&mut c, &["GET", "w"]).unwrap(), Value::Nil);
    assert_eq!(
        text(&query(&mut other, &["SET", "w", "theirs"]).unwrap()),
        "OK"
    );
    assert_eq!(text(&query(&mut c, &["MULTI"]).unwrap()), "OK");
    assert_eq!(
        text(&query(&mut c, &["SET", "w", "mine"]).unwrap()),
        "QUEUED"
    );
    assert_eq!(
        query(&mut c, &["EXEC"]).unwrap(),
        Value::Nil,
        "EXEC aborts after a WATCH conflict"
    );
    assert_eq!(set.master.get("w").as_deref(), Some("theirs"));
    // Without a conflict it commits, and the connection is back to normal routing.
    assert_eq!(text(&query(&mut c, &["WATCH", "w"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut c, &["MULTI"]).unwrap()), "OK");
    assert_eq!(
        text(&query(&mut c, &["SET", "w", "mine"]).unwrap()),
        "QUEUED"
    );
    assert_eq!(
        query(&mut c, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Okay])
    );
    assert_eq!(text(&query(&mut c, &["GET", "w"]).unwrap()), "mine");
    // A queued error aborts the transaction, as on Redis.
    assert_eq!(text(&query(&mut c, &["MULTI"]).unwrap()), "OK");
    assert!(query(&mut c, &["NOSUCHCMD"]).is_err());
    let e = query(&mut c, &["EXEC"]).unwrap_err();
    assert!(
        format!("{e:?}").contains("ExecAbort") || e.to_string().contains("EXECABORT"),
        "{e:?}"
    );
}

#[test]
fn blocked_client_never_delays_others() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(2);
    let addr = proxy.addr;
    let blocked = std::thread::spawn(move || {
        let mut c = connect(addr);
        let started = std::time::Instant::now();
        let v = query(&mut c, &["BLPOP", "queue", "10"]).unwrap();
        (v, started.elapsed())
    });
    // Wait until the master sees the blocked client.
    set.master.wait_blocked_clients(1, Duration::from_secs(5));
    // A third client works normally meanwhile.
    let mut third = proxy.conn();
    for i in 0..200 {
        let k = format!("third:{i}");
        assert_eq!(text(&query(&mut third, &["SET", &k, "x"]).unwrap()), "OK");
        assert_eq!(text(&query(&mut third, &["GET", &k]).unwrap()), "x");
    }
    let mut pusher = proxy.conn();
    assert_eq!(
        query(&mut pusher, &["LPUSH", "queue", "job"]).unwrap(),
        Value::Int(1)
    );
    let (v, took) = blocked.join().unwrap();
    assert_eq!(
        v,
        Value::Array(vec![
            Value::BulkString(b"queue".to_vec()),
            Value::BulkString(b"job".to_vec())
        ])
    );
    assert!(took < Duration::from_secs(10));
    // The blocked client's connection is usable afterwards.
    let mut c = proxy.conn();
    assert_eq!(
        query(&mut c, &["BLPOP", "empty", "0.1"]).unwrap(),
        Value::Nil
    );
}

#[test]
fn pubsub_through_the_proxy() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(2);
    let mut sub = raw(proxy.addr);
    use std::io::Write;
    sub.write_all(
        b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\nn*\r\n",
    )
    .unwrap();
    let expect = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:2\r\n";
    assert_eq!(read_at_least(&mut sub, expect.len()), expect.to_vec());
    let mut c = proxy.conn();
    assert_eq!(
        query(&mut c, &["PUBLISH", "news", "hello"]).unwrap(),
        Value::Int(2)
    );
    let expect = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$5\r\nhello\r\n";
    assert_eq!(read_at_least(&mut sub, expect.len()), expect.to_vec());
    // In RESP2 subscribed mode, PING answers as Redis does, and GET is refused by Redis.
    sub.write_all(b"PING\r\n").unwrap();
    let expect = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    assert_eq!(read_at_least(&mut sub, expect.len()), expect.to_vec());
    // Unsubscribe from everything: normal commands work again.
    sub.write_all(b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\nSET after sub\r\nGET after\r\n")
        .unwrap();
    let expect = b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n+OK\r\n$3\r\nsub\r\n";
    assert_eq!(read_at_least(&mut sub, expect.len()), expect.to_vec());
    // UNSUBSCRIBE when not subscribed answers locally, like Redis.
    let mut fresh = raw(proxy.addr);
    fresh.write_all(b"UNSUBSCRIBE a b\r\n").unwrap();
    let expect = b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n";
    assert_eq!(read_at_least(&mut fresh, expect.len()), expect.to_vec());
}

#[test]
fn select_keeps_databases_apart() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(2);
    let mut one = proxy.conn();
    let mut zero = proxy.conn();
    assert_eq!(text(&query(&mut one, &["SELECT", "1"]).unwrap()), "OK");
    assert_eq!(
        text(&query(&mut one, &["SET", "k", "in-one"]).unwrap()),
        "OK"
    );
    assert_eq!(
        text(&query(&mut zero, &["SET", "k", "in-zero"]).unwrap()),
        "OK"
    );
    set.wait_synced(SYNC_TIMEOUT);
    let mut reader1 = proxy.conn();
    assert_eq!(text(&query(&mut reader1, &["SELECT", "1"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut reader1, &["GET", "k"]).unwrap()), "in-one");
    let mut reader0 = proxy.conn();
    assert_eq!(
        text(&query(&mut reader0, &["GET", "k"]).unwrap()),
        "in-zero"
    );
    assert_eq!(text(&set.master.cmd(&["SELECT", "1"])), "OK");
    let e = query(&mut one, &["SELECT", "99"]).unwrap_err().to_string();
    assert!(e.contains("DB index is out of range"), "{e}");
    let e = query(&mut one, &["SELECT", "x"]).unwrap_err().to_string();
    assert!(e.contains("value is not an integer or out of range"), "{e}");
}

#[test]
fn passwords_checked_by_the_proxy() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(
        &set,
        "users:\n  - {name: default, password: s3cret}\n  - {name: app, password: apppw}\n",
    ));
    proxy.wait_healthy(1);
    let mut s = raw(proxy.addr);
    use std::io::Write;
    s.write_all(b"GET k\r\nAUTH wrong\r\nAUTH app s3cret\r\nHELLO 3\r\nAUTH s3cret\r\nPING\r\nAUTH app apppw\r\nPING\r\n").unwrap();
    let expect: &[u8] = b"-NOAUTH Authentication required.\r\n\
-WRONGPASS invalid username-password pair or user is disabled.\r\n\
-WRONGPASS invalid username-password pair or user is disabled.\r\n\
-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n\
+OK\r\n+PONG\r\n+OK\r\n+PONG\r\n";
    assert_eq!(
        String::from_utf8_lossy(&read_at_least(&mut s, expect.len())),
        String::from_utf8_lossy(expect)
    );
    // HELLO with AUTH authenticates and switches protocol at once.
    let mut h = raw(proxy.addr);
    h.write_all(b"HELLO 3 AUTH app apppw SETNAME web1\r\nCLIENT GETNAME\r\n")
        .unwrap();
    let got = read_at_least(&mut h, 40);
    assert!(
        got.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Without users, AUTH says what Redis says.
    let open = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    let mut c = open.conn();
    let e = query(&mut c, &["AUTH", "x"]).unwrap_err().to_string();
    assert!(
        e.contains("AUTH <password> called without any password configured"),
        "{e}"
    );
}

#[test]
fn resp3_end_to_end() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    set.master.cmd(&["HSET", "h", "f", "v"]);
    set.wait_synced(SYNC_TIMEOUT);
    let mut s = raw(proxy.addr);
    use std::io::Write;
    s.write_all(b"HELLO 3\r\n").unwrap();
    // The whole HELLO map, so that what is read next is the next reply.
    let hello = read_reply(&mut s);
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    s.write_all(b"HGETALL h\r\nGET missing\r\n").unwrap();
    let expect = b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n";
    assert_eq!(read_at_least(&mut s, expect.len()), expect.to_vec());
    assert!(set.replicas.iter().map(|r| r.calls("hgetall")).sum::<u64>() >= 1);
}

#[test]
fn inline_commands_and_protocol_errors() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    use std::io::Write;
    let mut s = raw(proxy.addr);
    s.write_all(b"PING\r\nSET greeting \"hello world\"\r\nGET greeting\r\n\r\nECHO 'a b'\r\n")
        .unwrap();
    let expect = b"+PONG\r\n+OK\r\n$11\r\nhello world\r\n$3\r\na b\r\n";
    assert_eq!(read_at_least(&mut s, expect.len()), expect.to_vec());
    // A broken stream: Redis's error, then the connection closes.
    let mut bad = raw(proxy.addr);
    bad.write_all(b"PING\r\n*x\r\n").unwrap();
    let got = read_at_least(&mut bad, 1000);
    assert_eq!(
        got,
        b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n".to_vec()
    );
    let mut bad = raw(proxy.addr);
    bad.write_all(b"*1\r\n$4000000000\r\n").unwrap();
    assert_eq!(
        read_at_least(&mut bad, 1000),
        b"-ERR Protocol error: invalid bulk length\r\n".to_vec()
    );
    // Unknown commands get Redis's own answer.
    let mut c = proxy.conn();
    let e = query(&mut c, &["NOSUCHCMD", "a"]).unwrap_err().to_string();
    assert!(e.contains("unknown command"), "{e}");
    let e = query(&mut c, &["GET"]).unwrap_err().to_string();
    assert!(
        e.contains("wrong number of arguments for 'get' command"),
        "{e}"
    );
}

#[test]
fn read_only_scripts_fall_back_to_the_master_on_noscript() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    set.master.set("sk", "sv");
    set.wait_synced(SYNC_TIMEOUT);
    let mut c = proxy.conn();
    let sha = text(
        &query(
            &mut c,
            &["SCRIPT", "LOAD", "return redis.call('get', KEYS[1])"],
        )
        .unwrap(),
    );
    let mut r = proxy.conn();
    for _ in 0..5 {
        assert_eq!(
            text(&query(&mut r, &["EVALSHA_RO", &sha, "1", "sk"]).unwrap()),
            "sv"
        );
    }
    // The replicas were asked first (they never saw SCRIPT LOAD) and said NOSCRIPT.
    let on_replicas: u64 = set
        .replicas
        .iter()
        .map(|s| {
            let info = s.info("commandstats");
            // NOSCRIPT counts as a failed call; the entry exists once a replica was asked.
            info.contains_key("cmdstat_evalsha_ro") as u64
        })
        .sum();
    assert!(on_replicas >= 1, "a replica was tried");
    assert_eq!(
        set.master.commandstats().get("evalsha_ro").copied(),
        Some(5)
    );
    // EVAL_RO itself runs on a replica.
    assert_eq!(
        text(
            &query(
                &mut r,
                &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "sk"]
            )
            .unwrap()
        ),
        "sv"
    );
    let evals: u64 = set.replicas.iter().map(|s| s.calls("eval_ro")).sum();
    assert_eq!(evals, 1);
}

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

#[test]
fn redis_cli_and_redis_benchmark_work_through_the_proxy() {
    let set = ReplicaSet::start(2, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_in_pool(2);
    let port = proxy.addr.port().to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "cli", "hello"]), "OK");
    assert_eq!(cli(&["GET", "cli"]), "hello");
    assert_eq!(cli(&["--no-raw", "INCR", "n"]), "(integer) 1");
    assert_eq!(cli(&["-3", "HSET", "h", "a", "1"]), "1");
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &port,
            "-q",
            "-n",
            "3000",
            "-P",
            "8",
            "-t",
            "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange,mset",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        !stdout.contains("ERR") && !stdout.contains("rror"),
        "{stdout}"
    );
    for t in ["SET", "GET", "INCR", "LPUSH", "MSET", "LRANGE_100"] {
        assert!(
            stdout.contains(&format!("{t}:")) || stdout.contains(&format!("{t} ")),
            "{t} missing in {stdout}"
        );
    }
}

/// A config file `proxy.yaml` in a new temp dir: the proxy on a free port (returned), no
/// admin listener, and `rest` (the `backend:` section and anything else).
fn binary_config(rest: &str) -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("proxy.yaml");
    std::fs::write(
        &cfg,
        format!("listen: 127.0.0.1:{port}\nadmin: {{listen: ''}}\n{rest}"),
    )
    .unwrap();
    (dir, cfg, port)
}

#[test]
fn sigterm_drains_in_flight_replies_and_exits_zero() {
    let set = ReplicaSet::start(1, false);
    let (_dir, cfg, port) = binary_config(&format!(
        "deny_commands: []\nshutdown_grace_ms: 5000\nbackend:\n  master: \"{}\"\n  replicas: [\"{}\"]\n",
        set.master.addr(),
        set.replicas[0].addr()
    ));
    let mut proxy = ProxyBinary::run(&cfg);
    let addr = local_addr(port);
    wait_for_port(addr, Duration::from_secs(10));
    let mut c = connect(addr);
    assert_eq!(text(&query(&mut c, &["PING"]).unwrap()), "PONG");
    let slow = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        (query(&mut c, &["DEBUG", "SLEEP", "0.8"]), t.elapsed())
    });
    wait_until(
        "DEBUG SLEEP reached the master",
        Duration::from_secs(5),
        || {
            set.master.commandstats().contains_key("debug")
                || set.master.try_cmd(&["PING"]).is_err()
        },
    );
    proxy.signal(libc::SIGTERM);
    let (reply, took) = slow.join().unwrap();
    assert_eq!(
        text(&reply.unwrap()),
        "OK",
        "the in-flight reply was delivered"
    );
    assert!(took >= Duration::from_millis(700));
    // Within the grace period (5 s), with a second of slack.
    let status = proxy.wait_exit(Duration::from_secs(6));
    assert!(status.success(), "exit status {status}: {}", proxy.output());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn connection_commands_answer_like_redis() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let mut c = proxy.conn();
    let id = match query(&mut c, &["CLIENT", "ID"]).unwrap() {
        Value::Int(n) => n,
        v => panic!("{v:?}"),
    };
    assert_eq!(query(&mut c, &["CLIENT", "GETNAME"]).unwrap(), Value::Nil);
    assert_eq!(
        text(&query(&mut c, &["CLIENT", "SETNAME", "worker-1"]).unwrap()),
        "OK"
    );
    assert_eq!(
        text(&query(&mut c, &["CLIENT", "GETNAME"]).unwrap()),
        "worker-1"
    );
    let e = query(&mut c, &["CLIENT", "SETNAME", "has space"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Client names cannot contain spaces"), "{e}");
    let info = text(&query(&mut c, &["CLIENT", "INFO"]).unwrap());
    assert!(
        info.starts_with(&format!("id={id} "))
            && info.contains("name=worker-1")
            && info.contains("db=0"),
        "{info}"
    );
    let mut other = proxy.conn();
    query(&mut other, &["CLIENT", "SETNAME", "other"]).unwrap();
    let list = text(&query(&mut c, &["CLIENT", "LIST"]).unwrap());
    assert!(
        list.contains("name=worker-1") && list.contains("name=other"),
        "{list}"
    );
    assert_eq!(text(&query(&mut c, &["ECHO", "hi"]).unwrap()), "hi");
    assert_eq!(text(&query(&mut c, &["PING", "x"]).unwrap()), "x");
    let e = query(&mut c, &["ECHO"]).unwrap_err().to_string();
    assert!(
        e.contains("wrong number of arguments for 'echo' command"),
        "{e}"
    );
    // CLIENT KILL by id: the other connection is closed.
    let other_id = match query(&mut other, &["CLIENT", "ID"]).unwrap() {
        Value::Int(n) => n,
        v => panic!("{v:?}"),
    };
    assert_eq!(
        query(&mut c, &["CLIENT", "KILL", "ID", &other_id.to_string()]).unwrap(),
        Value::Int(1)
    );
    wait_until("the killed client is gone", Duration::from_secs(5), || {
        query(&mut other, &["PING"]).is_err()
    });
    // A client that never authenticated is user `default`, in CLIENT LIST and for
    // CLIENT KILL USER (which skips the caller).
    let mut third = proxy.conn();
    query(&mut third, &["PING"]).unwrap();
    let list = text(&query(&mut c, &["CLIENT", "LIST"]).unwrap());
    assert!(list.lines().all(|l| l.contains(" user=default ")), "{list}");
    match query(&mut c, &["CLIENT", "KILL", "USER", "default"]).unwrap() {
        Value::Int(n) => assert!(n >= 1, "killed {n}"),
        v => panic!("{v:?}"),
    }
    wait_until(
        "the user's other client is gone",
        Duration::from_secs(5),
        || query(&mut third, &["PING"]).is_err(),
    );
    assert_eq!(text(&query(&mut c, &["PING", "still"]).unwrap()), "still");
    // CLIENT REPLY OFF / ON.
    use std::io::Write;
    let mut s = raw(proxy.addr);
    s.write_all(b"CLIENT REPLY OFF\r\nSET quiet 1\r\nGET quiet\r\nCLIENT REPLY ON\r\nGET quiet\r\nCLIENT REPLY SKIP\r\nPING\r\nPING\r\n").unwrap();
    let expect = b"+OK\r\n$1\r\n1\r\n+PONG\r\n";
    assert_eq!(read_at_least(&mut s, expect.len()), expect.to_vec());
    // RESET: back to db 0, RESP2, out of any mode.
    let mut r = raw(proxy.addr);
    r.write_all(b"SELECT 2\r\nMULTI\r\nRESET\r\nSET r 1\r\nCLIENT INFO\r\n")
        .unwrap();
    let got = String::from_utf8_lossy(&read_at_least(&mut r, 40)).to_string();
    assert!(got.starts_with("+OK\r\n+OK\r\n+RESET\r\n+OK\r\n"), "{got}");
    // HELLO 2 replies with a flat array; unknown versions get NOPROTO.
    let mut h = raw(proxy.addr);
    h.write_all(b"HELLO 4\r\nHELLO 2\r\n").unwrap();
    let got = String::from_utf8_lossy(&read_at_least(&mut h, 60)).to_string();
    assert!(
        got.starts_with(
            "-NOPROTO unsupported protocol version\r\n*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n"
        ),
        "{got}"
    );
    // QUIT answers OK and closes.
    let mut q = raw(proxy.addr);
    q.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_at_least(&mut q, 100), b"+OK\r\n".to_vec());
}

#[test]
fn blocking_stream_reads_and_tracking() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let addr = proxy.addr;
    let reader = std::thread::spawn(move || {
        let mut c = connect(addr);
        query(
            &mut c,
            &["XREAD", "BLOCK", "5000", "STREAMS", "events", "$"],
        )
        .unwrap()
    });
    set.master.wait_blocked_clients(1, Duration::from_secs(5));
    let mut c = proxy.conn();
    query(&mut c, &["XADD", "events", "*", "f", "v"]).unwrap();
    let got = format!("{:?}", reader.join().unwrap());
    assert!(
        got.contains("events") && got.contains("\"f\"") || got.contains("f"),
        "{got}"
    );
    // RESP3 client-side caching: invalidation pushes arrive on the tracking connection.
    use std::io::Write;
    let mut t = raw(proxy.addr);
    t.write_all(b"HELLO 3\r\n").unwrap();
    // The whole HELLO map, so that what is read next is the next reply.
    let hello = read_reply(&mut t);
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    t.write_all(b"CLIENT TRACKING ON\r\nGET tracked\r\n")
        .unwrap();
    let expect = b"+OK\r\n_\r\n";
    assert_eq!(read_at_least(&mut t, expect.len()), expect.to_vec());
    query(&mut c, &["SET", "tracked", "new"]).unwrap();
    let push = String::from_utf8_lossy(&read_at_least(&mut t, 30)).to_string();
    assert!(
        push.starts_with(">2\r\n$10\r\ninvalidate\r\n") && push.contains("tracked"),
        "{push}"
    );
}

#[test]
fn monitor_is_denied_by_default_and_works_when_allowed() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    let mut c = proxy.conn();
    let e = query(&mut c, &["MONITOR"]).unwrap_err().to_string();
    assert!(
        (e.contains("NOPERM") || e.contains("NoPerm"))
            && e.contains("'monitor'")
            && e.contains("deny_commands"),
        "{e}"
    );
    let open = ProxyUnderTest::start(&proxy_yaml(&set, "deny_commands: []\n"));
    use std::io::Write;
    let mut m = raw(open.addr);
    m.write_all(b"MONITOR\r\n").unwrap();
    assert!(read_at_least(&mut m, 5).starts_with(b"+OK\r\n"));
    let mut w = open.conn();
    query(&mut w, &["SET", "watched", "1"]).unwrap();
    let mut seen = String::new();
    wait_until("MONITOR shows the SET", Duration::from_secs(5), || {
        seen.push_str(&String::from_utf8_lossy(&read_at_least(&mut m, 1)));
        seen.contains("\"SET\" \"watched\" \"1\"")
    });
}

/// Logs go to stderr in both formats (stdout stays empty), as the README says, and text
/// logs written to a file carry no colour codes.
#[test]
fn logs_go_to_stderr_in_both_formats_without_colour_off_a_terminal() {
    let master = RedisServer::start();
    for format in ["json", "text"] {
        let (_dir, cfg, port) =
            binary_config(&format!("backend:\n  master: \"{}\"\n", master.addr()));
        let mut proxy = ProxyBinary::run_with(&cfg, &["--log-format", format]);
        let addr = local_addr(port);
        wait_for_port(addr, Duration::from_secs(10));
        assert_eq!(text(&query(&mut connect(addr), &["PING"]).unwrap()), "PONG");
        proxy.signal(libc::SIGTERM);
        let status = proxy.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{format}: exit status {status}");
        let (out, err) = (proxy.stdout(), proxy.output());
        assert_eq!(out, "", "{format}: nothing on stdout");
        assert!(err.contains("listening"), "{format}: logs on stderr: {err}");
        assert!(!err.contains('\u{1b}'), "{format}: colour codes in {err:?}");
        if format == "json" {
            for line in err.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v.get("level").is_some(), "{line}");
            }
        }
    }
}
