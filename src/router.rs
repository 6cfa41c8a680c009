//! The routing decision: one pure function of the request's level, the session's
//! read-your-writes state, the policy and the topology snapshot.
//!
//! It does no I/O and allocates nothing, so every rule is unit-tested without sockets,
//! and `PROXY EXPLAIN` calls the same [`verdict`] per replica to say why a read went
//! where it went.
//!
//! Beside [`route_read`] and [`route_write`], the other decisions a session makes about
//! the topology are pure functions here too: how the `balanced` choice scores a replica
//! ([`balanced_score`]), where a failed replica read is retried ([`retry_target`]), when
//! and where a slow one is hedged ([`hedge_delay`], [`hedge_target`]), which replicas count for `WAIT` and durable writes
//! ([`replicas_holding`]), and whether a write waits out a planned failover
//! ([`write_hold`], [`write_rejection`]).

use crate::config::{
    Consistency, Fallback, HedgeAfter, OnMasterDown, ReadYourWrites, ReplicaChoice,
};
use crate::error::ProxyError;
use crate::policy::{Level, Policy};
use crate::topology::{Backend, Health, ReplicaView, View};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The master.
    Master,
    /// The replica at this index of [`View::replicas`].
    Replica(usize),
    /// Nowhere: reply with an error built from the reason.
    Reject,
}

/// Why a request went where it went. Counted in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A write (or anything not known to be read-only).
    Write,
    /// A read whose rule says `master`.
    Rule,
    /// A read served by a replica within its budget.
    Fresh,
    /// A read with level `any`, served by a healthy replica.
    AnyReplica,
    /// A read served by a replica while the master is down.
    MasterDown,
    /// Read-your-writes: the client's own write (or, in `key` mode, an acknowledged
    /// write of one of the read's keys) is not yet on any replica.
    OwnWrite,
    /// No replica within the budget.
    OverBudget,
    /// No healthy replica at all.
    NoReplica,
    /// No master is known (or it is down and reads fail).
    NoMaster,
    /// A SCAN-family cursor, continued on the node that issued it.
    Cursor,
}

impl Reason {
    /// The label used in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Write => "write",
            Reason::Rule => "rule",
            Reason::Fresh => "fresh",
            Reason::AnyReplica => "any",
            Reason::MasterDown => "master_down",
            Reason::OwnWrite => "read_your_writes",
            Reason::OverBudget => "over_budget",
            Reason::NoReplica => "no_replica",
            Reason::NoMaster => "no_master",
            Reason::Cursor => "cursor",
        }
    }

    /// All reasons, for metrics.
    pub const ALL: [Reason; 10] = [
        Reason::Write,
        Reason::Rule,
        Reason::Fresh,
        Reason::AnyReplica,
        Reason::MasterDown,
        Reason::OwnWrite,
        Reason::OverBudget,
        Reason::NoReplica,
        Reason::NoMaster,
        Reason::Cursor,
    ];
}

/// A routing decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Where.
    pub target: Target,
    /// Why.
    pub reason: Reason,
}

/// What routing needs to know about the session.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionReads {
    /// The session has writes sent but not yet answered.
    pub writes_in_flight: bool,
    /// When the session's last write was acknowledged (seen answered by the proxy).
    pub last_write_ack: Option<Instant>,
    /// `read_your_writes: key`: the latest acknowledged write, by any connection, of one
    /// of the read's keys, or the global fence if later ([`crate::fence`]).
    pub key_write_ack: Option<Instant>,
    /// `read_your_writes: key`: a write of one of the read's keys (or a keyspace-wide
    /// write) is sent and not yet answered.
    pub key_write_pending: bool,
    /// A replica to prefer if it qualifies (keeps one client's pipeline together).
    pub prefer: Option<usize>,
    /// A counter for round robin.
    pub turn: usize,
}

/// One replica's standing for one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may serve the read.
    Eligible,
    /// Not healthy (link, sync, loading, unreachable, other history).
    Unhealthy(Health),
    /// Over the budget now (staleness or bytes), or staleness unknown.
    OverBudget,
    /// Within budget but still outside the pool's dwell time.
    Dwelling,
    /// It has not reached the client's last write yet.
    BehindOwnWrite,
    /// It has not reached the last acknowledged write of the read's keys (any
    /// connection's, `read_your_writes: key`).
    BehindKeyWrite,
}

