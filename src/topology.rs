//! Backends and the immutable snapshot of their state that the hot path reads.
//!
//! A [`View`] says who the master is, which replicas exist, and for each replica how
//! far behind it is (offset gap in bytes, and a staleness bound: the time of the latest
//! master offset sample the replica has reached). The replication monitor builds a new
//! `View` after every poll and publishes it with one atomic pointer swap; sessions load
//! it without locks.
//!
//! The set of [`Backends`] comes from one builder, [`Backends::build`], for static
//! backends at start-up, for a reload and for every Sentinel refresh: a backend is
//! reused, connections and all, only while its address, role, credentials and TLS
//! settings are unchanged ([`Backend::reusable_for`]), and a reused backend takes the
//! new pool settings ([`Backend::apply_pool_settings`]).

use crate::backend::{ConnParams, LiveConns, Pool, Role};
use crate::config::Config;
use crate::latency::Smoothed;
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
    /// Its smoothed read latency, for the `balanced` replica choice.
    pub latency: Smoothed,
}

static NEXT_BACKEND_ID: AtomicU32 = AtomicU32::new(1);

/// How the proxy connects to the Redis node at `addr` as `role` under `cfg`: the backend
/// credentials, connect timeout and TLS. Backends' pools, the Sentinel follower's `ROLE`
/// checks and the replication monitor's polls all connect with these.
pub fn node_params(cfg: &Config, addr: &str, role: Role) -> ConnParams {
    let b = &cfg.backend;
    ConnParams {
        addr: addr.to_string(),
        role,
        username: b.username.clone(),
        password: b.password.clone(),
        connect_timeout: Duration::from_millis(b.connect_timeout_ms),
        tls: b
            .tls
            .as_ref()
            .map(|t| crate::tls::backend_target(t, addr).map_err(|e| Arc::from(e.to_string()))),
        tls_source: b.tls.clone(),
        readonly: b.cluster.is_some() && role == Role::Replica,
    }
}

impl Backend {
    /// A backend with a connection pool built from `cfg.backend`, whose connections
    /// register in `live`.
    pub fn new(addr: &str, role: Role, cfg: &Config, live: &Arc<LiveConns>) -> Arc<Backend> {
        let b = &cfg.backend;
        Arc::new(Backend {
            id: NEXT_BACKEND_ID.fetch_add(1, Ordering::Relaxed),
            addr: addr.to_string(),
            role,
            pool: Pool::new(
                node_params(cfg, addr, role),
                b.connections,
                Duration::from_millis(b.reconnect_min_ms),
                Duration::from_millis(b.reconnect_max_ms),
                live.clone(),
            ),
            served: AtomicU64::new(0),
            latency: Smoothed::default(),
        })
    }

    /// Whether this backend can stand for `addr` as `role` under `cfg`, keeping its
    /// connections: the same address and role, and connections made the way `cfg` says
    /// (user, password and TLS settings). The pool's settings do not count: a reused
    /// backend takes them from `cfg` ([`Backend::apply_pool_settings`]).
    pub fn reusable_for(&self, addr: &str, role: Role, cfg: &Config) -> bool {
        let p = self.pool.params();
        self.addr == addr
            && self.role == role
            && p.username == cfg.backend.username
            && p.password == cfg.backend.password
            && p.tls_source == cfg.backend.tls
    }

