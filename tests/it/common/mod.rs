//! Shared harness for the integration tests: real Redis processes and a lag-injecting relay.
//!
//! Every test builds its own world and owns it:
//! - [`RedisServer`]: one `redis-server` on a free port, in its own temp dir, with no
//!   persistence. Killed on drop.
//! - [`Relay`]: a TCP relay placed between a replica and its master. It can hold
//!   ([`Relay::pause`]), delay ([`Relay::set_delay`]) or cut ([`Relay::cut`]) the
//!   replication stream, which is how tests make a replica lag for real.
//! - [`ReplicaSet`]: a master and `n` replicas, optionally each behind its own relay,
//!   returned only once every replica is synced.
//! - [`Sentinels`]: real `redis-sentinel` processes monitoring a master.
//! - [`Nutcracker`]: twemproxy in front of a master, the baseline for comparisons.
//!
//! Isolation rules: ports come from [`free_port`] and a start that loses its port to
//! another process retries on a new one; every process gets a temp dir; every process is
//! killed when its owner is dropped (also while a test panics) and, through
//! `PR_SET_PDEATHSIG`, when the test binary itself dies. Nothing sleeps and hopes:
//! waits poll a condition until a deadline ([`wait_until`], [`wait_until_async`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redis::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// How often the wait helpers re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Deadline for a process to start listening and answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for replicas to connect and sync, Sentinels to discover each other, and
/// similar background convergence.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// Connect, read and write timeout of the harness's own client connections, so that a
/// paused or wedged server fails a test instead of hanging it.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(5);
/// How many fresh ports a start tries when the process exits before listening (usually
/// because another process took the port between [`free_port`] and its bind).
const START_ATTEMPTS: usize = 5;

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

// ---------------------------------------------------------------------------------------
// Ports and waiting
// ---------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before the caller binds it; the process starters here
/// retry on a new port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `127.0.0.1:port`.
pub fn local_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Polls `cond` every [`POLL_INTERVAL`] until it returns true.
///
/// # Panics
/// When `timeout` passes first; the message names `what` ("replica 0 caught up").
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The async twin of [`wait_until`], for `#[tokio::test]`s: `cond` is awaited, and the
/// pause between polls yields to the runtime instead of blocking it.
///
/// # Panics
/// When `timeout` passes first.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until a TCP connect to `addr` succeeds (e.g. the proxy under test is listening).
///
/// # Panics
/// When `timeout` passes first.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    wait_until(&format!("{addr} accepts connections"), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// The async twin of [`wait_for_port`].
pub async fn wait_for_port_async(addr: SocketAddr, timeout: Duration) {
    wait_until_async(
        &format!("{addr} accepts connections"),
        timeout,
        || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Redis clients
// ---------------------------------------------------------------------------------------

/// A `redis::Client` for `addr` that does not send `CLIENT SETINFO` on connect, so the
/// harness adds no commands of its own to what a server or proxy sees (and twemproxy,
/// which rejects unknown commands, keeps the connection).
pub fn client(addr: SocketAddr) -> redis::Client {
    let info = redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port());
    let info = redis::IntoConnectionInfo::into_connection_info(info)
        .expect("connection info")
        .set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    redis::Client::open(info).expect("redis client")
}

/// A blocking connection to `addr` with [`CMD_TIMEOUT`] for connect, reads and writes.
pub fn try_connect(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let conn = client(addr).get_connection_with_timeout(CMD_TIMEOUT)?;
    conn.set_read_timeout(Some(CMD_TIMEOUT))?;
    conn.set_write_timeout(Some(CMD_TIMEOUT))?;
    Ok(conn)
}

/// [`try_connect`], panicking with the address on failure.
pub fn connect(addr: SocketAddr) -> redis::Connection {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A multiplexed async connection to `addr` (tokio), with [`CMD_TIMEOUT`] for connect
/// and for each response.
pub async fn connect_async(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CMD_TIMEOUT))
        .set_response_timeout(Some(CMD_TIMEOUT));
    client(addr)
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Sends one command, given as its words (`&["SET", "k", "v"]`), on `conn`.
///
/// A server error reply (`-ERR ...`) comes back as `Err`.
pub fn query(conn: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let (name, rest) = args.split_first().expect("a command needs a name");
    redis::cmd(name).arg(rest).query(conn)
}

/// The text of a string-like reply (bulk, simple or verbatim string, `OK`), else `None`
/// (including for nil).
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// Parses an `INFO` reply into its `field:value` lines (section headers dropped).
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Parses a RESP2 flat field/value array (as in `SENTINEL REPLICAS` entries).
fn parse_flat_map(value: &Value) -> HashMap<String, String> {
    let Value::Array(items) = value else {
        return HashMap::new();
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((value_text(k)?, value_text(v)?)),
            _ => None,
        })
        .collect()
}