/// The verdict for replica `r` for a read at `level`.
#[inline]
pub fn verdict(
    level: &Level,
    sess: &SessionReads,
    r: &ReplicaView,
    pool_known: bool,
    now: Instant,
) -> Verdict {
    if r.health != Health::Ok {
        return Verdict::Unhealthy(r.health);
    }
    if level.consistency == Consistency::Any {
        return Verdict::Eligible;
    }
    if !level.budget.admits(r.staleness_ms(now), r.lag_bytes) {
        return Verdict::OverBudget;
    }
    if pool_known && level.budget_idx < 64 && r.in_pool & (1u64 << level.budget_idx) == 0 {
        return Verdict::Dwelling;
    }
    // The replica must have reached a master offset sampled after the ack.
    let behind = |ack: Option<Instant>| ack.is_some_and(|a| r.fresh_as_of.is_none_or(|t| t <= a));
    if level.ryw >= ReadYourWrites::Connection && behind(sess.last_write_ack) {
        return Verdict::BehindOwnWrite;
    }
    if level.ryw == ReadYourWrites::Key && behind(sess.key_write_ack) {
        return Verdict::BehindKeyWrite;
    }
    Verdict::Eligible
}

/// Route a write.
#[inline]
pub fn route_write(view: &View) -> Decision {
    match &view.master {
        Some(_) => Decision {
            target: Target::Master,
            reason: Reason::Write,
        },
        None => Decision {
            target: Target::Reject,
            reason: Reason::NoMaster,
        },
    }
}

/// Route a read.
pub fn route_read(
    level: &Level,
    sess: &SessionReads,
    policy: &Policy,
    view: &View,
    now: Instant,
) -> Decision {
    let master_known = view.master.is_some();
    // No master known (a failover under way) is handled as a master that is down.
    if view.master.as_ref().is_none_or(|m| m.down) {
        return match policy.on_master_down {
            OnMasterDown::ServeReplicas => match pick_reachable(view) {
                Some(i) => Decision {
                    target: Target::Replica(i),
                    reason: Reason::MasterDown,
                },
                None => Decision {
                    target: Target::Reject,
                    reason: Reason::NoMaster,
                },
            },
            OnMasterDown::Error => Decision {
                target: Target::Reject,
                reason: Reason::NoMaster,
            },
        };
    }
    if level.consistency == Consistency::Master {
        return if master_known {
            Decision {
                target: Target::Master,
                reason: Reason::Rule,
            }
        } else {
            Decision {
                target: Target::Reject,
                reason: Reason::NoMaster,
            }
        };
    }
    let own_in_flight = level.ryw >= ReadYourWrites::Connection && sess.writes_in_flight;
    let key_in_flight = level.ryw == ReadYourWrites::Key && sess.key_write_pending;
    if (own_in_flight || key_in_flight) && level.consistency == Consistency::Replica {
        return fallback(policy, master_known, Reason::OwnWrite);
    }
    let pool_known = view.policy_gen == policy.generation;
    let mut any_healthy = false;
    let mut behind_own = false;
    let mut best: Option<(usize, u64)> = None;
    let mut ties = 0usize;
    for (i, r) in view.replicas.iter().enumerate() {
        match verdict(level, sess, r, pool_known, now) {
            Verdict::Eligible => {}
            Verdict::Unhealthy(_) => continue,
            Verdict::BehindOwnWrite | Verdict::BehindKeyWrite => {
                any_healthy = true;
                behind_own = true;
                continue;
            }
            Verdict::OverBudget | Verdict::Dwelling => {
                any_healthy = true;
                continue;
            }
        }
        any_healthy = true;
        if sess.prefer == Some(i) {
            return Decision {
                target: Target::Replica(i),
                reason: served(level),
            };
        }
        let score = match policy.choice {
            ReplicaChoice::LeastLag => r.staleness_ms(now).unwrap_or(u64::MAX),
            ReplicaChoice::LeastOutstanding => r.backend.outstanding(),
            ReplicaChoice::RoundRobin => 0,
            ReplicaChoice::Balanced => {
                let (us, age) = r.backend.latency.get(now);
                balanced_score(r.backend.outstanding(), us, age)
            }
        };
        best = match best {
            Some((bi, bs)) => match compare_scores(policy.choice, score, bs) {
                std::cmp::Ordering::Less => {
                    ties = 1;
                    Some((i, score))
                }
                std::cmp::Ordering::Equal => {
                    ties += 1;
                    Some(if turn_picks(sess.turn, ties) {
                        (i, score)
                    } else {
                        (bi, bs)
                    })
                }
                std::cmp::Ordering::Greater => Some((bi, bs)),
            },
            None => {
                ties = 1;
                Some((i, score))
            }
        };
    }
    if let Some((i, _)) = best {
        return Decision {
            target: Target::Replica(i),
            reason: served(level),
        };
    }
    let why = if behind_own {
        Reason::OwnWrite
    } else if any_healthy {
        Reason::OverBudget
    } else {
        Reason::NoReplica
    };
    fallback(policy, master_known, why)
}

/// How long a replica's smoothed latency is trusted after its last sample (ms). Past
/// it, `balanced` scores the replica as if it were unmeasured, so a replica that was
/// avoided for being slow is tried again and measured afresh.
pub const LATENCY_TRUST_MS: u64 = 1000;

/// The latency below which `balanced` sees no difference between replicas (µs):
/// sub-millisecond differences are noise on a local network, not a slow replica.
pub const LATENCY_FLOOR_US: u64 = 1000;

