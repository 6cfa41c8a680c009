//! Redis Cluster as the backend: one endpoint for a plain client, every shard's reads
//! routed by the same budgets as a single master's.
//!
//! [`run`] discovers the cluster from `backend.cluster.seeds` (and every node found
//! since): `CLUSTER SHARDS`, or `CLUSTER SLOTS` on a server that lacks it, parsed into a
//! [`map::ClusterMap`]. It asks again every `refresh_ms`, at once when a session saw a
//! redirection or a refused write ([`Proxy::recheck`]), and every 100 ms while a shard's
//! master is down (its replica is being promoted).
//!
//! Each shard is watched by a replication monitor of its own, exactly as a single
//! master and its replicas are: its master's offset history, each replica's offset,
//! staleness bound, pool membership and health. A monitor publishes its shard's
//! [`View`] here ([`Cluster::published`]); the proxy's view is then rebuilt as one
//! [`View`] whose [`ClusterView`] holds the slot map and every shard's view, and
//! swapped in with one atomic store, so that a session routes each request with one
//! load: the slot of its keys picks the shard's view, and the router decides within it.
//! Replica connections send `READONLY` ([`crate::backend::ConnParams::readonly`]).
//!
//! While a master migrates a slot to another node, its replicas may already have lost
//! keys it has moved (the master answers `ASK` for them; a replica just has none):
//! [`watch_migrations`] asks every master each poll period which slots it is migrating
//! (`CLUSTER NODES`), and reads of those slots go to the master until the migration
//! ends. Once a new slot map gives a slot to another shard, the keys that moved are on
//! that shard's master but maybe not yet on its replicas: the slot's reads stay on the
//! new master until every replica of the shard is fresh as of after the move.

pub mod map;

use crate::backend::Role;
use crate::config::Config;
use crate::proxy::Proxy;
use crate::replication::Monitor;
use crate::reply::Decoded;
use crate::topology::{Backends, ClusterView, View};
use map::ClusterMap;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the slot map is read while a shard has no master that answers.
const UNSETTLED_REFRESH: Duration = Duration::from_millis(100);

/// The cluster's shards, their monitors and the slot map (empty without a cluster).
#[derive(Debug, Default)]
pub struct Cluster {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    map: Option<Arc<ClusterMap>>,
    /// In the map's shard order.
    shards: Vec<Shard>,
    /// Bumped when the map changes or a shard's backends do.
    epoch: u64,
    /// Slots whose reads go to their master: those the masters say they are migrating
    /// (`found`) and those settling, sorted.
    migrating: Arc<[u16]>,
    /// Slots the masters said they are migrating, at the last look (sorted).
    found: Vec<u16>,
    /// Slots that moved to another shard, until that shard's replicas hold what moved.
    settling: Vec<Settling>,
    next_key: u64,
}

/// How long at most a slot that moved keeps its reads on its new master while that
/// shard's replicas catch up.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Slots `first..=last` that the slot map moved to another shard at `since`. Their keys
/// reached the new owner's master by then, but maybe not its replicas: their reads go to
/// that master until every replica of the shard is fresh as of after `since`.
#[derive(Debug)]
struct Settling {
    first: u16,
    last: u16,
    since: Instant,
}

impl Settling {
    /// Whether reads of these slots may go to replicas again (or `SETTLE_MAX` passed).
    fn settled(&self, top: &View, now: Instant) -> bool {
        if now.saturating_duration_since(self.since) >= SETTLE_MAX {
            return true;
        }
        let Some(shard) = top.for_slot(self.first) else {
            return false;
        };
        shard
            .replicas
            .iter()
            .all(|r| r.fresh_as_of.is_some_and(|t| t > self.since))
    }
}

#[derive(Debug)]
struct Shard {
    key: u64,
    monitor: Arc<Monitor>,
    view: Arc<View>,
}

impl State {
    /// `migrating` made of `found` and `settling`; whether it changed.
    fn refresh_migrating(&mut self) -> bool {
        let mut slots = self.found.clone();
        for e in &self.settling {
            slots.extend(e.first..=e.last);
        }
        slots.sort_unstable();
        slots.dedup();
        if *self.migrating == *slots {
            return false;
        }
        self.migrating = slots.into();
        true
    }

