//! Sentinel discovery: the master and replicas come from Redis Sentinel, and the proxy
//! follows a failover without a restart.
//!
//! [`run`] keeps the replication monitor's backend set in step with what the Sentinels
//! report. One subscriber task per Sentinel listens for the events that announce a
//! change (`+switch-master`, `+sdown`, `+odown`, `+slave`, `+convert-to-slave`, the
//! failover's own steps, …) and wakes the refresher, which also runs every
//! `refresh_ms` (events can be missed) and at once when a session saw a write refused
//! with `-READONLY` ([`Proxy::recheck`]). While the topology is unsettled (no master
//! confirmed, a promotion under way, a Sentinel changing its answer) it runs every
//! 100 ms (at most `refresh_ms`).
//!
//! A refresh asks every Sentinel that answers for the master's address, the master's
//! configuration epoch and failover state, and its replicas. The address named at the
//! highest epoch wins: a Sentinel that has not heard of a failover yet still names the
//! old master, at a lower epoch. Nothing a Sentinel says is trusted alone: the named
//! master must answer `ROLE` with `master` before a write goes to it, and a replica must
//! answer `slave`; a node not yet in the set joins only once its link to its master is
//! connected, and the monitor's health check (link up, same replication ID as the
//! master, lag within budget) then decides when it serves reads.
//!
//! While a Sentinel is promoting a replica (failover states `select_slave` to
//! `wait_promotion`), or the named master does not confirm, the topology has no master,
//! so that no write reaches an old master whose writes the promotion is about to
//! discard; reads are served by replicas as while the master is down. If the promotion
//! began while the master still answered (a planned failover, `SENTINEL FAILOVER`),
//! writes wait for the new master, up to `hold_writes_ms`; otherwise (the master died)
//! they fail fast with `no master is known`. The set changes only when it really
//! differs; it is made by the same builder as static backends
//! ([`Backends::build`](crate::topology::Backends::build)): backends whose address,
//! role, credentials and TLS settings are unchanged are reused, so their connections
//! survive. Every change is counted in `topology_changes` and logged once at `info`.

use crate::backend::{BackendError, ConnParams, ControlConn, Role};
use crate::config::{Config, Secret, SentinelConfig};
use crate::proxy::Proxy;
use crate::reply::Decoded;
use crate::topology::{node_params, Backends};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, JoinSet};

/// The Sentinel events that make the refresher look again at once.
const EVENTS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+slave",
    "+convert-to-slave",
    "+fix-slave-config",
    "+role-change",
    "-role-change",
    "+reboot",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+slave-reconf-done",
    "+failover-end",
    "+failover-end-for-timeout",
    "-failover-abort-no-good-slave",
    "-failover-abort-not-elected",
];

/// Failover states in which a replica is chosen or being promoted while the old master
/// may still accept writes that the promotion will discard: no master is used then.
const PROMOTING: &[&str] = &["select_slave", "send_slaveof_noone", "wait_promotion"];

/// Sentinel's default `failover-timeout`, if a Sentinel does not say.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(180);

/// Time between refreshes while the topology is unsettled (at most `refresh_ms`).
const UNSETTLED_REFRESH: Duration = Duration::from_millis(100);

/// A subscriber sends `PING` after this long without a frame, and reconnects when the
/// next period passes without one either.
const SUBSCRIBER_IDLE: Duration = Duration::from_secs(5);

/// First and longest delay between a subscriber's reconnection attempts.
const SUBSCRIBER_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(2));

/// Follow the topology the Sentinels of `backend.sentinel` report until `stop`.
///
/// Does nothing while the running configuration names no Sentinel (static backends).
pub async fn run(proxy: Arc<Proxy>, mut stop: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let mut follower = Follower::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let cfg = proxy.settings.load().config.clone();
        let next = match cfg.backend.sentinel.as_ref() {
            Some(s) => {
                let targets = targets(&cfg, s);
                follower.subscribers.sync(&targets, &wake);
                let settled = follower.refresh(&proxy, &cfg, &targets).await;
                let every = Duration::from_millis(s.refresh_ms.max(1));
                if settled {
                    every
                } else {
                    every.min(UNSETTLED_REFRESH)
                }
            }
            None => {
                follower.subscribers.sync(&[], &wake);
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {}
            _ = proxy.recheck.notified() => {
                tracing::debug!("a write was refused with READONLY; checking the topology");
            }
            _ = stop.changed() => return,
        }
    }
}

/// How to reach one Sentinel and which master to ask it about.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    addr: String,
    username: String,
    password: Secret,
    master_name: String,
    connect_timeout: Duration,
    call_timeout: Duration,
}

impl Target {
    fn params(&self) -> ConnParams {
        ConnParams {
            addr: self.addr.clone(),
            role: Role::Sentinel,
            username: self.username.clone(),
            password: self.password.clone(),
            connect_timeout: self.connect_timeout,
            // Sentinels are reached over plain TCP.
            tls: None,
            tls_source: None,
        }
    }

    /// What went wrong with the Sentinel, for logs that name it already.
    fn reason(&self, e: &BackendError) -> String {
        e.detail()
    }
}