/// The `balanced` score of a replica (lower is better): (`outstanding` + 1) × its
/// smoothed reply latency `latency_us` (0: never measured), last sampled `age_ms` ago,
/// at least [`LATENCY_FLOOR_US`]. An unmeasured latency, or one older than
/// [`LATENCY_TRUST_MS`], counts as the floor. Scores within a factor of 2 of each other
/// tie ([`compare_scores`]), so replicas of about the same speed and load take turns.
#[inline]
pub fn balanced_score(outstanding: u64, latency_us: u64, age_ms: u64) -> u64 {
    let latency = if age_ms > LATENCY_TRUST_MS {
        LATENCY_FLOOR_US
    } else {
        latency_us.max(LATENCY_FLOOR_US)
    };
    outstanding.saturating_add(1).saturating_mul(latency)
}

/// How a replica's `score` compares with the best so far under `choice`: `Less`, it is
/// better; `Equal`, a tie (the replicas take turns); `Greater`, worse. `balanced`
/// scores, being measured, count as better only when less than half the other, so
/// noise in the latency (and a request or two more in flight) does not decide; the
/// other choices compare exactly.
#[inline]
pub fn compare_scores(choice: ReplicaChoice, score: u64, best: u64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if choice != ReplicaChoice::Balanced {
        return score.cmp(&best);
    }
    let (s, b) = (u128::from(score), u128::from(best));
    if s * 2 < b {
        Ordering::Less
    } else if b * 2 < s {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// The smallest hedge delay `auto` picks (ms).
pub const HEDGE_FLOOR_MS: u64 = 5;
/// The hedge delay `auto` picks before enough replica reads were measured (ms).
pub const HEDGE_UNMEASURED_MS: u64 = 50;

/// How long a replica read waits for its reply before it is hedged (`None`: never),
/// from `backend.hedge_after_ms`: `0` never, a number of ms as given, or `auto`: the
/// 99th percentile of recent replica read latencies (`p99_us`; [`HEDGE_UNMEASURED_MS`]
/// while unknown), at least [`HEDGE_FLOOR_MS`] and at most half of
/// `command_timeout_ms`, so that a stalled replica's reads are hedged well before its
/// connection is declared dead.
pub fn hedge_delay(
    setting: HedgeAfter,
    p99_us: Option<u64>,
    command_timeout_ms: u64,
) -> Option<Duration> {
    match setting {
        HedgeAfter::Ms(0) => None,
        HedgeAfter::Ms(ms) => Some(Duration::from_millis(ms)),
        HedgeAfter::Auto => {
            let ceiling = command_timeout_ms.saturating_mul(1000) / 2;
            if ceiling == 0 {
                return None;
            }
            let floor = (HEDGE_FLOOR_MS * 1000).min(ceiling);
            let us = p99_us
                .unwrap_or(HEDGE_UNMEASURED_MS * 1000)
                .clamp(floor, ceiling);
            Some(Duration::from_micros(us))
        }
    }
}

/// Where a replica read that has waited past the hedge delay is also sent: the master
/// while it is known and not known to be down; otherwise the first healthy replica
/// other than the one the read went to (`original`, a backend id). `None`: nowhere, and
/// the read only waits for its replica.
pub fn hedge_target(view: &View, original: Option<u32>) -> Option<&Arc<Backend>> {
    match view.master.as_ref().filter(|m| !m.down) {
        Some(m) => Some(&m.backend),
        None => view
            .replicas
            .iter()
            .find(|r| r.health == Health::Ok && Some(r.backend.id) != original)
            .map(|r| &r.backend),
    }
}

/// Among ties, the `n`th eligible candidate replaces the current pick when the turn
/// says so: spreads picks evenly without a list.
#[inline]
fn turn_picks(turn: usize, n: usize) -> bool {
    n > 0 && turn % n == n - 1
}

#[inline]
fn served(level: &Level) -> Reason {
    if level.consistency == Consistency::Any {
        Reason::AnyReplica
    } else {
        Reason::Fresh
    }
}

fn fallback(policy: &Policy, master_known: bool, why: Reason) -> Decision {
    match (policy.fallback, master_known) {
        (Fallback::Master, true) => Decision {
            target: Target::Master,
            reason: why,
        },
        (Fallback::Master, false) => Decision {
            target: Target::Reject,
            reason: Reason::NoMaster,
        },
        (Fallback::Error, _) => Decision {
            target: Target::Reject,
            reason: why,
        },
    }
}

/// With the master down: the reachable replica with the highest offset.
fn pick_reachable(view: &View) -> Option<usize> {
    view.replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.reachable && matches!(r.health, Health::Ok | Health::LinkDown) && r.offset.is_some()
        })
        .max_by_key(|(_, r)| r.offset)
        .map(|(i, _)| i)
}

