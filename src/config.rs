//! `proxy.yaml`: the schema, its defaults, `${ENV}` interpolation and validation.
//!
//! Every struct denies unknown keys. Values are checked while they are deserialized
//! (addresses, globs, sizes), so `serde_yaml` reports the line and column of a bad
//! value; checks that need several values at once run in [`Config::validate`].

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to. Changing it needs a restart.
    pub listen: String,
    /// Worker threads of the runtime; 0 means one per available core. Restart needed.
    pub workers: usize,
    /// How long SIGTERM waits for in-flight replies before closing connections (ms).
    pub shutdown_grace_ms: u64,
    /// The admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Where the Redis master and replicas are and how to talk to them.
    pub backend: BackendConfig,
    /// The replication monitor.
    pub replication: ReplicationConfig,
    /// Read routing policy.
    pub routing: RoutingConfig,
    /// Users clients authenticate as. Empty: no authentication is required.
    pub users: Vec<UserConfig>,
    /// Commands refused to every client.
    pub deny_commands: Vec<String>,
    /// Per-client limits.
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7480".into(),
            workers: 0,
            shutdown_grace_ms: 10_000,
            admin: AdminConfig::default(),
            backend: BackendConfig::default(),
            replication: ReplicationConfig::default(),
            routing: RoutingConfig::default(),
            users: Vec::new(),
            deny_commands: default_deny_commands(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Commands denied by default: they reconfigure or stop the servers behind the proxy.
pub fn default_deny_commands() -> Vec<String> {
    ["SHUTDOWN", "REPLICAOF", "SLAVEOF", "FAILOVER", "DEBUG", "SYNC", "PSYNC", "CLUSTER"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, `/status`, `/`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin endpoint; empty disables it.
    pub listen: String,
    /// Bearer token required on every admin request; empty: none.
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:7481".into(), token: Secret::default() }
    }
}

/// Backends: a static master and replicas, or Sentinel.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// The master's address (static topology).
    pub master: Option<String>,
    /// The replicas' addresses (static topology).
    pub replicas: Vec<String>,
    /// Discover the topology from Sentinel instead.
    pub sentinel: Option<SentinelConfig>,
    /// ACL user for backend connections; empty: the default user.
    pub username: String,
    /// Password for backend connections; empty: none.
    pub password: Secret,
    /// Shared connections per backend, per selected database and protocol version.
    pub connections: usize,
    /// Connect (and handshake) timeout (ms).
    pub connect_timeout_ms: u64,
    /// A shared connection whose oldest request has waited this long is declared dead
    /// and its requests fail (reads to replicas are retried on the master) (ms).
    pub command_timeout_ms: u64,
    /// First reconnect delay after a failure; doubles up to `reconnect_max_ms` (ms).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (ms).
    pub reconnect_max_ms: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            master: None,
            replicas: Vec::new(),
            sentinel: None,
            username: String::new(),
            password: Secret::default(),
            connections: 2,
            connect_timeout_ms: 1000,
            command_timeout_ms: 3000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2000,
        }
    }
}

/// Sentinel discovery.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// Sentinel addresses; any that answers is used.
    pub addresses: Vec<String>,
    /// The monitored master's name.
    pub master_name: String,
    /// ACL user for Sentinel connections.
    #[serde(default)]
    pub username: String,
    /// Password for Sentinel connections.
    #[serde(default)]
    pub password: Secret,
    /// How often the topology is re-read even without events (ms).
    #[serde(default = "default_sentinel_refresh_ms")]
    pub refresh_ms: u64,
}

fn default_sentinel_refresh_ms() -> u64 {
    1000
}

/// The replication monitor: how offsets are polled and how replicas enter the pool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Time between polls of each backend's replication state (ms).
    pub poll_interval_ms: u64,
    /// A poll without an answer for this long counts as a failure (ms).
    pub poll_timeout_ms: u64,
    /// A replica back within budget rejoins the pool only after staying within it this
    /// long (ms).
    pub dwell_ms: u64,
    /// How much staleness history the status page keeps (seconds).
    pub history_secs: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig { poll_interval_ms: 50, poll_timeout_ms: 1000, dwell_ms: 1000, history_secs: 300 }
    }
}

/// How reads pick a backend.
#[derive(Clone, Debug, Deserialize)]
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
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default: LevelConfig::default(),
            replica_choice: ReplicaChoice::LeastOutstanding,
            fallback: Fallback::Master,
            on_master_down: OnMasterDown::ServeReplicas,
            rules: Vec::new(),
        }
    }
}

/// A consistency level and its budget.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelConfig {
    /// `master`, `replica` (bounded staleness) or `any` (any healthy replica).
    pub consistency: Consistency,
    /// Largest staleness a replica may have to serve the read (ms).
    pub max_lag_ms: Option<u64>,
    /// Largest offset gap a replica may have to serve the read (bytes).
    pub max_lag_bytes: Option<u64>,
    /// After a client's write, its reads wait for replicas to catch up to it.
    pub read_your_writes: bool,
}

impl Default for LevelConfig {
    fn default() -> Self {
        LevelConfig {
            consistency: Consistency::Replica,
            max_lag_ms: Some(1000),
            max_lag_bytes: None,
            read_your_writes: true,
        }
    }
}

