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
//! - [`RedisCluster`]: a Redis Cluster of masters and replicas, with slot migration,
//!   failover, and a replication-only relay in front of one shard's master for lag.
//! - [`Sentinels`]: real `redis-sentinel` processes monitoring a master.
//! - [`Nutcracker`]: twemproxy in front of a master, the baseline for comparisons.
//!
//! Isolation rules: ports come from [`free_port`] and a start that loses its port to
//! another process retries on a new one; every process gets a temp dir; every process is
//! killed when its owner is dropped (also while a test panics) and, through
//! `PR_SET_PDEATHSIG`, when the test binary itself dies. Nothing sleeps and hopes:
//! waits poll a condition until a deadline ([`wait_until`], [`wait_until_async`]).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use client::*;
pub use cluster::*;
pub use memory::*;
pub use nutcracker::*;
pub use process::*;
pub use proxy::*;
pub use redis_server::*;
pub use relay::*;
pub use sentinel::*;

mod client;
mod cluster;
mod memory;
mod nutcracker;
mod process;
mod proxy;
mod redis_server;
mod relay;
mod sentinel;

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