    /// Give the pool `cfg`'s connect timeout, size and reconnect backoff (see
    /// [`Pool::reconfigure`]); logs and returns whether they changed.
    pub fn apply_pool_settings(&self, cfg: &Config) -> bool {
        let b = &cfg.backend;
        let changed = self.pool.reconfigure(
            Duration::from_millis(b.connect_timeout_ms),
            b.connections,
            Duration::from_millis(b.reconnect_min_ms),
            Duration::from_millis(b.reconnect_max_ms),
        );
        if changed {
            tracing::info!(
                backend = %self.addr,
                role = self.role.as_str(),
                connections = b.connections,
                connect_timeout_ms = b.connect_timeout_ms,
                reconnect_min_ms = b.reconnect_min_ms,
                reconnect_max_ms = b.reconnect_max_ms,
                "backend pool settings changed"
            );
        }
        changed
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
    /// Its last poll has gone unanswered for a poll period (it may be stopped or
    /// overloaded): out of every pool until it answers again.
    Stalled,
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
            Health::Stalled => "stalled",
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
    /// In a Redis Cluster, the shard this view is of (its monitor's key, which stays the
    /// same across the shard's failovers); 0 outside a cluster and for the cluster's
    /// own top view.
    pub shard: u64,
    /// A Redis Cluster: which shard serves each slot, and each shard's own view (this
    /// view then names no master and no replica of its own).
    pub cluster: Option<Arc<ClusterView>>,
}

/// A Redis Cluster at one moment: the slot map and, for each of its shards (in the
/// map's order), the view its own replication monitor published.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// Which shard serves each slot, and the shards' nodes.
    pub map: Arc<crate::cluster::map::ClusterMap>,
    /// Each shard's view: its master, its replicas and how fresh each is.
    pub shards: Vec<Arc<View>>,
    /// Slots a master is migrating to another (sorted): their replicas may already
    /// have lost keys the master now redirects with `ASK`, so their reads go to the
    /// master.
    pub migrating: Arc<[u16]>,
}

impl ClusterView {
    /// Whether `slot` is being migrated away from its master.
    #[inline]
    pub fn is_migrating(&self, slot: u16) -> bool {
        !self.migrating.is_empty() && self.migrating.binary_search(&slot).is_ok()
    }
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
            shard: 0,
            cluster: None,
        }
    }

    /// The master, if known and up.
    pub fn master_up(&self) -> bool {
        self.master.as_ref().is_some_and(|m| m.up)
    }

    /// The view routing uses for a key in `slot`: this one, or in a cluster the view of
    /// the shard that serves the slot (`None`: no shard serves it).
    #[inline]
    pub fn for_slot(&self, slot: u16) -> Option<&View> {
        match &self.cluster {
            None => Some(self),
            Some(c) => c
                .map
                .shard_of_slot(slot)
                .and_then(|i| c.shards.get(i))
                .map(|v| &**v),
        }
    }

    /// The views with backends of their own: this one, or every shard's in a cluster.
    pub fn shard_views(&self) -> impl Iterator<Item = &View> {
        let shards = self.cluster.as_ref().map(|c| c.shards.as_slice());
        self.cluster
            .is_none()
            .then_some(self)
            .into_iter()
            .chain(shards.unwrap_or_default().iter().map(|v| &**v))
    }

    /// The view that holds backend `id` (`None` for none): this one, or in a cluster
    /// the view of the shard it belongs to (or this one when no shard has it).
    pub fn holding(self: &Arc<View>, id: Option<u32>) -> Arc<View> {
        let found = self.cluster.as_ref().and_then(|c| {
            c.shards
                .iter()
                .find(|v| id.is_some_and(|id| v.backend_ids().any(|b| b == id)))
        });
        found.unwrap_or(self).clone()
    }

    /// The ids of this view's own master and replicas.
    pub fn backend_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.master
            .iter()
            .map(|m| m.backend.id)
            .chain(self.replicas.iter().map(|r| r.backend.id))
    }

    /// The master, or in a cluster the first shard's master: the one the proxy asks what
    /// any node can answer (whether a login is good, a keyless command).
    pub fn any_master(&self) -> Option<&MasterView> {
        self.shard_views().find_map(|v| v.master.as_ref())
    }

    /// Whether `id` is the master of this view or, in a cluster, of one of its shards.
    pub fn is_a_master(&self, id: u32) -> bool {
        self.shard_views()
            .any(|v| v.master.as_ref().is_some_and(|m| m.backend.id == id))
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
    /// The registry every connection of these backends' pools joins, for the proxy's
    /// timeout watchdog. An empty set (`Backends::default()`) starts a new one; a set
    /// built from another shares it.
    pub conns: Arc<LiveConns>,
}

