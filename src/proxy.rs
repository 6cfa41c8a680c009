//! The state every task shares: settings derived from `proxy.yaml`, the topology view,
//! the replication monitor, metrics, the key fence and the registry of client sessions.
//!
//! Everything the hot path reads is behind an `ArcSwap`: a reload or a new view is one
//! pointer swap, and in-flight requests keep the snapshot they started with.

use crate::auth::{DenyList, Users};
use crate::backend::{Conn, Inbox};
use crate::config::Config;
use crate::fence::KeyFence;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::protocol::Limits;
use crate::replication::Monitor;
use crate::session::ClientState;
use crate::topology::View;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything derived from one version of `proxy.yaml`.
#[derive(Debug)]
pub struct Settings {
    /// The configuration itself.
    pub config: Arc<Config>,
    /// The compiled routing policy.
    pub policy: Policy,
    /// Users and their permissions.
    pub users: Users,
    /// Commands refused to everyone.
    pub deny: DenyList,
    /// Request scanning limits.
    pub limits: Limits,
    /// Short hash of the configuration.
    pub fingerprint: String,
    /// TLS for client connections, if configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Settings {
    /// Derive settings from a validated configuration. Fails only if TLS material that
    /// validated a moment ago can no longer be loaded.
    pub fn new(config: Config, generation: u64) -> Result<Settings, crate::tls::TlsError> {
        let policy = Policy::compile(&config, generation);
        let users = Users::from_config(&config);
        let deny = DenyList::from_config(&config);
        let limits = Limits {
            max_bulk_len: config.limits.proto_max_bulk_len.0,
            max_multibulk_len: config.limits.max_multibulk_len,
            max_inline_len: 64 * 1024,
        };
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::server_config(t)?),
            None => None,
        };
        let fingerprint = config.fingerprint();
        Ok(Settings {
            config: Arc::new(config),
            policy,
            users,
            deny,
            limits,
            fingerprint,
            tls,
        })
    }

    /// The backend command timeout.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.config.backend.command_timeout_ms)
    }

    /// How long the watchdog lets a request wait on a replica connection, and on a
    /// master connection (`None`: as long as it takes).
    pub fn watchdog_timeouts(&self) -> (Duration, Option<Duration>) {
        let m = self.config.backend.master_command_timeout_ms;
        (
            self.command_timeout(),
            (m > 0).then(|| Duration::from_millis(m)),
        )
    }
}

/// What the proxy learned about the servers behind it at start.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `redis_version` of the master.
    pub redis_version: String,
    /// Number of databases (`CONFIG GET databases`); 0 for a Redis Cluster, whose nodes
    /// serve database 0 only and refuse `SELECT` of any other.
    pub databases: u32,
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo {
            redis_version: "7.0.0".into(),
            databases: 16,
        }
    }
}

/// What the registry knows about one client, for `CLIENT LIST`, `CLIENT KILL` and the
/// janitor.
#[derive(Debug)]
pub struct SessionHandle {
    /// The client id (`CLIENT ID`).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The proxy's address the client connected to.
    pub local: SocketAddr,
    /// When it connected, in milliseconds since the proxy started.
    pub created_ms: u64,
    /// Its inbox (where replies arrive; also how it is woken or stopped).
    pub inbox: Inbox,
    /// The client's state as its session last published it.
    pub state: Mutex<ClientState>,
    /// Milliseconds since the proxy started, at the client's last request.
    pub last_active_ms: AtomicU64,
}

/// A master connection kept for a client ([`Proxy::reserved`]).
#[derive(Debug)]
pub struct Reserved {
    /// The connection, set up for the client's database, protocol and user.
    pub conn: Arc<Conn>,
    /// The id of the master backend it goes to.
    pub backend: u32,
}