/// One lazily opened, reused blocking connection, so that tight polling loops do not
/// open (and leave in `TIME_WAIT`) a socket per poll. Dropped after any error, so a
/// timed-out or broken connection is never reused.
struct CachedConn {
    addr: SocketAddr,
    conn: Mutex<Option<redis::Connection>>,
}

impl CachedConn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: Mutex::new(None),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<redis::Connection>> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `args` on the cached connection. If a reused connection turns out closed
    /// (the server was restarted, or ran `CLIENT KILL`, as Sentinel does on promotion),
    /// the command is sent once more on a new connection; a timeout is not retried.
    fn query(&self, args: &[&str]) -> redis::RedisResult<Value> {
        let mut slot = self.slot();
        let reused = slot.is_some();
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(try_connect(self.addr)?),
        };
        match query(conn, args) {
            Ok(reply) => Ok(reply),
            Err(e) if reused && e.is_connection_dropped() && !e.is_timeout() => {
                *slot = None;
                let conn = slot.insert(try_connect(self.addr)?);
                let reply = query(conn, args);
                if reply.is_err() {
                    *slot = None;
                }
                reply
            }
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    fn reset(&self) {
        *self.slot() = None;
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Starts `cmd` so that it dies with the test process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, and test
/// threads (or tokio blocking threads) come and go; so children are forked by one
/// harness thread that lives as long as the process. Drop impls kill processes in the
/// normal case; this covers a test binary that is itself killed (a nextest timeout,
/// Ctrl-C), which would otherwise leak servers.
fn spawn(mut cmd: Command) -> Child {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        tx
    });
    let parent = libc::pid_t::try_from(std::process::id()).expect("pid fits pid_t");
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .expect("spawner thread is alive");
    reply_rx
        .recv()
        .expect("spawner thread replies")
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A child process that is SIGKILLed and reaped when dropped.
struct Process {
    child: Option<Child>,
}

impl Process {
    fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True once the process has exited (it is then reaped).
    fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The exit status once the process has exited, else `None` (still running).
    fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("process was not killed");
        child.try_wait().expect("wait for a child")
    }

    /// SIGKILL, then wait until the process is gone. No-op if already dead.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("process is running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: plain syscall on our own child, which is not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            io::Error::last_os_error()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T` for stopped, ...).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may contain spaces and parentheses.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Inodes of the sockets listening on 127.0.0.1/0.0.0.0 `port`, from `/proc/net/tcp`.
fn listening_inodes(port: u16) -> HashSet<u64> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return HashSet::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == "0A";
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Whether process `pid` itself holds a socket listening on `port`: proof that a start
/// won its port rather than finding someone else's server there.
fn owns_listener(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// The last lines of every `*.log` file in `dir` (the process's own log, and
/// `output.log` with what it printed before opening it), for failure messages.
fn log_tails(dir: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    let mut out = String::new();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let _ = writeln!(out, "--- last lines of {} ---", log.display());
        for line in &lines[lines.len().saturating_sub(20)..] {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Why a launched process is not serving.
enum StartError {
    /// It exited: most likely its port was taken. Worth a retry on another port.
    Exited,
    /// It is running but did not become ready in time.
    TimedOut,
}

/// Launches with `launch` and polls `ready` until it holds, the process exits, or
/// [`START_TIMEOUT`] passes.
fn launch_and_wait(
    launch: impl FnOnce() -> Child,
    mut ready: impl FnMut(u32) -> bool,
) -> Result<Process, (Process, StartError)> {
    let mut process = Process::new(launch());
    let pid = process.pid().expect("just started");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if process.has_exited() {
            return Err((process, StartError::Exited));
        }
        if ready(pid) {
            return Ok(process);
        }
        if Instant::now() >= deadline {
            return Err((process, StartError::TimedOut));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Starts a server on a free port, retrying on a new port when the process exits before
/// it is ready. `launch(port)` starts it; `ready(port, pid)` says it serves.
fn start_on_free_port(
    what: &str,
    dir: &Path,
    mut launch: impl FnMut(u16) -> Child,
    mut ready: impl FnMut(u16, u32) -> bool,
) -> (u16, Process) {
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        match launch_and_wait(|| launch(port), |pid| ready(port, pid)) {
            Ok(process) => return (port, process),
            Err((_, StartError::Exited)) if attempt < START_ATTEMPTS => continue,
            Err((mut process, error)) => {
                process.kill();
                let how = match error {
                    StartError::Exited => "exited before serving",
                    StartError::TimedOut => "did not become ready",
                };
                panic!("{what} on port {port} {how}\n{}", log_tails(dir));
            }
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// True when `pid` listens on `port` and a `PING` there answers `PONG` (not `LOADING`).
fn redis_ready(port: u16, pid: u32) -> bool {
    owns_listener(pid, port)
        && try_connect(local_addr(port))
            .and_then(|mut conn| query(&mut conn, &["PING"]))
            .is_ok_and(|reply| value_text(&reply).as_deref() == Some("PONG"))
}

// ---------------------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------------------

/// One `redis-server` process on a free port of 127.0.0.1, with its own temp dir and no
/// persistence (`--save "" --appendonly no`), plus [`DEFAULT_REDIS_ARGS`].
///
/// Killed on drop. Helpers that talk to it (`cmd`, `info`, ...) are blocking and share one
/// cached connection with a [`CMD_TIMEOUT`].
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

/// No stdin; stdout and stderr (where a process complains before its log is open) go to
/// `output.log` in `dir`, which each launch starts afresh.
fn quiet(cmd: &mut Command, dir: &Path) {
    let out = std::fs::File::create(dir.join("output.log")).expect("create output.log");
    let err = out.try_clone().expect("clone output.log handle");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
}

// ---------------------------------------------------------------------------------------
// Relay
// ---------------------------------------------------------------------------------------

/// What the relay's connections obey; changed through a `watch` channel so every
/// connection task sees a change at once.
#[derive(Clone, Debug, Default)]
struct RelayState {
    /// Hold master→replica bytes.
    paused: bool,
    /// Extra time each master→replica chunk waits before it is written.
    delay: Duration,
    /// Bumped by [`Relay::cut`]; a connection closes when it differs from the value it
    /// was accepted under.
    cut_generation: u64,
    /// Set on drop: stop accepting, close everything.
    shutdown: bool,
}

/// A TCP relay between a replica and its master, running on its own thread and tokio
/// runtime (so it works from sync tests and from `#[tokio::test]`s alike).
///
/// Point a replica at [`Relay::addr`]; each connection it accepts is relayed to the
/// target. The replica→master direction is copied as is (so ACKs flow and the master
/// keeps the replica); the master→replica direction can be held, delayed, or cut, which
/// makes the replica lag for real while its link stays up.
pub struct Relay {
    addr: SocketAddr,

    control: watch::Sender<RelayState>,
    /// Open relayed connections: id → the cut generation they were accepted under.
    open: Arc<Mutex<HashMap<usize, u64>>>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay to `target` on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> Relay {
        let (control, state) = watch::channel(RelayState::default());
        let open = Arc::new(Mutex::new(HashMap::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = {
            let (open, accepted) = (open.clone(), accepted.clone());
            std::thread::Builder::new()
                .name(format!("relay-{target}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("relay runtime");
                    runtime.block_on(relay_main(target, state, open, accepted, addr_tx));
                })
                .expect("start the relay thread")
        };
        let addr = addr_rx.recv().expect("relay bound its port");
        Relay {
            addr,

            control,
            open,
            accepted,
            thread: Some(thread),
        }
    }

    /// Where to point the replica (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds every master→replica byte read from now on (kept in order, not dropped).
    /// The connection stays up, so the replica keeps `master_link_status:up` (until its
    /// `repl-timeout`) and serves stale data.
    pub fn pause(&self) {
        self.control.send_modify(|s| s.paused = true);
    }

    /// Releases the held bytes, in order, and forwards normally again.
    pub fn resume(&self) {
        self.control.send_modify(|s| s.paused = false);
    }

    /// Delays each master→replica chunk read from now on by `delay` after it was read.
    /// Chunks wait concurrently (a queue of release times), so order and throughput are
    /// kept: the stream arrives `delay` late, not `delay` per chunk. Zero turns it off.
    pub fn set_delay(&self, delay: Duration) {
        self.control.send_modify(|s| s.delay = delay);
    }

    /// Closes every relayed connection (both sides) and returns once they are closed;
    /// held bytes are dropped. New connections (a replica reconnecting) are accepted.
    pub fn cut(&self) {
        let mut generation = 0;
        self.control.send_modify(|s| {
            s.cut_generation += 1;
            generation = s.cut_generation;
        });
        wait_until("relayed connections are closed", START_TIMEOUT, || {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            open.values().all(|&g| g >= generation)
        });
    }

    /// Relayed connections currently open.
    pub fn connections(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connections accepted since start (a replica reconnecting adds one).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.control.send_modify(|s| s.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The relay's accept loop. Returning drops the runtime, and with it every connection.
async fn relay_main(
    target: SocketAddr,
    state: watch::Receiver<RelayState>,
    open: Arc<Mutex<HashMap<usize, u64>>>,
    accepted: Arc<AtomicUsize>,
    addr_tx: mpsc::Sender<SocketAddr>,
) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("relay bind");
    addr_tx
        .send(listener.local_addr().expect("relay address"))
        .expect("Relay::start waits for the address");
    let mut shutdown = state.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| s.shutdown) => return,
            accept = listener.accept() => {
                let Ok((replica, _)) = accept else {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    continue;
                };
                let id = accepted.fetch_add(1, Ordering::SeqCst);
                let generation = state.borrow().cut_generation;
                open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, generation);
                let guard = OpenGuard { id, open: open.clone() };
                tokio::spawn(relay_connection(replica, target, generation, state.clone(), guard));
            }
        }
    }
}

/// Removes a connection from the open set when its task ends or is dropped.
struct OpenGuard {
    id: usize,
    open: Arc<Mutex<HashMap<usize, u64>>>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Relays one replica connection to `target` until either side closes or a cut.
async fn relay_connection(
    replica: tokio::net::TcpStream,
    target: SocketAddr,
    generation: u64,
    state: watch::Receiver<RelayState>,
    _guard: OpenGuard,
) {
    let Ok(master) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let _ = replica.set_nodelay(true);
    let _ = master.set_nodelay(true);
    let (mut replica_rd, mut replica_wr) = replica.into_split();
    let (mut master_rd, mut master_wr) = master.into_split();

    let upstream = tokio::io::copy(&mut replica_rd, &mut master_wr);

    // Master→replica: the reader stamps each chunk with its release time as it arrives;
    // the writer releases chunks in order, each at its time and only while not paused.
    let (queue_tx, mut queue_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader_state = state.clone();
    let reader = async move {
        loop {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            match master_rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let release = Instant::now() + reader_state.borrow().delay;
                    if queue_tx.send((release, buf.freeze())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let mut writer_state = state.clone();
    let writer = async move {
        while let Some((release, chunk)) = queue_rx.recv().await {
            tokio::time::sleep_until(release.into()).await;
            if writer_state.wait_for(|s| !s.paused).await.is_err()
                || replica_wr.write_all(&chunk).await.is_err()
            {
                return;
            }
        }
        let _ = replica_wr.shutdown().await;
    };
    let downstream = async { tokio::join!(reader, writer) };

    let mut cut_state = state;
    let cut = cut_state.wait_for(|s| s.cut_generation != generation || s.shutdown);

    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut => {}
    }
}

// ---------------------------------------------------------------------------------------
// ReplicaSet
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Sentinels
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Nutcracker
// ---------------------------------------------------------------------------------------

/// twemproxy (`nutcracker`) in front of one Redis, for benchmarks and comparisons.
/// Killed on drop.
pub struct Nutcracker {
    _process: Process,
    port: u16,

    /// Holds the config, pid file and log.
    _dir: TempDir,
}

impl Nutcracker {
    /// Starts nutcracker with one pool forwarding to `master` (`redis: true`, one server
    /// connection, preconnected); returns once it listens on its proxy and stats ports.
    pub fn start(master: SocketAddr) -> Nutcracker {
        let dir = tempfile::Builder::new()
            .prefix("redsplit-nutcracker-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("nutcracker.yml");
        let log = dir.path().join("nutcracker.log");
        let stats_port = std::cell::Cell::new(0);
        let (port, process) = start_on_free_port(
            "nutcracker",
            dir.path(),
            |port| {
                stats_port.set(free_port());
                let text = format!(
                    "redsplit:\n  \
                       listen: 127.0.0.1:{port}\n  \
                       hash: fnv1a_64\n  \
                       distribution: ketama\n  \
                       redis: true\n  \
                       preconnect: true\n  \
                       auto_eject_hosts: false\n  \
                       server_connections: 1\n  \
                       servers:\n    \
                         - {master}:1\n"
                );
                std::fs::write(&conf, text).expect("write nutcracker.yml");
                let mut cmd = Command::new("nutcracker");
                cmd.current_dir(dir.path())
                    .arg("--conf-file")
                    .arg(&conf)
                    .arg("--output")
                    .arg(&log)
                    .arg("--pid-file")
                    .arg(dir.path().join("nutcracker.pid"))
                    .args(["--stats-addr", "127.0.0.1"])
                    .args(["--stats-port", &stats_port.get().to_string()])
                    .args(["--verbose", "4"]);
                quiet(&mut cmd, dir.path());
                spawn(cmd)
            },
            |port, pid| owns_listener(pid, port) && owns_listener(pid, stats_port.get()),
        );
        Nutcracker {
            _process: process,
            port,

            _dir: dir,
        }
    }

    /// The proxy address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        local_addr(self.port)
    }
}

// ---------------------------------------------------------------------------------------
// The proxy under test

/// A redsplit instance running in this test process, on its own runtime, listening on a
/// free port. Stopped (gracefully, briefly) on drop.
pub struct ProxyUnderTest {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin endpoint, if enabled.
    pub admin_addr: Option<SocketAddr>,
    proxy: Arc<redsplit::proxy::Proxy>,
    /// Tells the proxy's thread to shut the proxy down.
    stop: Option<std::sync::mpsc::Sender<()>>,
    /// The thread driving the proxy's runtime (built as the binary builds it, from
    /// `workers`), in `block_on` until told to stop.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The proxy allocates in this process: no memory measurement runs meanwhile.
    _memory: SharedMemory,
}

impl ProxyUnderTest {
    /// Start with a YAML configuration; `listen` and `admin.listen` default to port 0.
    pub fn start(yaml: &str) -> ProxyUnderTest {
        let mut cfg = redsplit::config::Config::from_yaml(yaml)
            .unwrap_or_else(|e| panic!("test config: {e}"));
        if !yaml.contains("\nlisten:") && !yaml.starts_with("listen:") {
            cfg.listen = "127.0.0.1:0".into();
        }
        if !yaml.contains("admin:") {
            cfg.admin.listen = "127.0.0.1:0".into();
        }
        Self::start_config(cfg)
    }

    /// Start from a configuration file (reloads watch it).
    pub fn start_file(path: &Path) -> ProxyUnderTest {
        let cfg =
            redsplit::config::Config::load(path).unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_with_path(cfg, Some(path.to_path_buf()))
    }

    /// Start with a configuration value.
    pub fn start_config(cfg: redsplit::config::Config) -> ProxyUnderTest {
        Self::start_with_path(cfg, None)
    }

    fn start_with_path(cfg: redsplit::config::Config, path: Option<PathBuf>) -> ProxyUnderTest {
        let memory = shared_memory();
        // RUST_LOG=redsplit=debug shows the proxy's logs in a test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let rt = redsplit::server::runtime(cfg.workers).expect("runtime");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let handle = match redsplit::server::start(cfg, path).await {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = started_tx.send(Ok((handle.addr, handle.admin_addr, handle.proxy.clone())));
                // Wait for the stop on a blocking thread: this one runs the proxy.
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                handle.shutdown(Duration::from_millis(200)).await;
            });
            rt.shutdown_background();
        });
        let (addr, admin_addr, proxy) = started_rx
            .recv()
            .expect("the proxy's thread answers")
            .unwrap_or_else(|e| panic!("proxy starts: {e}"));
        ProxyUnderTest {
            addr,
            admin_addr,
            proxy,
            stop: Some(stop),
            thread: Some(thread),
            _memory: memory,
        }
    }

    /// The shared state (view, metrics, settings).
    pub fn state(&self) -> &Arc<redsplit::proxy::Proxy> {
        &self.proxy
    }

    /// A client connection to the proxy.
    pub fn conn(&self) -> redis::Connection {
        connect(self.addr)
    }

    /// Wait until the monitor sees the master up and `replicas` healthy replicas.
    pub fn wait_healthy(&self, replicas: usize) {
        let state = self.state().clone();
        wait_until("the proxy sees a healthy topology", SYNC_TIMEOUT, || {
            let v = state.view.load();
            v.master_up()
                && v.replicas
                    .iter()
                    .filter(|r| r.health == redsplit::topology::Health::Ok)
                    .count()
                    >= replicas
        });
    }

    /// Wait until `replicas` replicas are in the read pool of budget 0.
    pub fn wait_in_pool(&self, replicas: usize) {
        let state = self.state().clone();
        wait_until("replicas join the read pool", SYNC_TIMEOUT, || {
            let v = state.view.load();
            v.master_up() && v.replicas.iter().filter(|r| r.in_pool & 1 == 1).count() >= replicas
        });
    }
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A minimal proxy configuration for a replica set.
pub fn proxy_yaml(set: &ReplicaSet, extra: &str) -> String {
    let replicas: Vec<String> = set
        .replicas
        .iter()
        .map(|r| format!("\"{}\"", r.addr()))
        .collect();
    format!(
        "backend:\n  master: \"{}\"\n  replicas: [{}]\n{}",
        set.master.addr(),
        replicas.join(", "),
        extra
    )
}

// ---------------------------------------------------------------------------------------
// Raw client sockets and replies
// ---------------------------------------------------------------------------------------

/// The text of a reply ([`value_text`]), or its debug form for other kinds.
pub fn text(v: &Value) -> String {
    value_text(v).unwrap_or_else(|| format!("{v:?}"))
}

/// A raw client socket to `addr` with [`CMD_TIMEOUT`] on reads and writes, no Nagle.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(CMD_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(CMD_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads exactly `n` bytes, or fewer if the peer closes or a read times out first.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        match s.read(&mut buf[..(n - out.len()).min(4096)]) {
            Ok(0) | Err(_) => break,
            Ok(got) => out.extend_from_slice(&buf[..got]),
        }
    }
    out
}

/// Reads until at least `want` bytes arrived (all of the last read is kept), the peer
/// closed or a read timed out; what arrived.
pub fn read_at_least(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(got) => out.extend_from_slice(&buf[..got]),
        }
    }
    out
}

/// Reads one whole RESP reply (e.g. a `HELLO` map) and returns its bytes.
///
/// # Panics
/// When the peer closes, a read times out or the bytes are not RESP. The peer must not
/// have sent anything after that reply yet (what follows in the same read is dropped).
pub fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut scanner = redsplit::protocol::ReplyScanner::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(len) = scanner.scan(&got).expect("a RESP reply") {
            got.truncate(len);
            return got;
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("closed after {got:?}, in the middle of a reply"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading a reply after {got:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Memory measurements
// ---------------------------------------------------------------------------------------

/// Which tests hold the process: `Some(n)` while `n` [`shared_memory`] guards are out
/// (proxies in this process count, see [`ProxyUnderTest`]), `None` while one test
/// measures memory ([`exclusive_memory`]).
static MEMORY: Mutex<Option<usize>> = Mutex::new(Some(0));
static MEMORY_FREED: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    /// Whether this thread holds the exclusive guard (its own proxies then take none).
    static MEASURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn memory_state() -> MutexGuard<'static, Option<usize>> {
    MEMORY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that measures this process's memory: while it lives, no other test
/// runs an in-process proxy or holds a [`shared_memory`] guard.
pub struct ExclusiveMemory(());

/// Waits until no shared guard is out and takes the process for a measurement.
///
/// The in-process proxy allocates with glibc's malloc here (the binary uses jemalloc),
/// whose mmap threshold rises to the size of each large block freed, after which large
/// buffers come from the heap and up to twice that stays resident after they are freed.
/// The threshold is pinned at its default, once, so large buffers are mapped and
/// unmapped as they come and go and the resident size follows what the proxy holds.
pub fn exclusive_memory() -> ExclusiveMemory {
    static PINNED: std::sync::Once = std::sync::Once::new();
    PINNED.call_once(|| {
        // SAFETY: mallopt only sets a malloc parameter; any value is valid to pass.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    });
    let mut state = memory_state();
    while *state != Some(0) {
        state = MEMORY_FREED.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    *state = None;
    MEASURING.with(|m| m.set(true));
    ExclusiveMemory(())
}

impl Drop for ExclusiveMemory {
    fn drop(&mut self) {
        MEASURING.with(|m| m.set(false));
        *memory_state() = Some(0);
        MEMORY_FREED.notify_all();
    }
}

/// Held while a test (or a proxy) allocates in this process without measuring; many at
/// once. Taken again from a thread that already holds one, it never blocks (a measuring
/// test waits until every guard is gone), so nesting cannot deadlock.
pub struct SharedMemory {
    counted: bool,
}

/// Waits while a measurement runs (unless this thread is the one measuring).
pub fn shared_memory() -> SharedMemory {
    if MEASURING.with(std::cell::Cell::get) {
        return SharedMemory { counted: false };
    }
    let mut state = memory_state();
    loop {
        match state.as_mut() {
            Some(n) => {
                *n += 1;
                return SharedMemory { counted: true };
            }
            None => {
                state = MEMORY_FREED.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.counted {
            let mut state = memory_state();
            if let Some(n) = state.as_mut() {
                *n -= 1;
            }
            drop(state);
            MEMORY_FREED.notify_all();
        }
    }
}

/// Resident memory of this process, in MB.
pub fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

// ---------------------------------------------------------------------------------------
// The proxy binary
// ---------------------------------------------------------------------------------------

/// The `redsplit` binary of this build run as a child process, for what only the binary
/// does (signals, exit status). Like every process of the harness it is SIGKILLed when
/// dropped and when the test process dies; its output goes to `output.log` in its dir.
pub struct ProxyBinary {
    process: Process,
    dir: PathBuf,
}

impl ProxyBinary {
    /// `redsplit run --config <config>`, its output in the config file's directory.
    pub fn run(config: &Path) -> ProxyBinary {
        ProxyBinary::run_with(config, &[])
    }

    /// `redsplit <args> run --config <config>`: stdout to `stdout.log` and stderr to
    /// `output.log`, in the config file's directory.
    pub fn run_with(config: &Path, args: &[&str]) -> ProxyBinary {
        let dir = config
            .parent()
            .expect("the config file is in a directory")
            .to_owned();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redsplit"));
        cmd.args(args).arg("run").arg("--config").arg(config);
        let out = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let err = std::fs::File::create(dir.join("output.log")).expect("create output.log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        ProxyBinary {
            process: Process::new(spawn(cmd)),
            dir,
        }
    }

    /// Sends `signal` (`libc::SIGHUP`, `libc::SIGTERM`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// Waits until the process exits and returns its status.
    ///
    /// # Panics
    /// When it still runs after `timeout` (the message carries its output).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("the redsplit binary exits", timeout, || {
            status = self.process.try_wait();
            status.is_some()
        });
        status.expect("exited")
    }

    /// What it wrote to stderr so far (its logs).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("output.log")).unwrap_or_default()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Other programs
// ---------------------------------------------------------------------------------------

/// What a program run by [`run_program`] left behind.
pub struct Finished {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Runs `cmd` to its end as a child that dies with the test process, stdin closed and
/// its output captured (in files of a temp dir, so that no pipe fills up).
///
/// # Panics
/// When it cannot start, or still runs after `timeout`: it is killed, and the message
/// names `what` and carries its output so far.
pub fn run_program(what: &str, mut cmd: Command, timeout: Duration) -> Finished {
    let dir = TempDir::new().expect("temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut process = Process::new(spawn(cmd));
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            process.kill();
            panic!(
                "{what} still runs after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    Finished {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}
