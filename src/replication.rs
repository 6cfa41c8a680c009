//! The replication monitor: polls every backend's replication state and publishes the
//! [`View`] the router reads.
//!
//! Each backend has its own poller task and connection (`INFO replication persistence`),
//! so a stopped replica never delays the master's samples. The master is polled four
//! times every `poll_interval_ms`, and its offset is kept as a short history of `(time
//! sent, offset)` samples. A replica that has processed offset `R` holds every write made before the
//! latest sample time `t` whose offset is `<= R`, so its staleness is at most `now - t`:
//! an upper bound that stays honest under bursts and needs no assumption about the write
//! rate. The offset compared is the replica's own (the master's view of a replica's
//! offset only moves on its once-a-second ACK), and only within one replication history
//! (replid).
//!
//! Replicas are polled in rounds, once a period, right after a master sample (and once
//! more at once when a reading is a few bytes short of it), so the sample a caught-up
//! replica is compared with is never older than one poll period plus a round trip; for a
//! lagging replica, the sample its offset falls just after is at most a quarter period
//! older than the write it lacks. That is the bound's resolution: about one period over
//! the real staleness. A replica whose poll goes unanswered for one poll period is
//! [`Health::Stalled`] until it answers: out of every pool long before `poll_timeout_ms`.
//!
//! Pool membership is kept per distinct budget of the policy: a replica leaves as soon
//! as it is over budget and rejoins only after staying within it for `dwell_ms`. Each
//! change is logged once, with the numbers that caused it.

use crate::backend::{ConnParams, ControlConn, Role};
use crate::policy::Budget;
use crate::proxy::Proxy;
use crate::reply::{self, Decoded, Info};
use crate::topology::{Backend, Backends, Health, MasterView, ReplicaView, View};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// One point of a replica's staleness chart.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ChartPoint {
    /// Unix time (ms).
    pub t: u64,
    /// Staleness (ms); `None` when unknown.
    pub staleness_ms: Option<u64>,
    /// Offset gap (bytes).
    pub lag_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct MasterObs {
    polled: bool,
    up: bool,
    offset: Option<u64>,
    replid: Option<Arc<str>>,
    replid2: Option<String>,
    second_offset: Option<u64>,
}

#[derive(Debug)]
struct PoolState {
    budget: Budget,
    in_pool: bool,
    within_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct ReplicaObs {
    polled: bool,
    reachable: bool,
    /// Its poll has been unanswered for a poll period.
    stalled: bool,
    /// When the poll that read `offset` was sent.
    read_at: Option<Instant>,
    is_replica: bool,
    link_up: bool,
    syncing: bool,
    loading: bool,
    offset: Option<u64>,
    replid: Option<String>,
    pools: Vec<PoolState>,
    last_health: Option<Health>,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    backends: Backends,
    pollers: HashMap<u32, AbortHandle>,
    master: MasterObs,
    /// Master offset samples of the current replication history, oldest first.
    history: VecDeque<(Instant, u64)>,
    replicas: HashMap<u32, ReplicaObs>,
    chart: HashMap<u32, VecDeque<ChartPoint>>,
    last_chart: Option<Instant>,
}

/// What the monitor knows of a busy master.
#[derive(Debug, Default)]
struct Busy {
    /// The `BUSY …` error, while busy.
    error: Option<Arc<String>>,
    /// When the master was last seen answering normally: a `BUSY` reply to a poll sent
    /// before then is old news.
    cleared: Option<Instant>,
}

/// The monitor. Owned by the [`Proxy`]; pollers run as tasks, on the runtime given to
/// [`Monitor::poll_on`] (the proxy's monitor thread), else on the caller's.
#[derive(Debug, Default)]
pub struct Monitor {
    state: Mutex<State>,
    /// Where pollers run: a runtime of their own, so that their timing does not depend
    /// on how busy clients keep the proxy's event loop.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    urgent: Notify,
    /// Woken when a master sample has been recorded: replicas are polled right after it,
    /// so that each replica reading is paired with a master offset just before it.
    round: Notify,
    /// While the master runs a busy script: the `BUSY …` error it answers. Set by its
    /// poll, cleared by its next good poll or by any other answer the master gives.
    busy: Mutex<Busy>,
    /// In a Redis Cluster, the key of the shard this monitor watches: its views go to
    /// the cluster's routing state ([`crate::cluster::Cluster`]), not straight to the
    /// proxy's view.
    shard: Option<u64>,
}

/// Master samples per poll period: replicas are polled once a period, and the master
/// this many times, so that the sample a lagging replica's offset falls just after is
/// at most a quarter period old.
const SAMPLES_PER_ROUND: u32 = 4;

/// Most samples kept (at 12.5 ms, a quarter of 50 ms, that is ten minutes).
const MAX_SAMPLES: usize = 48_000;

impl Monitor {
    /// A monitor with no backends.
    pub fn new() -> Monitor {
        Monitor::default()
    }

