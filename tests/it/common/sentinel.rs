//! [`Sentinels`]: real `redis-sentinel` processes monitoring a master.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use redis::Value;
use tempfile::TempDir;

use super::client::{parse_flat_map, value_text, CachedConn};
use super::process::{quiet, spawn, start_on_free_port, Process};
use super::redis_server::{redis_ready, RedisServer};
use super::{local_addr, wait_until, SYNC_TIMEOUT};

/// One `redis-sentinel` process.
struct SentinelNode {
    process: Process,
    conn: CachedConn,
    port: u16,
    /// Holds `sentinel.conf`, which Sentinel rewrites with what it learns.
    _dir: TempDir,
}

/// Real `redis-sentinel` processes monitoring one master, killed on drop.
///
/// Sentinel reconfigures a replica whose master address differs from the monitored
/// master's (`+fix-slave-config`) once `failover_timeout_ms` has passed, which bypasses a
/// [`Relay`]. Tests that combine Sentinel with relays should give a failover timeout
/// longer than the relayed phase of the test.
///
/// [`Relay`]: super::Relay
pub struct Sentinels {
    nodes: Vec<SentinelNode>,
    master_name: String,
}

impl Sentinels {
    /// Starts `n` Sentinels monitoring `master` as `master_name` with quorum `n/2 + 1`,
    /// `down-after-milliseconds`, `failover-timeout` and `parallel-syncs 1`.
    ///
    /// Returns once every Sentinel lists every replica the master reports (flags exactly
    /// `slave`, link ok) and the `n - 1` other Sentinels (discovered through hello
    /// messages, every 2 s).
    pub fn start(
        n: usize,
        master: &RedisServer,
        master_name: &str,
        down_after_ms: u64,
        failover_timeout_ms: u64,
    ) -> Sentinels {
        assert!(n > 0, "at least one Sentinel");
        let quorum = n / 2 + 1;
        let nodes = (0..n)
            .map(|_| {
                let dir = tempfile::Builder::new()
                    .prefix("redsplit-sentinel-")
                    .tempdir()
                    .expect("temp dir");
                let conf = dir.path().join("sentinel.conf");
                let log = dir.path().join("sentinel.log");
                let (port, process) = start_on_free_port(
                    "redis-sentinel",
                    dir.path(),
                    |port| {
                        let text = format!(
                            "port {port}\n\
                             bind 127.0.0.1\n\
                             daemonize no\n\
                             dir {dir}\n\
                             logfile {log}\n\
                             sentinel resolve-hostnames no\n\
                             sentinel announce-ip 127.0.0.1\n\
                             sentinel monitor {master_name} 127.0.0.1 {mport} {quorum}\n\
                             sentinel down-after-milliseconds {master_name} {down_after_ms}\n\
                             sentinel failover-timeout {master_name} {failover_timeout_ms}\n\
                             sentinel parallel-syncs {master_name} 1\n",
                            dir = dir.path().display(),
                            log = log.display(),
                            mport = master.port(),
                        );
                        std::fs::write(&conf, text).expect("write sentinel.conf");
                        let mut cmd = Command::new("redis-sentinel");
                        cmd.current_dir(dir.path()).arg(&conf);
                        quiet(&mut cmd, dir.path());
                        spawn(cmd)
                    },
                    redis_ready,
                );
                SentinelNode {
                    process,
                    conn: CachedConn::new(local_addr(port)),
                    port,
                    _dir: dir,
                }
            })
            .collect();
        let sentinels = Sentinels {
            nodes,
            master_name: master_name.to_owned(),
        };

        let replicas: usize = master.info("replication")["connected_slaves"]
            .parse()
            .expect("connected_slaves is a number");
        for i in 0..n {
            wait_until(
                &format!(
                    "sentinel {i} sees {replicas} replicas and {} sentinels",
                    n - 1
                ),
                SYNC_TIMEOUT,
                || {
                    let seen = sentinels.replicas(i);
                    seen.len() == replicas
                        && seen.iter().all(|r| {
                            r.get("flags").map(String::as_str) == Some("slave")
                                && r.get("master-link-status").map(String::as_str) == Some("ok")
                        })
                        && sentinels.sentinels(i).len() == n - 1
                },
            );
        }
        sentinels
    }

    /// The Sentinels' addresses, killed ones included (same indexes as at start).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| local_addr(n.port)).collect()
    }

    /// The monitored master's name.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// Runs a command on Sentinel `i`.
    pub fn try_cmd(&self, i: usize, args: &[&str]) -> redis::RedisResult<Value> {
        self.nodes[i].conn.query(args)
    }

    /// Runs a command on Sentinel `i`, panicking on error.
    pub fn cmd(&self, i: usize, args: &[&str]) -> Value {
        self.try_cmd(i, args)
            .unwrap_or_else(|e| panic!("{args:?} on sentinel {i}: {e}"))
    }

    /// The master address according to the first live Sentinel that answers
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`; `None` if none does.
    pub fn master_addr(&self) -> Option<SocketAddr> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].process.pid().is_some())
            .find_map(|i| self.master_addr_of(i))
    }

    /// The master address according to Sentinel `i`.
    pub fn master_addr_of(&self, i: usize) -> Option<SocketAddr> {
        let reply = self
            .try_cmd(
                i,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name],
            )
            .ok()?;
        let Value::Array(parts) = reply else {
            return None;
        };
        let [ip, port] = parts.as_slice() else {
            return None;
        };
        let ip = value_text(ip)?.parse().ok()?;
        let port = value_text(port)?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    }

    /// `SENTINEL REPLICAS name` on Sentinel `i`, one field map per replica (empty on error).
    pub fn replicas(&self, i: usize) -> Vec<HashMap<String, String>> {
        self.list(i, "REPLICAS")
    }

    /// `SENTINEL SENTINELS name` on Sentinel `i`: the other Sentinels it knows.
    pub fn sentinels(&self, i: usize) -> Vec<HashMap<String, String>> {
        self.list(i, "SENTINELS")
    }

    fn list(&self, i: usize, what: &str) -> Vec<HashMap<String, String>> {
        match self.try_cmd(i, &["SENTINEL", what, &self.master_name]) {
            Ok(Value::Array(entries)) => entries.iter().map(parse_flat_map).collect(),
            _ => Vec::new(),
        }
    }

    /// SIGKILLs Sentinel `i` and waits until it is dead.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].process.kill();
        self.nodes[i].conn.reset();
    }
}
