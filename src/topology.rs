//! Backends and the immutable snapshot of their state that the hot path reads.
//!
//! A [`View`] says who the master is, which replicas exist, and for each replica how
//! far behind it is (offset gap in bytes, and a staleness bound: the time of the latest
//! master offset sample the replica has reached). The replication monitor builds a new
//! `View` after every poll and publishes it with one atomic pointer swap; sessions load
//! it without locks.

use crate::backend::{ConnParams, Pool, Role};
use crate::config::Config;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One Redis server the proxy talks to.
#[derive(Debug)]
pub struct Backend {
    /// Unique for the life of the process.
    pub id: u32,
    /// `host:port`.
    pub addr: String,
    /// Master or replica, as configured or discovered.
    pub role: Role,
    /// Shared connections.
    pub pool: Pool,
    /// Requests routed here.
    pub served: AtomicU64,
}

static NEXT_BACKEND_ID: AtomicU32 = AtomicU32::new(1);

impl Backend {
    /// A backend with a connection pool built from `cfg.backend`.
    pub fn new(addr: &str, role: Role, cfg: &Config) -> Arc<Backend> {
        let b = &cfg.backend;
        let params = ConnParams {
            addr: addr.to_string(),
            role,
            username: b.username.clone(),
            password: b.password.clone(),
            connect_timeout: Duration::from_millis(b.connect_timeout_ms),
            tls: b
                .tls
                .as_ref()
                .map(|t| crate::tls::backend_target(t, addr).map_err(Arc::from)),
            tls_source: b.tls.clone(),
        };
        Arc::new(Backend {
            id: NEXT_BACKEND_ID.fetch_add(1, Ordering::Relaxed),
            addr: addr.to_string(),
            role,
            pool: Pool::new(
                params,
                b.connections,
                Duration::from_millis(b.reconnect_min_ms),
                Duration::from_millis(b.reconnect_max_ms),
            ),
            served: AtomicU64::new(0),
        })
    }

    /// `replica 127.0.0.1:6380`.
    pub fn label(&self) -> String {
        format!("{} {}", self.role.as_str(), self.addr)
    }

    /// Requests in flight on this backend's shared connections.
    #[inline]
    pub fn outstanding(&self) -> u64 {
        self.pool.outstanding.load(Ordering::Relaxed)
    }
}

/// Why a replica may not serve reads (or `Ok`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Link up, synced, not loading, same replication history as the master.
    Ok,
    /// Not polled successfully yet.
    Unknown,
    /// The replica does not answer.
    Unreachable,
    /// It reports its link to the master down.
    LinkDown,
    /// A full sync is in progress.
    Syncing,
    /// It is loading its dataset.
    Loading,
    /// Its replication ID differs from the master's: offsets are not comparable.
    OtherHistory,
    /// It says it is not a replica.
    NotReplica,
}

impl Health {
    /// A short word for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Unknown => "unknown",
            Health::Unreachable => "unreachable",
            Health::LinkDown => "link_down",
            Health::Syncing => "syncing",
            Health::Loading => "loading",
            Health::OtherHistory => "other_history",
            Health::NotReplica => "not_replica",
        }
    }
}

/// The master as last seen.
#[derive(Clone, Debug)]
pub struct MasterView {
    /// The backend.
    pub backend: Arc<Backend>,
    /// Whether its last poll succeeded and it says it is a master.
    pub up: bool,
    /// Whether it is known to be down (its last poll failed); false before any poll.
    pub down: bool,
    /// Its replication offset at the last poll.
    pub offset: Option<u64>,
    /// Its replication ID.
    pub replid: Option<Arc<str>>,
}

/// One replica as last seen.
#[derive(Clone, Debug)]
pub struct ReplicaView {
    /// The backend.
    pub backend: Arc<Backend>,
    /// Whether it may serve reads at all.
    pub health: Health,
    /// Whether it answers polls (it may still serve reads while the master is down).
    pub reachable: bool,
    /// Its own processed replication offset.
    pub offset: Option<u64>,
    /// Master offset minus replica offset at the last polls.
    pub lag_bytes: Option<u64>,
    /// The replica holds every write made before this instant (the latest master offset
    /// sample it has reached). Its staleness is at most `now - fresh_as_of`.
    pub fresh_as_of: Option<Instant>,
    /// Bit `i` set: in the pool of budget `i` of the policy of generation
    /// [`View::policy_gen`] (leaves at once when over budget, rejoins after the dwell).
    pub in_pool: u64,
}

impl ReplicaView {
    /// Staleness bound at `now` (ms), if known.
    #[inline]
    pub fn staleness_ms(&self, now: Instant) -> Option<u64> {
        self.fresh_as_of
            .map(|t| now.saturating_duration_since(t).as_millis() as u64)
    }
}

/// Everything routing needs to know about the backends, at one moment.
#[derive(Clone, Debug)]
pub struct View {
    /// Changes whenever the set of backends or the master changes.
    pub epoch: u64,
    /// When this view was built.
    pub taken: Instant,
    /// The master, if known.
    pub master: Option<MasterView>,
    /// The replicas.
    pub replicas: Vec<ReplicaView>,
    /// Generation of the policy whose budgets `in_pool` refers to.
    pub policy_gen: u64,
    /// Replication bytes per second written on the master, recently.
    pub write_rate: f64,
    /// No master while Sentinel promotes a replica in a planned failover: writes wait.
    pub switching: bool,
}

impl View {
    /// A view with no backends.
    pub fn empty() -> View {
        View {
            epoch: 0,
            taken: Instant::now(),
            master: None,
            replicas: Vec::new(),
            policy_gen: 0,
            write_rate: 0.0,
            switching: false,
        }
    }

    /// The master, if known and up.
    pub fn master_up(&self) -> bool {
        self.master.as_ref().is_some_and(|m| m.up)
    }
}

/// The backends of a topology: the master (if known) and the replicas.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    /// The master.
    pub master: Option<Arc<Backend>>,
    /// The replicas.
    pub replicas: Vec<Arc<Backend>>,
    /// No master because Sentinel is promoting a replica while the old master was still
    /// up (a planned failover): writes wait for the new master instead of failing.
    pub switching: bool,
}

impl Backends {
    /// Build from a static configuration, reusing backends of `old` whose address and
    /// role are unchanged (so their connections survive a reload).
    pub fn from_static(cfg: &Config, old: &Backends) -> Backends {
        let same_credentials = |b: &Backend| {
            let p = b.pool.params();
            p.username == cfg.backend.username
                && p.password == cfg.backend.password
                && p.tls_source == cfg.backend.tls
        };
        let find = |addr: &str, role: Role| -> Option<Arc<Backend>> {
            old.all()
                .find(|b| b.addr == addr && b.role == role && same_credentials(b))
                .cloned()
        };
        let master =
            cfg.backend.master.as_ref().map(|a| {
                find(a, Role::Master).unwrap_or_else(|| Backend::new(a, Role::Master, cfg))
            });
        let replicas = cfg
            .backend
            .replicas
            .iter()
            .map(|a| find(a, Role::Replica).unwrap_or_else(|| Backend::new(a, Role::Replica, cfg)))
            .collect();
        Backends {
            master,
            replicas,
            switching: false,
        }
    }

    /// Every backend.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.master.iter().chain(self.replicas.iter())
    }
}