    /// A monitor of the cluster shard `key`, polling on `runtime` (if given).
    pub fn for_shard(key: u64, runtime: Option<tokio::runtime::Handle>) -> Monitor {
        let m = Monitor {
            shard: Some(key),
            ..Monitor::default()
        };
        if let Some(rt) = runtime {
            m.poll_on(rt);
        }
        m
    }

    /// The runtime pollers run on, once set.
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.get().cloned()
    }

    /// Run pollers on `runtime` from now on (set once, before the first backends).
    pub fn poll_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// The `BUSY …` error the master answers while it runs a busy script.
    pub fn busy(&self) -> Option<Arc<String>> {
        self.busy.lock().error.clone()
    }

    /// The master answered a poll sent at `sent` with `BUSY …`: unless it was seen
    /// answering normally since, it is busy. `true` when it was not busy before.
    fn set_busy(&self, error: &str, sent: Instant) -> bool {
        let mut b = self.busy.lock();
        if b.cleared.is_some_and(|c| c > sent) {
            return false;
        }
        b.error.replace(Arc::new(error.to_owned())).is_none()
    }

    /// The master answered something other than `BUSY`: it is not busy (any more).
    pub fn not_busy(&self) {
        let mut b = self.busy.lock();
        b.cleared = Some(Instant::now());
        if b.error.is_some() {
            b.error = None;
        }
    }

    /// Ask every poller to poll now (a durable write or `WAIT` is waiting for offsets).
    pub fn poll_now(&self) {
        self.urgent.notify_waiters();
    }

    /// The current backends.
    pub fn backends(&self) -> Backends {
        self.state.lock().backends.clone()
    }

