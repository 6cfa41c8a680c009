//! Commands through the proxy: reads go to the replicas, pipelines keep their order,
//! transactions, inline commands and protocol errors, read-only scripts.

use crate::common::*;
use redis::Value;

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