/// One routing rule.
#[derive(Clone, Debug, Deserialize)]
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
    #[serde(default)]
    pub consistency: Option<Consistency>,
    /// Budget in ms (inherits the default's when unset).
    #[serde(default)]
    pub max_lag_ms: Option<u64>,
    /// Budget in bytes (inherits the default's when unset).
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
    /// Read-your-writes for reads this rule matches (inherits when unset).
    #[serde(default)]
    pub read_your_writes: Option<bool>,
    /// Durable writes: hold a write's reply until this many replicas hold it.
    #[serde(default)]
    pub wait: Option<WaitConfig>,
}

/// Durable-write settings of a rule.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitConfig {
    /// Replicas that must hold the write before the client gets the reply.
    pub replicas: u32,
    /// How long to wait before replying with an error (ms).
    pub timeout_ms: u64,
}

/// A consistency level.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Reads go to the master.
    Master,
    /// Reads go to a replica within the budget, else per `fallback`.
    Replica,
    /// Reads go to any healthy replica, however far behind.
    Any,
}

/// How to pick among qualifying replicas.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaChoice {
    /// The replica with the smallest staleness.
    LeastLag,
    /// Each in turn.
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastOutstanding,
}

/// What a read does when no replica qualifies.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Serve it from the master.
    Master,
    /// Reply with an error saying why.
    Error,
}

/// What reads do while the master is down.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnMasterDown {
    /// Keep serving reads from replicas (their staleness grows).
    ServeReplicas,
    /// Fail reads too.
    Error,
}

/// A user clients authenticate as.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name (`default` is the one `AUTH <password>` uses).
    pub name: String,
    /// The password.
    pub password: Secret,
    /// `all`, `read` (read-only commands), or a list of command names.
    #[serde(default)]
    pub commands: CommandAccess,
    /// Key patterns the user may touch.
    #[serde(default = "all_keys")]
    pub keys: Vec<String>,
    /// Whether the user may run admin commands (`CONFIG`, `FLUSHALL`, …).
    #[serde(default)]
    pub admin: bool,
}

fn all_keys() -> Vec<String> {
    vec!["*".into()]
}

/// Which commands a user may run.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(untagged)]
pub enum CommandAccess {
    /// `all` or `read`.
    Class(AccessClass),
    /// Exactly these commands.
    List(Vec<String>),
    /// Everything not admin (`all`).
    #[default]
    #[serde(skip)]
    Unset,
}

/// A named class of commands.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessClass {
    /// Every command (admin ones only with `admin: true`).
    All,
    /// Read-only commands.
    Read,
}

/// Per-client limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most client connections at once; past it new clients get an error and are closed.
    pub max_clients: usize,
    /// Close a client idle this long; 0: never (ms).
    pub idle_timeout_ms: u64,
    /// Largest bulk string in a request (bytes).
    pub proto_max_bulk_len: ByteSize,
    /// Largest argument count of a request.
    pub max_multibulk_len: u64,
    /// Largest buffered, not yet forwarded, request data of one client (bytes).
    pub client_query_buffer_limit: ByteSize,
    /// Largest reply data waiting for a client to read it (bytes).
    pub client_output_buffer_limit: ByteSize,
    /// The same for a client in pub/sub or MONITOR mode (bytes).
    pub pubsub_output_buffer_limit: ByteSize,
    /// Most requests of one client in flight at once; past it the proxy stops reading.
    pub max_pipeline: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clients: 10_000,
            idle_timeout_ms: 0,
            proto_max_bulk_len: ByteSize(512 * 1024 * 1024),
            max_multibulk_len: i32::MAX as u64,
            client_query_buffer_limit: ByteSize(1024 * 1024 * 1024),
            client_output_buffer_limit: ByteSize(256 * 1024 * 1024),
            pubsub_output_buffer_limit: ByteSize(32 * 1024 * 1024),
            max_pipeline: 4096,
        }
    }
}

/// A size in bytes: an integer, or a string with a `kb`/`mb`/`gb` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?}: write a number of bytes, or a number with kb, mb or gb (e.g. 64mb)"
                ))
            }),
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gb") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("mb") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("kb") {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix('b') {
        (n, 1)
    } else {
        (t.as_str(), 1)
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// A secret string (password, token). It never prints: `Debug` and `Display` show
/// `***` when set.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Wrap a string.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// An error in a configuration file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, if the text came from one.
    pub file: Option<String>,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("<config>");
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{file}:{l}:{c}: {}", self.message),
            (Some(l), None) => write!(f, "{file}:{l}: {}", self.message),
            _ => write!(f, "{file}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parse and validate YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = serde_yaml::from_str(text).map_err(|e| {
            let loc = e.location();
            ConfigError {
                file: None,
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message: e.to_string(),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.display().to_string()),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::from_yaml(&text).map_err(|mut e| {
            e.file = Some(path.display().to_string());
            e
        })
    }

    /// Checks that need more than one value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| ConfigError { file: None, line: None, column: None, message: m };
        match (&self.backend.master, &self.backend.sentinel) {
            (Some(_), Some(_)) => {
                return Err(err("backend: give either master/replicas or sentinel, not both".into()))
            }
            (None, None) => {
                return Err(err("backend: give master (and replicas), or sentinel".into()))
            }
            _ => {}
        }
        Ok(())
    }
}

impl Config {
    /// A short stable hash of the effective configuration ("config version").
    pub fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{self:?}").hash(&mut h);
        format!("{:016x}", h.finish())
    }
}
