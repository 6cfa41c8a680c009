//! Real Redis: [`RedisServer`], one `redis-server` process, and [`ReplicaSet`], a master
//! and its replicas.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use redis::Value;
use tempfile::TempDir;

use super::client::{
    connect, connect_async, parse_info, query, try_connect, value_text, CachedConn,
};
use super::process::{
    launch_and_wait, log_tails, owns_listener, process_state, quiet, spawn, start_on_free_port,
    Process, StartError,
};
use super::relay::Relay;
use super::{local_addr, wait_until, POLL_INTERVAL, START_TIMEOUT, SYNC_TIMEOUT};

/// Arguments every [`RedisServer`] gets after the mandatory ones (and before the caller's,
/// which therefore override them).
///
/// - Diskless sync without delay: a replica's initial sync takes milliseconds instead of
///   the default 5 s wait. Given to every server because any of them may become a master
///   after a failover.
/// - A master pings its replicas every second (default 10 s): the replication offset
///   moves without client writes, as it does under Sentinel, so tests see that noise.
/// - `repl-timeout 10`: a replica whose stream is held by a paused [`Relay`] keeps
///   `master_link_status:up` for 10 s, well beyond any test's pause, while a stopped master
///   is still noticed in bounded time.
/// - `DEBUG` allowed from localhost (e.g. `DEBUG SLEEP`).
pub const DEFAULT_REDIS_ARGS: &[&str] = &[
    "--repl-diskless-sync",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
    "--repl-ping-replica-period",
    "1",
    "--repl-timeout",
    "10",
    "--enable-debug-command",
    "local",
];

/// True when `pid` listens on `port` and a `PING` there answers `PONG` (not `LOADING`).
pub(super) fn redis_ready(port: u16, pid: u32) -> bool {
    owns_listener(pid, port)
        && try_connect(local_addr(port))
            .and_then(|mut conn| query(&mut conn, &["PING"]))
            .is_ok_and(|reply| value_text(&reply).as_deref() == Some("PONG"))
}

/// One `redis-server` process on a free port of 127.0.0.1, with its own temp dir and no
/// persistence (`--save "" --appendonly no`), plus [`DEFAULT_REDIS_ARGS`].
///
/// Killed on drop. Helpers that talk to it (`cmd`, `info`, ...) are blocking and share one
/// cached connection with a [`CMD_TIMEOUT`].
///
/// [`CMD_TIMEOUT`]: super::CMD_TIMEOUT
pub struct RedisServer {
    /// The running process; `None` after [`RedisServer::kill`].
    process: Process,
    /// Connection used by the helper methods.
    conn: CachedConn,
    port: u16,
    /// Arguments beyond the mandatory ones, kept for [`RedisServer::restart`].
    args: Vec<String>,
    /// Working dir, log file and any RDB a replica receives. Declared last so it is
    /// deleted after the process is dead.
    dir: TempDir,
}

