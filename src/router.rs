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
mod tests;