impl SessionHandle {
    /// Whether the client was killed (`CLIENT KILL`, idle timeout): to other clients it
    /// is gone at once, as in Redis, though its task may still be closing it.
    pub fn killed(&self) -> bool {
        self.inbox.kill.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl crate::backend::Sink for SessionHandle {
    fn inbox(&self) -> &Inbox {
        &self.inbox
    }
}

/// The shared state.
#[derive(Debug)]
pub struct Proxy {
    /// Current settings.
    pub settings: ArcSwap<Settings>,
    /// Current topology view.
    pub view: ArcSwap<View>,
    /// Bumped on every new view; sessions waiting for offsets watch it.
    pub view_version: tokio::sync::watch::Sender<u64>,
    /// The replication monitor (of the master and its replicas; in a cluster, each shard
    /// has one of its own in [`Proxy::cluster`]).
    pub monitor: Arc<Monitor>,
    /// A Redis Cluster's shards and slot map (empty unless `backend.cluster` is set).
    pub cluster: crate::cluster::Cluster,
    /// Metrics.
    pub metrics: Metrics,
    /// Connected clients.
    pub sessions: DashMap<u64, Arc<SessionHandle>>,
    /// Master connections opened for clients, by client id, by another client's `CLIENT
    /// TRACKING on REDIRECT <id>` while the target had none of its own (its commands
    /// share the proxy's connections): Redis sends the invalidations to it, and the
    /// target takes it as its dedicated connection when it next needs one (`SUBSCRIBE
    /// __redis__:invalidate`). Closed when the target leaves.
    pub reserved: DashMap<u64, Reserved>,
    next_session: AtomicU64,
    next_generation: AtomicU64,
    /// Facts about the backends.
    pub info: ArcSwap<ServerInfo>,
    /// When the proxy started.
    pub started: Instant,
    /// The configuration file, if any (for reloads).
    pub config_path: Option<std::path::PathBuf>,
    /// Wakes topology discovery at once (a write was refused with `READONLY`: the node
    /// the proxy writes to is no longer the master).
    pub recheck: tokio::sync::Notify,
    /// When each recently written key's write was acknowledged
    /// (`read_your_writes: key`).
    pub key_fence: KeyFence,
    /// The master's client pause, as the `CLIENT PAUSE`s sent through the proxy set it.
    pub pause: ClientPause,
}

/// Until when the master pauses clients' writes (or all their commands), as the proxy
/// sent it `CLIENT PAUSE timeout [WRITE|ALL]` (and `CLIENT UNPAUSE`). While it does, a
/// command Redis would hold (a write, or one that may replicate: `PUBLISH`, `PFCOUNT`,
/// `EVAL`) is sent as a blocking command is, on a connection of its client's own: held
/// there, it holds up no other client's requests on a shared connection, and its
/// client's later commands wait for it, as on Redis.
#[derive(Debug, Default)]
pub struct ClientPause {
    /// Proxy uptime in ms at which the pause ends (0: no pause).
    until_ms: AtomicU64,
    /// Every command is paused, not only writes.
    all: std::sync::atomic::AtomicBool,
}

impl ClientPause {
    /// A pause until `until_ms` (proxy uptime), of every command when `all`. As on Redis,
    /// a pause during another lasts to the later end, in the stricter mode.
    pub fn pause(&self, until_ms: u64, all: bool) {
        if self.until_ms.load(Ordering::Relaxed) == 0 {
            self.all.store(all, Ordering::Relaxed);
        } else if all {
            self.all.store(true, Ordering::Relaxed);
        }
        self.until_ms.fetch_max(until_ms.max(1), Ordering::Relaxed);
    }

    /// `CLIENT UNPAUSE`.
    pub fn unpause(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
        self.all.store(false, Ordering::Relaxed);
    }

    /// Whether the master holds, at `now_ms`, a command that writes or may replicate
    /// (`write`), or another one.
    #[inline]
    pub fn holds(&self, now_ms: u64, write: bool) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms < until && (write || self.all.load(Ordering::Relaxed))
    }

    /// Whether a pause was sent that may still be on (a cheap check before [`holds`]).
    ///
    /// [`holds`]: ClientPause::holds
    #[inline]
    pub fn maybe(&self) -> bool {
        self.until_ms.load(Ordering::Relaxed) != 0
    }
}

impl Proxy {
    /// Shared state for a validated configuration.
    pub fn new(
        config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> Result<Arc<Proxy>, crate::tls::TlsError> {
        let cluster = config.backend.uses_cluster();
        let settings = Settings::new(config, 1)?;
        let key_fence = KeyFence::new(settings.policy.key_fence_capacity);
        key_fence.configure(
            settings.policy.key_fence,
            settings.policy.key_fence_capacity,
            Instant::now(),
        );
        Ok(Arc::new(Proxy {
            settings: ArcSwap::from_pointee(settings),
            view: ArcSwap::from_pointee(View::empty()),
            view_version: tokio::sync::watch::channel(0).0,
            monitor: Arc::new(Monitor::new()),
            cluster: crate::cluster::Cluster::default(),
            metrics: Metrics::default(),
            sessions: DashMap::new(),
            reserved: DashMap::new(),
            next_session: AtomicU64::new(1),
            next_generation: AtomicU64::new(2),
            info: ArcSwap::from_pointee(ServerInfo {
                databases: if cluster { 0 } else { 16 },
                ..ServerInfo::default()
            }),
            started: Instant::now(),
            config_path,
            recheck: tokio::sync::Notify::new(),
            key_fence,
            pause: ClientPause::default(),
        }))
    }

    /// A new client id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A new policy generation.
    pub fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Milliseconds since start (a cheap clock for activity stamps).
    #[inline]
    pub fn uptime_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_millis() as u64
    }
}