impl RedisServer {
    /// A master with the default arguments.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments, e.g. `&["--maxmemory", "10mb"]`.
    /// They come last, so they override [`DEFAULT_REDIS_ARGS`].
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redsplit-redis-")
            .tempdir()
            .expect("temp dir");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (port, process) = start_on_free_port(
            "redis-server",
            dir.path(),
            |port| spawn(redis_command(dir.path(), port, &args)),
            redis_ready,
        );
        Self {
            process,
            conn: CachedConn::new(local_addr(port)),
            port,
            args,
            dir,
        }
    }

    /// One attempt to start a server on `port` chosen by the caller, with extra arguments
    /// (as [`RedisServer::start_with`]): `None` when the process exits before serving
    /// (most likely another process took the port), so that the caller retries on another
    /// port. For servers that need more than one port of their own (a cluster node also
    /// listens on `port + 10000`).
    ///
    /// # Panics
    /// When the process runs but does not become ready within [`START_TIMEOUT`].
    pub(super) fn try_start_on(port: u16, args: &[String]) -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("redsplit-redis-")
            .tempdir()
            .expect("temp dir");
        let args = args.to_vec();
        match launch_and_wait(
            || spawn(redis_command(dir.path(), port, &args)),
            |pid| redis_ready(port, pid),
        ) {
            Ok(process) => Some(Self {
                process,
                conn: CachedConn::new(local_addr(port)),
                port,
                args,
                dir,
            }),
            Err((_, StartError::Exited)) => None,
            Err((mut process, StartError::TimedOut)) => {
                process.kill();
                panic!(
                    "redis-server on port {port} did not become ready\n{}",
                    log_tails(dir.path())
                );
            }
        }
    }

    /// [`RedisServer::replica_of`] with extra arguments.
    pub fn replica_of_with(master: SocketAddr, args: &[&str]) -> Self {
        let host = master.ip().to_string();
        let port = master.port().to_string();
        let mut all = vec!["--replicaof", host.as_str(), port.as_str()];
        all.extend_from_slice(args);
        Self::start_with(&all)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        local_addr(self.port)
    }

    /// The listening port; it stays the same across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server.
    ///
    /// # Panics
    /// After [`RedisServer::kill`] and before a restart.
    pub fn pid(&self) -> u32 {
        self.process.pid().expect("redis-server is not running")
    }

    /// A new blocking connection (with [`CMD_TIMEOUT`]), for a test's own use.
    ///
    /// [`CMD_TIMEOUT`]: super::CMD_TIMEOUT
    pub fn conn(&self) -> redis::Connection {
        connect(self.addr())
    }

    /// A new multiplexed async connection.
    pub async fn async_conn(&self) -> redis::aio::MultiplexedConnection {
        connect_async(self.addr()).await
    }

    /// Runs one command on the shared helper connection.
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<Value> {
        self.conn.query(args)
    }

    /// Runs one command, e.g. `cmd(&["SET", "k", "v"])`.
    ///
    /// # Panics
    /// On any error, including a server error reply; use [`RedisServer::try_cmd`] to see it.
    pub fn cmd(&self, args: &[&str]) -> Value {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.addr()))
    }

    /// `GET key` as text (`None` for a missing key).
    pub fn get(&self, key: &str) -> Option<String> {
        value_text(&self.cmd(&["GET", key]))
    }

    /// `SET key value`.
    pub fn set(&self, key: &str, value: &str) {
        self.cmd(&["SET", key, value]);
    }

    /// `INFO section` as `field → value`.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let reply = self.cmd(&["INFO", section]);
        parse_info(&value_text(&reply).expect("INFO replies with text"))
    }

    /// Calls per command since start (or `CONFIG RESETSTAT`), from `INFO commandstats`:
    /// `"get" → 3`, `"client|setinfo" → 1`. Commands applied through replication count
    /// too on a replica (a `SET` on the master adds one `set` on each replica).
    pub fn commandstats(&self) -> HashMap<String, u64> {
        self.info("commandstats")
            .into_iter()
            .filter_map(|(key, stats)| {
                let name = key.strip_prefix("cmdstat_")?.to_owned();
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name, calls))
            })
            .collect()
    }

    /// Calls of `command` (lower case, as in [`RedisServer::commandstats`]); 0 if none.
    pub fn calls(&self, command: &str) -> u64 {
        self.commandstats().get(command).copied().unwrap_or(0)
    }

    /// `role` from `INFO replication`: `"master"` or `"slave"`.
    pub fn role(&self) -> String {
        self.info("replication")
            .remove("role")
            .expect("INFO replication has role")
    }

    /// The replication offset this server has processed: `master_repl_offset` on a
    /// master, `slave_repl_offset` on a replica (its own, always current view).
    pub fn repl_offset(&self) -> u64 {
        let info = self.info("replication");
        let field = if info.get("role").map(String::as_str) == Some("master") {
            "master_repl_offset"
        } else {
            "slave_repl_offset"
        };
        info.get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{} has no {field}", self.addr()))
    }

    /// True when this replica reports `master_link_status:up`.
    pub fn link_up(&self) -> bool {
        self.info("replication")
            .get("master_link_status")
            .is_some_and(|status| status == "up")
    }

    /// Waits until this server reports `n` clients blocked (in `BLPOP`, `XREAD BLOCK`, …).
    pub fn wait_blocked_clients(&self, n: usize, timeout: Duration) {
        let want = n.to_string();
        wait_until(
            &format!("{} has {n} blocked clients", self.addr()),
            timeout,
            || self.info("clients").get("blocked_clients") == Some(&want),
        );
    }

    /// Waits until this replica reports `master_link_status:up`.
    ///
    /// Right after a full sync that does not yet mean writes flow: the master starts
    /// streaming on the replica's first ACK. [`ReplicaSet::wait_synced`] waits for that.
    pub fn wait_link_up(&self, timeout: Duration) {
        wait_until(
            &format!("{} has its master link up", self.addr()),
            timeout,
            || self.link_up(),
        );
    }

    /// Freezes the process (SIGSTOP) and returns once the kernel reports it stopped. Its
    /// sockets stay open: clients connect but get no reply.
    pub fn pause(&self) {
        self.process.signal(libc::SIGSTOP);
        let pid = self.pid();
        wait_until("redis-server is stopped", START_TIMEOUT, || {
            process_state(pid) == Some('T')
        });
    }

    /// Thaws a [`RedisServer::pause`]d process (SIGCONT).
    pub fn resume(&self) {
        self.process.signal(libc::SIGCONT);
        let pid = self.pid();
        wait_until("redis-server is running again", START_TIMEOUT, || {
            process_state(pid) != Some('T')
        });
    }

    /// SIGKILL; returns once the process is dead and reaped. Data is lost (no persistence).
    pub fn kill(&mut self) {
        self.process.kill();
        self.conn.reset();
    }

    /// Starts the server again on the same port, in the same dir, with the same arguments
    /// (killing it first if it runs). Retries the bind until [`START_TIMEOUT`] in case
    /// another process holds the port for a moment.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let launched = launch_and_wait(
                || spawn(redis_command(self.dir.path(), self.port, &self.args)),
                |pid| redis_ready(self.port, pid),
            );
            match launched {
                Ok(process) => {
                    self.process = process;
                    return;
                }
                Err((_, StartError::Exited)) if Instant::now() < deadline => {
                    std::thread::sleep(POLL_INTERVAL);
                }
                Err(_) => panic!(
                    "redis-server did not restart on port {}\n{}",
                    self.port,
                    log_tails(self.dir.path())
                ),
            }
        }
    }
}

