//! Unit tests of the router's pure decisions.

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
    let m = Backend::new("127.0.0.1:1", Role::Master, cfg, &Default::default());
    let replicas = stale_ms
        .iter()
        .enumerate()
        .map(|(i, s)| ReplicaView {
            backend: Backend::new(
                &format!("127.0.0.1:{}", i + 2),
                Role::Replica,
                cfg,
                &Default::default(),
            ),
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
        shard: 0,
        cluster: None,
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