fn targets(cfg: &Config, s: &SentinelConfig) -> Vec<Target> {
    let mut seen = HashSet::new();
    s.addresses
        .iter()
        .filter(|a| seen.insert(a.to_ascii_lowercase()))
        .map(|a| Target {
            addr: a.clone(),
            username: s.username.clone(),
            password: s.password.clone(),
            master_name: s.master_name.clone(),
            connect_timeout: Duration::from_millis(cfg.backend.connect_timeout_ms),
            call_timeout: Duration::from_millis(cfg.replication.poll_timeout_ms),
        })
        .collect()
}

// ---------------------------------------------------------------------------- events

/// One subscriber task per Sentinel; aborted when dropped.
#[derive(Debug, Default)]
struct Subscribers {
    tasks: HashMap<String, (Target, AbortHandle)>,
}

impl Subscribers {
    /// Run exactly one subscriber per target (restarting those whose settings changed).
    fn sync(&mut self, targets: &[Target], wake: &Arc<Notify>) {
        self.tasks.retain(|addr, (t, h)| {
            let keep = targets.iter().any(|n| n == t && n.addr == *addr);
            if !keep {
                h.abort();
            }
            keep
        });
        for t in targets {
            if !self.tasks.contains_key(&t.addr) {
                let h = tokio::spawn(subscriber(t.clone(), wake.clone()));
                self.tasks
                    .insert(t.addr.clone(), (t.clone(), h.abort_handle()));
            }
        }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for (_, h) in self.tasks.values() {
            h.abort();
        }
    }
}