/// Where a replica read that failed (connection lost, `LOADING`, `NOSCRIPT`, or it
/// could not be sent) is retried: the master while it is known and not known to be
/// down; otherwise (a failover, or the master's last poll failed) a replica that can
/// answer as reads are served while the master is down (reachable, link up or down,
/// offset known; healthy ones first, then the most advanced) other than the one that
/// failed (`failed`, a backend id), or, with `again`, that one too (Sentinel closes
/// every client connection of a replica it reconfigures: the replica itself answers
/// on a new connection). `None`: nowhere for now; the session waits for a master or
/// such a replica, at most `command_timeout_ms` from the read, then answers
/// [`ProxyError::ReplicaFailedNoMaster`].
///
/// [`ProxyError::ReplicaFailedNoMaster`]: crate::error::ProxyError::ReplicaFailedNoMaster
pub fn retry_target(view: &View, failed: Option<u32>, again: bool) -> Option<&Arc<Backend>> {
    if let Some(m) = view.master.as_ref().filter(|m| !m.down) {
        return Some(&m.backend);
    }
    let can_answer = |r: &&ReplicaView| {
        r.reachable && matches!(r.health, Health::Ok | Health::LinkDown) && r.offset.is_some()
    };
    let best = |again: bool| {
        view.replicas
            .iter()
            .filter(can_answer)
            .filter(|r| again || Some(r.backend.id) != failed)
            .max_by_key(|r| {
                (
                    Some(r.backend.id) != failed,
                    r.health == Health::Ok,
                    r.offset,
                )
            })
            .map(|r| &r.backend)
    };
    best(false).or_else(|| if again { best(true) } else { None })
}

