//! The routing policy compiled from `proxy.yaml`: rules by key pattern and command name,
//! each giving a consistency level (and, for writes, durability).
//!
//! A key takes the level of the first rule that matches it (or the default); a command
//! with several keys takes the strictest of its keys' levels ([`Level::is_stricter_than`]:
//! `master` over `replica` over `any`, then the smaller time budget, then the smaller
//! byte budget), with the strongest read-your-writes of its keys' levels (`key` over
//! `connection` over `off`). A rule's
//! unset fields come from the default ([`effective_level`]). This module is the one
//! definition of both rules; `config` only parses and validates. Patterns use Redis's glob
//! dialect (as `KEYS` does) and are classified when compiled, so the common shapes
//! (`literal`, `prefix*`, `*suffix`) match without the general matcher.
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use crate::commands::Command;
use crate::config::{
    Config, Consistency, Fallback, LevelConfig, OnMasterDown, ReadYourWrites, ReplicaChoice,
    RuleConfig,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// A staleness budget: a replica qualifies if within both bounds that are set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Budget {
    /// Largest staleness (ms), if bounded.
    pub max_lag_ms: Option<u64>,
    /// Largest offset gap (bytes), if bounded.
    pub max_lag_bytes: Option<u64>,
}

impl Budget {
    /// Whether `staleness_ms` and `lag_bytes` (unknown = `None`, which never qualifies
    /// against a set bound) are within this budget.
    #[inline]
    pub fn admits(&self, staleness_ms: Option<u64>, lag_bytes: Option<u64>) -> bool {
        let ms_ok = match self.max_lag_ms {
            None => true,
            Some(max) => matches!(staleness_ms, Some(s) if s <= max),
        };
        let bytes_ok = match self.max_lag_bytes {
            None => true,
            Some(max) => matches!(lag_bytes, Some(b) if b <= max),
        };
        ms_ok && bytes_ok
    }

    /// Order by strictness: smaller bounds are stricter; an unset bound is loosest.
    fn strictness_key(&self) -> (u64, u64) {
        (
            self.max_lag_ms.unwrap_or(u64::MAX),
            self.max_lag_bytes.unwrap_or(u64::MAX),
        )
    }
}

/// A resolved consistency level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Master, bounded-staleness replica, or any replica.
    pub consistency: Consistency,
    /// The budget (meaningful for `Replica`).
    pub budget: Budget,
    /// Index of `budget` in [`Policy::budgets`] (the pools the monitor keeps).
    pub budget_idx: usize,
    /// Whose writes a read must see: none, the connection's own, or also every
    /// connection's writes to its keys.
    pub ryw: ReadYourWrites,
}

impl Level {
    /// Whether `self` is stricter than `other`, for a command whose keys fall under
    /// both: `master` over `replica` over `any`; between two `replica` levels, the
    /// smaller `max_lag_ms`, then the smaller `max_lag_bytes` (an unset bound is the
    /// loosest). The winner's budget is taken whole, never combined with the other's,
    /// because the monitor keeps a replica pool per budget the policy names
    /// ([`Policy::budgets`]); budgets of `master` and `any` levels do not count. Equal
    /// levels are not stricter than each other (the first key's rule decides).
    #[inline]
    pub fn is_stricter_than(&self, other: &Level) -> bool {
        self.rank() < other.rank()
    }

    /// Strictness rank: lower is stricter.
    fn rank(&self) -> (u8, u64, u64) {
        match self.consistency {
            Consistency::Master => (0, 0, 0),
            Consistency::Replica => {
                let (a, b) = self.budget.strictness_key();
                (1, a, b)
            }
            Consistency::Any => (2, 0, 0),
        }
    }
}

/// Durable-write requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Replicas that must hold the write.
    pub replicas: u32,
    /// How long to wait (ms; a configured time beyond `u32::MAX` ms, 49 days, is that).
    pub timeout_ms: u32,
}

/// A compiled Redis glob pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    pattern: Box<[u8]>,
    shape: Shape,
}

#[derive(Clone, Debug)]
enum Shape {
    Everything,
    Literal,
    Prefix(usize),
    Suffix(usize),
    General,
}