    /// Staleness chart of each replica (by address), oldest point first.
    pub fn chart(&self) -> Vec<(String, Vec<ChartPoint>)> {
        let st = self.state.lock();
        st.backends
            .replicas
            .iter()
            .map(|b| {
                (
                    b.addr.clone(),
                    st.chart
                        .get(&b.id)
                        .map(|c| c.iter().copied().collect())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Replace the set of backends: pollers of removed backends stop, new ones start,
    /// and the epoch advances (sessions drop connections to removed backends).
    pub fn set_backends(self: &Arc<Self>, proxy: &Arc<Proxy>, backends: Backends) {
        let mut st = self.state.lock();
        let master_changed =
            st.backends.master.as_ref().map(|b| b.id) != backends.master.as_ref().map(|b| b.id);
        let new_ids: Vec<u32> = backends.all().map(|b| b.id).collect();
        let removed: Vec<u32> = st
            .pollers
            .keys()
            .copied()
            .filter(|id| !new_ids.contains(id))
            .collect();
        for id in removed {
            if let Some(h) = st.pollers.remove(&id) {
                h.abort();
            }
            st.replicas.remove(&id);
            st.chart.remove(&id);
        }
        for old in st.backends.all() {
            if !new_ids.contains(&old.id) {
                // Sessions stop using it at once (the epoch moves); requests already in
                // flight get their replies (the node may still be up, e.g. an old master
                // during a planned failover), then its connections close.
                let old = old.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while old.outstanding() > 0 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    old.pool.close_all("was removed from the topology");
                });
            }
        }
        if master_changed {
            if backends.master.is_some() {
                st.master = MasterObs::default();
                st.history.clear();
            } else {
                // No master is known (a failover is under way): keep the last master's
                // replication ID and offsets, so that replicas still on its history stay
                // comparable and can serve reads as while a master is down. The next
                // master starts afresh.
                st.master.up = false;
            }
        }
        for b in backends.all() {
            st.pollers.entry(b.id).or_insert_with(|| {
                let task = poller(Arc::downgrade(proxy), self.clone(), b.clone());
                match self.runtime.get() {
                    Some(rt) => rt.spawn(task).abort_handle(),
                    None => tokio::spawn(task).abort_handle(),
                }
            });
        }
        st.backends = backends;
        st.epoch += 1;
        drop(st);
        self.publish(proxy);
    }

    /// Record a poll's answer (`None`: it failed). For a replica, `true` when its offset
    /// is short of the newest master sample on the same history: a second reading right
    /// away usually reaches it, which keeps the bound within one poll period.
    fn observe(&self, backend: &Backend, sent: Instant, info: Option<Info<'_>>) -> bool {
        let mut st = self.state.lock();
        let is_master = st
            .backends
            .master
            .as_ref()
            .is_some_and(|m| m.id == backend.id);
        if is_master {
            let m = &mut st.master;
            m.polled = true;
            match info {
                Some(i) => {
                    m.up = i.get("role") == Some("master");
                    m.offset = i.get("master_repl_offset").and_then(|v| v.parse().ok());
                    let replid: Option<Arc<str>> = i.get("master_replid").map(Arc::from);
                    if replid != m.replid {
                        if m.replid.is_some() {
                            tracing::info!(master = %backend.addr, "master replication ID changed; offset history restarts");
                        }
                        st.history.clear();
                    }
                    let m = &mut st.master;
                    m.replid = replid;
                    m.replid2 = i.get("master_replid2").map(String::from);
                    m.second_offset = i
                        .get("second_repl_offset")
                        .and_then(|v| v.parse::<i64>().ok())
                        .and_then(|v| u64::try_from(v).ok());
                    if let (true, Some(off)) = (m.up, m.offset) {
                        if st.history.back().is_none_or(|(_, o)| *o <= off) {
                            st.history.push_back((sent, off));
                        } else {
                            st.history.clear();
                            st.history.push_back((sent, off));
                        }
                        while st.history.len() > MAX_SAMPLES {
                            st.history.pop_front();
                        }
                    }
                }
                None => {
                    m.up = false;
                }
            }
        } else {
            let r = st.replicas.entry(backend.id).or_default();
            r.polled = true;
            r.stalled = false;
            match info {
                Some(i) => {
                    r.reachable = true;
                    r.is_replica = i.get("role") == Some("slave");
                    r.link_up = i.get("master_link_status") == Some("up");
                    r.syncing = i.get("master_sync_in_progress") == Some("1");
                    r.loading = i.get("loading") == Some("1");
                    r.offset = i.get("slave_repl_offset").and_then(|v| v.parse().ok());
                    r.read_at = Some(sent);
                    r.replid = i.get("master_replid").map(String::from);
                }
                None => {
                    r.reachable = false;
                }
            }
            let (offset, replid) = (r.offset, r.replid.clone());
            return replid.as_deref() == st.master.replid.as_deref()
                && matches!((offset, st.history.back()), (Some(o), Some((_, m))) if o < *m);
        }
        false
    }

    /// A replica's poll sent a poll period ago is still unanswered: it leaves every
    /// pool until it answers. `true` when it was not marked stalled before.
    fn set_stalled(&self, backend: &Backend) -> bool {
        let mut st = self.state.lock();
        let r = st.replicas.entry(backend.id).or_default();
        !std::mem::replace(&mut r.stalled, true)
    }

    /// Build and publish a new view from the latest observations.
    pub fn publish(&self, proxy: &Proxy) {
        let settings = proxy.settings.load();
        let policy = &settings.policy;
        let now = Instant::now();
        let dwell = Duration::from_millis(settings.config.replication.dwell_ms);
        let history_secs = settings.config.replication.history_secs;
        let mut st = self.state.lock();
        let st = &mut *st;
        let master = st.backends.master.as_ref().map(|b| MasterView {
            backend: b.clone(),
            up: st.master.up,
            down: st.master.polled && !st.master.up,
            offset: st.master.offset,
            replid: st.master.replid.clone(),
        });
        let write_rate = write_rate(&st.history, now);
        let chart_due = st
            .last_chart
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if chart_due {
            st.last_chart = Some(now);
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut replicas = Vec::with_capacity(st.backends.replicas.len());
        for b in &st.backends.replicas {
            let obs = st.replicas.entry(b.id).or_default();
            let health = replica_health(obs, &st.master);
            let comparable = health == Health::Ok
                || (matches!(health, Health::LinkDown)
                    && obs.replid.as_deref() == st.master.replid.as_deref());
            let (lag_bytes, fresh_as_of) = match (obs.offset, comparable) {
                (Some(off), true) => (
                    st.master.offset.map(|m| m.saturating_sub(off)),
                    st.history
                        .iter()
                        .rev()
                        .find(|(_, o)| *o <= off)
                        .map(|(t, _)| *t),
                ),
                _ => (None, None),
            };
            // Shown to lag: its offset was short of a master sample taken before it was
            // read. Otherwise a bound over budget only says that no newer evidence has
            // come in yet (the monitor itself was late); reads wait for that evidence
            // (the router checks the bound on every read), but the replica keeps its
            // place in the pools.
            let behind = match (obs.offset, obs.read_at, comparable) {
                (Some(off), Some(read), true) => st
                    .history
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= read)
                    .is_some_and(|(_, o)| *o > off),
                _ => false,
            };
            let mut view = ReplicaView {
                backend: b.clone(),
                health,
                reachable: obs.reachable,
                offset: obs.offset,
                lag_bytes,
                fresh_as_of,
                in_pool: 0,
            };
            if obs.last_health != Some(health) {
                if obs.last_health.is_some() || health != Health::Ok {
                    tracing::info!(replica = %b.addr, health = health.as_str(), offset = ?obs.offset, master_offset = ?st.master.offset, "replica health changed");
                }
                obs.last_health = Some(health);
            }
            // Pool membership per budget, with dwell.
            let staleness = view.staleness_ms(now);
            let mut mask = 0u64;
            let mut pools = std::mem::take(&mut obs.pools);
            for (i, budget) in policy.budgets.iter().enumerate() {
                let within = health == Health::Ok && budget.admits(staleness, lag_bytes);
                let at = match pools.iter().position(|p| p.budget == *budget) {
                    Some(p) => p,
                    None => {
                        pools.push(PoolState {
                            budget: *budget,
                            in_pool: within,
                            within_since: within.then_some(now),
                        });
                        pools.len() - 1
                    }
                };
                // `at` is an index of `pools` (found, or the one just pushed).
                let Some(ps) = pools.get_mut(at) else {
                    continue;
                };
                // A stall keeps the replica from reads (its health is not `ok`) without
                // costing it the dwell: it is back as soon as it answers, caught up.
                let leaves = match health {
                    Health::Ok => behind,
                    Health::Stalled => false,
                    _ => true,
                };
                if ps.in_pool && !within && leaves {
                    ps.in_pool = false;
                    ps.within_since = None;
                    proxy.metrics.pool_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        replica = %b.addr, budget_ms = ?budget.max_lag_ms, budget_bytes = ?budget.max_lag_bytes,
                        staleness_ms = ?staleness, lag_bytes = ?lag_bytes, health = health.as_str(),
                        "replica left the read pool"
                    );
                } else if !ps.in_pool && within {
                    let since = *ps.within_since.get_or_insert(now);
                    if now.duration_since(since) >= dwell {
                        ps.in_pool = true;
                        proxy.metrics.pool_changes.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            replica = %b.addr, budget_ms = ?budget.max_lag_ms, budget_bytes = ?budget.max_lag_bytes,
                            staleness_ms = ?staleness, lag_bytes = ?lag_bytes, dwell_ms = dwell.as_millis() as u64,
                            "replica joined the read pool"
                        );
                    }
                } else if !within {
                    ps.within_since = None;
                }
                if ps.in_pool && i < 64 {
                    mask |= 1 << i;
                }
            }
            pools.retain(|p| policy.budgets.contains(&p.budget));
            obs.pools = pools;
            view.in_pool = mask;
            if chart_due {
                let c = st.chart.entry(b.id).or_default();
                c.push_back(ChartPoint {
                    t: unix_ms,
                    staleness_ms: staleness,
                    lag_bytes,
                });
                while c.len() as u64 > history_secs.max(1) {
                    c.pop_front();
                }
            }
            replicas.push(view);
        }
        let view = View {
            epoch: st.epoch,
            taken: now,
            master,
            replicas,
            policy_gen: policy.generation,
            write_rate,
            switching: st.backends.switching,
            shard: self.shard.unwrap_or(0),
            cluster: None,
        };
        match self.shard {
            None => {
                proxy.view.store(Arc::new(view));
                proxy.view_version.send_modify(|v| *v += 1);
            }
            Some(shard) => proxy.cluster.published(proxy, shard, Arc::new(view)),
        }
    }
}