/// Listen to one Sentinel's events for as long as the task lives, reconnecting with
/// exponential backoff.
async fn subscriber(t: Target, wake: Arc<Notify>) {
    let mut backoff = SUBSCRIBER_BACKOFF.0;
    let mut failing = false;
    loop {
        let mut subscribed = false;
        let err = listen(&t, &wake, &mut subscribed).await;
        if subscribed {
            backoff = SUBSCRIBER_BACKOFF.0;
            failing = false;
            // Events may be missed until the subscription is back: look now.
            wake.notify_one();
        }
        if !failing {
            tracing::warn!(sentinel = %t.addr, error = %err, "no subscription to Sentinel events; retrying");
            failing = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(SUBSCRIBER_BACKOFF.1);
    }
}

/// Subscribe and wake the refresher on every event about our master; returns why the
/// subscription ended. Sets `subscribed` once Sentinel confirmed the subscription.
async fn listen(t: &Target, wake: &Notify, subscribed: &mut bool) -> String {
    let mut c = match ControlConn::connect(&t.params()).await {
        Ok(c) => c,
        Err(e) => return t.reason(&e),
    };
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(EVENTS.iter().map(|e| e.as_bytes()));
    if let Err(e) = c.send(&args).await {
        return t.reason(&e);
    }
    let mut ping_sent = false;
    loop {
        let frame = match tokio::time::timeout(SUBSCRIBER_IDLE, c.read_frame()).await {
            Err(_) if ping_sent => return "no answer to PING".into(),
            Err(_) => {
                if let Err(e) = c.send(&[b"PING"]).await {
                    return t.reason(&e);
                }
                ping_sent = true;
                continue;
            }
            Ok(Err(e)) => return t.reason(&e),
            Ok(Ok(frame)) => frame,
        };
        ping_sent = false;
        match frame {
            Decoded::Error(e) => return format!("refused the subscription: {e}"),
            Decoded::Array(items) => match items.as_slice() {
                // The last channel's confirmation.
                [kind, _, count]
                    if kind.as_str().as_deref() == Some("subscribe")
                        && count.as_int() == Some(EVENTS.len() as i64) =>
                {
                    *subscribed = true;
                    tracing::info!(sentinel = %t.addr, "subscribed to Sentinel events");
                    // Events may have been missed while not subscribed.
                    wake.notify_one();
                }
                [kind, channel, payload] if kind.as_str().as_deref() == Some("message") => {
                    let channel = channel.as_str().unwrap_or_default();
                    let payload = payload.as_str().unwrap_or_default();
                    if concerns(&payload, &t.master_name) {
                        tracing::debug!(sentinel = %t.addr, event = %channel, %payload, "Sentinel event");
                        wake.notify_one();
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Whether an event's payload names the master (`+switch-master NAME …`, or
/// `… @ NAME ip port` / `master NAME ip port` for the others).
fn concerns(payload: &str, master_name: &str) -> bool {
    payload.split_whitespace().any(|w| w == master_name)
}

// ---------------------------------------------------------------------------- asking

/// What one Sentinel says about the master.
#[derive(Clone, Debug, PartialEq)]
struct Report {
    /// The Sentinel's address.
    sentinel: String,
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` (during a failover, the promoted replica once
    /// it is confirmed).
    master: String,
    /// The master's configuration epoch.
    epoch: u64,
    /// The failover state, while this Sentinel leads a failover.
    failover_state: Option<String>,
    /// The master's `failover-timeout`.
    failover_timeout: Duration,
    /// The replicas it lists, and how it sees each.
    replicas: Vec<(String, Seen)>,
}

impl Report {
    /// Whether this Sentinel is choosing or promoting a replica.
    fn promoting(&self) -> bool {
        self.failover_state
            .as_deref()
            .is_some_and(|s| PROMOTING.contains(&s))
    }
}

/// How a Sentinel sees a replica, from its flags; the better the greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    /// Flagged `s_down` or `o_down`.
    Down,
    /// Flagged `disconnected`: the Sentinel has no link to it (yet). Right after a
    /// failover every Sentinel sees every replica so for a moment.
    Disconnected,
    /// None of those flags.
    Up,
}

impl Seen {
    fn from_flags(flags: &str) -> Seen {
        let has = |f: &str| flags.split(',').any(|x| x == f);
        if has("s_down") || has("o_down") {
            Seen::Down
        } else if has("disconnected") {
            Seen::Disconnected
        } else {
            Seen::Up
        }
    }
}

/// Why a Sentinel gave no usable report.
#[derive(Debug)]
enum AskError {
    /// It could not be asked (connection, authentication, unknown master name …).
    Failed(String),
    /// Its epoch changed between two answers: a failover step happened meanwhile.
    Moving,
}

/// `ip:port`, with brackets for IPv6.
fn join_addr(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A flat `[field, value, …]` reply as a map.
fn fields(d: Decoded) -> Option<HashMap<String, String>> {
    let items = d.into_items()?;
    let mut out = HashMap::new();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(k.as_str()?, v.as_str().unwrap_or_default());
    }
    Some(out)
}

/// Ask one Sentinel; the connection comes back for reuse unless it broke.
async fn ask(
    t: Target,
    conn: Option<ControlConn>,
) -> (Target, Option<ControlConn>, Result<Report, AskError>) {
    let mut c = match conn {
        Some(c) => c,
        None => match ControlConn::connect(&t.params()).await {
            Ok(c) => c,
            Err(e) => {
                let why = t.reason(&e);
                return (t, None, Err(AskError::Failed(why)));
            }
        },
    };
    let out = query(&t, &mut c).await;
    let keep = !matches!(&out, Err((true, _)));
    let out = out.map_err(|(_, e)| e);
    (t, keep.then_some(c), out)
}

/// The four questions of one report. The master's epoch is read before and after its
/// address, so that an address and an epoch from either side of a failover step are
/// never paired. An error says whether the connection is broken.
async fn query(t: &Target, c: &mut ControlConn) -> Result<Report, (bool, AskError)> {
    let bad = |what: &str| {
        (
            false,
            AskError::Failed(format!("unexpected reply to {what}")),
        )
    };
    let master_info = |d: Decoded| -> Result<HashMap<String, String>, (bool, AskError)> {
        fields(d).ok_or_else(|| bad("SENTINEL MASTER"))
    };
    let epoch_of = |f: &HashMap<String, String>| -> Result<u64, (bool, AskError)> {
        f.get("config-epoch")
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| bad("SENTINEL MASTER"))
    };
    let before = epoch_of(&master_info(ask_one(t, c, b"MASTER").await?)?)?;
    let addr = ask_one(t, c, b"GET-MASTER-ADDR-BY-NAME").await?;
    let master = match addr.into_items().as_deref() {
        Some([ip, port]) => match (ip.as_str(), port.as_str()) {
            (Some(ip), Some(port)) => join_addr(&ip, &port),
            _ => return Err(bad("SENTINEL GET-MASTER-ADDR-BY-NAME")),
        },
        _ => {
            return Err((
                false,
                AskError::Failed(format!("does not know a master named {}", t.master_name)),
            ))
        }
    };
    let list = ask_one(t, c, b"REPLICAS").await?;
    let replicas = list
        .into_items()
        .ok_or_else(|| bad("SENTINEL REPLICAS"))?
        .into_iter()
        .filter_map(fields)
        .filter_map(|f| {
            let seen = Seen::from_flags(f.get("flags").map_or("", String::as_str));
            Some((join_addr(f.get("ip")?, f.get("port")?), seen))
        })
        .collect();
    let info = master_info(ask_one(t, c, b"MASTER").await?)?;
    let epoch = epoch_of(&info)?;
    if epoch != before {
        return Err((false, AskError::Moving));
    }
    Ok(Report {
        sentinel: t.addr.clone(),
        master,
        epoch,
        failover_state: info.get("failover-state").cloned(),
        failover_timeout: info
            .get("failover-timeout")
            .and_then(|v| v.parse().ok())
            .map_or(DEFAULT_FAILOVER_TIMEOUT, Duration::from_millis),
        replicas,
    })
}

/// `SENTINEL <what> <master name>`; an error says whether the connection is broken.
async fn ask_one(
    t: &Target,
    c: &mut ControlConn,
    what: &[u8],
) -> Result<Decoded, (bool, AskError)> {
    match c
        .call(
            &[b"SENTINEL", what, t.master_name.as_bytes()],
            t.call_timeout,
        )
        .await
    {
        Ok(Decoded::Error(e)) => Err((false, AskError::Failed(e))),
        Ok(d) => Ok(d),
        Err(e) => Err((true, AskError::Failed(t.reason(&e)))),
    }
}

// ---------------------------------------------------------------------------- deciding

/// What the Sentinels name, before any node confirmed it.
#[derive(Clone, Debug, PartialEq)]
struct Named {
    /// The master named at the highest epoch (by most Sentinels at that epoch).
    master: String,
    /// That epoch.
    epoch: u64,
    /// A Sentinel is choosing or promoting a replica.
    promoting: bool,
    /// The replicas the Sentinels at that epoch list for that master, sorted, each with
    /// the best view any of them has of it; those they all see down are left out.
    replicas: Vec<(String, Seen)>,
}

/// Combine the reports of the Sentinels that answered (in configuration order).
fn choose(reports: &[Report]) -> Option<Named> {
    let epoch = reports.iter().map(|r| r.epoch).max()?;
    let top: Vec<&Report> = reports.iter().filter(|r| r.epoch == epoch).collect();
    let mut votes: Vec<(&str, usize)> = Vec::new();
    for r in &top {
        match votes.iter_mut().find(|(a, _)| *a == r.master) {
            Some((_, n)) => *n += 1,
            None => votes.push((&r.master, 1)),
        }
    }
    // The most named; among equals, the first named.
    let mut master: Option<(&str, usize)> = None;
    for (a, n) in votes {
        if master.is_none_or(|(_, best)| n > best) {
            master = Some((a, n));
        }
    }
    let master = master?.0.to_string();
    let mut replicas: BTreeMap<String, Seen> = BTreeMap::new();
    for (addr, seen) in top
        .iter()
        .filter(|r| r.master == master)
        .flat_map(|r| r.replicas.iter())
    {
        if *addr != master && *seen > Seen::Down {
            let best = replicas.entry(addr.clone()).or_insert(*seen);
            *best = (*best).max(*seen);
        }
    }
    let promoting = reports.iter().any(Report::promoting);
    Some(Named {
        master,
        epoch,
        promoting,
        replicas: replicas.into_iter().collect(),
    })
}

/// What a node answered to `ROLE`.
#[derive(Clone, Debug, PartialEq)]
enum NodeRole {
    /// `master`.
    Master,
    /// `slave`, with its master and whether its link is `connected`.
    Replica { master: String, connected: bool },
    /// Anything else (`sentinel`, an error such as `NOAUTH`, an odd reply).
    Other(String),
    /// No answer.
    Unreachable(String),
}

fn parse_role(d: Decoded) -> NodeRole {
    if let Decoded::Error(e) = d {
        return NodeRole::Other(e);
    }
    let Some(items) = d.into_items() else {
        return NodeRole::Other("a reply that is not an array".into());
    };
    let text = |i: usize| items.get(i).and_then(|v| v.as_str()).unwrap_or_default();
    match text(0).as_str() {
        "master" => NodeRole::Master,
        "slave" => NodeRole::Replica {
            master: join_addr(&text(1), &text(2)),
            connected: text(3) == "connected",
        },
        other => NodeRole::Other(format!("role {other}")),
    }
}

/// The master to use: the named one if it confirms. One that does not answer stays the
/// master if it already is (the monitor shows it down; a blip is not a failover), and is
/// not adopted otherwise. None while a replica is being promoted.
fn confirm_master(named: &Named, role: Option<&NodeRole>, current: Option<&str>) -> Option<String> {
    if named.promoting {
        return None;
    }
    match role {
        Some(NodeRole::Master) => Some(named.master.clone()),
        Some(NodeRole::Unreachable(_)) if current == Some(named.master.as_str()) => {
            Some(named.master.clone())
        }
        _ => None,
    }
}

/// Whether a replica the Sentinels list belongs in the set. A node not yet in the set
/// joins when a Sentinel sees it up and it says `slave` with its link connected. One
/// already in the set stays while it says `slave`, or does not answer (the monitor shows
/// it unreachable), even if the Sentinels' own link to it is down for a moment.
fn admit_replica(role: Option<&NodeRole>, seen: Seen, present: bool) -> bool {
    if present {
        return seen > Seen::Down
            && matches!(
                role,
                Some(NodeRole::Replica { .. } | NodeRole::Unreachable(_))
            );
    }
    seen == Seen::Up
        && matches!(
            role,
            Some(NodeRole::Replica {
                connected: true,
                ..
            })
        )
}

/// Why the named master was not confirmed, for the log.
fn unconfirmed_reason(named: &Named, role: Option<&NodeRole>) -> String {
    if named.promoting {
        return "a Sentinel is promoting a replica".into();
    }
    match role {
        Some(NodeRole::Master) | None => "not asked".into(),
        Some(NodeRole::Replica { master, connected }) => format!(
            "it says it is a replica of {master} ({})",
            if *connected {
                "connected"
            } else {
                "not connected"
            }
        ),
        Some(NodeRole::Other(s)) => format!("ROLE answered {s}"),
        Some(NodeRole::Unreachable(e)) => format!("it does not answer: {e}"),
    }
}

/// The backend set for `master` and `replicas`, made by the one builder
/// ([`Backends::build`]: backends of `current` whose address, role, credentials and TLS
/// are unchanged are reused). Replicas already in the set keep their order; new ones
/// follow, so that a Sentinel listing them in another order changes nothing.
fn build(cfg: &Config, current: &Backends, master: Option<&str>, replicas: &[String]) -> Backends {
    let mut list: Vec<String> = current
        .replicas
        .iter()
        .map(|b| b.addr.clone())
        .filter(|a| replicas.contains(a))
        .collect();
    for r in replicas {
        if !list.contains(r) {
            list.push(r.clone());
        }
    }
    Backends::build(cfg, current, master, &list)
}

/// Whether two sets hold the same backends (replica order aside).
fn same_set(a: &Backends, b: &Backends) -> bool {
    let ids = |x: &Backends| {
        let mut v: Vec<u32> = x.replicas.iter().map(|b| b.id).collect();
        v.sort_unstable();
        v
    };
    a.master.as_ref().map(|m| m.id) == b.master.as_ref().map(|m| m.id) && ids(a) == ids(b)
}

fn describe(b: &Backends) -> (String, Vec<String>) {
    (
        b.master
            .as_ref()
            .map_or_else(|| "none".to_string(), |m| m.addr.clone()),
        b.replicas.iter().map(|r| r.addr.clone()).collect(),
    )
}

// ---------------------------------------------------------------------------- following

/// A promotion was seen: no master is used until it is over.
#[derive(Clone, Debug)]
struct Fence {
    /// The Sentinel leading the failover.
    sentinel: String,
    /// The highest configuration epoch when the promotion was seen.
    epoch: u64,
    /// When the promotion was last seen.
    seen: Instant,
    /// The master's `failover-timeout`: Sentinel gives a promotion no longer.
    timeout: Duration,
}

impl Fence {
    /// Why the fence can be lifted now, if it can: a newer configuration names a master,
    /// the leader answered without promoting at the same epoch (the failover ended or
    /// was aborted), or the failover timeout passed without news.
    fn lifted(&self, reports: &[Report], epoch: u64, now: Instant) -> Option<&'static str> {
        if epoch > self.epoch {
            Some("a Sentinel names the master of a newer configuration")
        } else if reports.iter().any(|r| r.sentinel == self.sentinel) {
            Some("the Sentinel that led the failover is no longer promoting a replica")
        } else if now.saturating_duration_since(self.seen) > self.timeout {
            Some("the failover timeout passed without news from the Sentinel leading it")
        } else {
            None
        }
    }
}

/// The refresher's state between refreshes.
#[derive(Debug, Default)]
struct Follower {
    subscribers: Subscribers,
    /// Query connections to Sentinels, by address.
    sentinels: HashMap<String, ControlConn>,
    /// Sentinels whose last question failed (each failure is logged once).
    failing: HashSet<String>,
    /// `ROLE` connections to nodes, by address.
    nodes: HashMap<String, ControlConn>,
    /// Whether a topology was ever published.
    discovered: bool,
    /// No Sentinel answered the last refresh (logged once).
    blind: bool,
    /// A promotion under way, remembered even when its leader stops answering: until it
    /// is over, the old master may lose the writes it takes.
    fence: Option<Fence>,
}

impl Follower {
    /// Read the topology and apply it if it changed. Returns whether it is settled (a
    /// master confirmed by its own `ROLE`, no promotion under way, consistent answers).
    async fn refresh(&mut self, proxy: &Arc<Proxy>, cfg: &Config, targets: &[Target]) -> bool {
        let (reports, moving) = self.ask_all(targets).await;
        if moving {
            // A Sentinel changed its configuration while being asked: its report is
            // missing, and the others may not know yet. Decide on the next round.
            return false;
        }
        let Some(mut named) = choose(&reports) else {
            if !self.blind {
                tracing::warn!(
                    sentinels = ?targets.iter().map(|t| &t.addr).collect::<Vec<_>>(),
                    "no Sentinel answered; keeping the current topology"
                );
                self.blind = true;
            }
            return false;
        };
        if self.blind {
            tracing::info!(sentinels = reports.len(), "Sentinels answer again");
            self.blind = false;
        }
        named.promoting = self.fenced(&reports, named.epoch);
        let current = proxy.monitor.backends();
        let mut addrs: Vec<String> = vec![named.master.clone()];
        addrs.extend(named.replicas.iter().map(|(a, _)| a.clone()));
        if named.promoting {
            // The master is not used either way; do not wait for it.
            addrs.remove(0);
        }
        let roles = self.roles(cfg, &addrs).await;
        let master_role = roles.get(&named.master);
        if master_role.is_none() && !named.promoting {
            // Not asked after all (the task was cancelled): decide nothing.
            return false;
        }
        let current_master = current.master.as_ref().map(|m| m.addr.as_str());
        let master = confirm_master(&named, master_role, current_master);
        let replicas: Vec<String> = named
            .replicas
            .iter()
            .filter(|(a, seen)| {
                let present = current.replicas.iter().any(|b| b.addr == *a);
                admit_replica(roles.get(a), *seen, present)
            })
            .map(|(a, _)| a.clone())
            .collect();
        let mut next = build(cfg, &current, master.as_deref(), &replicas);
        // A promotion begun while the master still answered is a planned switch: writes
        // wait for the new master (up to `hold_writes_ms`) rather than fail.
        next.switching = master.is_none()
            && named.promoting
            && (current.switching || proxy.view.load().master_up());
        if !same_set(&current, &next) || next.switching != current.switching {
            self.apply(proxy, &current, next, &named, master_role);
        }
        master.is_some() && matches!(master_role, Some(NodeRole::Master))
    }

    /// Whether a promotion is under way, as the Sentinels that answered say or as the
    /// fence remembers.
    fn fenced(&mut self, reports: &[Report], epoch: u64) -> bool {
        let now = Instant::now();
        if let Some(r) = reports.iter().find(|r| r.promoting()) {
            if self.fence.is_none() {
                tracing::info!(sentinel = %r.sentinel, state = ?r.failover_state, "a Sentinel is promoting a replica: no writes until the new master is known");
            }
            self.fence = Some(Fence {
                sentinel: r.sentinel.clone(),
                epoch,
                seen: now,
                timeout: r.failover_timeout,
            });
            return true;
        }
        let Some(fence) = &self.fence else {
            return false;
        };
        match fence.lifted(reports, epoch, now) {
            Some(why) => {
                tracing::info!(sentinel = %fence.sentinel, "promotion over: {why}");
                self.fence = None;
                false
            }
            None => true,
        }
    }

    fn apply(
        &mut self,
        proxy: &Arc<Proxy>,
        current: &Backends,
        next: Backends,
        named: &Named,
        master_role: Option<&NodeRole>,
    ) {
        let (old_master, old_replicas) = describe(current);
        let (new_master, new_replicas) = describe(&next);
        let first = !self.discovered;
        self.discovered = true;
        if !first {
            proxy
                .metrics
                .topology_changes
                .fetch_add(1, Ordering::Relaxed);
        }
        let note = if next.master.is_none() {
            format!(
                "no master is confirmed ({}): writes fail until one is",
                unconfirmed_reason(named, master_role)
            )
        } else if old_master != new_master {
            "the master changed".to_string()
        } else {
            "the replicas changed".to_string()
        };
        tracing::info!(
            old_master = %old_master,
            new_master = %new_master,
            named_master = %named.master,
            epoch = named.epoch,
            old_replicas = ?old_replicas,
            new_replicas = ?new_replicas,
            first,
            "Sentinel topology: {note}"
        );
        proxy.monitor.set_backends(proxy, next);
    }

    /// Ask every Sentinel at once; returns the reports in configuration order and
    /// whether any Sentinel was between two failover steps.
    async fn ask_all(&mut self, targets: &[Target]) -> (Vec<Report>, bool) {
        self.sentinels
            .retain(|a, _| targets.iter().any(|t| t.addr == *a));
        let mut set = JoinSet::new();
        for t in targets {
            let conn = self.sentinels.remove(&t.addr);
            set.spawn(ask(t.clone(), conn));
        }
        let mut reports = Vec::new();
        let mut moving = false;
        while let Some(joined) = set.join_next().await {
            let Ok((t, conn, outcome)) = joined else {
                continue;
            };
            if let Some(c) = conn {
                self.sentinels.insert(t.addr.clone(), c);
            }
            match outcome {
                Ok(r) => {
                    if self.failing.remove(&t.addr) {
                        tracing::info!(sentinel = %t.addr, "Sentinel answers again");
                    }
                    reports.push(r);
                }
                Err(AskError::Moving) => moving = true,
                Err(AskError::Failed(why)) => {
                    if self.failing.insert(t.addr.clone()) {
                        tracing::warn!(sentinel = %t.addr, error = %why, "Sentinel did not answer; using the others");
                    }
                }
            }
        }
        reports.sort_by_key(|r| targets.iter().position(|t| t.addr == r.sentinel));
        (reports, moving)
    }

    /// `ROLE` of every address, asked at once.
    async fn roles(&mut self, cfg: &Config, addrs: &[String]) -> HashMap<String, NodeRole> {
        self.nodes.retain(|a, _| addrs.contains(a));
        let timeout = Duration::from_millis(cfg.replication.poll_timeout_ms);
        let mut set = JoinSet::new();
        for a in addrs {
            let conn = self.nodes.remove(a);
            let params = node_params(cfg, a, Role::Master);
            set.spawn(async move {
                let mut c = match conn {
                    Some(c) => c,
                    None => match ControlConn::connect(&params).await {
                        Ok(c) => c,
                        Err(e) => return (params.addr, None, NodeRole::Unreachable(e.detail())),
                    },
                };
                match c.call(&[b"ROLE"], timeout).await {
                    Ok(d) => (params.addr, Some(c), parse_role(d)),
                    Err(e) => (params.addr, None, NodeRole::Unreachable(e.detail())),
                }
            });
        }
        let mut out = HashMap::new();
        while let Some(joined) = set.join_next().await {
            let Ok((addr, conn, role)) = joined else {
                continue;
            };
            if let Some(c) = conn {
                self.nodes.insert(addr.clone(), c);
            }
            out.insert(addr, role);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Backend;

    fn report(
        sentinel: &str,
        master: &str,
        epoch: u64,
        state: Option<&str>,
        replicas: &[&str],
    ) -> Report {
        Report {
            sentinel: sentinel.into(),
            master: master.into(),
            epoch,
            failover_state: state.map(String::from),
            failover_timeout: Duration::from_secs(3),
            replicas: replicas.iter().map(|s| (s.to_string(), Seen::Up)).collect(),
        }
    }

    fn up(addrs: &[&str]) -> Vec<(String, Seen)> {
        addrs.iter().map(|a| (a.to_string(), Seen::Up)).collect()
    }

    #[test]
    fn the_highest_epoch_wins_over_the_majority() {
        let reports = [
            report("s1", "m:1", 0, None, &["r:1", "r:2"]),
            report("s2", "m:1", 0, None, &["r:1", "r:2"]),
            report("s3", "r:1", 1, Some("reconf_slaves"), &["r:2", "m:1"]),
        ];
        let n = choose(&reports).unwrap();
        assert_eq!(n.master, "r:1");
        assert_eq!(n.epoch, 1);
        assert!(!n.promoting);
        assert_eq!(n.replicas, up(&["m:1", "r:2"]));
    }

    #[test]
    fn majority_within_an_epoch_and_promotion() {
        let reports = [
            report("s1", "a:1", 2, None, &["x:1"]),
            report("s2", "b:1", 2, None, &["y:1"]),
            report("s3", "b:1", 2, Some("wait_promotion"), &["a:1"]),
        ];
        let n = choose(&reports).unwrap();
        assert_eq!(n.master, "b:1");
        assert!(n.promoting);
        assert_eq!(n.replicas, up(&["a:1", "y:1"]));
        assert_eq!(choose(&[]), None);
        // A tie goes to the Sentinel listed first.
        let tie = [
            report("s1", "a:1", 0, None, &[]),
            report("s2", "b:1", 0, None, &[]),
        ];
        assert_eq!(choose(&tie).unwrap().master, "a:1");
    }

    #[test]
    fn a_fence_outlives_its_leader_until_news_or_timeout() {
        let t0 = Instant::now();
        let fence = Fence {
            sentinel: "s3".into(),
            epoch: 4,
            seen: t0,
            timeout: Duration::from_secs(3),
        };
        let old = [report("s1", "m:1", 4, None, &[])];
        assert_eq!(fence.lifted(&old, 4, t0 + Duration::from_secs(1)), None);
        assert!(fence.lifted(&old, 4, t0 + Duration::from_secs(4)).is_some());
        let new = [report("s1", "r:1", 5, None, &[])];
        assert!(fence.lifted(&new, 5, t0).is_some());
        let aborted = [report("s3", "m:1", 4, None, &[])];
        assert!(fence.lifted(&aborted, 4, t0).is_some());
    }

    #[test]
    fn a_master_must_confirm() {
        let named = Named {
            master: "m:1".into(),
            epoch: 1,
            promoting: false,
            replicas: vec![],
        };
        let replica = NodeRole::Replica {
            master: "n:1".into(),
            connected: true,
        };
        let down = NodeRole::Unreachable("refused".into());
        assert_eq!(
            confirm_master(&named, Some(&NodeRole::Master), None),
            Some("m:1".into())
        );
        assert_eq!(confirm_master(&named, Some(&replica), Some("m:1")), None);
        assert_eq!(
            confirm_master(&named, Some(&down), Some("m:1")),
            Some("m:1".into())
        );
        assert_eq!(confirm_master(&named, Some(&down), Some("o:1")), None);
        assert_eq!(confirm_master(&named, None, None), None);
        let promoting = Named {
            promoting: true,
            ..named
        };
        assert_eq!(
            confirm_master(&promoting, Some(&NodeRole::Master), Some("m:1")),
            None
        );
    }

    #[test]
    fn replicas_join_connected_and_stay_while_they_say_slave() {
        let connecting = NodeRole::Replica {
            master: "m:1".into(),
            connected: false,
        };
        let connected = NodeRole::Replica {
            master: "m:1".into(),
            connected: true,
        };
        let gone = NodeRole::Unreachable(String::new());
        assert!(!admit_replica(Some(&connecting), Seen::Up, false));
        assert!(admit_replica(Some(&connecting), Seen::Up, true));
        assert!(admit_replica(Some(&connected), Seen::Up, false));
        assert!(!admit_replica(Some(&connected), Seen::Disconnected, false));
        assert!(admit_replica(Some(&connected), Seen::Disconnected, true));
        assert!(!admit_replica(Some(&connected), Seen::Down, true));
        assert!(!admit_replica(Some(&NodeRole::Master), Seen::Up, true));
        assert!(admit_replica(Some(&gone), Seen::Up, true));
        assert!(!admit_replica(Some(&gone), Seen::Up, false));
        assert!(!admit_replica(None, Seen::Up, true));
    }

    #[test]
    fn the_best_view_of_a_replica_counts() {
        let mut a = report("s1", "m:1", 3, None, &[]);
        a.replicas = vec![
            ("r:1".into(), Seen::Down),
            ("r:2".into(), Seen::Disconnected),
            ("r:3".into(), Seen::Down),
        ];
        let mut b = report("s2", "m:1", 3, None, &[]);
        b.replicas = vec![("r:1".into(), Seen::Up), ("r:2".into(), Seen::Disconnected)];
        let n = choose(&[a, b]).unwrap();
        assert_eq!(
            n.replicas,
            vec![("r:1".into(), Seen::Up), ("r:2".into(), Seen::Disconnected)]
        );
        assert_eq!(Seen::from_flags("s_down,slave"), Seen::Down);
        assert_eq!(Seen::from_flags("slave,o_down"), Seen::Down);
        assert_eq!(Seen::from_flags("slave,disconnected"), Seen::Disconnected);
        assert_eq!(Seen::from_flags("slave"), Seen::Up);
    }

    #[test]
    fn roles_parse() {
        let d = Decoded::parse(b"*3\r\n$6\r\nmaster\r\n:42\r\n*0\r\n", false).unwrap();
        assert_eq!(parse_role(d), NodeRole::Master);
        let d = Decoded::parse(
            b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:10\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            parse_role(d),
            NodeRole::Replica {
                master: "127.0.0.1:6379".into(),
                connected: true
            }
        );
        let d = Decoded::parse(b"-NOAUTH Authentication required.\r\n", false).unwrap();
        assert!(matches!(parse_role(d), NodeRole::Other(_)));
        assert_eq!(join_addr("::1", "7000"), "[::1]:7000");
        assert!(concerns(
            "slave 127.0.0.1:1 127.0.0.1 1 @ mymaster 127.0.0.1 2",
            "mymaster"
        ));
        assert!(concerns("mymaster 127.0.0.1 1 127.0.0.1 2", "mymaster"));
        assert!(!concerns("master other 127.0.0.1 2", "mymaster"));
    }

    #[test]
    fn sets_reuse_backends() {
        let cfg = Config::default();
        let m = Backend::new("m:1", Role::Master, &cfg);
        let r = Backend::new("r:1", Role::Replica, &cfg);
        let current = Backends {
            master: Some(m.clone()),
            replicas: vec![r.clone()],
            switching: false,
        };
        let same = build(&cfg, &current, Some("m:1"), &["r:1".into()]);
        assert!(same_set(&current, &same));
        assert!(Arc::ptr_eq(same.master.as_ref().unwrap(), &m));
        // The replica becomes the master: a new backend for the new role.
        let switched = build(&cfg, &current, Some("r:1"), &["m:1".into()]);
        assert!(!same_set(&current, &switched));
        assert_ne!(switched.master.as_ref().unwrap().id, r.id);
        assert_eq!(switched.master.as_ref().unwrap().role, Role::Master);
        let none = build(&cfg, &current, None, &["r:1".into()]);
        assert!(none.master.is_none());
        assert!(Arc::ptr_eq(&none.replicas[0], &r));
    }

    #[test]
    fn a_change_of_backend_tls_makes_new_backends() {
        // The follower's old copy of the reuse rule compared credentials only, so a
        // reload that turned on TLS towards the backends kept the plain connections.
        let cfg = Config::default();
        let current = build(&cfg, &Backends::default(), Some("m:1"), &["r:1".into()]);
        let mut tls = cfg.clone();
        tls.backend.tls = Some(crate::config::BackendTlsConfig {
            ca: "/nonexistent/ca.pem".into(),
            server_name: String::new(),
            cert: String::new(),
            key: String::new(),
        });
        let next = build(&tls, &current, Some("m:1"), &["r:1".into()]);
        assert!(!same_set(&current, &next));
        let m = next.master.as_ref().unwrap();
        assert_eq!(m.pool.params().tls_source, tls.backend.tls);
        assert!(m.pool.params().tls.is_some());
        assert_ne!(next.replicas[0].id, current.replicas[0].id);
        // And back to plain TCP.
        let plain = build(&cfg, &next, Some("m:1"), &["r:1".into()]);
        assert!(!same_set(&next, &plain));
        assert!(plain.master.as_ref().unwrap().pool.params().tls.is_none());
    }

    #[test]
    fn a_sentinel_listing_replicas_in_another_order_changes_nothing() {
        let cfg = Config::default();
        let current = build(
            &cfg,
            &Backends::default(),
            Some("m:1"),
            &["r:1".into(), "r:2".into()],
        );
        let next = build(&cfg, &current, Some("m:1"), &["r:2".into(), "r:1".into()]);
        assert!(Arc::ptr_eq(&current.replicas[0], &next.replicas[0]));
        assert!(Arc::ptr_eq(&current.replicas[1], &next.replicas[1]));
    }
}