impl Glob {
    /// Compile a pattern.
    pub fn new(pattern: &str) -> Glob {
        let p = pattern.as_bytes();
        let special = |c: &u8| matches!(c, b'*' | b'?' | b'[' | b'\\');
        let shape = if p.iter().all(|c| *c == b'*') && !p.is_empty() {
            Shape::Everything
        } else if !p.iter().any(special) {
            Shape::Literal
        } else if let Some((b'*', head)) = p.split_last().map(|(l, h)| (*l, h)) {
            if !head.iter().any(special) {
                Shape::Prefix(head.len())
            } else {
                Shape::General
            }
        } else if let Some((b'*', tail)) = p.split_first().map(|(f, t)| (*f, t)) {
            if !tail.iter().any(special) {
                Shape::Suffix(tail.len())
            } else {
                Shape::General
            }
        } else {
            Shape::General
        };
        Glob {
            pattern: p.into(),
            shape,
        }
    }

    /// Whether `s` matches.
    #[inline]
    pub fn matches(&self, s: &[u8]) -> bool {
        match self.shape {
            Shape::Everything => true,
            Shape::Literal => *s == *self.pattern,
            Shape::Prefix(n) => self.pattern.get(..n).is_some_and(|p| s.starts_with(p)),
            Shape::Suffix(n) => self
                .pattern
                .get(self.pattern.len() - n..)
                .is_some_and(|p| s.ends_with(p)),
            Shape::General => glob_match(&self.pattern, s),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> String {
        String::from_utf8_lossy(&self.pattern).into_owned()
    }
}

/// Redis's glob matching (`stringmatchlen`, case-sensitive): `*`, `?`, `[abc]`, `[^a]`,
/// `[a-z]` and `\` escapes.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let mut skip_longer = false;
    match_inner(pattern, s, &mut skip_longer)
}

fn match_inner(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool) -> bool {
    while let (Some(&pc), Some(&sc)) = (p.first(), s.first()) {
        match pc {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = p.get(1..).unwrap_or_default();
                }
                if p.len() == 1 {
                    return true;
                }
                let rest = p.get(1..).unwrap_or_default();
                while !s.is_empty() {
                    if match_inner(rest, s, skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = s.get(1..).unwrap_or_default();
                }
                *skip_longer = true;
                return false;
            }
            b'?' => {
                s = s.get(1..).unwrap_or_default();
            }
            b'[' => {
                p = p.get(1..).unwrap_or_default();
                let not = p.first() == Some(&b'^');
                if not {
                    p = p.get(1..).unwrap_or_default();
                }
                let mut matched = false;
                loop {
                    match p {
                        [b'\\', esc, ..] => {
                            p = p.get(1..).unwrap_or_default();
                            if *esc == sc {
                                matched = true;
                            }
                        }
                        [b']', ..] => break,
                        [] => {
                            // Unterminated class: Redis treats the end as its close.
                            break;
                        }
                        [start, b'-', end, ..] => {
                            let (lo, hi) = if start <= end {
                                (*start, *end)
                            } else {
                                (*end, *start)
                            };
                            if sc >= lo && sc <= hi {
                                matched = true;
                            }
                            p = p.get(2..).unwrap_or_default();
                        }
                        [c, ..] => {
                            if *c == sc {
                                matched = true;
                            }
                        }
                    }
                    p = p.get(1..).unwrap_or_default();
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = s.get(1..).unwrap_or_default();
                if p.is_empty() {
                    // The class ran to the end of the pattern.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = p.get(1..).unwrap_or_default();
                if p.first() != Some(&sc) {
                    return false;
                }
                s = s.get(1..).unwrap_or_default();
            }
            _ => {
                if pc != sc {
                    return false;
                }
                s = s.get(1..).unwrap_or_default();
            }
        }
        p = p.get(1..).unwrap_or_default();
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = p.get(1..).unwrap_or_default();
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// Key patterns (empty: the rule is by command only).
    pub keys: Vec<Glob>,
    /// Lowercase command names (empty: any command).
    pub commands: Vec<String>,
    /// The same commands as table entries (containers include their subcommands), for
    /// a pointer comparison per request.
    command_ptrs: rustc_hash::FxHashSet<usize>,
    /// The level for reads.
    pub level: Level,
    /// Durability for writes.
    pub wait: Option<Wait>,
    /// Requests this rule decided.
    pub hits: AtomicU64,
}

impl Rule {
    #[inline]
    fn matches_command(&self, cmd: &Command) -> bool {
        self.commands.is_empty() || self.command_ptrs.contains(&command_id(cmd))
    }

    #[inline]
    fn matches_key(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|g| g.matches(key))
    }
}

/// A command table entry's identity.
#[inline]
pub fn command_id(cmd: &Command) -> usize {
    cmd as *const Command as usize
}

/// The table entries `names` denote: each named command, and every subcommand of a
/// named container (`config` covers `config|set`). Names unknown to the table denote
/// nothing (validation already rejected them).
pub fn command_ids(names: &[String]) -> rustc_hash::FxHashSet<usize> {
    let mut out = rustc_hash::FxHashSet::default();
    for name in names {
        if let Some(c) = crate::commands::lookup_name(name.as_bytes()) {
            out.insert(command_id(c));
            for sub in c.subcommands {
                out.insert(command_id(sub));
            }
        }
    }
    out
}

/// What the policy says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The level for a read.
    pub level: Level,
    /// The rule that decided the level (`None`: the default).
    pub rule: Option<usize>,
    /// Durability, for a write.
    pub wait: Option<Wait>,
}

/// The compiled routing policy. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Policy {
    /// Increases with every reload.
    pub generation: u64,
    /// The level of anything no rule matches.
    pub default: Level,
    /// Rules in file order.
    pub rules: Vec<Rule>,
    /// Distinct replica budgets in use; the monitor keeps a pool per entry.
    pub budgets: Vec<Budget>,
    /// How to pick among qualifying replicas.
    pub choice: ReplicaChoice,
    /// What to do when no replica qualifies.
    pub fallback: Fallback,
    /// What reads do while the master is down.
    pub on_master_down: OnMasterDown,
    /// Whether any level (the default or a rule's) has `read_your_writes: key`: only
    /// then do writes record their keys in the key fence.
    pub key_fence: bool,
    /// `routing.key_fence_capacity`.
    pub key_fence_capacity: usize,
    /// Requests decided by the default level.
    pub default_hits: AtomicU64,
}