fn replica_health(obs: &ReplicaObs, master: &MasterObs) -> Health {
    if !obs.polled {
        return Health::Unknown;
    }
    if !obs.reachable {
        return Health::Unreachable;
    }
    if obs.stalled {
        return Health::Stalled;
    }
    if !obs.is_replica {
        return Health::NotReplica;
    }
    if obs.loading {
        return Health::Loading;
    }
    if obs.syncing {
        return Health::Syncing;
    }
    if !obs.link_up {
        return Health::LinkDown;
    }
    match (&master.replid, &obs.replid) {
        (Some(m), Some(r)) if **m == **r => Health::Ok,
        (Some(_), Some(r)) => {
            // Still on the master's previous history, below the switch point: comparable.
            let old = master.replid2.as_deref() == Some(r.as_str())
                && matches!((obs.offset, master.second_offset), (Some(o), Some(s)) if o < s);
            if old {
                Health::Ok
            } else {
                Health::OtherHistory
            }
        }
        _ => Health::Unknown,
    }
}

/// Replication bytes per second over the last second or so of samples.
fn write_rate(history: &VecDeque<(Instant, u64)>, now: Instant) -> f64 {
    let Some(&(t1, o1)) = history.back() else {
        return 0.0;
    };
    let start = history
        .iter()
        .find(|(t, _)| now.duration_since(*t) <= Duration::from_millis(1500));
    match start {
        Some(&(t0, o0)) if t1 > t0 => (o1 - o0) as f64 / t1.duration_since(t0).as_secs_f64(),
        _ => 0.0,
    }
}

