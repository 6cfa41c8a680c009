//! The `routing` section: the default consistency level, the rules that override it
//! for some keys or commands, durable writes, and what reads do when no replica
//! qualifies or the master is down.

use super::size::optional_size;
use serde::{Deserialize, Serialize};

/// `routing.key_fence_capacity` when unset.
pub const DEFAULT_KEY_FENCE_CAPACITY: usize = 100_000;

/// How reads pick a backend.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// The level of every read no rule matches.
    pub default: LevelConfig,
    /// How to choose among qualifying replicas.
    pub replica_choice: ReplicaChoice,
    /// What to do when no replica qualifies for a replica read.
    pub fallback: Fallback,
    /// What reads do while the master is down.
    pub on_master_down: OnMasterDown,
    /// Rules checked in order; the first that matches a key decides for it.
    pub rules: Vec<RuleConfig>,
    /// Most keys the key fence of `read_your_writes: key` remembers; past it the proxy
    /// forgets them all and raises its one keyspace-wide fence instead (no stale read,
    /// fewer replica reads until the replicas catch up).
    pub key_fence_capacity: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default: LevelConfig::default(),
            replica_choice: ReplicaChoice::Balanced,
            fallback: Fallback::Master,
            on_master_down: OnMasterDown::ServeReplicas,
            rules: Vec::new(),
            key_fence_capacity: DEFAULT_KEY_FENCE_CAPACITY,
        }
    }
}

/// A consistency level and its budget.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelConfig {
    /// `master`, `replica` (bounded staleness) or `any` (any healthy replica).
    pub consistency: Consistency,
    /// Largest staleness a replica may have to serve the read (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    /// Largest offset gap a replica may have to serve the read (bytes; in YAML also a
    /// size such as `64kb`).
    #[serde(
        deserialize_with = "optional_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lag_bytes: Option<u64>,
    /// Whose writes a read must see: `connection` (this connection's own writes), `key`
    /// (any connection's acknowledged writes to the read's keys, and this connection's
    /// own) or `off`. `true` and `false` are accepted for `connection` and `off`.
    pub read_your_writes: ReadYourWrites,
}

impl Default for LevelConfig {
    fn default() -> Self {
        LevelConfig {
            consistency: Consistency::Replica,
            max_lag_ms: Some(1000),
            max_lag_bytes: None,
            read_your_writes: ReadYourWrites::Connection,
        }
    }
}

/// One routing rule.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A name shown in `PROXY EXPLAIN`, `/status` and metrics.
    pub name: String,
    /// Key patterns (Redis glob syntax); the rule matches a key that matches any.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Command names; if given, the rule matches only these commands.
    #[serde(default)]
    pub commands: Vec<String>,
    /// The level for reads this rule matches; unset fields come from `routing.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Budget in ms. With `max_lag_bytes`, the rule's budget: when the rule sets
    /// neither, both come from `routing.default` (see
    /// [`crate::policy::effective_level`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    /// Budget in bytes (in YAML also a size such as `64kb`). Inherited together with
    /// `max_lag_ms`, as a pair.
    #[serde(
        default,
        deserialize_with = "optional_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lag_bytes: Option<u64>,
    /// Read-your-writes for reads this rule matches (inherits when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<ReadYourWrites>,
    /// Durable writes: hold a write's reply until this many replicas hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitConfig>,
}

/// Durable-write settings of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WaitConfig {
    /// Replicas that must hold the write before the client gets the reply.
    pub replicas: u32,
    /// How long to wait before replying with an error (ms).
    pub timeout_ms: u64,
}

/// A consistency level.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Reads go to the master.
    Master,
    /// Reads go to a replica within the budget, else per `fallback`.
    Replica,
    /// Reads go to any healthy replica, however far behind.
    Any,
}

