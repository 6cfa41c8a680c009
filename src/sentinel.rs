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
//!
//! Here: the refresh loop ([`run`]) and how each Sentinel is reached. The parts live in
//! `events` (the subscriber tasks), `ask` (the questions to one Sentinel, as a report),
//! `decide` (combining the reports, `ROLE` confirmation, the next backend set) and
//! `follow` (the refresher's state, the promotion fence, marking a planned failover so
//! that writes wait, and publishing a change).

mod ask;
mod decide;
mod events;
mod follow;

use crate::backend::{BackendError, ConnParams, Role};
use crate::config::{Config, Secret, SentinelConfig};
use crate::proxy::Proxy;
use follow::Follower;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Time between refreshes while the topology is unsettled (at most `refresh_ms`).
const UNSETTLED_REFRESH: Duration = Duration::from_millis(100);

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
            readonly: false,
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