async fn poller(proxy: Weak<Proxy>, mon: Arc<Monitor>, backend: Arc<Backend>) {
    let mut conn: Option<ControlConn> = None;
    let mut failures = 0u32;
    let is_master = backend.role == Role::Master;
    let mut again = false;
    // When replicas were last asked to poll (master only).
    let mut last_round: Option<Instant> = None;
    loop {
        let Some(p) = proxy.upgrade() else { return };
        // Listen for the next master sample from before this poll, so that one recorded
        // while this poll runs is not missed.
        let round = mon.round.notified();
        tokio::pin!(round);
        round.as_mut().enable();
        let (interval, timeout, params) = {
            let s = p.settings.load();
            let c = &s.config;
            let bp = backend.pool.params();
            (
                Duration::from_millis(c.replication.poll_interval_ms),
                Duration::from_millis(c.replication.poll_timeout_ms),
                ConnParams {
                    role: backend.role,
                    ..(**bp).clone()
                },
            )
        };
        let reused = conn.is_some();
        if conn.is_none() {
            match ControlConn::connect(&ConnParams {
                connect_timeout: timeout,
                ..params
            })
            .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(backend = %backend.addr, role = backend.role.as_str(), error = %e.message, "replication poll failed");
                    }
                    failures += 1;
                }
            }
        }
        let mut short = false;
        if let Some(c) = conn.as_mut() {
            let sent = Instant::now();
            let call = c.call(&[b"INFO", b"replication", b"persistence"], timeout);
            let reply = if is_master {
                call.await
            } else {
                // A replica that has not answered within a poll period leaves the pools
                // at once (a stopped or overloaded replica would otherwise keep taking
                // reads until `poll_timeout_ms`); the poll itself goes on.
                tokio::pin!(call);
                tokio::select! {
                    r = &mut call => r,
                    _ = tokio::time::sleep(interval) => {
                        if mon.set_stalled(&backend) {
                            tracing::info!(replica = %backend.addr, waited_ms = interval.as_millis() as u64, "replica has not answered its poll for a poll period; out of the read pools until it does");
                            mon.publish(&p);
                        }
                        call.await
                    }
                }
            };
            match reply {
                Ok(Decoded::Str(text)) => {
                    if is_master {
                        mon.not_busy();
                    }
                    let text = reply::text(&text);
                    short = mon.observe(&backend, sent, Some(Info::parse(&text)));
                    if failures > 0 {
                        tracing::info!(backend = %backend.addr, role = backend.role.as_str(), "replication poll recovered");
                    }
                    failures = 0;
                }
                // A master running a busy script is alive: it keeps its place (and takes
                // writes, answering BUSY as it would directly). Its offset is not read,
                // so replicas' staleness bounds grow from the last sample, as they must.
                Ok(Decoded::Error(e)) if e.starts_with("BUSY") && is_master => {
                    if mon.set_busy(&e, sent) {
                        tracing::info!(backend = %backend.addr, "master is busy running a script; kept as the master");
                    }
                }
                Ok(other) => {
                    if failures == 0 {
                        tracing::warn!(backend = %backend.addr, reply = ?other, "unexpected INFO reply");
                    }
                    failures += 1;
                    mon.observe(&backend, sent, None);
                }
                Err(e) => {
                    conn = None;
                    if reused && failures == 0 && sent.elapsed() < interval {
                        // The connection was closed under the poll (Sentinel closes every
                        // client connection of a node it reconfigures): poll again on a
                        // new one at once before calling the node unreachable.
                        continue;
                    }
                    if failures == 0 {
                        tracing::warn!(backend = %backend.addr, role = backend.role.as_str(), error = %e.message, "replication poll failed");
                    }
                    failures += 1;
                    mon.observe(&backend, sent, None);
                }
            }
        } else {
            mon.observe(&backend, Instant::now(), None);
        }
        mon.publish(&p);
        if is_master
            && last_round.is_none_or(|t| t.elapsed() + interval / SAMPLES_PER_ROUND >= interval)
        {
            // A round is due and a master sample is in: replicas read their offsets
            // right after it.
            last_round = Some(Instant::now());
            mon.round.notify_waiters();
        }
        if short && !again {
            // Read once more at once: the master sample it is compared with came just
            // before this reading, so the replica is usually a few bytes short of it.
            again = true;
            continue;
        }
        again = false;
        let urgent = p.monitor.urgent.notified();
        // While failing, back off a little (but keep polling: recovery must be seen).
        let wait = if failures > 1 {
            interval.max(Duration::from_millis(100 * u64::from(failures.min(10))))
        } else if is_master {
            interval / SAMPLES_PER_ROUND
        } else {
            interval
        };
        if is_master || failures > 1 {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = urgent => {}
            }
        } else {
            // A replica polls after each master sample; on its own only when none
            // comes (no master known, or its poll is slow).
            tokio::select! {
                _ = tokio::time::sleep(wait + wait / 2) => {}
                _ = urgent => {}
                _ = &mut round => {}
            }
        }
    }
}
