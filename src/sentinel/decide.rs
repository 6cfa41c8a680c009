//! Deciding from the reports: which master the Sentinels name, whether that node and
//! each listed replica confirm by their own `ROLE`, and the backend set that results.

use super::ask::{join_addr, Report, Seen};
use crate::config::Config;
use crate::reply::Decoded;
use crate::topology::Backends;
use std::collections::BTreeMap;

/// What the Sentinels name, before any node confirmed it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Named {
    /// The master named at the highest epoch (by most Sentinels at that epoch).
    pub(super) master: String,
    /// That epoch.
    pub(super) epoch: u64,
    /// A Sentinel is choosing or promoting a replica.
    pub(super) promoting: bool,
    /// The replicas the Sentinels at that epoch list for that master, sorted, each with
    /// the best view any of them has of it; those they all see down are left out.
    pub(super) replicas: Vec<(String, Seen)>,
}

/// Combine the reports of the Sentinels that answered (in configuration order).
pub(super) fn choose(reports: &[Report]) -> Option<Named> {
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
pub(super) enum NodeRole {
    /// `master`.
    Master,
    /// `slave`, with its master and whether its link is `connected`.
    Replica { master: String, connected: bool },
    /// Anything else (`sentinel`, an error such as `NOAUTH`, an odd reply).
    Other(String),
    /// No answer.
    Unreachable(String),
}

pub(super) fn parse_role(d: Decoded) -> NodeRole {
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
pub(super) fn confirm_master(
    named: &Named,
    role: Option<&NodeRole>,
    current: Option<&str>,
) -> Option<String> {
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
pub(super) fn admit_replica(role: Option<&NodeRole>, seen: Seen, present: bool) -> bool {
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
pub(super) fn unconfirmed_reason(named: &Named, role: Option<&NodeRole>) -> String {
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
pub(super) fn build(
    cfg: &Config,
    current: &Backends,
    master: Option<&str>,
    replicas: &[String],
) -> Backends {
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
pub(super) fn same_set(a: &Backends, b: &Backends) -> bool {
    let ids = |x: &Backends| {
        let mut v: Vec<u32> = x.replicas.iter().map(|b| b.id).collect();
        v.sort_unstable();
        v
    };
    a.master.as_ref().map(|m| m.id) == b.master.as_ref().map(|m| m.id) && ids(a) == ids(b)
}

pub(super) fn describe(b: &Backends) -> (String, Vec<String>) {
    (
        b.master
            .as_ref()
            .map_or_else(|| "none".to_string(), |m| m.addr.clone()),
        b.replicas.iter().map(|r| r.addr.clone()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Role;
    use crate::sentinel::ask::tests::report;
    use crate::topology::Backend;
    use std::sync::Arc;

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
    }

    #[test]
    fn sets_reuse_backends() {
        let cfg = Config::default();
        let conns = Arc::default();
        let m = Backend::new("m:1", Role::Master, &cfg, &conns);
        let r = Backend::new("r:1", Role::Replica, &cfg, &conns);
        let current = Backends {
            master: Some(m.clone()),
            replicas: vec![r.clone()],
            switching: false,
            conns,
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