/// The `redis-server` command line for `port` in `dir`.
fn redis_command(dir: &Path, port: u16, args: &[String]) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.current_dir(dir)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .args(DEFAULT_REDIS_ARGS)
        .args(args);
    quiet(&mut cmd, dir);
    cmd
}

/// A master and its replicas, each replica optionally behind its own [`Relay`].
///
/// Fields are public so tests can address each piece (`set.replicas[0]`,
/// `set.relays[0].pause()`).
pub struct ReplicaSet {
    /// Relays first: dropped before the servers, so replicas see their link close
    /// while the master is still there.
    pub relays: Vec<Relay>,
    /// One per replica, in the same order; the replicas' `INFO` names the relay as their
    /// master.
    pub replicas: Vec<RedisServer>,
    /// The master.
    pub master: RedisServer,
}

impl ReplicaSet {
    /// A master and `n` replicas (through one relay each when `via_relay`), returned once
    /// every replica has its link up and has processed a write made after it synced.
    pub fn start(n: usize, via_relay: bool) -> ReplicaSet {
        Self::start_with(n, via_relay, &[])
    }

    /// [`ReplicaSet::start`] with extra `redis-server` arguments for every server.
    pub fn start_with(n: usize, via_relay: bool, args: &[&str]) -> ReplicaSet {
        let master = RedisServer::start_with(args);
        let relays: Vec<Relay> = if via_relay {
            (0..n).map(|_| Relay::start(master.addr())).collect()
        } else {
            Vec::new()
        };
        let replicas: Vec<RedisServer> = (0..n)
            .map(|i| {
                let upstream = relays.get(i).map_or(master.addr(), Relay::addr);
                RedisServer::replica_of_with(upstream, args)
            })
            .collect();
        let set = ReplicaSet {
            relays,
            replicas,
            master,
        };
        for replica in &set.replicas {
            replica.wait_link_up(SYNC_TIMEOUT);
        }
        // After a diskless full sync a replica reports its link up before the master
        // streams to it (the master waits for the replica's first ACK, up to ~1 s), so
        // wait for a write made now. PUBLISH is replicated but leaves the keyspace empty.
        set.master.cmd(&["PUBLISH", "__redsplit_harness__", "sync"]);
        set.wait_synced(SYNC_TIMEOUT);
        set
    }

    /// Waits until every replica has its link up and has processed everything the master
    /// had written when this was called (`slave_repl_offset ≥ master_repl_offset`).
    pub fn wait_synced(&self, timeout: Duration) {
        let target = self.master.repl_offset();
        for (i, replica) in self.replicas.iter().enumerate() {
            wait_until(
                &format!("replica {i} reaches master offset {target}"),
                timeout,
                || replica.link_up() && replica.repl_offset() >= target,
            );
        }
    }

    /// Calls of `command` on each replica ([`RedisServer::calls`]), in replica order.
    pub fn replica_calls(&self, command: &str) -> Vec<u64> {
        self.replicas.iter().map(|r| r.calls(command)).collect()
    }

    /// The replicas' own addresses (not the relays').
    pub fn replica_addrs(&self) -> Vec<SocketAddr> {
        self.replicas.iter().map(RedisServer::addr).collect()
    }
}
