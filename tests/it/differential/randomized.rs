//! Randomized sessions: proptest generates commands over 3 clients and shrinks a
//! difference to a minimal case.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use super::compare::{dump, first_difference};
use super::session::{Cmd, Session, Step};
use super::world::World;

const RAND_KEYS: &[&str] = &["k0", "k1", "k2", "k3"];
const RAND_VALUES: &[&str] = &["a", "bb", "1", "42", "-3", "x y"];

/// One command of the randomized vocabulary (its words).
fn rand_command() -> impl Strategy<Value = Vec<String>> {
    let key = proptest::sample::select(RAND_KEYS);
    let val = proptest::sample::select(RAND_VALUES);
    let field = proptest::sample::select(&["f0", "f1", "f2"][..]);
    let int = 0i64..6;
    let w = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    prop_oneof![
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["SET", k, v])),
        key.clone().prop_map(move |k| w(&["GET", k])),
        key.clone().prop_map(move |k| w(&["INCR", k])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["INCRBY", k, &n.to_string()])),
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["APPEND", k, v])),
        key.clone().prop_map(move |k| w(&["DEL", k])),
        (key.clone(), key.clone()).prop_map(move |(a, b)| w(&["EXISTS", a, b])),
        key.clone().prop_map(move |k| w(&["TYPE", k])),
        (key.clone(), key.clone()).prop_map(move |(a, b)| w(&["MGET", a, b])),
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["LPUSH", k, v])),
        (key.clone(), val.clone()).prop_map(move |(k, v)| w(&["RPUSH", k, v])),
        key.clone().prop_map(move |k| w(&["LPOP", k])),
        key.clone().prop_map(move |k| w(&["LRANGE", k, "0", "-1"])),
        key.clone().prop_map(move |k| w(&["LLEN", k])),
        (key.clone(), field.clone(), val.clone()).prop_map(move |(k, f, v)| w(&["HSET", k, f, v])),
        (key.clone(), field.clone()).prop_map(move |(k, f)| w(&["HGET", k, f])),
        key.clone().prop_map(move |k| w(&["HGETALL", k])),
        (key.clone(), field.clone()).prop_map(move |(k, f)| w(&["HDEL", k, f])),
        (key.clone(), field.clone(), int.clone()).prop_map(move |(k, f, n)| w(&[
            "HINCRBY",
            k,
            f,
            &n.to_string()
        ])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["SADD", k, &n.to_string()])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["SREM", k, &n.to_string()])),
        (key.clone(), int.clone()).prop_map(move |(k, n)| w(&["SISMEMBER", k, &n.to_string()])),
        key.clone().prop_map(move |k| w(&["SCARD", k])),
        key.clone().prop_map(move |k| w(&["SMEMBERS", k])),
        Just(w(&["DBSIZE"])),
        Just(w(&["PING"])),
        val.prop_map(move |v| w(&["ECHO", v])),
        Just(w(&["GET"])),
        key.clone().prop_map(move |k| w(&["SET", k])),
        key.prop_map(move |k| w(&["NOSUCHCMD", k])),
    ]
}

/// One entry of a randomized session: a command, a MULTI block, or a SELECT.
#[derive(Clone, Debug)]
enum RandItem {
    Cmd(Vec<String>),
    /// MULTI, the commands, then EXEC (or DISCARD when the flag is false).
    Multi(Vec<Vec<String>>, bool),
    Select(u8),
}

fn rand_item() -> impl Strategy<Value = RandItem> {
    prop_oneof![
        8 => rand_command().prop_map(RandItem::Cmd),
        1 => (proptest::collection::vec(rand_command(), 1..4), proptest::bool::weighted(0.8))
            .prop_map(|(cmds, exec)| RandItem::Multi(cmds, exec)),
        1 => (0u8..3).prop_map(RandItem::Select),
    ]
}

/// A session from generated `(client, item)` entries.
fn rand_session(items: &[(usize, RandItem)]) -> Session {
    let mut s = Session::new("randomized", 3);
    let words = |w: &[String]| Cmd::Args(w.to_vec());
    for (c, item) in items {
        match item {
            RandItem::Cmd(w) => s = s.cmds(*c, vec![words(w)], 1),
            RandItem::Select(db) => s = s.cmd(*c, &format!("SELECT {db}")),
            RandItem::Multi(cmds, exec) => {
                s = s.cmd(*c, "MULTI");
                for w in cmds {
                    s = s.cmds(*c, vec![words(w)], 1);
                }
                s = s.cmd(*c, if *exec { "EXEC" } else { "DISCARD" });
            }
        }
    }
    s
}

/// Runs proptest-generated sessions on worlds `a` and `b`; a difference is shrunk to a
/// minimal case, which the panic shows.
fn check_randomized(a: &World, b: &World, default_cases: u32) {
    let cases = std::env::var("DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = ProptestConfig {
        cases,
        max_shrink_iters: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec((0usize..3, rand_item()), 20..40);
    let result = runner.run(&strategy, |items| {
        let session = rand_session(&items);
        let (ra, rb) = std::thread::scope(|s| {
            let other = s.spawn(|| b.run(&session));
            let first = a.run(&session);
            (first, other.join().expect("session runs"))
        });
        std::thread::scope(|s| {
            s.spawn(|| b.reset());
            a.reset();
        });
        if std::env::var_os("DIFF_DUMP").is_some() {
            dump(&session, (a.label, b.label), &ra, &rb);
        }
        match first_difference(&session, (a.label, b.label), &ra, &rb) {
            None => Ok(()),
            Some(diff) => {
                let script: Vec<String> = session
                    .steps
                    .iter()
                    .map(|st| match st {
                        Step::Send { client, cmds, .. } => {
                            format!("  client {client}: {}", cmds[0].label())
                        }
                        other => format!("  {other:?}"),
                    })
                    .collect();
                Err(TestCaseError::fail(format!(
                    "{diff}\nsession:\n{}",
                    script.join("\n")
                )))
            }
        }
    });
    if let Err(e) = result {
        panic!(
            "randomized sessions differ between {} and {}: {e}",
            a.label, b.label
        );
    }
}

#[test]
fn randomized_sessions_match() {
    let (direct, proxied) = World::pair(("direct", false), ("proxied", true));
    check_randomized(&direct, &proxied, 24);
}

/// The randomized mode's harness is deterministic too.
#[test]
fn randomized_direct_vs_direct() {
    let (a, b) = World::pair(("direct-a", false), ("direct-b", false));
    check_randomized(&a, &b, 8);
}