impl Backends {
    /// The one builder of backend sets, for static backends, reloads and Sentinel: the
    /// set of `master` and `replicas` (in the order given), reusing each backend of `old`
    /// that is [`Backend::reusable_for`] its address and role under `cfg` (so its
    /// connections survive) and giving it `cfg`'s pool settings; anything else is a new
    /// backend. `switching` is false: only the Sentinel follower sets it. The new set
    /// shares `old`'s connection registry.
    pub fn build(
        cfg: &Config,
        old: &Backends,
        master: Option<&str>,
        replicas: &[String],
    ) -> Backends {
        let get = |addr: &str, role: Role| -> Arc<Backend> {
            match old.all().find(|b| b.reusable_for(addr, role, cfg)) {
                Some(b) => {
                    b.apply_pool_settings(cfg);
                    b.clone()
                }
                None => Backend::new(addr, role, cfg, &old.conns),
            }
        };
        Backends {
            master: master.map(|a| get(a, Role::Master)),
            replicas: replicas.iter().map(|a| get(a, Role::Replica)).collect(),
            switching: false,
            conns: old.conns.clone(),
        }
    }

    /// The set a static configuration names (`backend.master`, `backend.replicas`),
    /// built by [`Backends::build`] from `old`.
    pub fn from_static(cfg: &Config, old: &Backends) -> Backends {
        Backends::build(
            cfg,
            old,
            cfg.backend.master.as_deref(),
            &cfg.backend.replicas,
        )
    }

    /// Every backend.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.master.iter().chain(self.replicas.iter())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::config::BackendTlsConfig;

    fn cfg(master: &str, replicas: &[&str]) -> Config {
        let mut c = Config::default();
        c.backend.master = Some(master.into());
        c.backend.replicas = replicas.iter().map(|r| r.to_string()).collect();
        c
    }

    #[test]
    fn same_address_role_and_connection_settings_reuse_the_backend() {
        let c = cfg("m:1", &["r:1", "r:2"]);
        let first = Backends::from_static(&c, &Backends::default());
        let again = Backends::from_static(&c, &first);
        assert!(Arc::ptr_eq(
            first.master.as_ref().unwrap(),
            again.master.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&first.replicas[0], &again.replicas[0]));
        assert!(Arc::ptr_eq(&first.replicas[1], &again.replicas[1]));
        // The order given is the order built.
        let swapped = Backends::from_static(&cfg("m:1", &["r:2", "r:1"]), &first);
        assert!(Arc::ptr_eq(&first.replicas[1], &swapped.replicas[0]));
        // A role change is a new backend.
        let promoted = Backends::from_static(&cfg("r:1", &["m:1"]), &first);
        assert_eq!(promoted.master.as_ref().unwrap().role, Role::Master);
        assert_ne!(promoted.master.as_ref().unwrap().id, first.replicas[0].id);
    }

    #[test]
    fn a_change_of_credentials_or_tls_makes_new_backends() {
        let c = cfg("m:1", &["r:1"]);
        let first = Backends::from_static(&c, &Backends::default());
        let mut user = c.clone();
        user.backend.username = "app".into();
        let mut password = c.clone();
        password.backend.password = crate::config::Secret::new("s3cret");
        let mut tls = c.clone();
        tls.backend.tls = Some(BackendTlsConfig {
            ca: "/nonexistent/ca.pem".into(),
            server_name: String::new(),
            cert: String::new(),
            key: String::new(),
        });
        for changed in [&user, &password, &tls] {
            let next = Backends::from_static(changed, &first);
            assert_ne!(
                next.master.as_ref().unwrap().id,
                first.master.as_ref().unwrap().id
            );
            assert_ne!(next.replicas[0].id, first.replicas[0].id);
            assert_eq!(
                next.master.as_ref().unwrap().pool.params().tls_source,
                changed.backend.tls
            );
        }
    }

    #[test]
    fn a_reused_backend_takes_the_new_pool_settings() {
        let c = cfg("m:1", &[]);
        let first = Backends::from_static(&c, &Backends::default());
        let m = first.master.clone().unwrap();
        assert_eq!(m.pool.size(), c.backend.connections);
        let mut bigger = c.clone();
        bigger.backend.connections = 7;
        bigger.backend.connect_timeout_ms = 123;
        bigger.backend.reconnect_min_ms = 10;
        bigger.backend.reconnect_max_ms = 20;
        let next = Backends::from_static(&bigger, &first);
        assert!(Arc::ptr_eq(next.master.as_ref().unwrap(), &m));
        assert_eq!(m.pool.size(), 7);
        assert_eq!(m.pool.params().connect_timeout, Duration::from_millis(123));
        assert_eq!(
            m.pool.backoff(),
            (Duration::from_millis(10), Duration::from_millis(20))
        );
        assert!(!m.apply_pool_settings(&bigger), "applied once");
    }
}