    /// Mark the slots that `map` (its shards' monitor keys `keys`) gives to another
    /// shard than the current map (its shards' keys `old_keys`) as settling since `now`.
    fn note_moves(&mut self, map: &ClusterMap, old_keys: &[u64], keys: &[u64], now: Instant) {
        let Some(old) = self.map.clone() else { return };
        let key_of = |m: &ClusterMap, ks: &[u64], slot: u16| {
            m.shard_of_slot(slot).and_then(|i| ks.get(i).copied())
        };
        let moved = |slot: u16| {
            matches!(
                (key_of(&old, old_keys, slot), key_of(map, keys, slot)),
                (Some(a), Some(b)) if a != b
            )
        };
        let slots = u16::try_from(map::SLOTS).unwrap_or(u16::MAX);
        let mut slot = 0;
        while slot < slots {
            if !moved(slot) {
                slot += 1;
                continue;
            }
            let first = slot;
            while slot + 1 < slots && moved(slot + 1) {
                slot += 1;
            }
            self.settling.push(Settling {
                first,
                last: slot,
                since: now,
            });
            slot += 1;
        }
    }
}

impl Cluster {
    /// The current slot map, once one was read.
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.state.lock().map.clone()
    }

    /// Every shard's monitor, in the map's order.
    pub fn monitors(&self) -> Vec<Arc<Monitor>> {
        self.state
            .lock()
            .shards
            .iter()
            .map(|s| s.monitor.clone())
            .collect()
    }

    /// Every shard's backends, in the map's order.
    pub fn backends(&self) -> Vec<Backends> {
        self.monitors().iter().map(|m| m.backends()).collect()
    }

    /// Rebuild every shard's view (a reload changed the budgets).
    pub fn publish_all(&self, proxy: &Proxy) {
        for m in self.monitors() {
            m.publish(proxy);
        }
    }

    /// A reload: every shard's backends are built again from `cfg` and the current map,
    /// each kept (connections and all) while its address, role, credentials and TLS
    /// settings are unchanged, and given `cfg`'s pool settings.
    pub fn rebuild(&self, proxy: &Arc<Proxy>, cfg: &Config) {
        // The map and the monitors as one snapshot (they are kept in the same order).
        let (map, monitors) = {
            let st = self.state.lock();
            let Some(map) = st.map.clone() else { return };
            let monitors: Vec<Arc<Monitor>> = st.shards.iter().map(|s| s.monitor.clone()).collect();
            (map, monitors)
        };
        let conns = proxy.monitor.backends().conns;
        for (monitor, spec) in monitors.iter().zip(map.shards.iter()) {
            let current = Backends {
                conns: conns.clone(),
                ..monitor.backends()
            };
            let next = Backends::build(cfg, &current, Some(&spec.master), &spec.replicas);
            let ids = |b: &Backends| b.all().map(|b| b.id).collect::<Vec<_>>();
            if ids(&current) != ids(&next) {
                monitor.set_backends(proxy, next);
            }
        }
        self.publish_all(proxy);
    }

    /// The monitor of shard `key` published `view`: the proxy's view is rebuilt with it.
    pub fn published(&self, proxy: &Proxy, key: u64, view: Arc<View>) {
        let mut st = self.state.lock();
        let Some(s) = st.shards.iter_mut().find(|s| s.key == key) else {
            return;
        };
        let moved = s.view.epoch != view.epoch;
        s.view = view;
        if moved {
            st.epoch += 1;
        }
        let top = top_view(&st, proxy);
        drop(st);
        if let Some(top) = top {
            proxy.view.store(Arc::new(top));
            proxy.view_version.send_modify(|v| *v += 1);
        }
    }

    /// Take `map` as the cluster's slot map: a shard that shares a node with one known
    /// before keeps its monitor (and its history); a new shard gets one; a shard gone
    /// loses its backends. Returns whether anything changed.
    fn apply(&self, proxy: &Arc<Proxy>, map: ClusterMap, cfg: &Config) -> bool {
        let mut st = self.state.lock();
        if st.map.as_ref().is_some_and(|m| m.same_as(&map)) {
            return false;
        }
        let runtime = proxy.monitor.runtime();
        let old_keys: Vec<u64> = st.shards.iter().map(|s| s.key).collect();
        let mut old: Vec<Shard> = std::mem::take(&mut st.shards);
        let mut shards = Vec::with_capacity(map.shards.len());
        let mut plans = Vec::with_capacity(map.shards.len());
        for spec in &map.shards {
            let holds = |s: &Shard| {
                let b = s.monitor.backends();
                let found = b
                    .all()
                    .any(|n| n.addr == spec.master || spec.replicas.contains(&n.addr));
                found
            };
            let shard = match old.iter().position(holds) {
                Some(i) => old.swap_remove(i),
                None => {
                    st.next_key += 1;
                    Shard {
                        key: st.next_key,
                        monitor: Arc::new(Monitor::for_shard(st.next_key, runtime.clone())),
                        view: Arc::new(View::empty()),
                    }
                }
            };
            plans.push((
                shard.monitor.clone(),
                spec.master.clone(),
                spec.replicas.clone(),
            ));
            shards.push(shard);
        }
        tracing::info!(
            shards = map.shards.len(),
            masters = ?map.shards.iter().map(|s| s.master.as_str()).collect::<Vec<_>>(),
            "cluster slot map changed"
        );
        let keys: Vec<u64> = shards.iter().map(|s| s.key).collect();
        st.note_moves(&map, &old_keys, &keys, Instant::now());
        st.refresh_migrating();
        st.shards = shards;
        st.map = Some(Arc::new(map));
        st.epoch += 1;
        drop(st);
        proxy
            .metrics
            .topology_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for gone in old {
            gone.monitor.set_backends(proxy, Backends::default());
        }
        // Every shard's connections join the proxy's one registry, for its watchdog.
        let conns = proxy.monitor.backends().conns;
        for (monitor, master, replicas) in plans {
            let current = Backends {
                conns: conns.clone(),
                ..monitor.backends()
            };
            let next = Backends::build(cfg, &current, Some(&master), &replicas);
            let ids = |b: &Backends| b.all().map(|b| b.id).collect::<Vec<_>>();
            if ids(&current) != ids(&next) {
                monitor.set_backends(proxy, next);
            }
        }
        let st = self.state.lock();
        let top = top_view(&st, proxy);
        drop(st);
        if let Some(top) = top {
            proxy.view.store(Arc::new(top));
            proxy.view_version.send_modify(|v| *v += 1);
        }
        true
    }

    /// The masters now say they migrate `found` (sorted; `None`: not known this time),
    /// and settling slots whose new shard's replicas caught up end: the proxy's view is
    /// rebuilt when that changed what goes to the masters.
    fn set_migrating(&self, proxy: &Proxy, found: Option<Vec<u16>>, now: Instant) {
        let top = proxy.view.load_full();
        let mut st = self.state.lock();
        if let Some(found) = found {
            if found != st.found {
                tracing::info!(slots = ?found, "slots migrating between cluster nodes (their reads go to the masters)");
                st.found = found;
            }
        }
        st.settling.retain(|e| !e.settled(&top, now));
        if !st.refresh_migrating() {
            return;
        }
        let top = top_view(&st, proxy);
        drop(st);
        if let Some(top) = top {
            proxy.view.store(Arc::new(top));
            proxy.view_version.send_modify(|v| *v += 1);
        }
    }

    /// The addresses to ask for the slot map: every node of the current map, then the
    /// seeds.
    fn candidates(&self, seeds: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(m) = self.map() {
            for s in &m.shards {
                out.push(s.master.clone());
                out.extend(s.replicas.iter().cloned());
            }
        }
        for s in seeds {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Whether some shard's master is known to be down (a failover may be under way).
    fn unsettled(&self) -> bool {
        self.state
            .lock()
            .shards
            .iter()
            .any(|s| s.view.master.as_ref().is_some_and(|m| m.down))
    }
}

/// The proxy's view of the whole cluster (`None` before a map was read).
fn top_view(st: &State, proxy: &Proxy) -> Option<View> {
    let map = st.map.clone()?;
    let shards: Vec<Arc<View>> = st.shards.iter().map(|s| s.view.clone()).collect();
    Some(View {
        epoch: st.epoch,
        taken: Instant::now(),
        master: None,
        replicas: Vec::new(),
        policy_gen: proxy.settings.load().policy.generation,
        write_rate: shards.iter().map(|v| v.write_rate).sum(),
        switching: false,
        shard: 0,
        cluster: Some(Arc::new(ClusterView {
            map,
            shards,
            migrating: st.migrating.clone(),
        })),
    })
}

/// Ask the node at `addr` for the slot map.
async fn ask(cfg: &Config, addr: &str) -> Result<ClusterMap, String> {
    let params = crate::topology::node_params(cfg, addr, Role::Master);
    let timeout = Duration::from_millis(cfg.backend.connect_timeout_ms.max(100));
    let mut conn = crate::backend::ControlConn::connect(&params)
        .await
        .map_err(|e| e.message.to_string())?;
    let tls = cfg.backend.tls.is_some();
    match conn
        .call(&[b"CLUSTER", b"SHARDS"], timeout)
        .await
        .map_err(|e| e.message.to_string())?
    {
        Decoded::Error(e) if e.to_ascii_lowercase().contains("unknown subcommand") => {
            match conn
                .call(&[b"CLUSTER", b"SLOTS"], timeout)
                .await
                .map_err(|e| e.message.to_string())?
            {
                Decoded::Error(e) => Err(e),
                reply => ClusterMap::from_slots(&reply),
            }
        }
        Decoded::Error(e) => Err(e),
        reply => ClusterMap::from_shards(&reply, tls),
    }
    .map(|mut m| {
        // An empty host is Redis's "unknown endpoint": the node asked, at that port.
        let host = map::split_addr(addr).map(|(h, _)| h).unwrap_or_default();
        let fill = |a: &mut String| {
            if a.starts_with(':') {
                *a = format!("{host}{a}");
            }
        };
        for s in &mut m.shards {
            fill(&mut s.master);
            s.replicas.iter_mut().for_each(fill);
        }
        m
    })
}

/// The slots the node answering `CLUSTER NODES` with `text` migrates to another node
/// (the `[slot->-id]` entries of its own line).
pub fn migrating_slots(text: &str) -> Vec<u16> {
    let Some(me) = text.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|f| f.split(',').any(|f| f == "myself"))
    }) else {
        return Vec::new();
    };
    me.split(' ')
        .skip(8)
        .filter_map(|f| {
            let inner = f.strip_prefix('[')?.strip_suffix(']')?;
            let (slot, _) = inner.split_once("->-")?;
            slot.parse().ok()
        })
        .collect()
}