impl Policy {
    /// Take over the hit counts of `old` (the policy this one replaces): each rule's by
    /// its name, and the default's, so that the counters only ever grow across reloads
    /// (Prometheus `rate()` reads a drop as a restart). A new rule starts at 0.
    pub fn carry_hits(&self, old: &Policy) {
        let take = |to: &AtomicU64, from: &AtomicU64| {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        take(&self.default_hits, &old.default_hits);
        for r in &self.rules {
            if let Some(o) = old.rules.iter().find(|o| o.name == r.name) {
                take(&r.hits, &o.hits);
            }
        }
    }

    /// Compile the routing section of a validated configuration.
    pub fn compile(cfg: &Config, generation: u64) -> Policy {
        let r = &cfg.routing;
        let mut budgets: Vec<Budget> = Vec::new();
        let mut level_of = |lc: &LevelConfig| -> Level {
            let budget = Budget {
                max_lag_ms: lc.max_lag_ms,
                max_lag_bytes: lc.max_lag_bytes,
            };
            let budget_idx = match budgets.iter().position(|b| *b == budget) {
                Some(i) => i,
                None => {
                    budgets.push(budget);
                    budgets.len() - 1
                }
            };
            Level {
                consistency: lc.consistency,
                budget,
                budget_idx,
                ryw: lc.read_your_writes,
            }
        };
        let default = level_of(&r.default);
        let rules: Vec<Rule> = r
            .rules
            .iter()
            .map(|rc: &RuleConfig| {
                let lc = effective_level(rc, &r.default);
                Rule {
                    name: rc.name.clone(),
                    keys: rc.keys.iter().map(|k| Glob::new(k)).collect(),
                    commands: rc.commands.iter().map(|c| c.to_ascii_lowercase()).collect(),
                    command_ptrs: command_ids(&rc.commands),
                    level: level_of(&lc),
                    wait: rc.wait.map(|w| Wait {
                        replicas: w.replicas,
                        timeout_ms: u32::try_from(w.timeout_ms).unwrap_or(u32::MAX),
                    }),
                    hits: AtomicU64::new(0),
                }
            })
            .collect();
        let key_fence = default.ryw == ReadYourWrites::Key
            || rules.iter().any(|r| r.level.ryw == ReadYourWrites::Key);
        Policy {
            generation,
            default,
            key_fence,
            key_fence_capacity: r.key_fence_capacity,
            rules,
            budgets,
            choice: r.replica_choice,
            fallback: r.fallback,
            on_master_down: r.on_master_down,
            default_hits: AtomicU64::new(0),
        }
    }

    /// Resolve the level for command `cmd` whose keys are given by `for_each_key`, which
    /// calls its argument once per key: the strictest of the keys' levels (see
    /// [`Level::is_stricter_than`]; `rule` is the rule that gave it), with the strongest
    /// read-your-writes of the keys' levels, and the largest `wait` of any key's
    /// rule. A keyless command takes the first rule that names it and has no key
    /// patterns, or the default.
    pub fn resolve(
        &self,
        cmd: &Command,
        for_each_key: impl FnOnce(&mut dyn FnMut(&[u8])),
    ) -> Resolved {
        let mut best: Option<(Level, Option<usize>)> = None;
        let mut wait: Option<Wait> = None;
        let mut ryw = ReadYourWrites::Off;
        let mut any_key = false;
        let mut visit = |key: &[u8]| {
            any_key = true;
            let (level, rule, w) = self.level_for_key(cmd, key);
            wait = max_wait(wait, w);
            ryw = ryw.max(level.ryw);
            match &best {
                Some((b, _)) if !level.is_stricter_than(b) => {}
                _ => best = Some((level, rule)),
            }
        };
        for_each_key(&mut visit);
        if !any_key {
            // Keyless commands match rules that name them and have no key patterns.
            for (i, rule) in self.rules.iter().enumerate() {
                if rule.keys.is_empty() && !rule.commands.is_empty() && rule.matches_command(cmd) {
                    return Resolved {
                        level: rule.level,
                        rule: Some(i),
                        wait: rule.wait,
                    };
                }
            }
            return Resolved {
                level: self.default,
                rule: None,
                wait: None,
            };
        }
        let (mut level, rule) = best.unwrap_or((self.default, None));
        level.ryw = ryw;
        Resolved { level, rule, wait }
    }

    fn level_for_key(&self, cmd: &Command, key: &[u8]) -> (Level, Option<usize>, Option<Wait>) {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches_command(cmd) {
                continue;
            }
            if rule.keys.is_empty() || rule.matches_key(key) {
                return (rule.level, Some(i), rule.wait);
            }
        }
        (self.default, None, None)
    }