/// Whose writes a read is guaranteed to see (`read_your_writes`). Ordered by strength:
/// for a command whose keys fall under several levels, the strongest applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// No guarantee beyond the staleness budget.
    Off,
    /// After this connection's write is acknowledged, its reads go to a replica only
    /// once that replica holds the write.
    Connection,
    /// `connection`, and also: after any connection's write to a key is acknowledged,
    /// reads of that key (from every connection) go to a replica only once that
    /// replica holds the write.
    Key,
}

impl ReadYourWrites {
    /// The name used in YAML, status and `PROXY EXPLAIN`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadYourWrites::Off => "off",
            ReadYourWrites::Connection => "connection",
            ReadYourWrites::Key => "key",
        }
    }
}

impl<'de> Deserialize<'de> for ReadYourWrites {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// `connection | key | off`, or the booleans of earlier files.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Flag(bool),
            Name(String),
        }
        match Given::deserialize(d)? {
            Given::Flag(true) => Ok(ReadYourWrites::Connection),
            Given::Flag(false) => Ok(ReadYourWrites::Off),
            Given::Name(n) => match n.as_str() {
                "connection" => Ok(ReadYourWrites::Connection),
                "key" => Ok(ReadYourWrites::Key),
                "off" => Ok(ReadYourWrites::Off),
                other => Err(serde::de::Error::custom(format!(
                    "unknown read_your_writes `{other}`, expected one of `connection`, `key`, `off` (or true = connection, false = off)"
                ))),
            },
        }
    }
}

/// How to pick among qualifying replicas.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaChoice {
    /// The replica with the smallest staleness.
    LeastLag,
    /// Each in turn.
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastOutstanding,
    /// The replica with the lowest (requests in flight + 1) × smoothed reply latency
    /// (see [`crate::router::balanced_score`]).
    Balanced,
}

/// What a read does when no replica qualifies.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Serve it from the master.
    Master,
    /// Reply with an error saying why.
    Error,
}

/// What reads do while the master is down.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnMasterDown {
    /// Keep serving reads from replicas (their staleness grows).
    ServeReplicas,
    /// Fail reads too.
    Error,
}

impl RuleConfig {
    /// Whether the rule names this command (case-insensitive). A rule without a
    /// `commands` list names every command.
    pub fn names_command(&self, command: &str) -> bool {
        self.commands.is_empty()
            || self
                .commands
                .iter()
                .any(|c| c.eq_ignore_ascii_case(command))
    }
}

impl RoutingConfig {
    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&RuleConfig> {
        self.rules.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ryw(text: &str) -> Result<ReadYourWrites, String> {
        serde_yaml::from_str::<LevelConfig>(&format!("{{read_your_writes: {text}}}"))
            .map(|l| l.read_your_writes)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn read_your_writes_takes_a_mode_or_the_old_booleans() {
        assert_eq!(ryw("connection"), Ok(ReadYourWrites::Connection));
        assert_eq!(ryw("key"), Ok(ReadYourWrites::Key));
        assert_eq!(ryw("off"), Ok(ReadYourWrites::Off));
        assert_eq!(ryw("true"), Ok(ReadYourWrites::Connection));
        assert_eq!(ryw("false"), Ok(ReadYourWrites::Off));
        let e = ryw("keys").unwrap_err();
        assert!(
            e.contains("expected one of `connection`, `key`, `off`"),
            "{e}"
        );
        assert!(ryw("3").is_err());
        // Written out as the mode's name.
        let out = serde_yaml::to_string(&LevelConfig {
            read_your_writes: ReadYourWrites::Key,
            ..LevelConfig::default()
        })
        .unwrap();
        assert!(out.contains("read_your_writes: key"), "{out}");
        assert_eq!(
            serde_yaml::from_str::<LevelConfig>(&out).unwrap(),
            LevelConfig {
                read_your_writes: ReadYourWrites::Key,
                ..LevelConfig::default()
            }
        );
    }

    #[test]
    fn the_strongest_mode_orders_last() {
        assert!(ReadYourWrites::Key > ReadYourWrites::Connection);
        assert!(ReadYourWrites::Connection > ReadYourWrites::Off);
    }
}
