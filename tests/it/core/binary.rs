//! Outside programs: `redis-cli` and `redis-benchmark` through the proxy, and the redsplit
//! binary (draining on SIGTERM, logs on stderr).

use crate::common::*;
use std::time::Duration;

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
