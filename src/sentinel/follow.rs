//! Following the topology: the refresher's state between rounds, the fence that keeps
//! writes away from an old master while a replica is promoted, the mark of a planned
//! failover (`switching`: the router then holds writes for the new master rather than
//! fail them), and publishing a changed backend set.

use super::ask::{ask, AskError, Report};
use super::decide::{
    admit_replica, build, choose, confirm_master, describe, parse_role, same_set,
    unconfirmed_reason, Named, NodeRole,
};
use super::events::Subscribers;
use super::Target;
use crate::backend::{ControlConn, Role};
use crate::config::Config;
use crate::proxy::Proxy;
use crate::topology::{node_params, Backends};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

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
pub(super) struct Follower {
    pub(super) subscribers: Subscribers,
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
    pub(super) async fn refresh(
        &mut self,
        proxy: &Arc<Proxy>,
        cfg: &Config,
        targets: &[Target],
    ) -> bool {
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
    use crate::sentinel::ask::tests::report;

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
}