/// Ask every master which slots it is migrating, every poll period, until `stop`, and
/// keep the proxy's view of them current (reads of such a slot go to its master), as
/// well as of slots that moved and whose new owner's replicas may not hold what moved
/// yet ([`Cluster::set_migrating`]).
pub async fn watch_migrations(proxy: Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    let mut conns: std::collections::HashMap<String, crate::backend::ControlConn> =
        std::collections::HashMap::new();
    loop {
        let cfg = proxy.settings.load().config.clone();
        if cfg.backend.cluster.is_none() {
            return;
        }
        let interval = Duration::from_millis(cfg.replication.poll_interval_ms.max(1));
        let timeout = Duration::from_millis(cfg.replication.poll_timeout_ms.max(1));
        let masters: Vec<String> = proxy
            .cluster
            .map()
            .map(|m| m.shards.iter().map(|s| s.master.clone()).collect())
            .unwrap_or_default();
        conns.retain(|a, _| masters.contains(a));
        let mut slots = Vec::new();
        let mut complete = true;
        for addr in &masters {
            if !conns.contains_key(addr) {
                let params = crate::topology::node_params(&cfg, addr, Role::Master);
                match crate::backend::ControlConn::connect(&params).await {
                    Ok(c) => {
                        conns.insert(addr.clone(), c);
                    }
                    Err(_) => {
                        complete = false;
                        continue;
                    }
                }
            }
            let Some(c) = conns.get_mut(addr) else {
                continue;
            };
            match c.call(&[b"CLUSTER", b"NODES"], timeout).await {
                Ok(Decoded::Str(text)) => {
                    slots.extend(migrating_slots(&String::from_utf8_lossy(&text)));
                }
                _ => {
                    conns.remove(addr);
                    complete = false;
                }
            }
        }
        // A partial answer is taken when it found some; an empty one changes nothing.
        let found = (complete || !slots.is_empty()).then(|| {
            slots.sort_unstable();
            slots.dedup();
            slots
        });
        proxy.cluster.set_migrating(&proxy, found, Instant::now());
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// Follow the cluster `backend.cluster` names until `stop`. Does nothing unless the
/// running configuration names a cluster.
pub async fn run(proxy: Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let cfg = proxy.settings.load().config.clone();
        let Some(cc) = cfg.backend.cluster.clone() else {
            return;
        };
        let mut last_error = String::new();
        let mut got = None;
        for addr in proxy.cluster.candidates(&cc.seeds) {
            match ask(&cfg, &addr).await {
                Ok(m) if !m.shards.is_empty() => {
                    got = Some(m);
                    break;
                }
                Ok(_) => last_error = format!("{addr} knows no shard yet"),
                Err(e) => last_error = format!("{addr}: {e}"),
            }
        }
        match got {
            Some(m) => {
                failures = 0;
                proxy.cluster.apply(&proxy, m, &cfg);
            }
            None => {
                if failures == 0 {
                    tracing::warn!(error = %last_error, "cannot read the cluster's slot map from any node");
                }
                failures += 1;
            }
        }
        let wait = if proxy.cluster.unsettled() || proxy.cluster.map().is_none() {
            UNSETTLED_REFRESH.min(Duration::from_millis(cc.refresh_ms))
        } else {
            Duration::from_millis(cc.refresh_ms)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = proxy.recheck.notified() => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_masters_own_line_names_the_slots_it_migrates() {
        let text = "\
e7d1 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-10922 [5461->-a1b2] [5470-<-c3d4]
a1b2 127.0.0.1:7000@17000 myself,master - 0 1700000000000 1 connected 0-5460 [100->-e7d1] [200->-e7d1] [300-<-e7d1]
c3d4 127.0.0.1:7002@17002 master - 0 1700000000000 3 connected 10923-16383
";
        assert_eq!(migrating_slots(text), vec![100, 200]);
        assert!(migrating_slots(
            "a1b2 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n"
        )
        .is_empty());
        assert!(migrating_slots("").is_empty());
    }

    fn map(a: &[(u16, u16)], b: &[(u16, u16)]) -> ClusterMap {
        let spec = |m: &str, slots: &[(u16, u16)]| map::ShardSpec {
            master: m.into(),
            replicas: vec![],
            slots: slots.to_vec(),
        };
        ClusterMap::new(vec![spec("a:1", a), spec("b:1", b)]).unwrap()
    }

    #[test]
    fn slots_given_to_another_shard_settle_and_no_others() {
        let now = Instant::now();
        let mut st = State {
            map: Some(Arc::new(map(&[(0, 8191)], &[(8192, 16383)]))),
            ..State::default()
        };
        // The shards' monitor keys, in each map's shard order (by first slot).
        let keys = [1, 2];
        // Slots 100-102 and 9000 change hands; the rest stay.
        let next = map(
            &[(0, 99), (103, 8191), (9000, 9000)],
            &[(100, 102), (8192, 8999), (9001, 16383)],
        );
        st.note_moves(&next, &keys, &keys, now);
        let moved: Vec<(u16, u16)> = st.settling.iter().map(|e| (e.first, e.last)).collect();
        assert_eq!(moved, vec![(100, 102), (9000, 9000)]);
        assert!(st.refresh_migrating());
        assert_eq!(&*st.migrating, &[100, 101, 102, 9000]);
        assert!(!st.refresh_migrating(), "unchanged");
        // The same shards under new keys (a map read before any shard was known) and a
        // failover (the same monitor, another master) move nothing.
        let mut st = State {
            map: Some(Arc::new(map(&[(0, 8191)], &[(8192, 16383)]))),
            ..State::default()
        };
        st.note_moves(&map(&[(0, 8191)], &[(8192, 16383)]), &keys, &keys, now);
        assert!(st.settling.is_empty());
        // A shard without replicas holds what moved at once; no slot waits past
        // SETTLE_MAX, and none settles while the map names no shard for it.
        let e = Settling {
            first: 100,
            last: 102,
            since: now,
        };
        assert!(e.settled(&View::empty(), now));
        let mut top = View::empty();
        top.cluster = Some(Arc::new(ClusterView {
            map: Arc::new(ClusterMap::new(vec![]).unwrap()),
            shards: vec![],
            migrating: Arc::from(vec![]),
        }));
        assert!(!e.settled(&top, now));
        assert!(e.settled(&top, now + SETTLE_MAX));
    }
}
