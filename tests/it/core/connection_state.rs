//! A connection's state through the proxy: blocked clients, pub/sub, `SELECT`, passwords,
//! RESP3, the connection commands, blocking stream reads and tracking, `MONITOR`.

use crate::common::*;
use redis::Value;
use std::time::Duration;

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