/// How many replicas hold a write at master offset `target`, for `WAIT` and durable
/// writes: those that answer polls, whose health is `ok` or `link_down` (a replica whose
/// link just dropped still holds what it received), and whose own offset has reached
/// `target`. `master` is the backend id of the master the write went to: if the view
/// names another master, the offsets belong to another history and none counts (0).
pub fn replicas_holding(view: &View, target: u64, master: Option<u32>) -> u32 {
    if view
        .master
        .as_ref()
        .is_some_and(|m| Some(m.backend.id) != master)
    {
        return 0;
    }
    let n = view
        .replicas
        .iter()
        .filter(|r| r.reachable && matches!(r.health, Health::Ok | Health::LinkDown))
        .filter(|r| r.offset.is_some_and(|o| o >= target))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What a write does when it meets the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteHold {
    /// Route it now (to the master, or reject it if none is known).
    Go,
    /// A planned failover is under way: hold the write, and everything after it, until
    /// a new view, at most until this instant (keep it: it is the `deadline` of the
    /// next call for the same hold).
    Hold {
        /// When the hold ends and the write fails if there is still no master.
        until: Instant,
    },
}

/// The failover write hold: while no master is known and Sentinel is promoting a
/// replica in a planned failover (`view.switching`), a write waits for the new master
/// up to `hold` (`backend.sentinel.hold_writes_ms`) from when the session's first held
/// write met it. `deadline` is the hold already running (`None` when none is); once it
/// has passed, the write goes on, and fails with [`write_rejection`].
pub fn write_hold(
    view: &View,
    hold: Duration,
    deadline: Option<Instant>,
    now: Instant,
) -> WriteHold {
    if view.master.is_some() || !view.switching {
        return WriteHold::Go;
    }
    let until = deadline.unwrap_or(now + hold);
    if now < until {
        WriteHold::Hold { until }
    } else {
        WriteHold::Go
    }
}

/// The error for a write when no master is known: a failover under way while
/// `view.switching`, else no master.
pub fn write_rejection(view: &View) -> ProxyError {
    ProxyError::no_master(view.switching)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Role;
    use crate::config::Config;
    use crate::topology::{Backend, MasterView};
    use std::sync::Arc;
    use std::time::Duration;

    fn cfg(extra: &str) -> Config {
        serde_yaml::from_str(&format!(
            "backend: {{master: '127.0.0.1:1', replicas: ['127.0.0.1:2', '127.0.0.1:3']}}\n{extra}"
        ))
        .unwrap()
    }

    fn view(cfg: &Config, now: Instant, stale_ms: [u64; 2]) -> View {
        let m = Backend::new("127.0.0.1:1", Role::Master, cfg);
        let replicas = stale_ms
            .iter()
            .enumerate()
            .map(|(i, s)| ReplicaView {
                backend: Backend::new(&format!("127.0.0.1:{}", i + 2), Role::Replica, cfg),
                health: Health::Ok,
                reachable: true,
                offset: Some(100),
                lag_bytes: Some(0),
                fresh_as_of: Some(now - Duration::from_millis(*s)),
                in_pool: u64::MAX,
            })
            .collect();
        View {
            epoch: 1,
            taken: now,
            master: Some(MasterView {
                backend: m,
                up: true,
                down: false,
                offset: Some(100),
                replid: None,
            }),
            replicas,
            policy_gen: 1,
            write_rate: 0.0,
            switching: false,
        }
    }

    fn level(p: &Policy, key: &str) -> Level {
        let get = crate::commands::lookup_name(b"get").unwrap();
        p.resolve(get, |f| f(key.as_bytes())).level
    }

    /// How ten sessions (turns 0–9) that prefer no replica spread over two replicas.
    fn spread(l: &Level, p: &Policy, v: &View, now: Instant) -> [usize; 2] {
        let mut seen = [0; 2];
        for turn in 0..10 {
            let s = SessionReads {
                turn,
                ..Default::default()
            };
            if let Target::Replica(i) = route_read(l, &s, p, v, now).target {
                seen[i] += 1;
            }
        }
        seen
    }

    const RULES: &str = "routing:\n  rules:\n    - {name: stock, keys: ['stock:*'], consistency: master}\n    - {name: feed, keys: ['feed:*'], max_lag_ms: 5000}\n    - {name: scan, keys: ['scan:*'], consistency: any}\n";

    #[test]
    fn least_outstanding_spreads_ties() {
        let c = cfg("routing: {replica_choice: least_outstanding}");
        let p = Policy::compile(&c, 1);
        let now = Instant::now();
        let v = view(&c, now, [10, 10]);
        let l = level(&p, "k");
        assert_eq!(spread(&l, &p, &v, now), [5, 5]);
    }

    #[test]
    fn reasons_are_listed_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn fresh_replica_serves_and_stale_one_does_not() {
        let c = cfg(RULES);
        let p = Policy::compile(&c, 1);
        let now = Instant::now();
        let v = view(&c, now, [3000, 200]);
        let s = SessionReads::default();
        let d = route_read(&level(&p, "k"), &s, &p, &v, now);
        assert_eq!(
            d,
            Decision {
                target: Target::Replica(1),
                reason: Reason::Fresh
            }
        );
        let d = route_read(&level(&p, "stock:1"), &s, &p, &v, now);
        assert_eq!(
            d,
            Decision {
                target: Target::Master,
                reason: Reason::Rule
            }
        );
        let v = view(&c, now, [3000, 2000]);
        let d = route_read(&level(&p, "k"), &s, &p, &v, now);
        assert_eq!(
            d,
            Decision {
                target: Target::Master,
                reason: Reason::OverBudget
            }
        );
        let d = route_read(&level(&p, "feed:1"), &s, &p, &v, now);
        assert_eq!(d.reason, Reason::Fresh);
        let d = route_read(
            &level(&p, "scan:1"),
            &s,
            &p,
            &view(&c, now, [90_000, 90_000]),
            now,
        );
        assert_eq!(d.reason, Reason::AnyReplica);
    }

    #[test]
    fn read_your_writes() {
        let c = cfg(RULES);
        let p = Policy::compile(&c, 1);
        let now = Instant::now();
        let v = view(&c, now, [100, 100]);
        let mut s = SessionReads {
            writes_in_flight: true,
            ..Default::default()
        };
        let l = level(&p, "k");
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::OwnWrite);
        s.writes_in_flight = false;
        s.last_write_ack = Some(now - Duration::from_millis(50));
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::OwnWrite);
        s.last_write_ack = Some(now - Duration::from_millis(150));
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::Fresh);
        // `any` ignores read-your-writes.
        s.last_write_ack = Some(now);
        assert_eq!(
            route_read(&level(&p, "scan:1"), &s, &p, &v, now).reason,
            Reason::AnyReplica
        );
    }

    #[test]
    fn read_your_writes_per_key() {
        let c = cfg("routing:\n  rules:\n    - {name: cart, keys: ['cart:*'], read_your_writes: key}\n    - {name: off, keys: ['off:*'], read_your_writes: off}\n");
        let p = Policy::compile(&c, 1);
        let now = Instant::now();
        // Replica 0 is fresh as of 300 ms ago, replica 1 as of 100 ms ago.
        let v = view(&c, now, [300, 100]);
        let key = level(&p, "cart:1");
        let conn = level(&p, "k");
        assert_eq!(key.ryw, ReadYourWrites::Key);
        assert_eq!(conn.ryw, ReadYourWrites::Connection);
        // Another connection's write of the key, acknowledged 200 ms ago: only replica 1
        // holds it.
        let mut s = SessionReads {
            key_write_ack: Some(now - Duration::from_millis(200)),
            ..Default::default()
        };
        assert_eq!(
            verdict(&key, &s, &v.replicas[0], true, now),
            Verdict::BehindKeyWrite
        );
        assert_eq!(
            verdict(&key, &s, &v.replicas[1], true, now),
            Verdict::Eligible
        );
        for turn in 0..4 {
            s.turn = turn;
            assert_eq!(
                route_read(&key, &s, &p, &v, now),
                Decision {
                    target: Target::Replica(1),
                    reason: Reason::Fresh
                }
            );
        }
        // Acknowledged 50 ms ago: no replica holds it yet.
        s.key_write_ack = Some(now - Duration::from_millis(50));
        assert_eq!(
            route_read(&key, &s, &p, &v, now),
            Decision {
                target: Target::Master,
                reason: Reason::OwnWrite
            }
        );
        // `connection` and `off` ignore other connections' writes.
        assert_eq!(route_read(&conn, &s, &p, &v, now).reason, Reason::Fresh);
        assert_eq!(
            route_read(&level(&p, "off:1"), &s, &p, &v, now).reason,
            Reason::Fresh
        );
        // A write of the key in flight: the master, for `key` only.
        s.key_write_ack = None;
        s.key_write_pending = true;
        assert_eq!(route_read(&key, &s, &p, &v, now).reason, Reason::OwnWrite);
        assert_eq!(route_read(&conn, &s, &p, &v, now).reason, Reason::Fresh);
        // `key` includes the connection's own guarantee.
        let s = SessionReads {
            last_write_ack: Some(now - Duration::from_millis(50)),
            ..Default::default()
        };
        assert_eq!(
            verdict(&key, &s, &v.replicas[1], true, now),
            Verdict::BehindOwnWrite
        );
        assert_eq!(route_read(&key, &s, &p, &v, now).reason, Reason::OwnWrite);
        let s = SessionReads {
            writes_in_flight: true,
            ..Default::default()
        };
        assert_eq!(route_read(&key, &s, &p, &v, now).reason, Reason::OwnWrite);
        assert_eq!(
            route_read(&level(&p, "off:1"), &s, &p, &v, now).reason,
            Reason::Fresh
        );
    }

    #[test]
    fn fallback_error_and_master_down() {
        let c = cfg("routing: {fallback: error}");
        let p = Policy::compile(&c, 1);
        let now = Instant::now();
        let mut v = view(&c, now, [5000, 5000]);
        let s = SessionReads::default();
        let l = level(&p, "k");
        assert_eq!(
            route_read(&l, &s, &p, &v, now),
            Decision {
                target: Target::Reject,
                reason: Reason::OverBudget
            }
        );
        for r in &mut v.replicas {
            r.health = Health::LinkDown;
        }
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::NoReplica);
        if let Some(m) = v.master.as_mut() {
            m.down = true;
            m.up = false;
        }
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::MasterDown);
        let c2 = cfg("routing: {on_master_down: error}");
        let p2 = Policy::compile(&c2, 1);
        assert_eq!(route_read(&l, &s, &p2, &v, now).target, Target::Reject);
        // No master known at all: the same as a master that is down.
        v.master = None;
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::MasterDown);
        assert_eq!(route_read(&l, &s, &p2, &v, now).target, Target::Reject);
        v.replicas.clear();
        assert_eq!(route_read(&l, &s, &p, &v, now).reason, Reason::NoMaster);
    }

    #[test]
    fn dwell_keeps_a_replica_out_and_choice_spreads() {
        let c = cfg("routing: {replica_choice: round_robin}");
        let p = Policy::compile(&c, 1);
        let now = Instant::now();
        let mut v = view(&c, now, [10, 10]);
        let l = level(&p, "k");
        assert_eq!(spread(&l, &p, &v, now), [5, 5]);
        v.replicas[0].in_pool = 0;
        for turn in 0..4 {
            let s = SessionReads {
                turn,
                ..Default::default()
            };
            assert_eq!(route_read(&l, &s, &p, &v, now).target, Target::Replica(1));
        }
        let s = SessionReads {
            prefer: Some(1),
            ..Default::default()
        };
        v.replicas[0].in_pool = u64::MAX;
        assert_eq!(route_read(&l, &s, &p, &v, now).target, Target::Replica(1));
        let _ = Arc::strong_count(&v.replicas[0].backend);
    }

    #[test]
    fn balanced_scores_outstanding_times_latency() {
        use std::cmp::Ordering::*;
        // Unmeasured, or under a millisecond: only requests in flight count.
        let f = LATENCY_FLOOR_US;
        assert_eq!(balanced_score(0, 0, u64::MAX), f);
        assert_eq!(balanced_score(4, 0, u64::MAX), 5 * f);
        assert_eq!(balanced_score(2, 300, 10), 3 * f);
        assert_eq!(balanced_score(1, 5000, 10), 10_000);
        // A latency not refreshed for a while is not trusted: the replica is tried again.
        assert_eq!(balanced_score(0, 50_000, LATENCY_TRUST_MS + 1), f);
        assert_eq!(balanced_score(u64::MAX, u64::MAX, 0), u64::MAX);
        let b = ReplicaChoice::Balanced;
        // About the same speed and load ties; clearly more in flight does not.
        assert_eq!(compare_scores(b, balanced_score(0, 200, 0), 1900), Equal);
        assert_eq!(compare_scores(b, 1900, balanced_score(0, 200, 0)), Equal);
        assert_eq!(
            compare_scores(b, balanced_score(0, 200, 0), balanced_score(1, 200, 0)),
            Equal
        );
        assert_eq!(
            compare_scores(b, balanced_score(0, 200, 0), balanced_score(2, 200, 0)),
            Less
        );
        assert_eq!(compare_scores(b, 20_000, f), Greater);
        // A replica ten times slower loses until the fast one has ten times the load.
        let slow = balanced_score(0, 10_000, 10);
        assert_eq!(
            compare_scores(b, slow, balanced_score(3, 1000, 10)),
            Greater
        );
        assert_eq!(compare_scores(b, slow, balanced_score(20, 1000, 10)), Less);
        assert_eq!(compare_scores(b, u64::MAX, u64::MAX), Equal);
        // The other choices compare exactly.
        let lo = ReplicaChoice::LeastOutstanding;
        assert_eq!(compare_scores(lo, 3, 4), Less);
        assert_eq!(compare_scores(lo, 4, 4), Equal);
        assert_eq!(compare_scores(ReplicaChoice::LeastLag, 5, 4), Greater);
    }

    #[test]
    fn balanced_prefers_the_faster_replica_and_spreads_ties() {
        let c = cfg("");
        let p = Policy::compile(&c, 1);
        assert_eq!(p.choice, ReplicaChoice::Balanced, "the default");
        let now = Instant::now();
        let mut v = view(&c, now, [10, 10]);
        let l = level(&p, "k");
        // Nothing measured yet: ties take turns.
        assert_eq!(spread(&l, &p, &v, now), [5, 5]);
        v.replicas[0].backend.latency.observe(300, 1, now);
        v.replicas[1].backend.latency.observe(310, 1, now);
        assert_eq!(spread(&l, &p, &v, now), [5, 5], "about the same speed");
        v.replicas[0].backend.latency.observe(20_000, 8, now);
        assert_eq!(
            spread(&l, &p, &v, now),
            [0, 10],
            "the slow replica is avoided"
        );
        // Once its latency is old, it takes turns again.
        let later = now + Duration::from_millis(LATENCY_TRUST_MS + 100);
        v.replicas[1].backend.latency.observe(310, 1, later);
        for r in &mut v.replicas {
            r.fresh_as_of = Some(later);
        }
        assert_eq!(spread(&l, &p, &v, later), [5, 5]);
    }

    #[test]
    fn the_hedge_delay_is_given_or_follows_the_p99_within_bounds() {
        assert_eq!(hedge_delay(HedgeAfter::Ms(0), Some(900), 3000), None);
        assert_eq!(
            hedge_delay(HedgeAfter::Ms(20), None, 3000),
            Some(Duration::from_millis(20))
        );
        let auto = |p99, timeout| hedge_delay(HedgeAfter::Auto, p99, timeout);
        assert_eq!(
            auto(None, 3000),
            Some(Duration::from_millis(HEDGE_UNMEASURED_MS))
        );
        assert_eq!(
            auto(Some(300), 3000),
            Some(Duration::from_millis(HEDGE_FLOOR_MS)),
            "the floor"
        );
        assert_eq!(
            auto(Some(12_345), 3000),
            Some(Duration::from_micros(12_345))
        );
        assert_eq!(
            auto(Some(9_000_000), 3000),
            Some(Duration::from_millis(1500)),
            "at most half the command timeout"
        );
        assert_eq!(auto(None, 40), Some(Duration::from_millis(20)));
        assert_eq!(auto(Some(1), 4), Some(Duration::from_millis(2)));
        assert_eq!(auto(Some(1), 0), None);
    }

    #[test]
    fn a_slow_replica_read_is_hedged_on_the_master_or_another_healthy_replica() {
        let now = Instant::now();
        let c = cfg("");
        let mut v = view(&c, now, [0, 0]);
        let (m, r0, r1) = ids(&v);
        assert_eq!(hedge_target(&v, Some(r0)).map(|b| b.id), Some(m));
        v.master.as_mut().unwrap().down = true;
        assert_eq!(hedge_target(&v, Some(r0)).map(|b| b.id), Some(r1));
        assert_eq!(hedge_target(&v, Some(r1)).map(|b| b.id), Some(r0));
        v.replicas[1].health = Health::Syncing;
        assert_eq!(hedge_target(&v, Some(r0)).map(|b| b.id), None);
        v.master = None;
        v.replicas[1].health = Health::Ok;
        assert_eq!(hedge_target(&v, Some(r0)).map(|b| b.id), Some(r1));
        v.replicas.clear();
        assert!(hedge_target(&v, Some(r0)).is_none());
    }

    fn ids(v: &View) -> (u32, u32, u32) {
        (
            v.master.as_ref().unwrap().backend.id,
            v.replicas[0].backend.id,
            v.replicas[1].backend.id,
        )
    }

    #[test]
    fn a_failed_replica_read_is_retried_on_the_master_or_another_replica_that_can_answer() {
        let now = Instant::now();
        let c = cfg("");
        let mut v = view(&c, now, [0, 0]);
        let (m, r0, r1) = ids(&v);
        assert_eq!(retry_target(&v, Some(r0), false).map(|b| b.id), Some(m));
        // The master is down: another replica, not the one that failed unless `again`.
        v.master.as_mut().unwrap().down = true;
        assert_eq!(retry_target(&v, Some(r0), false).map(|b| b.id), Some(r1));
        assert_eq!(retry_target(&v, Some(r1), false).map(|b| b.id), Some(r0));
        // A replica whose link is down still answers (as reads are served then).
        v.replicas[1].health = Health::LinkDown;
        assert_eq!(retry_target(&v, Some(r0), false).map(|b| b.id), Some(r1));
        // Healthy ones first.
        assert_eq!(retry_target(&v, None, false).map(|b| b.id), Some(r0));
        // One that cannot answer is never chosen; the failed one only `again`.
        v.replicas[1].health = Health::Syncing;
        assert_eq!(retry_target(&v, Some(r0), false).map(|b| b.id), None);
        assert_eq!(retry_target(&v, Some(r0), true).map(|b| b.id), Some(r0));
        v.replicas[0].reachable = false;
        assert_eq!(retry_target(&v, Some(r0), true).map(|b| b.id), None);
        // No master known (a failover): the same.
        v.master = None;
        v.replicas[0].reachable = true;
        v.replicas[1].health = Health::Ok;
        assert_eq!(retry_target(&v, Some(r0), false).map(|b| b.id), Some(r1));
        v.replicas[1].offset = None;
        assert_eq!(retry_target(&v, Some(r0), false).map(|b| b.id), None);
        v.replicas.clear();
        assert!(retry_target(&v, None, true).is_none());
    }

    #[test]
    fn replicas_count_for_wait_when_reachable_healthy_and_caught_up() {
        let now = Instant::now();
        let c = cfg("");
        let mut v = view(&c, now, [0, 0]);
        let (m, _, _) = ids(&v);
        v.replicas[0].offset = Some(100);
        v.replicas[1].offset = Some(99);
        assert_eq!(replicas_holding(&v, 100, Some(m)), 1);
        assert_eq!(replicas_holding(&v, 99, Some(m)), 2);
        // A replica whose link just dropped still holds what it received.
        v.replicas[1].health = Health::LinkDown;
        assert_eq!(replicas_holding(&v, 99, Some(m)), 2);
        for h in [
            Health::Syncing,
            Health::Loading,
            Health::OtherHistory,
            Health::Unknown,
        ] {
            v.replicas[1].health = h;
            assert_eq!(replicas_holding(&v, 99, Some(m)), 1, "{h:?}");
        }
        v.replicas[1].health = Health::Ok;
        v.replicas[1].reachable = false;
        assert_eq!(replicas_holding(&v, 99, Some(m)), 1);
        v.replicas[0].offset = None;
        assert_eq!(replicas_holding(&v, 0, Some(m)), 0);
        // The master changed since the write: no replica counts.
        v.replicas[0].offset = Some(500);
        assert_eq!(replicas_holding(&v, 100, Some(m + 1000)), 0);
        assert_eq!(replicas_holding(&v, 100, None), 0);
        // No master known: offsets still count.
        v.master = None;
        assert_eq!(replicas_holding(&v, 100, Some(m)), 1);
    }

    #[test]
    fn writes_wait_out_a_planned_failover_up_to_the_hold() {
        let now = Instant::now();
        let c = cfg("");
        let mut v = view(&c, now, [0, 0]);
        let hold = Duration::from_millis(500);
        assert_eq!(write_hold(&v, hold, None, now), WriteHold::Go);
        // The master is gone, but not in a planned failover: fail fast.
        v.master = None;
        assert_eq!(write_hold(&v, hold, None, now), WriteHold::Go);
        assert_eq!(write_rejection(&v), ProxyError::NoMaster);
        v.switching = true;
        let until = now + hold;
        assert_eq!(write_hold(&v, hold, None, now), WriteHold::Hold { until });
        // The running hold keeps its deadline.
        let later = now + Duration::from_millis(300);
        assert_eq!(
            write_hold(&v, hold, Some(until), later),
            WriteHold::Hold { until }
        );
        assert_eq!(write_hold(&v, hold, Some(until), until), WriteHold::Go);
        assert_eq!(write_rejection(&v), ProxyError::FailoverUnderWay);
        assert_eq!(
            write_hold(&v, Duration::ZERO, None, now),
            WriteHold::Go,
            "hold_writes_ms: 0 fails at once"
        );
        // A master is known again: go, whatever the flag says.
        v.master = view(&c, now, [0, 0]).master;
        assert_eq!(write_hold(&v, hold, Some(until), later), WriteHold::Go);
    }
}