    /// Count a decision for `/status`.
    #[inline]
    pub fn count_hit(&self, rule: Option<usize>) {
        let c = match rule.and_then(|i| self.rules.get(i)) {
            Some(r) => &r.hits,
            None => &self.default_hits,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A rule's name, or `default`.
    pub fn rule_name(&self, rule: Option<usize>) -> &str {
        rule.and_then(|i| self.rules.get(i))
            .map(|r| r.name.as_str())
            .unwrap_or("default")
    }
}

fn max_wait(a: Option<Wait>, b: Option<Wait>) -> Option<Wait> {
    match (a, b) {
        (Some(x), Some(y)) => Some(Wait {
            replicas: x.replicas.max(y.replicas),
            timeout_ms: x.timeout_ms.max(y.timeout_ms),
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A rule's level with every unset field taken from `default` (normally
/// `routing.default`). The staleness budget is inherited as a pair: a rule that sets
/// `max_lag_ms` or `max_lag_bytes` has exactly the budgets it sets, so a rule can trade
/// the default's time budget for a byte budget; a rule that sets neither has the
/// default's. Validation checks and the policy compiles these levels.
pub fn effective_level(rc: &RuleConfig, default: &LevelConfig) -> LevelConfig {
    LevelConfig {
        consistency: rc.consistency.unwrap_or(default.consistency),
        max_lag_ms: rc.max_lag_ms.or(if rc.max_lag_bytes.is_some() {
            None
        } else {
            default.max_lag_ms
        }),
        max_lag_bytes: rc.max_lag_bytes.or(if rc.max_lag_ms.is_some() {
            None
        } else {
            default.max_lag_bytes
        }),
        read_your_writes: rc.read_your_writes.unwrap_or(default.read_your_writes),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("stock:*", "stock:1", true),
            ("stock:*", "stocks:1", false),
            ("*:hot", "feed:hot", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hallo", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("user:[0-9]*", "user:7abc", true),
            ("", "", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("a**", "a", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s.as_bytes()), *want, "{p} ~ {s}");
            assert_eq!(
                glob_match(p.as_bytes(), s.as_bytes()),
                *want,
                "general {p} ~ {s}"
            );
        }
    }

    fn policy(yaml: &str) -> Policy {
        let cfg: Config = serde_yaml::from_str(yaml).unwrap();
        Policy::compile(&cfg, 1)
    }

    const YAML: &str = r#"
backend: {master: "127.0.0.1:1"}
routing:
  default: {consistency: replica, max_lag_ms: 1000}
  rules:
    - {name: stock, keys: ["stock:*"], consistency: master, wait: {replicas: 1, timeout_ms: 100}}
    - {name: feed, keys: ["feed:*"], max_lag_ms: 5000}
    - {name: scans, commands: [scan, KEYS], consistency: any}
"#;

    fn resolve(p: &Policy, cmd: &str, keys: &[&str]) -> Resolved {
        let cmd = crate::commands::lookup_name(cmd.as_bytes()).unwrap();
        p.resolve(cmd, |f| {
            for k in keys {
                f(k.as_bytes())
            }
        })
    }

    #[test]
    fn strictest_key_wins() {
        let p = policy(YAML);
        assert_eq!(resolve(&p, "get", &["feed:1"]).rule, Some(1));
        assert_eq!(
            resolve(&p, "get", &["feed:1"]).level.budget.max_lag_ms,
            Some(5000)
        );
        assert_eq!(resolve(&p, "get", &["other"]).rule, None);
        let r = resolve(&p, "mget", &["feed:1", "stock:9", "x"]);
        assert_eq!(r.rule, Some(0));
        assert_eq!(r.level.consistency, Consistency::Master);
        assert_eq!(r.wait.map(|w| w.replicas), Some(1));
        let r = resolve(&p, "mget", &["feed:1", "x"]);
        assert_eq!(r.level.budget.max_lag_ms, Some(1000));
        assert_eq!(resolve(&p, "scan", &[]).level.consistency, Consistency::Any);
        assert_eq!(resolve(&p, "keys", &[]).rule, Some(2));
        assert_eq!(resolve(&p, "dbsize", &[]).rule, None);
        assert_eq!(p.budgets.len(), 2);
    }

    fn level(consistency: Consistency, ms: Option<u64>, bytes: Option<u64>, ryw: bool) -> Level {
        let ryw = if ryw {
            ReadYourWrites::Connection
        } else {
            ReadYourWrites::Off
        };
        Level {
            consistency,
            budget: Budget {
                max_lag_ms: ms,
                max_lag_bytes: bytes,
            },
            budget_idx: 0,
            ryw,
        }
    }

    /// The level `resolve` gives a command whose keys have `a` and then `b`.
    fn strictest(a: Level, b: Level) -> Level {
        let winner = if b.is_stricter_than(&a) { b } else { a };
        Level {
            ryw: a.ryw.max(b.ryw),
            ..winner
        }
    }

    #[test]
    fn strictest_level() {
        use Consistency::{Any, Master, Replica};
        let replica = |ms, bytes, ryw| level(Replica, ms, bytes, ryw);
        let any = level(Any, None, None, false);
        let master = level(Master, None, None, false);
        // The cases `LevelConfig::strictest` documented, with the same answers.
        assert_eq!(
            strictest(
                replica(Some(100), None, false),
                replica(Some(50), Some(10), true)
            ),
            replica(Some(50), Some(10), true)
        );
        assert_eq!(
            strictest(any, replica(Some(100), None, false)),
            replica(Some(100), None, false)
        );
        assert_eq!(
            strictest(replica(Some(100), None, true), master).consistency,
            Master
        );
        let any_with_budget = level(Any, Some(1), None, false);
        assert_eq!(
            strictest(any_with_budget, replica(Some(100), None, false))
                .budget
                .max_lag_ms,
            Some(100)
        );
        assert!(master.is_stricter_than(&replica(Some(0), Some(0), true)));
        assert!(replica(None, None, false).is_stricter_than(&any));
        assert!(!any.is_stricter_than(&any));
        // Where a merge would differ: the winner's budget is taken whole (the monitor
        // keeps pools per named budget), ordered by time budget first.
        assert_eq!(
            strictest(
                replica(Some(100), Some(10), false),
                replica(Some(50), None, false)
            ),
            replica(Some(50), None, false)
        );
        assert_eq!(
            strictest(
                replica(Some(50), Some(10), false),
                replica(Some(50), None, false)
            ),
            replica(Some(50), Some(10), false)
        );
        // Equal levels: the first decides; read-your-writes if either asks.
        assert_eq!(
            strictest(
                replica(Some(50), None, false),
                replica(Some(50), None, true)
            ),
            replica(Some(50), None, true)
        );
        // A master level's read-your-writes is moot but kept.
        assert_eq!(
            strictest(master, replica(Some(1), None, true)).ryw,
            ReadYourWrites::Connection
        );
    }

    #[test]
    fn read_your_writes_if_any_key_asks() {
        let p = policy(
            r#"
backend: {master: "127.0.0.1:1"}
routing:
  default: {consistency: replica, max_lag_ms: 1000, read_your_writes: false}
  rules:
    - {name: cart, keys: ["cart:*"], max_lag_ms: 2000, read_your_writes: true}
"#,
        );
        let r = resolve(&p, "mget", &["x", "cart:1"]);
        assert_eq!(r.rule, None, "the default's budget is stricter");
        assert_eq!(r.level.budget.max_lag_ms, Some(1000));
        assert_eq!(r.level.ryw, ReadYourWrites::Connection);
        assert_eq!(resolve(&p, "get", &["x"]).level.ryw, ReadYourWrites::Off);
        assert!(!p.key_fence);
    }

    #[test]
    fn the_strongest_read_your_writes_wins_key_over_connection_over_off() {
        let p = policy(
            r#"
backend: {master: "127.0.0.1:1"}
routing:
  default: {consistency: replica, max_lag_ms: 1000, read_your_writes: off}
  rules:
    - {name: cart, keys: ["cart:*"], read_your_writes: key}
    - {name: sess, keys: ["sess:*"], read_your_writes: true}
    - {name: feed, keys: ["feed:*"], read_your_writes: false}
"#,
        );
        assert!(p.key_fence);
        let ryw = |keys: &[&str]| resolve(&p, "mget", keys).level.ryw;
        assert_eq!(ryw(&["x"]), ReadYourWrites::Off);
        assert_eq!(ryw(&["feed:1"]), ReadYourWrites::Off);
        assert_eq!(ryw(&["sess:1", "x"]), ReadYourWrites::Connection);
        assert_eq!(ryw(&["x", "sess:1", "cart:1"]), ReadYourWrites::Key);
        assert_eq!(ryw(&["cart:1", "feed:1"]), ReadYourWrites::Key);
    }

    fn rule(yaml: &str) -> RuleConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn rules_inherit_from_the_default_and_budgets_as_a_pair() {
        let default = LevelConfig {
            consistency: Consistency::Replica,
            max_lag_ms: Some(800),
            max_lag_bytes: Some(1024),
            read_your_writes: ReadYourWrites::Off,
        };
        let l = effective_level(&rule("{name: c, keys: [c]}"), &default);
        assert_eq!(l, default);
        let l = effective_level(&rule("{name: a, keys: [a], max_lag_bytes: 4096}"), &default);
        assert_eq!((l.max_lag_ms, l.max_lag_bytes), (None, Some(4096)));
        let l = effective_level(&rule("{name: a, keys: [a], max_lag_ms: 5}"), &default);
        assert_eq!((l.max_lag_ms, l.max_lag_bytes), (Some(5), None));
        let l = effective_level(
            &rule("{name: b, keys: [b], consistency: master, read_your_writes: true}"),
            &default,
        );
        assert_eq!(l.consistency, Consistency::Master);
        assert_eq!(l.read_your_writes, ReadYourWrites::Connection);
        assert_eq!(l.max_lag_ms, Some(800));
    }
}
